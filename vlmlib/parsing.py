"""Turn Qwen2-VL's text answers back into boxes.

Why: the model answers in text, and every metric needs numbers. A parser that raises on a bad
answer would stop an evaluation run halfway, so this one never raises: it returns the boxes it
could read, the boxes it refused (with reasons) and, when nothing was read, why.
Explained in: chapter 05, "Reading the model's answers".

Accepted forms (one group per box, any number of groups):

- raw, with special tokens:
  `<|object_ref_start|>nutrition-table<|object_ref_end|><|box_start|>(120,340),(560,910)<|box_end|>`
- special tokens stripped (what `skip_special_tokens=True` decoding gives):
  `nutrition-table(120,340),(560,910)`
- no label: `<|box_start|>(120,340),(560,910)<|box_end|>` or `(120,340),(560,910)`

Spaces around numbers and commas are allowed, and a trailing `<|im_end|>` or
`<|endoftext|>` is ignored.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

from vlmlib.boxes import QWEN_GRID_SIZE
from vlmlib.tokens import (
    BOX_END_TOKEN,
    BOX_START_TOKEN,
    END_OF_TEXT_TOKEN,
    IM_END_TOKEN,
    OBJECT_REF_END_TOKEN,
    OBJECT_REF_START_TOKEN,
)

__all__ = ["DEFAULT_LABEL", "ParsedAnswer", "ParsedBox", "parse_box_answer"]

# The label of a box written without one; the same as
# vlmlib.data.CATEGORY_NAMES[0] (a test checks it).
DEFAULT_LABEL = "nutrition-table"

_COORDINATE_NAMES = ("x1", "y1", "x2", "y2")
_X1, _Y1, _X2, _Y2 = (
    rf"\s*(?P<{name}>-?[0-9]+)\s*" for name in _COORDINATE_NAMES
)  # a minus sign is read, then rejected
_BOX_PATTERN = re.compile(
    # A label between the object_ref tokens, or (tokens stripped) a word glued to
    # the box: "nutrition-table(". Labels never give characters back (`*+`) and a
    # bare label starts only at the start of a word, so a long runaway answer
    # costs linear time; with `\s*[^<>|]*?\s*` 5,000 spaces took a minute.
    rf"(?:{re.escape(OBJECT_REF_START_TOKEN)}(?P<token_label>[^<>|]*+){re.escape(OBJECT_REF_END_TOKEN)}\s*"
    r"|(?<![A-Za-z0-9_-])(?P<bare_label>[A-Za-z][A-Za-z0-9_-]*+))?"
    rf"(?:{re.escape(BOX_START_TOKEN)}\s*)?"
    rf"\({_X1},{_Y1}\)\s*,\s*\({_X2},{_Y2}\)"
    rf"(?:\s*{re.escape(BOX_END_TOKEN)})?"
)
# Tokens stripped, generation stopped inside a box: "nutrition-table(120,340),(56" or
# "(120,340),". The text then ends in a run of these characters that opens a bracket
# and never closes it, or ends in a comma after a closed pair. A closed group that is
# not a box, "(10,20,30,40)" or "The box is (10, 20)", is "no box found".
_COORDINATE_CHARACTERS = string.whitespace + string.digits + ",()-"
_UNCLOSED_COORDINATES = re.compile(r"\(\s*-?[0-9][^()]*$")
_PAIR_THEN_COMMA = re.compile(r"\(\s*-?[0-9]+\s*,\s*-?[0-9]+\s*\)\s*,\s*$")
_MAX_REASONS_SHOWN = 3  # in failure_reason; `rejected` keeps them all
_MAX_COORDINATE_DIGITS = len(
    str(QWEN_GRID_SIZE)
)  # checked before int(), which refuses strings of 4,300+ digits


@dataclass(frozen=True)
class ParsedBox:
    """One box read from an answer: its label and its (x1, y1, x2, y2) on the 0-1000 grid."""

    label: str
    box_qwen: tuple[int, int, int, int]


@dataclass
class ParsedAnswer:
    """Everything `parse_box_answer` read from one answer.

    Attributes:
        boxes: the boxes kept, in the order they appear in the answer.
        failure_reason: why no box was kept ("empty answer", "no box found", "truncated box",
            "all boxes rejected: ..."); None when at least one box was kept. "truncated box"
            means the text stops inside a box, as when generation hits its token limit; a
            closed group that is not a box, such as "(10,20,30,40)", is "no box found".
        rejected: one message per box group that was found but refused (or cut off at the end).
    """

    boxes: list[ParsedBox] = field(default_factory=list)
    failure_reason: str | None = None
    rejected: list[str] = field(default_factory=list)

    @property
    def is_parse_failure(self) -> bool:
        """True when the answer gave no usable box."""
        return not self.boxes


def _read_coordinate(digits: str) -> int | None:
    """Return the integer a coordinate string holds, or None when it has too
    many digits to lie on the grid.
    """
    magnitude = digits.lstrip("-").lstrip("0") or "0"
    if len(magnitude) > _MAX_COORDINATE_DIGITS:
        return None
    return -int(magnitude) if digits.startswith("-") else int(magnitude)


def _is_truncated(tail: str) -> bool:
    """Return True when the text after the last whole box stops in the middle of a box."""
    last_opening_token = max(tail.rfind(OBJECT_REF_START_TOKEN), tail.rfind(BOX_START_TOKEN))
    if last_opening_token > tail.rfind(BOX_END_TOKEN):
        return True
    # rstrip finds the final run in linear time; a regex ending in `[...]*$`
    # would backtrack quadratically.
    final_run = tail[len(tail.rstrip(_COORDINATE_CHARACTERS)) :]
    return bool(_UNCLOSED_COORDINATES.search(final_run) or _PAIR_THEN_COMMA.search(final_run))


def _shorten(text: str, max_chars: int = 80) -> str:
    """Return the text quoted for a message, cut to `max_chars` so that a
    runaway answer stays readable.
    """
    text = text.strip()
    return repr(text if len(text) <= max_chars else text[: max_chars - 3] + "...")


def _find_rejection(coordinates: list[int | None]) -> str | None:
    """Return why a box breaks the stated rule, or None for a valid box on the 0-1000 grid."""
    if any(value is None or not 0 <= value <= QWEN_GRID_SIZE for value in coordinates):
        return f"coordinate outside 0-{QWEN_GRID_SIZE}"
    x1, y1, x2, y2 = coordinates
    if x2 <= x1 or y2 <= y1:  # type: ignore[operator]  # None was ruled out just above
        return "inverted or zero-size box (needs x2 > x1 and y2 > y1)"
    return None


def parse_box_answer(text: str) -> ParsedAnswer:
    """Read every box in a Qwen2-VL answer, keeping the valid ones and saying
    why others were refused.

    Why: evaluation must survive whatever the model writes; a fine-tuned model still produces the
    odd truncated or out-of-range box, and those should be counted, not crash the run.
    Explained in: chapter 05, "Reading the model's answers".

    Rule: a box whose coordinate lies outside 0-1000, or with x2 <= x1 or y2 <= y1, is rejected
    (a message goes into `rejected`) and the other boxes are kept. A box with no label gets
    `DEFAULT_LABEL`. The function never raises on a `str`, whatever it holds.

    Args:
        text: the decoded answer, with or without special tokens (see the module docstring).
    Returns:
        A `ParsedAnswer`; its `boxes` hold `box_qwen` values, (x1, y1, x2, y2)
        integers on the 0-1000 grid.
    """
    for end_token in (IM_END_TOKEN, END_OF_TEXT_TOKEN):
        text = text.replace(end_token, "")
    if not text.strip():
        return ParsedAnswer(failure_reason="empty answer")

    answer = ParsedAnswer()
    end_of_last_box = 0
    for match in _BOX_PATTERN.finditer(text):
        end_of_last_box = match.end()
        label = (
            match.group("token_label") or match.group("bare_label") or ""
        ).strip() or DEFAULT_LABEL
        coordinates = [_read_coordinate(match.group(name)) for name in _COORDINATE_NAMES]
        rejection = _find_rejection(coordinates)
        if rejection is None:
            answer.boxes.append(ParsedBox(label=label, box_qwen=tuple(coordinates)))  # type: ignore[arg-type]
        else:
            answer.rejected.append(f"{_shorten(match.group(0))}: {rejection}")

    has_rejected_whole_box = bool(answer.rejected)
    tail = text[end_of_last_box:]
    is_truncated = _is_truncated(tail)
    if is_truncated:
        answer.rejected.append(f"{_shorten(tail)}: truncated box at the end of the answer")
    if answer.boxes:
        return answer
    if has_rejected_whole_box:
        num_hidden = len(answer.rejected) - _MAX_REASONS_SHOWN
        answer.failure_reason = "all boxes rejected: " + "; ".join(
            answer.rejected[:_MAX_REASONS_SHOWN]
        )
        answer.failure_reason += f" (and {num_hidden} more)" if num_hidden > 0 else ""
    else:
        answer.failure_reason = "truncated box" if is_truncated else "no box found"
    return answer
