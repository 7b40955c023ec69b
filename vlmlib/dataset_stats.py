"""Measure the dataset: one row per image, one row per box, and training settings derived from them.

Why: the pixel budget, the prompt and the generation length are choices that the data should make,
not habit. These functions turn the records into pandas DataFrames that chapter 01 plots, and into
recommendations with the numbers that justify each one.
Explained in: chapter 01, "What this means for training".

The functions read only `width`, `height` and `objects`, never the image itself,
so they run over the whole Hub dataset in a second. Box columns use the Hub's
fractions of the image (0-1) unless their name ends in `_px`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import pandas as pd
from transformers import Qwen2VLProcessor
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from vlmlib.data import DEFAULT_PROMPT, build_conversation, format_answer
from vlmlib.models import get_pixel_budget

__all__ = [
    "MERGE_SIZE",
    "MIN_BOXES_PER_LABEL",
    "PATCH_SIZE_PX",
    "ImageTokenBudget",
    "TrainingRecommendations",
    "compute_box_stats",
    "compute_image_stats",
    "compute_image_token_budget",
    "describe_record_boxes",
    "recommend_training_settings",
]

PATCH_SIZE_PX = 14  # Qwen2-VL's vision tower cuts the image into 14x14 patches
MERGE_SIZE = 2  # the patch merger joins 2x2 neighbouring patches into one token
MIN_BOXES_PER_LABEL = (
    30  # a rule of thumb, not a law: with fewer training boxes, a label is mostly guessed
)
_STAT_COLUMNS = ["image_id", "width", "height", "objects"]


def _records(dataset: datasets.Dataset | Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the records as dicts without their images (decoding 1,000 photos takes minutes)."""
    if isinstance(dataset, datasets.Dataset):
        return dataset.select_columns(_STAT_COLUMNS).to_list()
    return [{key: record[key] for key in _STAT_COLUMNS} for record in dataset]


def describe_record_boxes(record: dict[str, Any]) -> dict[str, float]:
    """Return one image's box statistics: how many boxes, how much of the image
    they cover, their shape.

    Why: per-image numbers show whether tables are one big object or several small ones.
    Explained in: chapter 01, "Boxes per image" and "Box area coverage"; lab 01, exercise 1.3.

    Args:
        record: a Hub-schema record; only `width`, `height` and `objects.bbox` (`box_hub`) are read.
    Returns:
        {"num_boxes": int, "area_fraction": summed box area over image area (boxes do not overlap in
        this dataset, so this is the share of the image they cover), "largest_box_aspect_ratio":
        width_px / height_px of the box with the largest area (0.0 when there is no box)}.
    """
    boxes_hub = record["objects"]["bbox"]
    areas = [(x_max - x_min) * (y_max - y_min) for y_min, x_min, y_max, x_max in boxes_hub]
    if not boxes_hub:
        return {"num_boxes": 0, "area_fraction": 0.0, "largest_box_aspect_ratio": 0.0}
    y_min, x_min, y_max, x_max = boxes_hub[int(np.argmax(areas))]
    aspect_ratio = ((x_max - x_min) * record["width"]) / ((y_max - y_min) * record["height"])
    return {
        "num_boxes": len(boxes_hub),
        "area_fraction": float(sum(areas)),
        "largest_box_aspect_ratio": float(aspect_ratio),
    }


