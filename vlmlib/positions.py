"""Qwen2-VL's M-RoPE position ids: three per token (time, height, width) instead of one.

Why: a language model with rotary embeddings (RoPE) tells tokens apart by one position each, their
index in the sequence. Qwen2-VL's multimodal RoPE (M-RoPE) gives every token three: text tokens get
the same number three times, while an image token gets the row and column of its merged patch, so
the language model sees the image as a grid and not as one long line. Because an image then spans
only max(rows, columns) positions, the text after it resumes at a smaller number than its index.
Explained in: chapter 02, "M-RoPE: three position ids per token".

`compute_mrope_position_ids` writes the rule out for images, one sequence at a time, so it can be
read; `get_model_mrope_position_ids` asks the model's own `get_rope_index`, which is what training
and generation use. The tests check that the two agree.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel

__all__ = ["MROPE_AXES", "compute_mrope_position_ids", "get_model_mrope_position_ids"]

MROPE_AXES = ("temporal", "height", "width")  # the order of the three rows of the position ids


def compute_mrope_position_ids(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    image_grid_thw: torch.Tensor,
    image_pad_id: int,
    merge_size: int = 2,
) -> torch.Tensor:
    """Return the M-RoPE position ids of a batch of image-and-text sequences.

    Why: the rule behind Qwen2-VL's positions, written so it can be read (transformers' version
    also handles videos and timing); `get_model_mrope_position_ids` gives the same numbers.
    Explained in: chapter 02, "M-RoPE: three position ids per token".

    Args:
        input_ids: (batch, seq_len) int64 from the processor, image pads already expanded.
        attention_mask: (batch, seq_len) 0 on padding, which gets position 0 on all three axes.
        image_grid_thw: (num_images, 3) patches per image as (frames, rows, columns), in order of
            appearance across the batch.
        image_pad_id: the id of `<|image_pad|>` (`vlmlib.tokens.IMAGE_PAD_TOKEN`).
        merge_size: patches per side of one image token (2 in Qwen2-VL: 2x2 patches merge).
    Returns:
        (3, batch, seq_len) int64: rows are temporal, height and width positions (`MROPE_AXES`).
    """
    position_ids = torch.zeros(3, *input_ids.shape, dtype=torch.long)
    grids = iter(image_grid_thw.tolist())
    for row in range(input_ids.shape[0]):
        is_kept = attention_mask[row].bool()
        position_ids[:, row, is_kept] = _compute_one_sequence(
            input_ids[row, is_kept].tolist(), grids, image_pad_id, merge_size
        )
    return position_ids


def _compute_one_sequence(
    token_ids: list[int], grids: Iterator[list[int]], image_pad_id: int, merge_size: int
) -> torch.Tensor:
    """Return (3, len(token_ids)) positions for one unpadded sequence, taking its images' grids."""
    columns = []
    next_position = 0
    index = 0
    while index < len(token_ids):
        if token_ids[index] != image_pad_id:  # a text token: one position, repeated on all axes
            columns.append(torch.full((3, 1), next_position))
            next_position += 1
            index += 1
            continue
        num_frames, num_rows, num_columns = next(grids)
        num_rows, num_columns = num_rows // merge_size, num_columns // merge_size
        frame, height, width = torch.meshgrid(
            torch.arange(num_frames),
            torch.arange(num_rows),
            torch.arange(num_columns),
            indexing="ij",
        )  # each (frames, rows, columns), read row by row as the pads are
        columns.append(torch.stack([frame, height, width]).reshape(3, -1) + next_position)
        # The image spans max(rows, columns) positions, so the text after it starts just beyond.
        next_position += max(num_rows, num_columns)
        index += num_frames * num_rows * num_columns
    return torch.cat(columns, dim=1)


def get_model_mrope_position_ids(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Return the M-RoPE position ids the model itself computes for a batch.

    Why: these are the positions training and generation use; the model computes them inside
    `forward` from `input_ids`, `mm_token_type_ids` and `image_grid_thw`, and never returns them.
    Explained in: chapter 02, "M-RoPE: three position ids per token".

    Args:
        model: a Qwen2VLForConditionalGeneration, plain, quantised or wrapped by PEFT.
        batch: a collator's or processor's output with `input_ids`, `attention_mask`,
            `mm_token_type_ids` (batch, seq_len) and `image_grid_thw` (num_images, 3).
    Returns:
        (3, batch, seq_len) int64, as `compute_mrope_position_ids`.
    Raises:
        ValueError: when the model has no Qwen2VLModel inside, or the batch lacks a key.
    """
    inner = next((module for module in model.modules() if isinstance(module, Qwen2VLModel)), None)
    if inner is None:
        raise ValueError(
            f"{type(model).__name__} contains no Qwen2VLModel, so it has no M-RoPE to ask. "
            "Pass the model from vlmlib.models.load_model_and_processor."
        )
    missing = {"input_ids", "attention_mask", "mm_token_type_ids", "image_grid_thw"} - set(batch)
    if missing:
        raise ValueError(
            f"the batch lacks {sorted(missing)}; pass the processor's or a collator's whole output."
        )
    device = batch["input_ids"].device
    position_ids, _ = inner.get_rope_index(
        batch["input_ids"],
        mm_token_type_ids=batch["mm_token_type_ids"],
        image_grid_thw=batch["image_grid_thw"].to(device),
        attention_mask=batch["attention_mask"],
    )
    return position_ids
