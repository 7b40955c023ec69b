"""Self-checks for the labs: run a student's function on named cases and print a plain verdict.

Why: a lab exercise is only useful if the student learns *what* is wrong. Each check runs the
function on a few named cases whose expected answers come from `vlmlib` itself, then prints how many
passed, the first failing input with expected and actual values, and one hint. A check never raises:
an unfinished exercise (`NotImplementedError`) reads "not attempted yet", and any other error is
reported as the case's result, with the line that raised it.
Explained in: book/labs, "How the self-checks work".

Every `check_*` function takes the student's function and returns a `CheckResult` (`.passed` is what
the tests read). The verdict is printed, so it shows in notebooks and in plain `python lab.py` runs.
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

from vlmlib.boxes import convert_hub_box_to_qwen, convert_qwen_box_to_hub
from vlmlib.data import format_answer
from vlmlib.dataset_stats import MERGE_SIZE, compute_image_token_budget, describe_record_boxes
from vlmlib.parsing import parse_box_answer

__all__ = [
    "CheckCase",
    "CheckResult",
    "check_convert_hub_box_to_qwen",
    "check_convert_qwen_box_to_hub",
    "check_count_image_tokens",
    "check_count_image_tokens_from_grid",
    "check_describe_parse_failure",
    "check_describe_record_boxes",
    "check_format_answer",
    "check_parse_boxes",
    "run_check",
]

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
        state = "not attempted" if not self.is_attempted else f"{self.num_passed}/{self.num_cases} passed"
        return f"<check {self.function_name}: {state}>"

    def _ipython_display_(self) -> None:
        """Show nothing: the check printed its verdict already, and a second copy would only repeat it."""


def _shorten(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _matches(actual: Any, expected: Any, tolerance: float) -> bool:
    """Return True when `actual` equals `expected`: floats within `tolerance`, ints exactly and as ints."""
    if isinstance(actual, np.ndarray):
        actual = actual.tolist()
    if expected is None or isinstance(expected, (bool, str)):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, numbers.Integral):
        return isinstance(actual, numbers.Integral) and not isinstance(actual, bool) and actual == expected
    if isinstance(expected, numbers.Real):
        return (isinstance(actual, numbers.Real) and not isinstance(actual, bool)
                and math.isclose(actual, expected, rel_tol=tolerance, abs_tol=tolerance))
    if isinstance(expected, Mapping):
        return (isinstance(actual, Mapping) and set(actual) == set(expected)
                and all(_matches(actual[key], value, tolerance) for key, value in expected.items()))
    if isinstance(expected, Sequence):
        return (isinstance(actual, (list, tuple)) and len(actual) == len(expected)
                and all(_matches(item, wanted, tolerance) for item, wanted in zip(actual, expected)))
    return actual == expected


def _describe_difference(actual: Any, expected: Any) -> str:
    """Return an extra line pointing at what differs, where that helps more than the two values."""
    if isinstance(expected, str) and isinstance(actual, str):
        index = next((i for i, (a, b) in enumerate(zip(actual, expected)) if a != b), min(len(actual), len(expected)))
        return f"\n  first difference at character {index}: expected ...{expected[index:index + 20]!r}, got ...{actual[index:index + 20]!r}"
    if isinstance(expected, numbers.Integral) and isinstance(actual, numbers.Real) and actual == expected:
        return f"\n  the value is right but it is a {type(actual).__name__}; return an int"
    return ""


def _describe_error(error: Exception, function: Callable[..., Any]) -> str:
    """Return the error in one line, with the line of the student's code that raised it (or led to it)."""
    frames = traceback.extract_tb(error.__traceback__)
    own_file = getattr(getattr(function, "__code__", None), "co_filename", None)
    frame = next((frame for frame in reversed(frames) if frame.filename == own_file), frames[-1])
    where = f" at line {frame.lineno}: {frame.line.strip()}" if frame.line else ""
    return f"an error, {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}{where}"


