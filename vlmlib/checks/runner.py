"""Run a student's function on named cases and print a plain verdict: the runner every check uses.

Why: a lab exercise is only useful if the student learns *what* is wrong. `run_check` prints how
many cases passed, the first failing input with expected and actual values, and one hint, and never
raises: `NotImplementedError` reads "not attempted yet", any other error is that case's result.
Explained in: book/labs, "How the self-checks work".
"""

from __future__ import annotations

import copy
import math
import numbers
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CheckCase", "CheckResult", "run_check"]

_MAX_VALUE_CHARS = 160  # longer inputs and outputs are cut in the verdict, so it stays readable


@dataclass(frozen=True)
class CheckCase:
    """One named input for a check: the arguments (passed in order) and the expected result."""

    name: str
    inputs: dict[str, Any]
    expected: Any
    hint: str | None = None  # shown when this case is the first to fail; None uses the check's hint


@dataclass(frozen=True)
class CheckResult:
    """What a check found. `verdict` is the text it printed."""

    function_name: str
    num_cases: int
    num_passed: int
    is_attempted: bool
    verdict: str

    @property
    def passed(self) -> bool:
        """True when the function was written and every case gave the expected result."""
        return self.is_attempted and self.num_passed == self.num_cases

    def __repr__(self) -> str:
        state = (
            "not attempted"
            if not self.is_attempted
            else f"{self.num_passed}/{self.num_cases} passed"
        )
        return f"<check {self.function_name}: {state}>"

    def _ipython_display_(self) -> None:
        """Show nothing: the check printed its verdict already, and a second
        copy would only repeat it.
        """


def _shorten(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _matches(actual: Any, expected: Any, tolerance: float) -> bool:
    """Return True when `actual` equals `expected`: floats within `tolerance`,
    ints exactly and as ints.
    """
    if isinstance(actual, np.ndarray):
        actual = actual.tolist()
    if expected is None or isinstance(expected, (bool, str)):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, numbers.Integral):
        return (
            isinstance(actual, numbers.Integral)
            and not isinstance(actual, bool)
            and actual == expected
        )
    if isinstance(expected, numbers.Real):
        return (
            isinstance(actual, numbers.Real)
            and not isinstance(actual, bool)
            and math.isclose(actual, expected, rel_tol=tolerance, abs_tol=tolerance)
        )
    if isinstance(expected, Mapping):
        return (
            isinstance(actual, Mapping)
            and set(actual) == set(expected)
            and all(_matches(actual[key], value, tolerance) for key, value in expected.items())
        )
    if isinstance(expected, Sequence):
        return (
            isinstance(actual, (list, tuple))
            and len(actual) == len(expected)
            and all(_matches(item, wanted, tolerance) for item, wanted in zip(actual, expected))
        )
    return actual == expected


def _describe_difference(actual: Any, expected: Any) -> str:
    """Return an extra line pointing at what differs, where that helps more than the two values."""
    if isinstance(expected, str) and isinstance(actual, str):
        index = next(
            (i for i, (a, b) in enumerate(zip(actual, expected)) if a != b),
            min(len(actual), len(expected)),
        )
        return (
            f"\n  first difference at character {index}: expected "
            f"...{expected[index : index + 20]!r}, got ...{actual[index : index + 20]!r}"
        )
    if (
        isinstance(expected, numbers.Integral)
        and isinstance(actual, numbers.Real)
        and actual == expected
    ):
        return f"\n  the value is right but it is a {type(actual).__name__}; return an int"
    return ""


def _describe_error(error: Exception, function: Callable[..., Any]) -> str:
    """Return the error in one line, with the line of the student's code that
    raised it (or led to it).
    """
    frames = traceback.extract_tb(error.__traceback__)
    own_file = getattr(getattr(function, "__code__", None), "co_filename", None)
    frame = next((frame for frame in reversed(frames) if frame.filename == own_file), frames[-1])
    where = f" at line {frame.lineno}: {frame.line.strip()}" if frame.line else ""
    return (
        f"an error, {type(error).__name__}: "
        f"{str(error).splitlines()[0] if str(error) else ''}{where}"
    )


def run_check(
    function: Callable[..., Any], cases: Sequence[CheckCase], hint: str, tolerance: float = 1e-6
) -> CheckResult:
    """Run `function` on every case, print the verdict, and return it as a
    `CheckResult`. Never raises.

    Why: the one place that turns a student's answer into a readable verdict, for every lab.
    Explained in: book/labs, "How the self-checks work".

    Args:
        function: the student's function; each case's inputs are passed
            positionally, as deep copies.
        cases: named inputs and expected results, easiest first.
        hint: shown when the first failing case has no hint of its own.
        tolerance: relative and absolute tolerance for floats.
    """
    name = getattr(function, "__name__", repr(function))
    num_passed, failure = 0, None
    for case in cases:
        try:
            actual = function(*copy.deepcopy(list(case.inputs.values())))
        except NotImplementedError as error:
            verdict = (
                f"check {name}: not attempted yet ({error or 'NotImplementedError'}).\n"
                "Replace the TODO and the `raise NotImplementedError(...)` line with your code, "
                "run that cell, then run this check again."
            )
            print(verdict)
            return CheckResult(name, len(cases), 0, is_attempted=False, verdict=verdict)
        except (
            Exception
        ) as error:  # a student's bug is this case's result, never a crash of the check
            failure = failure or (case, _describe_error(error, function), "")
            continue
        if _matches(actual, case.expected, tolerance):
            num_passed += 1
        else:
            failure = failure or (
                case,
                _shorten(actual),
                _describe_difference(actual, case.expected),
            )
    if failure is None:
        verdict = f"check {name}: all {len(cases)} cases passed."
    else:
        case, actual_text, difference = failure
        inputs = ", ".join(f"{key}={_shorten(value)}" for key, value in case.inputs.items())
        verdict = (
            f"check {name}: {num_passed} of {len(cases)} cases passed.\n"
            f"First failing case, {case.name}:\n  input:    {inputs}\n"
            f"  expected: {_shorten(case.expected)}\n  got:      {actual_text}{difference}\n"
            f"Hint: {case.hint or hint}"
        )
    print(verdict)
    return CheckResult(name, len(cases), num_passed, is_attempted=True, verdict=verdict)
