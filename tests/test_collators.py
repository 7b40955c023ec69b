"""Proofs for vlmlib.collators: the exact tokens each version trains on, checked
against independent expectations.
"""

from __future__ import annotations

import pytest
import torch
from qwen_vl_utils import process_vision_info
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from vlmlib.collators import (
    IGNORE_INDEX,
    CollatorV1,
    CollatorV2,
    CollatorV3,
    build_collator,
    find_answer_mask,
)
from vlmlib.data import build_conversation, format_answer
from vlmlib.models import get_pixel_budget
from vlmlib.tokens import IM_END_TOKEN, IM_START_TOKEN, VISION_TOKENS

PADDING_SIDES = ["right", "left"]


@pytest.fixture(scope="module")
def mixed_records(synthetic_dataset_dict) -> list[dict]:
    """Four records with 1, 2 and 3 boxes and different image sizes: examples differ in length."""
    train = synthetic_dataset_dict["train"]
    by_count: dict[int, list[int]] = {1: [], 2: [], 3: []}
    for index, objects in enumerate(train["objects"]):
        by_count[len(objects["bbox"])].append(index)
    chosen = [by_count[1][0], by_count[2][0], by_count[3][0], by_count[1][1]]
    return [train[index] for index in chosen]


def _trained_ids(batch: dict[str, torch.Tensor], row: int) -> list[int]:
    return batch["input_ids"][row][batch["labels"][row] != IGNORE_INDEX].tolist()


@pytest.mark.parametrize("padding_side", PADDING_SIDES)
def test_collator_v1_trains_on_every_position(tiny_processor, mixed_records, padding_side):
    batch = CollatorV1(tiny_processor, padding_side=padding_side)(mixed_records)
    assert torch.equal(batch["labels"], batch["input_ids"])


@pytest.mark.parametrize("padding_side", PADDING_SIDES)
def test_collator_v2_masks_padding_and_vision_tokens(tiny_processor, mixed_records, padding_side):
    batch = CollatorV2(tiny_processor, padding_side=padding_side)(mixed_records)
    vision_ids = tiny_processor.tokenizer.convert_tokens_to_ids(list(VISION_TOKENS))
    for row in range(len(mixed_records)):
        real = batch["attention_mask"][row] == 1
        expected = [
            token for token in batch["input_ids"][row][real].tolist() if token not in vision_ids
        ]
        assert _trained_ids(batch, row) == expected
        assert IM_START_TOKEN + "system" in tiny_processor.tokenizer.decode(
            _trained_ids(batch, row)
        )  # still learns the prompt


@pytest.mark.parametrize("padding_side", PADDING_SIDES)
def test_collator_v3_learns_only_answer_tokens(tiny_processor, mixed_records, padding_side):
    batch = CollatorV3(tiny_processor, padding_side=padding_side)(mixed_records)
    for row, record in enumerate(mixed_records):
        # The expectation is computed independently: tokenize the target answer on its own.
        expected = tiny_processor.tokenizer.encode(
            format_answer(record["objects"]) + IM_END_TOKEN, add_special_tokens=False
        )
        assert _trained_ids(batch, row) == expected


@pytest.mark.parametrize("padding_side", PADDING_SIDES)
def test_collator_v3_never_trains_on_image_system_or_user_tokens(
    tiny_processor, mixed_records, padding_side
):
    batch = CollatorV3(tiny_processor, padding_side=padding_side)(mixed_records)
    im_start = tiny_processor.tokenizer.convert_tokens_to_ids(IM_START_TOKEN)
    for row in range(len(mixed_records)):
        ids = batch["input_ids"][row]
        trained = torch.nonzero(batch["labels"][row] != IGNORE_INDEX).flatten()
        assistant_header = (
            torch.nonzero(ids == im_start).flatten().max()
        )  # the last turn is the assistant's
        assert trained.min() > assistant_header + 2  # after "<|im_start|>assistant\n"
        assert batch["attention_mask"][row][trained].all()