def run_check(function: Callable[..., Any], cases: Sequence[CheckCase], hint: str, tolerance: float = 1e-6) -> CheckResult:
    """Run `function` on every case, print the verdict, and return it as a `CheckResult`. Never raises.

    Why: the one place that turns a student's answer into a readable verdict, for every lab.
    Explained in: book/labs, "How the self-checks work".

    Args:
        function: the student's function; each case's inputs are passed positionally, as deep copies.
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
            verdict = (f"check {name}: not attempted yet ({error or 'NotImplementedError'}).\n"
                       "Replace the TODO and the `raise NotImplementedError(...)` line with your code, "
                       "run that cell, then run this check again.")
            print(verdict)
            return CheckResult(name, len(cases), 0, is_attempted=False, verdict=verdict)
        except Exception as error:  # a student's bug is this case's result, never a crash of the check
            failure = failure or (case, _describe_error(error, function), "")
            continue
        if _matches(actual, case.expected, tolerance):
            num_passed += 1
        else:
            failure = failure or (case, _shorten(actual), _describe_difference(actual, case.expected))
    if failure is None:
        verdict = f"check {name}: all {len(cases)} cases passed."
    else:
        case, actual_text, difference = failure
        inputs = ", ".join(f"{key}={_shorten(value)}" for key, value in case.inputs.items())
        verdict = (f"check {name}: {num_passed} of {len(cases)} cases passed.\n"
                   f"First failing case, {case.name}:\n  input:    {inputs}\n"
                   f"  expected: {_shorten(case.expected)}\n  got:      {actual_text}{difference}\n"
                   f"Hint: {case.hint or hint}")
    print(verdict)
    return CheckResult(name, len(cases), num_passed, is_attempted=True, verdict=verdict)


# --- lab 01: the data ---

_HUB_BOXES = {  # name -> box_hub ([y_min, x_min, y_max, x_max], 0-1)
    "a box in the middle of the image": [0.25, 0.1, 0.75, 0.6],
    "the whole image": [0.0, 0.0, 1.0, 1.0],
    "a tall, narrow box": [0.1, 0.4, 0.9, 0.45],
    "values that need rounding": [0.12345, 0.6789, 0.5, 0.99951],
}


def check_convert_hub_box_to_qwen(function: Callable[[list[float]], Any]) -> CheckResult:
    """Check a function that turns `box_hub` into Qwen's (x1, y1, x2, y2) on the 0-1000 grid (lab 01, exercise 1.1)."""
    cases = [CheckCase(name, {"box_hub": box_hub}, convert_hub_box_to_qwen(box_hub)) for name, box_hub in _HUB_BOXES.items()]
    cases[-1] = CheckCase(cases[-1].name, cases[-1].inputs, cases[-1].expected,
                          hint="round to the nearest integer with round(); int() cuts 678.9 down to 678.")
    return run_check(function, cases, hint="the Hub writes y first, Qwen writes x first: (x_min, y_min, x_max, y_max), times 1000.")


def check_convert_qwen_box_to_hub(function: Callable[[Sequence[int]], Any]) -> CheckResult:
    """Check a function that turns Qwen's (x1, y1, x2, y2) on the 0-1000 grid back into `box_hub` (exercise 1.2)."""
    boxes_qwen = {"a box in the middle of the image": (100, 250, 600, 750), "the whole image": (0, 0, 1000, 1000),
                  "a wide, flat box": (50, 700, 950, 760), "a box near the bottom-right corner": (812, 903, 999, 1000)}
    cases = [CheckCase(name, {"box_qwen": box_qwen}, convert_qwen_box_to_hub(box_qwen)) for name, box_qwen in boxes_qwen.items()]
    return run_check(function, cases, hint="divide by 1000 and put y first: [y_min, x_min, y_max, x_max].")


def _record(width_px: int, height_px: int, boxes_hub: list[list[float]], category_names: list[str]) -> dict[str, Any]:
    return {"image_id": "check", "width": width_px, "height": height_px,
            "objects": {"bbox": boxes_hub, "category_id": [0] * len(boxes_hub), "category_name": category_names}}


