"""Check the collator exercises: V2's labels, the answer positions of one
sequence, a batched answer mask.

Why: the labels alone decide what fine-tuning teaches, so each answer is compared with
`vlmlib.collators` on small toy ids first (readable in a verdict), then on real padded batches.
Explained in: book/labs, lab 03 (exercises 3.1 to 3.3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from vlmlib.checks.runner import CheckCase, CheckResult, _describe_error, run_check

__all__ = [
    "TOY_TOKEN_IDS",
    "check_build_answer_mask",
    "check_build_v2_labels",
    "check_find_answer_positions",
]


# Small made-up token ids for the first, readable cases of labs 03 and 04; the
# real ids have six digits. The functions under test take every id they need as
# an argument, so nothing may depend on these values.
TOY_TOKEN_IDS = {
    "<pad>": 0,
    "<|im_start|>": 1,
    "<|im_end|>": 2,
    "<|vision_start|>": 3,
    "<|image_pad|>": 4,
    "<|vision_end|>": 5,
    "system": 6,
    "user": 7,
    "assistant": 8,
    "\n": 9,
}  # other words: 10 and up
_TOY_SYSTEM = [1, 6, 9, 11, 2, 9]  # <|im_start|>system\n WORD <|im_end|>\n
_TOY_USER = [
    1,
    7,
    9,
    3,
    4,
    4,
    5,
    12,
    2,
    9,
]  # <|im_start|>user\n <|vision_start|><|image_pad|>x2<|vision_end|> WORD <|im_end|>\n
_TOY_ANSWER = [1, 8, 9, 20, 21, 2, 9]  # <|im_start|>assistant\n WORD WORD <|im_end|>\n
_TOY_HEADER = [8, 9]  # "assistant", "\n": what follows <|im_start|> in an assistant turn


class _Raised:
    """Stands for "the function raised this error": equal to any other `_Raised`
    of the same type, whatever the message.
    """

    def __init__(self, error_type: str, description: str = "") -> None:
        self.error_type, self.description = error_type, description

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Raised) and other.error_type == self.error_type

    __hash__ = None  # mutable-looking and compared by type only: not for sets or dict keys

    def __repr__(self) -> str:
        return f"raises {self.error_type}" + (f" ({self.description})" if self.description else "")


def _to_plain(value: Any) -> Any:
    """Return tensors and arrays as nested lists, with True/False as 1/0
    (shorter to read in a verdict).
    """
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_to_plain(item) for item in value]
    return value


class _PlainResult:
    """Call a student's function; give `run_check` its result as plain lists,
    and a ValueError as `_Raised`.

    The function's name and code are kept, so the verdict names the student's function and an error
    points at the student's line, not at this wrapper.
    """

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.__name__ = getattr(function, "__name__", repr(function))
        self.__code__ = getattr(function, "__code__", None)

    def __call__(self, *arguments: Any) -> Any:
        try:
            return _to_plain(self.function(*arguments))
        except ValueError as error:
            return _Raised("ValueError", _describe_error(error, self.function))


def _toy_batch(
    rows: Sequence[Sequence[int]], padding_side: str, pad_id: int = 0
) -> tuple[Any, Any]:
    """Return (input_ids, attention_mask), (batch, longest row) int64 tensors,
    the rows padded on `padding_side`.
    """
    import torch

    length = max(len(row) for row in rows)
    ids, mask = [], []
    for row in rows:
        padding = [pad_id] * (length - len(row))
        ids.append(list(row) + padding if padding_side == "right" else padding + list(row))
        mask.append(
            [1] * len(row) + [0] * len(padding)
            if padding_side == "right"
            else [0] * len(padding) + [1] * len(row)
        )
    return torch.tensor(ids), torch.tensor(mask)


def _real_batches(
    processor: Any, records: Sequence[dict[str, Any]], collator_class: type, **options: Any
) -> dict[str, dict]:
    """Return {"right padding": batch, "left padding": batch} of the records
    through a vlmlib collator.
    """
    return {
        f"{side} padding": collator_class(processor, padding_side=side, **options)(list(records))
        for side in ("right", "left")
    }


def _reference_answer_mask(
    input_ids: Any,
    attention_mask: Any,
    im_start_id: int,
    im_end_id: int,
    assistant_header_ids: Sequence[int],
) -> Any:
    """Return `vlmlib.collators.find_answer_mask`'s result as plain lists, or
    `_Raised` when it raises.
    """
    from vlmlib.collators import find_answer_mask

    try:
        return _to_plain(
            find_answer_mask(
                input_ids, attention_mask, im_start_id, im_end_id, assistant_header_ids
            )
        )
    except ValueError:
        return _Raised("ValueError")


def check_build_v2_labels(
    function: Callable[..., Any], processor: Any, records: Sequence[dict[str, Any]]
) -> CheckResult:
    """Check V2's labels (padding and vision tokens set to -100) against
    `CollatorV2` (lab 03, exercise 3.1).

    Args:
        function: the student's `build_v2_labels(input_ids, attention_mask, vision_token_ids)`.
        processor, records: real cases are built from these, with right and left padding.
    """
    from types import SimpleNamespace

    import torch

    from vlmlib.collators import CollatorV2
    from vlmlib.tokens import VISION_TOKENS

    def expected(input_ids: Any, attention_mask: Any, vision_token_ids: list[int]) -> list:
        stand_in = SimpleNamespace(
            vision_token_ids=torch.tensor(vision_token_ids)
        )  # CollatorV2's method, on toy ids
        labels = CollatorV2.mask_padding_and_vision(
            stand_in, {"input_ids": input_ids, "attention_mask": attention_mask}, input_ids.clone()
        )
        return _to_plain(labels)

    toy_vision = [TOY_TOKEN_IDS[token] for token in VISION_TOKENS]
    toy_cases = {  # name -> ((input_ids, attention_mask), hint)
        "one toy example, no padding": (
            _toy_batch([_TOY_USER + _TOY_ANSWER], "right"),
            "start from a copy of input_ids (.clone()) and set the vision tokens to -100.",
        ),
        "two toy examples, right padding": (
            _toy_batch([_TOY_USER + _TOY_ANSWER, _TOY_ANSWER], "right"),
            "positions where attention_mask is 0 are padding: -100.",
        ),
        "two toy examples, left padding": (
            _toy_batch([_TOY_USER + _TOY_ANSWER, _TOY_ANSWER], "left"),
            None,
        ),
        "padding written with an ordinary word's id (11)": (
            _toy_batch([_TOY_USER + _TOY_ANSWER, _TOY_SYSTEM], "right", pad_id=11),
            (
                "find padding with attention_mask == 0, never with the pad token's id: "
                "some tokenizers pad with a real token."
            ),
        ),
    }
    cases = [
        CheckCase(
            name,
            {"input_ids": ids, "attention_mask": mask, "vision_token_ids": toy_vision},
            expected(ids, mask, toy_vision),
            hint,
        )
        for name, ((ids, mask), hint) in toy_cases.items()
    ]
    vision_ids = processor.tokenizer.convert_tokens_to_ids(list(VISION_TOKENS))
    for name, batch in _real_batches(processor, records, CollatorV2).items():
        cases.append(
            CheckCase(
                f"{len(records)} real examples, {name} (CollatorV2's labels)",
                {
                    "input_ids": batch["input_ids"],
                    "attention_mask": batch["attention_mask"],
                    "vision_token_ids": vision_ids,
                },
                _to_plain(batch["labels"]),
                None,
            )
        )
    return run_check(
        _PlainResult(function),
        cases,
        hint="labels = input_ids.clone(); then -100 where attention_mask == 0 "
        "and where torch.isin(input_ids, vision ids).",
    )


def check_find_answer_positions(
    function: Callable[..., Any], processor: Any, records: Sequence[dict[str, Any]]
) -> CheckResult:
    """Check a loop over one unpadded sequence that marks the answer, against
    `find_answer_mask` (exercise 3.2).

    Args:
        function: the student's
            `find_answer_positions(input_ids, im_start_id, im_end_id, assistant_header_ids)`,
            taking and returning lists.
        processor, records: a real case is built from the first record
            (`CollatorV3`, one example, no padding).
    """
    import torch

    from vlmlib.collators import CollatorV3

    def case(
        name: str,
        input_ids: list[int],
        im_start_id: int,
        im_end_id: int,
        header_ids: list[int],
        hint: str | None,
    ) -> CheckCase:
        ids = torch.tensor([input_ids])
        expected = _reference_answer_mask(
            ids, torch.ones_like(ids), im_start_id, im_end_id, header_ids
        )
        return CheckCase(
            name,
            {
                "input_ids": list(input_ids),
                "im_start_id": im_start_id,
                "im_end_id": im_end_id,
                "assistant_header_ids": list(header_ids),
            },
            expected if isinstance(expected, _Raised) else expected[0],
            hint,
        )

    start, end = TOY_TOKEN_IDS["<|im_start|>"], TOY_TOKEN_IDS["<|im_end|>"]
    cases = [
        case(
            "a user turn, then the answer",
            _TOY_USER + _TOY_ANSWER,
            start,
            end,
            _TOY_HEADER,
            (
                "the answer starts after <|im_start|>assistant\\n and ends with its "
                "<|im_end|>, which is marked too."
            ),
        ),
        case(
            "system, user, answer",
            _TOY_SYSTEM + _TOY_USER + _TOY_ANSWER,
            start,
            end,
            _TOY_HEADER,
            None,
        ),
        case(
            "two assistant turns",
            _TOY_USER + _TOY_ANSWER + _TOY_USER + [1, 8, 9, 22, 2, 9],
            start,
            end,
            _TOY_HEADER,
            "keep looking after the first answer: a conversation can have several assistant turns.",
        ),
        case(
            "the words 'assistant\\n' inside the user's text",
            [1, 7, 9, 8, 9, 12, 2, 9] + _TOY_ANSWER,
            start,
            end,
            _TOY_HEADER,
            "a header counts only right after <|im_start|>.",
        ),
        case(
            "an empty answer",
            _TOY_USER + [1, 8, 9, 2, 9],
            start,
            end,
            _TOY_HEADER,
            "an empty answer still has its <|im_end|>.",
        ),
        case(
            "an answer cut off before its <|im_end|>",
            _TOY_USER + _TOY_ANSWER[:-2],
            start,
            end,
            _TOY_HEADER,
            (
                "when the sequence ends inside an assistant turn, raise ValueError: "
                "training on half an answer teaches the model to stop early."
            ),
        ),
    ]
    batch = CollatorV3(processor)(list(records[:1]))
    tokenizer = processor.tokenizer
    cases.append(
        case(
            "a real example from CollatorV3",
            batch["input_ids"][0].tolist(),
            tokenizer.convert_tokens_to_ids("<|im_start|>"),
            tokenizer.convert_tokens_to_ids("<|im_end|>"),
            tokenizer.encode("assistant\n", add_special_tokens=False),
            None,
        )
    )
    return run_check(
        _PlainResult(function),
        cases,
        hint="walk the ids once: at each <|im_start|> followed by the header, "
        "mark everything after the header up to and including the next <|im_end|>.",
    )


def check_build_answer_mask(
    function: Callable[..., Any], processor: Any, records: Sequence[dict[str, Any]]
) -> CheckResult:
    """Check a vectorised answer mask for a padded batch against
    `vlmlib.collators.find_answer_mask` (exercise 3.3).

    Args:
        function: the student's `build_answer_mask(input_ids, attention_mask, im_start_id,
            im_end_id, assistant_header_ids)`.
        processor, records: real batches are built from these (`CollatorV2`),
            with right and left padding.
    """
    from vlmlib.collators import CollatorV2

    start, end = TOY_TOKEN_IDS["<|im_start|>"], TOY_TOKEN_IDS["<|im_end|>"]
    two_turns = _TOY_USER + _TOY_ANSWER + [1, 7, 9, 13, 2, 9, 1, 8, 9, 22, 2, 9]
    toy_cases = {  # name -> ((input_ids, attention_mask), hint)
        "two rows, right padding": (
            _toy_batch([_TOY_USER + _TOY_ANSWER, _TOY_ANSWER], "right"),
            None,
        ),
        "two rows, left padding": (
            _toy_batch([_TOY_USER + _TOY_ANSWER, _TOY_ANSWER], "left"),
            "never use absolute positions: with left padding the turns start later in short rows.",
        ),
        "two assistant turns in one row": (
            _toy_batch([two_turns, _TOY_USER + _TOY_ANSWER], "right"),
            "count <|im_start|> tokens along each row (cumsum) to number the turns.",
        ),
        "left padding written with <|im_end|>'s id": (
            _toy_batch([_TOY_USER + _TOY_ANSWER, _TOY_ANSWER], "left", pad_id=end),
            (
                "count only real tokens: multiply by attention_mask before counting "
                "<|im_start|> and <|im_end|>."
            ),
        ),
        "a row whose answer was cut off": (
            _toy_batch([_TOY_USER + _TOY_ANSWER, _TOY_USER + _TOY_ANSWER[:-2]], "right"),
            "raise ValueError when an assistant turn has no closing <|im_end|>.",
        ),
    }
    cases = [
        CheckCase(
            name,
            {
                "input_ids": ids,
                "attention_mask": mask,
                "im_start_id": start,
                "im_end_id": end,
                "assistant_header_ids": _TOY_HEADER,
            },
            _reference_answer_mask(ids, mask, start, end, _TOY_HEADER),
            hint,
        )
        for name, ((ids, mask), hint) in toy_cases.items()
    ]
    tokenizer = processor.tokenizer
    real_ids = (
        tokenizer.convert_tokens_to_ids("<|im_start|>"),
        tokenizer.convert_tokens_to_ids("<|im_end|>"),
        tokenizer.encode("assistant\n", add_special_tokens=False),
    )
    for name, batch in _real_batches(processor, records, CollatorV2).items():
        inputs = {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "im_start_id": real_ids[0],
            "im_end_id": real_ids[1],
            "assistant_header_ids": real_ids[2],
        }
        cases.append(
            CheckCase(
                f"{len(records)} real examples, {name}",
                inputs,
                _reference_answer_mask(*inputs.values()),
                None,
            )
        )
    return run_check(
        _PlainResult(function),
        cases,
        hint="mark assistant-header starts, number the turns with cumsum, and keep "
        "positions after the header up to the turn's <|im_end|>; return a bool tensor.",
    )
