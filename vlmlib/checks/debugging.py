"""Check the debugging exercises: trained tokens, labels that leave the answer, a fixed collator.

Why: a masking bug trains the model on the wrong tokens without any error, so each check runs the
student's code on real batches of the lab's records and compares with `vlmlib` itself: the answer
mask of `vlmlib.collators.find_answer_mask` and the labels of `CollatorV3`.
Explained in: book/labs, lab 07 (exercises 7.1 to 7.3); chapter 03, "V3: learn from the answer
only".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from vlmlib.checks.runner import CheckCase, CheckResult, run_check

if (
    TYPE_CHECKING
):  # imported where used, so that `from vlmlib import checks` stays light for labs 1 and 2
    import torch
    from transformers import Qwen2VLProcessor

__all__ = ["check_find_mislabelled_tokens", "check_fixed_collator", "check_list_trained_tokens"]

TRAINED_OUTSIDE_ANSWER = "trained, not in the answer"
ANSWER_NOT_TRAINED = "in the answer, not trained"
WRONG_LABEL = "trained with the wrong label"

IGNORE_INDEX = -100  # vlmlib.collators.IGNORE_INDEX, the label PyTorch's cross-entropy skips
Batch = dict[str, "torch.Tensor"]
Mislabelled = dict[str, list[tuple[int, int, str]]]


def _build_batches(
    processor: Qwen2VLProcessor, records: Sequence[dict[str, Any]]
) -> dict[str, Batch]:
    """Return labelled batches of the records: V1, V2, V3 (right and left padding) and a shifted V3.

    The shifted batch moves V3's labels one position left within each answer (the header's newline
    is trained, the closing `<|im_end|>` is not): the bug the lab plants, made without its code.
    """
    import torch

    from vlmlib.collators import CollatorV1, CollatorV2, CollatorV3

    batches = {
        "CollatorV1": CollatorV1(processor)(records),
        "CollatorV2": CollatorV2(processor)(records),
        "CollatorV3": CollatorV3(processor)(records),
        "CollatorV3, padded on the left": CollatorV3(processor, padding_side="left")(records),
    }
    shifted = {key: value.clone() for key, value in batches["CollatorV3"].items()}
    is_trained = shifted["labels"] != IGNORE_INDEX
    moved = torch.zeros_like(is_trained)
    moved[:, :-1] = is_trained[:, 1:]
    shifted["labels"] = torch.where(
        moved, shifted["input_ids"], torch.full_like(shifted["labels"], IGNORE_INDEX)
    )
    batches["CollatorV3 shifted one token left"] = shifted
    return batches


def _decode_each(tokenizer, token_ids: Sequence[int]) -> list[str]:
    return [tokenizer.decode([token_id]) for token_id in token_ids]


def _trained_tokens_reference(
    input_ids: torch.Tensor, labels: torch.Tensor, tokenizer
) -> list[str]:
    """Return the text of every trained position of one row, in order."""
    return _decode_each(tokenizer, input_ids[labels != IGNORE_INDEX].tolist())


def _answer_mask(batch: Batch, tokenizer) -> torch.Tensor:
    """Return V3's answer mask: the answer tokens and the `<|im_end|>` that closes them."""
    from vlmlib.collators import find_answer_mask
    from vlmlib.tokens import IM_END_TOKEN, IM_START_TOKEN

    return find_answer_mask(
        batch["input_ids"],
        batch["attention_mask"],
        tokenizer.convert_tokens_to_ids(IM_START_TOKEN),
        tokenizer.convert_tokens_to_ids(IM_END_TOKEN),
        tokenizer.encode("assistant\n", add_special_tokens=False),
    )


def _list_positions(batch: Batch, where: torch.Tensor, tokenizer) -> list[tuple[int, int, str]]:
    import torch

    return [
        (row, position, tokenizer.decode([int(batch["input_ids"][row, position])]))
        for row, position in torch.nonzero(where).tolist()
    ]


def _mislabelled_reference(batch: Batch, tokenizer) -> Mislabelled:
    """Return the positions whose labels disagree with the answer mask: (row, position, token)."""
    is_trained = batch["labels"] != IGNORE_INDEX
    is_answer = _answer_mask(batch, tokenizer)
    return {
        TRAINED_OUTSIDE_ANSWER: _list_positions(batch, is_trained & ~is_answer, tokenizer),
        ANSWER_NOT_TRAINED: _list_positions(batch, is_answer & ~is_trained, tokenizer),
    }


def check_list_trained_tokens(
    function: Callable[[torch.Tensor, torch.Tensor, Any], Any],
    processor: Qwen2VLProcessor,
    records: Sequence[dict[str, Any]],
) -> CheckResult:
    """Check listing the text of the trained tokens of one row (lab 07, exercise 7.1).

    Args:
        function: the student's `list_trained_tokens(input_ids, labels, tokenizer)`, on one row.
        processor: the lab's processor; records: the lab's training records (two or more).
    """
    batches = _build_batches(processor, records)
    tokenizer = processor.tokenizer

    def list_trained_tokens_of(labels_from: str, row: int) -> Any:
        batch = batches[labels_from]
        return function(batch["input_ids"][row].clone(), batch["labels"][row].clone(), tokenizer)

    list_trained_tokens_of.__name__ = getattr(function, "__name__", "list_trained_tokens")
    settings = {  # name -> (labels from, row, hint)
        "V3, the first row": ("CollatorV3", 0, None),
        "V3, the last row (the longest answer)": ("CollatorV3", len(records) - 1, None),
        "V3 padded on the left, the first row": (
            "CollatorV3, padded on the left",
            0,
            "padding is -100 too: only positions with a label count.",
        ),
        "V2, the first row (the prompt is trained too)": ("CollatorV2", 0, None),
        "the bug, made by hand: V3 shifted one token left": (
            "CollatorV3 shifted one token left",
            0,
            None,
        ),
    }
    cases = [
        CheckCase(
            name,
            {"labels_from": labels_from, "row": row},
            _trained_tokens_reference(
                batches[labels_from]["input_ids"][row],
                batches[labels_from]["labels"][row],
                tokenizer,
            ),
            hint,
        )
        for name, (labels_from, row, hint) in settings.items()
    ]
    return run_check(
        list_trained_tokens_of,
        cases,
        hint="keep the positions whose label is not -100, then decode each id on its own.",
    )