def test_collator_v3_trained_positions_are_contiguous_and_end_with_im_end(
    tiny_processor, mixed_records
):
    batch = CollatorV3(tiny_processor)(mixed_records)
    im_end = tiny_processor.tokenizer.convert_tokens_to_ids(IM_END_TOKEN)
    for row in range(len(mixed_records)):
        trained = torch.nonzero(batch["labels"][row] != IGNORE_INDEX).flatten()
        assert torch.equal(trained, torch.arange(int(trained.min()), int(trained.max()) + 1))
        assert batch["input_ids"][row][trained.max()] == im_end


def test_collator_v3_all_tokens_equals_v2_labels(tiny_processor, mixed_records):
    v2 = CollatorV2(tiny_processor)(mixed_records)
    v3 = CollatorV3(tiny_processor, mask_strategy="all_tokens")(mixed_records)
    assert torch.equal(v2["labels"], v3["labels"])


def test_collators_give_identical_inputs_and_differ_only_in_labels(tiny_processor, mixed_records):
    batches = [
        collator(mixed_records)
        for collator in (
            CollatorV1(tiny_processor),
            CollatorV2(tiny_processor),
            CollatorV3(tiny_processor),
        )
    ]
    for key in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw"):
        assert all(torch.equal(batches[0][key], batch[key]) for batch in batches[1:])
    num_trained = [int((batch["labels"] != IGNORE_INDEX).sum()) for batch in batches]
    assert num_trained[0] > num_trained[1] > num_trained[2] > 0


def test_collator_v3_matches_trl_completion_only_collator(tiny_processor, mixed_records):
    """TRL's own collator, given the same data as prompt/completion, trains on the same tokens plus
    the newline the chat template writes after <|im_end|>; V3 leaves that newline out because
    generation stops at <|im_end|> and never produces it (chapter 03 explains)."""
    min_pixels, max_pixels = get_pixel_budget(tiny_processor)
    examples = []
    for record in mixed_records:
        conversation = build_conversation(record, min_pixels=min_pixels, max_pixels=max_pixels)
        images, _ = process_vision_info(conversation)
        conversation[1]["content"][0] = {"type": "image"}  # TRL fills the placeholder from "images"
        examples.append(
            {"prompt": conversation[:2], "completion": conversation[2:], "images": images}
        )
    trl_batch = DataCollatorForVisionLanguageModeling(
        processor=tiny_processor, completion_only_loss=True
    )(examples)
    ours = CollatorV3(tiny_processor)(mixed_records)
    newline = tiny_processor.tokenizer.encode("\n", add_special_tokens=False)
    for row in range(len(mixed_records)):
        assert _trained_ids(trl_batch, row) == _trained_ids(ours, row) + newline
    assert torch.equal(trl_batch["pixel_values"], ours["pixel_values"])


def test_trl_collator_masks_only_padding_and_keeps_vision_tokens_of_a_conversation(
    tiny_processor, mixed_records
):
    """What chapter 03 and CollatorV2's docstring say TRL 1.16 does, unlike V2 and the cookbook.
    If a TRL upgrade starts masking vision tokens, this fails and the text must change."""
    min_pixels, max_pixels = get_pixel_budget(tiny_processor)
    examples = []
    for record in mixed_records:
        conversation = build_conversation(record, min_pixels=min_pixels, max_pixels=max_pixels)
        images, _ = process_vision_info(conversation)
        conversation[1]["content"][0] = {"type": "image"}  # TRL fills the placeholder from "images"
        examples.append({"messages": conversation, "images": images})
    trl_batch = DataCollatorForVisionLanguageModeling(processor=tiny_processor)(examples)
    ours = CollatorV2(tiny_processor)(mixed_records)
    assert torch.equal(trl_batch["input_ids"], ours["input_ids"])
    expected = trl_batch["input_ids"].masked_fill(trl_batch["attention_mask"] == 0, IGNORE_INDEX)
    assert torch.equal(trl_batch["labels"], expected)  # padding is all TRL masks
    vision_ids = torch.tensor(tiny_processor.tokenizer.convert_tokens_to_ids(list(VISION_TOKENS)))
    assert int(torch.isin(trl_batch["labels"], vision_ids).sum()) > 0
    assert int(torch.isin(ours["labels"], vision_ids).sum()) == 0