def check_describe_record_boxes(function: Callable[[dict[str, Any]], Any]) -> CheckResult:
    """Check per-image box statistics against `vlmlib.dataset_stats.describe_record_boxes` (exercise 1.3)."""
    records = {
        "one square box in a square image": (_record(200, 200, [[0.25, 0.25, 0.75, 0.75]], ["nutrition-table"]), None),
        "one box in a wide image (aspect ratio in pixels, not fractions)": (
            _record(400, 100, [[0.1, 0.1, 0.9, 0.3]], ["nutrition-table"]),
            "measure the aspect ratio in pixels: width fraction x image width over height fraction x image height."),
        "two boxes, the largest listed second": (
            _record(300, 300, [[0.0, 0.0, 0.2, 0.2], [0.5, 0.2, 0.9, 0.9]], ["nutrition-table-small", "nutrition-table"]),
            "the largest box is the one with the largest area, wherever it is in the list."),
        "three boxes": (_record(640, 480, [[0.1, 0.1, 0.5, 0.6], [0.6, 0.1, 0.9, 0.3], [0.6, 0.5, 0.95, 0.9]],
                                ["nutrition-table", "nutrition-table-text", "nutrition-table-small"]),
                        "area_fraction adds up the areas of all the boxes."),
    }
    cases = [CheckCase(name, {"record": record}, describe_record_boxes(record), hint) for name, (record, hint) in records.items()]
    return run_check(function, cases, tolerance=1e-4,
                     hint="return a dict with num_boxes, area_fraction and largest_box_aspect_ratio.")


def check_format_answer(function: Callable[[dict[str, list]], Any]) -> CheckResult:
    """Check a function that writes the training answer for a record's objects against `vlmlib.data.format_answer` (1.4)."""
    examples = {
        "one table": _record(100, 100, [[0.34, 0.12, 0.91, 0.56]], ["nutrition-table"]),
        "two tables of different categories": _record(100, 100, [[0.1, 0.1, 0.5, 0.6], [0.6, 0.7, 0.8, 0.95]],
                                                      ["nutrition-table", "nutrition-table-small-energy"]),
        "coordinates that need rounding": _record(100, 100, [[0.12345, 0.6789, 0.5, 0.99951]], ["nutrition-table-text"]),
    }
    cases = [CheckCase(name, {"objects": record["objects"]}, format_answer(record["objects"])) for name, record in examples.items()]
    return run_check(function, cases, hint="one group per box, no spaces: <|object_ref_start|>LABEL<|object_ref_end|>"
                                           "<|box_start|>(x1,y1),(x2,y2)<|box_end|>, coordinates from exercise 1.1.")


# --- lab 02: the model ---