def check_find_mislabelled_tokens(
    function: Callable[[Batch, Any], Any],
    processor: Qwen2VLProcessor,
    records: Sequence[dict[str, Any]],
) -> CheckResult:
    """Check the comparison of a batch's labels with V3's answer mask (lab 07, exercise 7.2).

    Args:
        function: the student's `find_mislabelled_tokens(batch, tokenizer)`.
        processor: the lab's processor; records: the lab's training records.
    """
    batches = _build_batches(processor, records)
    tokenizer = processor.tokenizer

    def find_mislabelled_tokens_in(labels_from: str) -> Any:
        return function(
            {key: value.clone() for key, value in batches[labels_from].items()}, tokenizer
        )

    find_mislabelled_tokens_in.__name__ = getattr(function, "__name__", "find_mislabelled_tokens")
    settings = {  # name -> (labels from, hint)
        "V3's own labels: nothing to report": (
            "CollatorV3",
            "V3's labels are the answer mask: both lists are empty.",
        ),
        "V3 padded on the left": (
            "CollatorV3, padded on the left",
            "build the answer mask from the batch's own attention_mask.",
        ),
        "the bug, made by hand: V3 shifted one token left": (
            "CollatorV3 shifted one token left",
            None,
        ),
        "V2: the prompt and the newlines after each turn are trained": ("CollatorV2", None),
        "V1: padding and the image too": ("CollatorV1", None),
    }
    cases = [
        CheckCase(
            name,
            {"labels_from": labels_from},
            _mislabelled_reference(batches[labels_from], tokenizer),
            hint,
        )
        for name, (labels_from, hint) in settings.items()
    ]
    return run_check(
        find_mislabelled_tokens_in,
        cases,
        hint=f"two keys, {TRAINED_OUTSIDE_ANSWER!r} and {ANSWER_NOT_TRAINED!r}; each a "
        "list of (row, position, token text) in row-then-position order.",
    )


def _compare_with_v3(labels: torch.Tensor, reference: Batch, tokenizer) -> dict[str, Any]:
    """Return where `labels` differ from CollatorV3's, as (row, position, token) lists per kind."""
    if tuple(labels.shape) != tuple(reference["labels"].shape):
        return {"labels shape": tuple(labels.shape)}
    is_trained, should_train = labels != IGNORE_INDEX, reference["labels"] != IGNORE_INDEX
    wrong_value = is_trained & should_train & (labels != reference["labels"])
    return {
        TRAINED_OUTSIDE_ANSWER: _list_positions(reference, is_trained & ~should_train, tokenizer),
        ANSWER_NOT_TRAINED: _list_positions(reference, should_train & ~is_trained, tokenizer),
        WRONG_LABEL: _list_positions(reference, wrong_value, tokenizer),
    }


def check_fixed_collator(
    collator_class: type, processor: Qwen2VLProcessor, records: Sequence[dict[str, Any]]
) -> CheckResult:
    """Check a collator's labels against CollatorV3's on the same records (lab 07, exercise 7.3).

    The class is built as `collator_class(processor, padding_side=...)` and called on real batches;
    every case expects no position where its labels and V3's disagree.
    """
    from vlmlib.collators import CollatorV3

    tokenizer = processor.tokenizer

    def collate_and_compare(batch_of: str, padding_side: str) -> dict[str, Any]:
        chosen = {"the first record": records[:1], "all the records": records}[batch_of]
        labels = collator_class(processor, padding_side=padding_side)(chosen)["labels"]
        reference = CollatorV3(processor, padding_side=padding_side)(chosen)
        return _compare_with_v3(labels, reference, tokenizer)

    collate_and_compare.__name__ = getattr(collator_class, "__name__", "collator")
    no_difference = {TRAINED_OUTSIDE_ANSWER: [], ANSWER_NOT_TRAINED: [], WRONG_LABEL: []}
    settings = {  # name -> (batch of, padding side, hint)
        "one record": ("the first record", "right", None),
        f"{len(records)} records of different lengths, padded on the right": (
            "all the records",
            "right",
            None,
        ),
        f"{len(records)} records, padded on the left": (
            "all the records",
            "left",
            "search each row's own ids: with left padding the answer does "
            "not start at the same position in every row.",
        ),
    }
    cases = [
        CheckCase(name, {"batch_of": batch_of, "padding_side": side}, no_difference, hint)
        for name, (batch_of, side, hint) in settings.items()
    ]
    return run_check(
        collate_and_compare,
        cases,
        hint="train from the first answer token after '<|im_start|>assistant\\n' up to "
        "and including the <|im_end|> that closes it; the token-role table shows "
        "where each one is.",
    )
