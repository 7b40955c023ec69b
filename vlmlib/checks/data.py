"""Check the data exercises: box conversions, per-image box statistics, the
answer text, image-token counts.

Why: every later lab trains on these boxes, answers and token counts, so each is compared with the
`vlmlib` function that produces it (`boxes`, `dataset_stats`, `data`).
Explained in: book/labs, lab 01 (exercises 1.1 to 1.4) and lab 02 (exercises 2.1 and 2.2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from vlmlib.boxes import convert_hub_box_to_qwen, convert_qwen_box_to_hub
from vlmlib.checks.runner import CheckCase, CheckResult, run_check
from vlmlib.data import format_answer
from vlmlib.dataset_stats import (
    MERGE_SIZE,
    compute_image_token_budget,
    describe_record_boxes,
)

__all__ = [
    "check_convert_hub_box_to_qwen",
    "check_convert_qwen_box_to_hub",
    "check_count_image_tokens",
    "check_count_image_tokens_from_grid",
    "check_describe_record_boxes",
    "check_format_answer",
]


# --- lab 01: the data ---

# name -> (box_hub ([y_min, x_min, y_max, x_max], 0-1), hint when this case fails first)
_HUB_BOXES = {
    "a box in the middle of the image": ([0.25, 0.1, 0.75, 0.6], None),
    "the whole image": (
        [0.0, 0.0, 1.0, 1.0],
        "the grid is [0, 1000): each value is int(fraction * 1000), truncated, and the far edge "
        "1.0 is written 999, never 1000, so cap each value at 999.",
    ),
    "a tall, narrow box": ([0.1, 0.4, 0.9, 0.45], None),
    "values where truncating and rounding differ": (
        [0.12345, 0.6789, 0.5, 0.99951],
        (
            "Qwen2-VL truncates: int(0.6789 * 1000) is 678, where round() gives 679; and "
            "0.99951 gives 999, not 1000."
        ),
    ),
}
_QWEN_GRID_HINT = (
    "the Hub writes y first, Qwen writes x first: (x_min, y_min, x_max, y_max), each times 1000, "
    "truncated to an int (int(), not round()) and capped at 999."
)


def check_convert_hub_box_to_qwen(function: Callable[[list[float]], Any]) -> CheckResult:
    """Check a function that turns `box_hub` into Qwen's (x1, y1, x2, y2) in
    [0, 1000) (lab 01, exercise 1.1).

    Two cases tell Qwen2-VL's convention (times 1000, truncated, at most 999) from round():
    `convert_hub_box_to_qwen` gives (0, 0, 999, 999) and (678, 123, 999, 500)
    for them, round() gives (0, 0, 1000, 1000) and (679, 123, 1000, 500).
    """
    cases = [
        CheckCase(name, {"box_hub": box_hub}, convert_hub_box_to_qwen(box_hub), hint)
        for name, (box_hub, hint) in _HUB_BOXES.items()
    ]
    return run_check(function, cases, hint=_QWEN_GRID_HINT)


def check_convert_qwen_box_to_hub(function: Callable[[Sequence[int]], Any]) -> CheckResult:
    """Check a function that turns Qwen's (x1, y1, x2, y2) in [0, 1000) back
    into `box_hub` (exercise 1.2).
    """
    boxes_qwen = {
        "a box in the middle of the image": (100, 250, 600, 750),
        "the whole image": (0, 0, 999, 999),
        "a wide, flat box": (50, 700, 950, 760),
        "a box near the bottom-right corner": (812, 903, 999, 987),
    }
    cases = [
        CheckCase(name, {"box_qwen": box_qwen}, convert_qwen_box_to_hub(box_qwen))
        for name, box_qwen in boxes_qwen.items()
    ]
    return run_check(
        function, cases, hint="divide by 1000 and put y first: [y_min, x_min, y_max, x_max]."
    )


def _record(
    width_px: int, height_px: int, boxes_hub: list[list[float]], category_names: list[str]
) -> dict[str, Any]:
    return {
        "image_id": "check",
        "width": width_px,
        "height": height_px,
        "objects": {
            "bbox": boxes_hub,
            "category_id": [0] * len(boxes_hub),
            "category_name": category_names,
        },
    }


def check_describe_record_boxes(function: Callable[[dict[str, Any]], Any]) -> CheckResult:
    """Check per-image box statistics against
    `vlmlib.dataset_stats.describe_record_boxes` (exercise 1.3).
    """
    records = {
        "one square box in a square image": (
            _record(200, 200, [[0.25, 0.25, 0.75, 0.75]], ["nutrition-table"]),
            None,
        ),
        "one box in a wide image (aspect ratio in pixels, not fractions)": (
            _record(400, 100, [[0.1, 0.1, 0.9, 0.3]], ["nutrition-table"]),
            (
                "measure the aspect ratio in pixels: width fraction x image width over "
                "height fraction x image height."
            ),
        ),
        "two boxes, the largest listed second": (
            _record(
                300,
                300,
                [[0.0, 0.0, 0.2, 0.2], [0.5, 0.2, 0.9, 0.9]],
                ["nutrition-table-small", "nutrition-table"],
            ),
            "the largest box is the one with the largest area, wherever it is in the list.",
        ),
        "three boxes": (
            _record(
                640,
                480,
                [[0.1, 0.1, 0.5, 0.6], [0.6, 0.1, 0.9, 0.3], [0.6, 0.5, 0.95, 0.9]],
                ["nutrition-table", "nutrition-table-text", "nutrition-table-small"],
            ),
            "area_fraction adds up the areas of all the boxes.",
        ),
    }
    cases = [
        CheckCase(name, {"record": record}, describe_record_boxes(record), hint)
        for name, (record, hint) in records.items()
    ]
    return run_check(
        function,
        cases,
        tolerance=1e-4,
        hint="return a dict with num_boxes, area_fraction and largest_box_aspect_ratio.",
    )


def check_format_answer(function: Callable[[dict[str, list]], Any]) -> CheckResult:
    """Check a function that writes the training answer for a record's objects
    against `vlmlib.data.format_answer` (1.4).
    """
    examples = {
        "one table": _record(100, 100, [[0.34, 0.12, 0.91, 0.56]], ["nutrition-table"]),
        "two tables of different categories": _record(
            100,
            100,
            [[0.1, 0.1, 0.5, 0.6], [0.6, 0.7, 0.8, 0.95]],
            ["nutrition-table", "nutrition-table-small-energy"],
        ),
        "coordinates where truncating and rounding differ": _record(
            100, 100, [[0.12345, 0.6789, 0.5, 0.99951]], ["nutrition-table-text"]
        ),
    }
    cases = [
        CheckCase(name, {"objects": record["objects"]}, format_answer(record["objects"]))
        for name, record in examples.items()
    ]
    return run_check(
        function,
        cases,
        hint="one group per box, no spaces: <|object_ref_start|>LABEL<|object_ref_end|>"
        "<|box_start|>(x1,y1),(x2,y2)<|box_end|>, coordinates from exercise 1.1.",
    )


# --- lab 02: the model ---


def check_count_image_tokens_from_grid(function: Callable[[Sequence[int]], Any]) -> CheckResult:
    """Check a function that turns one row of `image_grid_thw` into its number
    of `<|image_pad|>` tokens (2.1).
    """
    grids = {
        "a 112x168 px image": [1, 12, 8],
        "a 224x224 px image": [1, 16, 16],
        "a 728x504 px image": [1, 36, 52],
    }
    cases = [
        CheckCase(name, {"grid_thw": grid}, grid[0] * grid[1] * grid[2] // MERGE_SIZE**2)
        for name, grid in grids.items()
    ]
    return run_check(
        function,
        cases,
        hint="the grid counts 14 px patches (time, height, width); 2x2 patches merge into "
        "one token, so divide their product by 4.",
    )


def check_count_image_tokens(function: Callable[[int, int, int, int], Any]) -> CheckResult:
    """Check image-token counts for a size and pixel budget against
    `compute_image_token_budget` (exercise 2.2).
    """
    small, full = (
        (12544, 50176),
        (200704, 501760),
    )  # (min_pixels, max_pixels): a small budget, and full.yaml's
    sizes = {  # name -> (width_px, height_px, (min_pixels, max_pixels), hint)
        "already a multiple of 28, inside the budget": (224, 224, small, None),
        "a side that must be rounded to a multiple of 28": (
            113,
            175,
            small,
            "round each side to the nearest multiple of 28.",
        ),
        "a phone photo above max_pixels": (
            3024,
            4032,
            full,
            "above max_pixels, divide both sides by "
            "sqrt(width * height / max_pixels), then round DOWN to a multiple of 28.",
        ),
        "a small image below min_pixels": (
            60,
            80,
            full,
            "below min_pixels, multiply both sides by "
            "sqrt(min_pixels / (width * height)), then round UP to a multiple of 28.",
        ),
        "a very wide image": (1400, 100, full, None),
    }
    cases = [
        CheckCase(
            name,
            {"width_px": width, "height_px": height, "min_pixels": low, "max_pixels": high},
            compute_image_token_budget(width, height, low, high).num_image_tokens,
            hint,
        )
        for name, (width, height, (low, high), hint) in sizes.items()
    ]
    return run_check(
        function,
        cases,
        hint="resize as in chapter 02, then count (height / 28) * (width / 28) tokens.",
    )