def check_count_image_tokens_from_grid(function: Callable[[Sequence[int]], Any]) -> CheckResult:
    """Check a function that turns one row of `image_grid_thw` into its number of `<|image_pad|>` tokens (2.1)."""
    grids = {"a 112x168 px image": [1, 12, 8], "a 224x224 px image": [1, 16, 16], "a 728x504 px image": [1, 36, 52]}
    cases = [CheckCase(name, {"grid_thw": grid}, grid[0] * grid[1] * grid[2] // MERGE_SIZE**2) for name, grid in grids.items()]
    return run_check(function, cases, hint="the grid counts 14 px patches (time, height, width); 2x2 patches merge into "
                                           "one token, so divide their product by 4.")


def check_count_image_tokens(function: Callable[[int, int, int, int], Any]) -> CheckResult:
    """Check image-token counts for a size and pixel budget against `compute_image_token_budget` (exercise 2.2)."""
    tiny, full = (12544, 50176), (200704, 501760)  # the (min_pixels, max_pixels) of configs tiny.yaml and full.yaml
    sizes = {  # name -> (width_px, height_px, (min_pixels, max_pixels), hint)
        "already a multiple of 28, inside the budget": (224, 224, tiny, None),
        "a side that must be rounded to a multiple of 28": (113, 175, tiny, "round each side to the nearest multiple of 28."),
        "a phone photo above max_pixels": (3024, 4032, full, "above max_pixels, divide both sides by "
                                           "sqrt(width * height / max_pixels), then round DOWN to a multiple of 28."),
        "a small image below min_pixels": (60, 80, full, "below min_pixels, multiply both sides by "
                                           "sqrt(min_pixels / (width * height)), then round UP to a multiple of 28."),
        "a very wide image": (1400, 100, full, None),
    }
    cases = [CheckCase(name, {"width_px": width, "height_px": height, "min_pixels": low, "max_pixels": high},
                       compute_image_token_budget(width, height, low, high).num_image_tokens, hint)
             for name, (width, height, (low, high), hint) in sizes.items()]
    return run_check(function, cases, hint="resize as in chapter 02, then count (height / 28) * (width / 28) tokens.")


_ANSWERS = {  # name -> (answer text, hint)
    "one box with special tokens": (
        "<|object_ref_start|>nutrition-table<|object_ref_end|><|box_start|>(120,340),(560,910)<|box_end|>", None),
    "two boxes": ("<|object_ref_start|>nutrition-table<|object_ref_end|><|box_start|>(10,20),(300,400)<|box_end|>"
                  "<|object_ref_start|>nutrition-table-small<|object_ref_end|><|box_start|>(500,600),(700,800)<|box_end|>",
                  "find every box, not only the first: re.finditer or re.findall."),
    "special tokens stripped by the decoder": ("nutrition-table(120,340),(560,910)", "the special tokens may be missing; "
                                               "match the two bracketed pairs themselves."),
    "an answer in words": ("The nutrition table is in the lower half of the image.", "no box in the text: return []."),
    "a box cut off by max_new_tokens": ("<|object_ref_start|>nutrition-table<|object_ref_end|><|box_start|>(120,340),(56",
                                        "a box without its second bracketed pair is not a box."),
    "a coordinate beyond the grid": ("<|box_start|>(120,340),(1560,910)<|box_end|>", "coordinates above 1000 are off the grid: drop that box."),
    "an inverted box": ("<|box_start|>(560,910),(120,340)<|box_end|>", "a box needs x2 > x1 and y2 > y1: drop it otherwise."),
}


def check_parse_boxes(function: Callable[[str], Any]) -> CheckResult:
    """Check a parser returning [(x1, y1, x2, y2), ...] against `vlmlib.parsing.parse_box_answer` (exercise 2.3)."""
    cases = [CheckCase(name, {"text": text}, [box.box_qwen for box in parse_box_answer(text).boxes], hint)
             for name, (text, hint) in _ANSWERS.items()]
    return run_check(function, cases, hint="a box is (x1,y1),(x2,y2) with integers from 0 to 1000.")


def _failure_kind(text: str) -> str | None:
    reason = parse_box_answer(text).failure_reason
    return None if reason is None else reason.split(":")[0]


def check_describe_parse_failure(function: Callable[[str], Any]) -> CheckResult:
    """Check a function that names why an answer gives no box, as `parse_box_answer` does (exercise 2.4)."""
    answers = {
        "an empty answer": ("", "an answer of nothing (or only spaces) is 'empty answer'."),
        "only spaces": ("   \n", "an answer of nothing (or only spaces) is 'empty answer'."),
        "a good answer": (_ANSWERS["one box with special tokens"][0], "an answer with a usable box has no failure: return None."),
        "an answer in words": (_ANSWERS["an answer in words"][0], None),
        "a box cut off by max_new_tokens": (_ANSWERS["a box cut off by max_new_tokens"][0],
                                            "text that stops inside a box is 'truncated box'."),
        "every box off the grid": (_ANSWERS["a coordinate beyond the grid"][0],
                                   "boxes were found but none was valid: 'all boxes rejected'."),
        "one good box, then a cut-off one": (_ANSWERS["one box with special tokens"][0] + "<|box_start|>(1", None),
    }
    cases = [CheckCase(name, {"text": text}, _failure_kind(text), hint) for name, (text, hint) in answers.items()]
    return run_check(function, cases, hint="return None when at least one box parses, else one of 'empty answer', "
                                           "'no box found', 'truncated box', 'all boxes rejected'.")
