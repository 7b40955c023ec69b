"""Box conventions and the conversions between them.

Why: the course meets three conventions for the same rectangle, and mixing them up silently
puts a box in the wrong place. Every name says which one it holds:

| name       | order                        | units                 | comes from                 |
| ---------- | ---------------------------- | --------------------- | -------------------------- |
| `box_hub`  | [y_min, x_min, y_max, x_max] | image fractions, 0-1  | the Hub dataset's `bbox`   |
| `box_xyxy` | (x1, y1, x2, y2)             | pixels                | drawing, IoU, COCO metrics |
| `box_qwen` | (x1, y1, x2, y2)             | integers in [0, 1000) | Qwen2-VL's answers         |

Qwen2-VL's grid value is the fraction times 1000, truncated (floor): a fraction in
[k/1000, (k+1)/1000) is written k, and the image's far edge (1.0) is 999, never 1000.

Explained in: chapter 01, "Three box conventions".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "QWEN_GRID_SIZE",
    "convert_hub_box_to_qwen",
    "convert_hub_box_to_xyxy",
    "convert_qwen_box_to_hub",
    "convert_qwen_box_to_xyxy",
    "convert_xyxy_box_to_hub",
]

# Qwen2-VL writes coordinates as integers in [0, 1000): fraction x 1000,
# truncated (Qwen2-VL report, sec. 2.2).
QWEN_GRID_SIZE = 1000


def convert_hub_box_to_xyxy(
    box_hub: Sequence[float], width_px: int, height_px: int
) -> tuple[float, float, float, float]:
    """Convert [y_min, x_min, y_max, x_max] in 0-1 to (x1, y1, x2, y2) in pixels.

    Why: drawing and IoU work in pixels with x first.
    Explained in: chapter 01, "Three box conventions".
    """
    y_min, x_min, y_max, x_max = box_hub
    return (x_min * width_px, y_min * height_px, x_max * width_px, y_max * height_px)


def convert_xyxy_box_to_hub(
    box_xyxy: Sequence[float], width_px: int, height_px: int
) -> list[float]:
    """Convert (x1, y1, x2, y2) in pixels to the Hub's [y_min, x_min, y_max, x_max] in 0-1."""
    x1, y1, x2, y2 = box_xyxy
    return [y1 / height_px, x1 / width_px, y2 / height_px, x2 / width_px]


def convert_hub_box_to_qwen(box_hub: Sequence[float]) -> tuple[int, int, int, int]:
    """Convert [y_min, x_min, y_max, x_max] in 0-1 to Qwen's (x1, y1, x2, y2),
    integers in [0, 1000).

    Why: this is the form the model reads and writes in its answers, so the
    training target must use it.
    Explained in: chapter 01, "Three box conventions"; lab 01, exercise 1.

    Args:
        box_hub: fractions of the image side in 0-1 (`data.clean_split` clamps
            them into that range).
    Returns:
        Each value times 1000, truncated (floor) and capped at 999: 0.9996 -> 999, 1.0 -> 999.
    """
    y_min, x_min, y_max, x_max = box_hub
    # Qwen2-VL's convention: the fraction times 1000, truncated, so 0-999 and
    # never 1000 (see QWEN_GRID_SIZE).
    return tuple(
        min(math.floor(value * QWEN_GRID_SIZE), QWEN_GRID_SIZE - 1)  # type: ignore[return-value]
        for value in (x_min, y_min, x_max, y_max)
    )


def convert_qwen_box_to_hub(box_qwen: Sequence[float]) -> list[float]:
    """Convert Qwen's (x1, y1, x2, y2) on the [0, 1000) grid to [y_min, x_min, y_max, x_max] in 0-1.

    Each value k becomes k / 1000, the near edge of its grid cell, so that going back to the grid
    gives k again (tests/test_boxes.py checks every k). Qwen's own code is not consistent on the
    way back: Qwen-VL's tokenizer draws boxes at `x1 / 1000 * w` (`draw_bbox_on_latest_picture` in
    `tokenization_qwen.py`), its RefCOCO script divides by 999 (`eval_mm/evaluate_grounding.py`).
    The two differ by under one grid step (0.1% of the side), far below annotation noise. An
    answer of 1000 (off the grid, but the parser keeps it) maps to 1.0.
    """
    x1, y1, x2, y2 = box_qwen
    return [y1 / QWEN_GRID_SIZE, x1 / QWEN_GRID_SIZE, y2 / QWEN_GRID_SIZE, x2 / QWEN_GRID_SIZE]


def convert_qwen_box_to_xyxy(
    box_qwen: Sequence[float], width_px: int, height_px: int
) -> tuple[float, float, float, float]:
    """Convert Qwen's (x1, y1, x2, y2) on the [0, 1000) grid to pixels of an
    image of the given size.

    Why: the grid is relative to the image, so the same answer means different
    pixels on different images. Like `convert_qwen_box_to_hub`, the value k maps
    to k / 1000 of the side (the near edge of its cell).
    """
    x1, y1, x2, y2 = box_qwen
    scale_x, scale_y = width_px / QWEN_GRID_SIZE, height_px / QWEN_GRID_SIZE
    return (x1 * scale_x, y1 * scale_y, x2 * scale_x, y2 * scale_y)