def test_collator_v3_batch_gives_finite_loss_in_tiny_model(
    tiny_model, tiny_processor, mixed_records
):
    batch = CollatorV3(tiny_processor)(mixed_records)
    with torch.no_grad():
        loss = tiny_model(**batch).loss
    assert torch.isfinite(loss) and loss > 0


def test_collator_v3_error_names_the_example_without_image(tiny_processor, mixed_records):
    broken = [dict(record) for record in mixed_records]
    broken[2]["image"] = None
    with pytest.raises(ValueError, match=r"example 2 of 4 .* with no image"):
        CollatorV3(tiny_processor)(broken)


def test_collator_v3_error_names_the_example_without_boxes(tiny_processor, mixed_records):
    broken = [dict(record) for record in mixed_records]
    broken[1]["objects"] = {"bbox": [], "category_id": [], "category_name": []}
    with pytest.raises(ValueError, match=r"example 1 of 4 .* with no boxes"):
        CollatorV3(tiny_processor)(broken)


@pytest.mark.parametrize("collator_class", [CollatorV1, CollatorV2, CollatorV3])
def test_collators_refuse_an_empty_batch(tiny_processor, collator_class):
    with pytest.raises(ValueError, match="empty batch"):
        collator_class(tiny_processor)([])


def test_collator_v3_refuses_examples_longer_than_max_length(tiny_processor, mixed_records):
    with pytest.raises(ValueError, match=r"longer than max_length=20"):
        CollatorV3(tiny_processor, max_length=20)(mixed_records)


def test_find_answer_mask_refuses_an_answer_cut_by_truncation(tiny_processor, mixed_records):
    batch = CollatorV1(tiny_processor)(mixed_records[:1])
    length = int(batch["attention_mask"][0].sum())
    cut_ids, cut_mask = (
        batch["input_ids"][:, : length - 4],
        batch["attention_mask"][:, : length - 4],
    )
    tokenizer = tiny_processor.tokenizer
    with pytest.raises(
        ValueError, match=r"example 0 of 1: an assistant answer has no closing <\|im_end\|>"
    ):
        find_answer_mask(
            cut_ids,
            cut_mask,
            tokenizer.convert_tokens_to_ids(IM_START_TOKEN),
            tokenizer.convert_tokens_to_ids(IM_END_TOKEN),
            tokenizer.encode("assistant\n", add_special_tokens=False),
        )


def test_find_answer_mask_handles_several_assistant_turns():
    # Token ids are arbitrary small numbers here: 1 = <|im_start|>, 2 =
    # <|im_end|>, 7 8 = "assistant\n", 5 = "user".
    input_ids = torch.tensor([[1, 5, 9, 2, 1, 7, 8, 30, 31, 2, 1, 5, 9, 2, 1, 7, 8, 40, 2, 0]])
    attention_mask = torch.tensor([[1] * 19 + [0]])
    mask = find_answer_mask(
        input_ids, attention_mask, im_start_id=1, im_end_id=2, assistant_header_ids=[7, 8]
    )
    assert input_ids[mask].tolist() == [30, 31, 2, 40, 2]


def test_build_collator_refuses_assistant_only_for_v1_and_v2(tiny_processor):
    with pytest.raises(ValueError, match="cannot mask the prompt"):
        build_collator("v1", tiny_processor, mask_strategy="assistant_only")
    assert isinstance(build_collator("v2", tiny_processor, mask_strategy="all_tokens"), CollatorV2)
    collator = build_collator("v3", tiny_processor, mask_strategy="all_tokens")
    assert isinstance(collator, CollatorV3) and collator.mask_strategy == "all_tokens"
