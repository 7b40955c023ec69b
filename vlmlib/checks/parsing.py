"""Check the parsing exercises: boxes read from the model's answer, and why an answer gives none.

Why: every metric reads boxes out of text, so a parser is compared with
`vlmlib.parsing.parse_box_answer` on answers that break naive parsers (stripped
tokens, cut-off boxes, coordinates off the grid).
Explained in: book/labs, lab 02 (exercises 2.3 and 2.4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vlmlib.checks.runner import CheckCase, CheckResult, run_check
from vlmlib.parsing import parse_box_answer

__all__ = ["check_describe_parse_failure", "check_parse_boxes"]


_ANSWERS = {  # name -> (answer text, hint)
    "one box with special tokens": (
        "<|object_ref_start|>nutrition-table<|object_ref_end|><|box_start|>(120,340),(560,910)<|box_end|>",
        None,
    ),
    "two boxes": (
        "<|object_ref_start|>nutrition-table<|object_ref_end|><|box_start|>(10,20),(300,400)<|box_end|>"
        "<|object_ref_start|>nutrition-table-small<|object_ref_end|><|box_start|>(500,600),(700,800)<|box_end|>",
        "find every box, not only the first: re.finditer or re.findall.",
    ),
    "special tokens stripped by the decoder": (
        "nutrition-table(120,340),(560,910)",
        "the special tokens may be missing; match the two bracketed pairs themselves.",
    ),
    "an answer in words": (
        "The nutrition table is in the lower half of the image.",
        "no box in the text: return [].",
    ),
    "a box cut off by max_new_tokens": (
        "<|object_ref_start|>nutrition-table<|object_ref_end|><|box_start|>(120,340),(56",
        "a box without its second bracketed pair is not a box.",
    ),
    "a coordinate beyond the grid": (
        "<|box_start|>(120,340),(1560,910)<|box_end|>",
        "coordinates above 1000 are off the grid: drop that box.",
    ),
    "an inverted box": (
        "<|box_start|>(560,910),(120,340)<|box_end|>",
        "a box needs x2 > x1 and y2 > y1: drop it otherwise.",
    ),
}


def check_parse_boxes(function: Callable[[str], Any]) -> CheckResult:
    """Check a parser returning [(x1, y1, x2, y2), ...] against
    `vlmlib.parsing.parse_box_answer` (exercise 2.3).
    """
    cases = [
        CheckCase(
            name, {"text": text}, [box.box_qwen for box in parse_box_answer(text).boxes], hint
        )
        for name, (text, hint) in _ANSWERS.items()
    ]
    return run_check(function, cases, hint="a box is (x1,y1),(x2,y2) with integers from 0 to 1000.")


def _failure_kind(text: str) -> str | None:
    reason = parse_box_answer(text).failure_reason
    return None if reason is None else reason.split(":")[0]


def check_describe_parse_failure(function: Callable[[str], Any]) -> CheckResult:
    """Check a function that names why an answer gives no box, as
    `parse_box_answer` does (exercise 2.4).
    """
    answers = {
        "an empty answer": ("", "an answer of nothing (or only spaces) is 'empty answer'."),
        "only spaces": ("   \n", "an answer of nothing (or only spaces) is 'empty answer'."),
        "a good answer": (
            _ANSWERS["one box with special tokens"][0],
            "an answer with a usable box has no failure: return None.",
        ),
        "an answer in words": (_ANSWERS["an answer in words"][0], None),
        "a box cut off by max_new_tokens": (
            _ANSWERS["a box cut off by max_new_tokens"][0],
            "text that stops inside a box is 'truncated box'.",
        ),
        "four numbers in one bracket": (
            "(10,20,30,40)",
            "every bracket closes, so nothing was cut off: 'no box found'.",
        ),
        "one corner in a sentence": (
            "The box is (10, 20)",
            "every bracket closes, so nothing was cut off: 'no box found'.",
        ),
        "every box off the grid": (
            _ANSWERS["a coordinate beyond the grid"][0],
            "boxes were found but none was valid: 'all boxes rejected'.",
        ),
        "one good box, then a cut-off one": (
            _ANSWERS["one box with special tokens"][0] + "<|box_start|>(1",
            None,
        ),
    }
    cases = [
        CheckCase(name, {"text": text}, _failure_kind(text), hint)
        for name, (text, hint) in answers.items()
    ]
    return run_check(
        function,
        cases,
        hint="return None when at least one box parses, else one of 'empty answer', "
        "'no box found', 'truncated box', 'all boxes rejected'.",
    )
