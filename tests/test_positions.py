"""Tests for vlmlib.positions: M-RoPE position ids, written out and as the model computes them."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vlmlib import collators
from vlmlib.positions import compute_mrope_position_ids, get_model_mrope_position_ids
from vlmlib.tokens import IMAGE_PAD_TOKEN


def test_compute_mrope_position_ids_resumes_text_after_the_longest_side_of_the_image() -> None:
    pad = 99
    # Two text tokens, an image of 4x6 patches (2x3 tokens after the 2x2 merge), one text token.
    input_ids = torch.tensor([[5, 6, pad, pad, pad, pad, pad, pad, 7]])
    position_ids = compute_mrope_position_ids(
        input_ids, torch.ones_like(input_ids), torch.tensor([[1, 4, 6]]), image_pad_id=pad
    )
    # Worked by hand: the image starts at 2; rows 2-3, columns 2-4; the text
    # resumes at 2 + max(2, 3).
    expected = torch.tensor(
        [
            [0, 1, 2, 2, 2, 2, 2, 2, 5],  # temporal: one frame, all at the image's start
            [0, 1, 2, 2, 2, 3, 3, 3, 5],  # height: the token's row
            [0, 1, 2, 3, 4, 2, 3, 4, 5],  # width: the token's column
        ]
    )
    torch.testing.assert_close(position_ids[:, 0], expected)


@pytest.mark.parametrize("padding_side", ["right", "left"], ids=["right-padding", "left-padding"])
def test_compute_mrope_position_ids_equals_the_models_get_rope_index(
    tiny_model, tiny_processor, tiny_splits, padding_side: str
) -> None:
    records = [dict(tiny_splits["train"][index]) for index in range(3)]
    # A wide and a tall image, so that rows and columns differ and the padding is uneven.
    records[1]["image"] = records[1]["image"].resize((300, 120), Image.Resampling.BILINEAR)
    records[2]["image"] = records[2]["image"].resize((90, 260), Image.Resampling.BILINEAR)
    batch = collators.CollatorV3(tiny_processor, padding_side=padding_side)(records)
    image_pad_id = tiny_processor.tokenizer.convert_tokens_to_ids(IMAGE_PAD_TOKEN)
    ours = compute_mrope_position_ids(
        batch["input_ids"],
        batch["attention_mask"],
        batch["image_grid_thw"],
        image_pad_id,
        merge_size=tiny_processor.image_processor.merge_size,
    )
    models_own = get_model_mrope_position_ids(tiny_model, batch)
    assert models_own.shape == (3, *batch["input_ids"].shape)
    torch.testing.assert_close(ours, models_own)


def test_get_model_mrope_position_ids_names_the_missing_keys(tiny_model) -> None:
    input_ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        get_model_mrope_position_ids(
            tiny_model, {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        )


def test_get_model_mrope_position_ids_refuses_a_model_without_qwen2_vl_inside() -> None:
    with pytest.raises(ValueError, match="contains no Qwen2VLModel"):
        get_model_mrope_position_ids(torch.nn.Linear(2, 2), {})