def compute_image_stats(dataset: datasets.Dataset | Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Return one row per image: size, aspect ratio and its box statistics
    (`describe_record_boxes`).

    Explained in: chapter 01, "Image sizes".

    Returns:
        Columns image_id, width_px, height_px, num_pixels, aspect_ratio (width / height), num_boxes,
        area_fraction, largest_box_aspect_ratio.
    """
    rows = []
    for record in _records(dataset):
        row = {
            "image_id": record["image_id"],
            "width_px": record["width"],
            "height_px": record["height"],
            "num_pixels": record["width"] * record["height"],
            "aspect_ratio": record["width"] / record["height"],
        }
        rows.append(row | describe_record_boxes(record))
    return pd.DataFrame(rows)


def compute_box_stats(dataset: datasets.Dataset | Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Return one row per box: category, corners, size, centre and aspect ratio.

    Explained in: chapter 01, "Box shapes and positions".

    Returns:
        Columns image_id, box_index (order in the record), category_name, x_min,
        y_min, x_max, y_max, width_fraction, height_fraction, area_fraction,
        centre_x, centre_y (all 0-1 of the image), width_px, height_px,
        aspect_ratio (width_px / height_px), image_width_px, image_height_px.
    """
    rows = []
    for record in _records(dataset):
        objects = record["objects"]
        for box_index, (box_hub, category_name) in enumerate(
            zip(objects["bbox"], objects["category_name"])
        ):
            y_min, x_min, y_max, x_max = box_hub
            width, height = x_max - x_min, y_max - y_min
            rows.append(
                {
                    "image_id": record["image_id"],
                    "box_index": box_index,
                    "category_name": category_name,
                    "x_min": x_min,
                    "y_min": y_min,
                    "x_max": x_max,
                    "y_max": y_max,
                    "width_fraction": width,
                    "height_fraction": height,
                    "area_fraction": width * height,
                    "centre_x": (x_min + x_max) / 2,
                    "centre_y": (y_min + y_max) / 2,
                    "width_px": width * record["width"],
                    "height_px": height * record["height"],
                    "aspect_ratio": (width * record["width"]) / (height * record["height"]),
                    "image_width_px": record["width"],
                    "image_height_px": record["height"],
                }
            )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class ImageTokenBudget:
    """What the processor does to one image: its new size, its 14x14 patches,
    and its `<|image_pad|>` tokens.
    """

    width_px: int
    height_px: int
    resized_width_px: int
    resized_height_px: int
    num_patches: int  # (resized_height / 14) * (resized_width / 14): what the vision tower sees
    num_image_tokens: int  # num_patches / 4: one <|image_pad|> per 2x2 merged patches


def compute_image_token_budget(
    width_px: int, height_px: int, min_pixels: int, max_pixels: int
) -> ImageTokenBudget:
    """Return how Qwen2-VL's processor resizes an image and how many
    `<|image_pad|>` tokens it becomes.

    Why: image tokens are most of every training sequence, so the pixel budget sets
    memory and speed; it also sets how many pixels a small nutrition table keeps.
    Explained in: chapter 02, "From pixels to image tokens"; lab 02, exercise 2.2.

    The rule (transformers' `smart_resize`, used unchanged): round each side to
    a multiple of 28 (two 14 px patches, because 2x2 patches merge into one
    token); if the area is above `max_pixels`, scale both sides down by the same
    factor (then floor to 28); if below `min_pixels`, scale up (then ceil).
    """
    factor = PATCH_SIZE_PX * MERGE_SIZE
    resized_height_px, resized_width_px = smart_resize(
        height_px, width_px, factor, min_pixels, max_pixels
    )
    num_patches = (resized_height_px // PATCH_SIZE_PX) * (resized_width_px // PATCH_SIZE_PX)
    return ImageTokenBudget(
        width_px,
        height_px,
        resized_width_px,
        resized_height_px,
        num_patches,
        num_patches // MERGE_SIZE**2,
    )


@dataclass(frozen=True)
class TrainingRecommendations:
    """Settings measured from the data, each with the numbers behind it (see
    `recommend_training_settings`).
    """

    min_pixels: int
    max_pixels: int  # the budget in use
    recommended_max_pixels: int
    target_box_side_px: int
    coverage: float
    share_of_boxes_kept_at_current: (
        float  # boxes the current budget leaves at >= target_box_side_px (or full size)
    )
    image_tokens_median: float  # at the current budget
    image_tokens_max: int
    recommended_image_tokens_median: float  # at the recommended budget
    recommended_image_tokens_max: int
    share_multi_box: float
    max_num_boxes: int
    share_largest_first: float  # of multi-box images, how many list their boxes largest first
    answer_tokens_max: int
    recommended_max_new_tokens: int
    prompt_tokens: int
    # the longest image's tokens + the chat (system, prompt, longest answer), recommended budget
    max_sequence_tokens: int
    category_counts: dict[str, int]  # boxes per category, most common first

    def to_frame(self) -> pd.DataFrame:
        """Return the recommendations as a table: setting, recommended value,
        and the measurement behind it.
        """
        rarest = min(self.category_counts, key=self.category_counts.get)
        rare = [name for name, count in self.category_counts.items() if count < MIN_BOXES_PER_LABEL]
        rows = [
            (
                "model.max_pixels",
                f"{self.recommended_max_pixels:,}",
                (
                    f"smallest budget that leaves {self.coverage:.0%} of boxes at >= "
                    f"{self.target_box_side_px} px on their shorter side (or at full size "
                    "when the photo is smaller); "
                    f"{self.share_of_boxes_kept_at_current:.0%} at {self.max_pixels:,} now"
                ),
            ),
            (
                "image tokens per image",
                (
                    f"median {self.recommended_image_tokens_median:.0f}, max "
                    f"{self.recommended_image_tokens_max}"
                ),
                (
                    "at the recommended budget (now median "
                    f"{self.image_tokens_median:.0f}, max {self.image_tokens_max})"
                ),
            ),
            (
                "prompt",
                "ask for every table",
                (
                    f"{self.share_multi_box:.1%} of images have 2 or more tables (up to "
                    f"{self.max_num_boxes})"
                ),
            ),
            (
                "box order in the answer",
                "largest first" if self.share_largest_first >= 0.99 else "sort before training",
                (
                    f"{self.share_largest_first:.0%} of multi-box images already list "
                    "the largest box first"
                ),
            ),
            (
                "max_new_tokens",
                str(self.recommended_max_new_tokens),
                (
                    f"the longest answer is {self.answer_tokens_max} tokens; plus 25% "
                    "and <|im_end|>, rounded up to 16"
                ),
            ),
            (
                "max sequence length",
                f">= {self.max_sequence_tokens}",
                (
                    f"the longest image's tokens + system message, prompt ({self.prompt_tokens} "
                    "tokens) and longest answer; truncating shorter cuts answers or image tokens"
                ),
            ),
            (
                "labels",
                "keep the category names",
                (
                    f"the answer names each table's category; the rarest, {rarest!r}, "
                    f"has {self.category_counts[rarest]} boxes"
                )
                + (
                    (
                        f"; {len(rare)} of {len(self.category_counts)} categories have fewer "
                        f"than {MIN_BOXES_PER_LABEL}, so expect their labels to be guessed"
                    )
                    if rare
                    else ""
                ),
            ),
        ]
        return pd.DataFrame(rows, columns=["setting", "recommendation", "because"])


def _required_max_pixels(box_stats: pd.DataFrame, target_box_side_px: int) -> pd.Series:
    """Return, per box, the smallest `max_pixels` at which the budget no longer
    makes the box too small.

    Resizing to area A keeps the aspect ratio r = width / height, so the image
    becomes sqrt(A r) x sqrt(A / r) and the box's sides scale with it: its shorter
    side reaches `target_box_side_px` at some area A*. A photo smaller than A* is
    never enlarged by a larger `max_pixels`, so its own area is enough.
    """
    aspect = box_stats["image_width_px"] / box_stats["image_height_px"]
    side_per_sqrt_area = np.minimum(
        box_stats["width_fraction"] * np.sqrt(aspect),
        box_stats["height_fraction"] / np.sqrt(aspect),
    )
    image_area = box_stats["image_width_px"] * box_stats["image_height_px"]
    return np.minimum((target_box_side_px / side_per_sqrt_area) ** 2, image_area)


def _token_count_stats(image_stats: pd.DataFrame, min_pixels: int, max_pixels: int) -> pd.Series:
    return pd.Series(
        [
            compute_image_token_budget(width, height, min_pixels, max_pixels).num_image_tokens
            for width, height in zip(image_stats["width_px"], image_stats["height_px"])
        ]
    )


def _share_largest_first(box_stats: pd.DataFrame) -> float:
    multi = box_stats.groupby("image_id").filter(lambda group: len(group) > 1)
    if multi.empty:
        return 1.0
    ordered = multi.groupby("image_id")["area_fraction"].apply(
        lambda areas: bool(areas.is_monotonic_decreasing)
    )
    return float(ordered.mean())


def _count_text_tokens(
    records: list[dict[str, Any]], processor: Qwen2VLProcessor, prompt: str
) -> tuple[int, int, int]:
    """Return (longest answer, prompt, whole chat around the longest answer
    minus its one image pad), in tokens.
    """
    answers = [format_answer(record["objects"]) for record in records]
    answer_tokens = [
        len(ids) for ids in processor.tokenizer(answers, add_special_tokens=False)["input_ids"]
    ]
    prompt_tokens = len(processor.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    # The chat template writes the image as one <|image_pad|>; the processor
    # expands it, so count it as 0 here.
    longest = {"image": None, "objects": records[int(np.argmax(answer_tokens))]["objects"]}
    chat_text = processor.apply_chat_template(build_conversation(longest, prompt), tokenize=False)
    chat_tokens = len(processor.tokenizer(chat_text, add_special_tokens=False)["input_ids"]) - 1
    return max(answer_tokens), prompt_tokens, chat_tokens


def recommend_training_settings(
    dataset: datasets.Dataset | Sequence[dict[str, Any]],
    processor: Qwen2VLProcessor,
    prompt: str = DEFAULT_PROMPT,
    target_box_side_px: int = 2 * PATCH_SIZE_PX * MERGE_SIZE,
    coverage: float = 0.95,
) -> TrainingRecommendations:
    """Measure the dataset and return the pixel budget, prompt and lengths it calls for.

    Why: a budget too small shrinks small tables to a token or two; one too large wastes memory on
    big photos; a `max_new_tokens` too small cuts multi-box answers off mid-box.
    Explained in: chapter 01, "What this means for training".

    Args:
        dataset: Hub-schema records (images are not read).
        processor: gives the current pixel budget and the tokenizer for answer lengths.
        target_box_side_px: the shorter side every box should keep after resizing; the default is
            two merged-patch widths (56 px), so a box spans at least 2x2 image tokens.
        coverage: the share of boxes that must reach `target_box_side_px`.
    """
    records = _records(dataset)  # read once: images dropped, plain dicts
    image_stats, box_stats = compute_image_stats(records), compute_box_stats(records)
    min_pixels, max_pixels = get_pixel_budget(processor)
    block = (PATCH_SIZE_PX * MERGE_SIZE) ** 2
    required = _required_max_pixels(box_stats, target_box_side_px)
    largest_image = int(
        math.ceil(image_stats["num_pixels"].max() / block) * block
    )  # beyond this no image grows
    recommended = int(
        min(max(math.ceil(required.quantile(coverage) / block) * block, min_pixels), largest_image)
    )
    current, new = (
        _token_count_stats(image_stats, min_pixels, max_pixels),
        _token_count_stats(image_stats, min_pixels, recommended),
    )
    answer_tokens_max, prompt_tokens, chat_tokens = _count_text_tokens(records, processor, prompt)
    return TrainingRecommendations(
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        recommended_max_pixels=recommended,
        target_box_side_px=target_box_side_px,
        coverage=coverage,
        share_of_boxes_kept_at_current=float((required <= max_pixels).mean()),
        image_tokens_median=float(current.median()),
        image_tokens_max=int(current.max()),
        recommended_image_tokens_median=float(new.median()),
        recommended_image_tokens_max=int(new.max()),
        share_multi_box=float((image_stats["num_boxes"] > 1).mean()),
        max_num_boxes=int(image_stats["num_boxes"].max()),
        share_largest_first=_share_largest_first(box_stats),
        answer_tokens_max=answer_tokens_max,
        recommended_max_new_tokens=int(math.ceil((answer_tokens_max * 1.25 + 1) / 16) * 16),
        prompt_tokens=prompt_tokens,
        max_sequence_tokens=int(new.max()) + chat_tokens,
        category_counts={
            str(name): int(count)
            for name, count in box_stats["category_name"].value_counts().items()
        },
    )
