"""Tests for vlmlib.dataset_stats: per-image and per-box tables, image-token
arithmetic, recommendations.
"""

from __future__ import annotations

from typing import Any

import datasets
import pytest
from PIL import Image
from transformers import Qwen2VLImageProcessor

from vlmlib.data import format_answer
from vlmlib.dataset_stats import (
    compute_box_stats,
    compute_image_stats,
    compute_image_token_budget,
    describe_record_boxes,
    recommend_training_settings,
)


def _record(
    width_px: int, height_px: int, boxes_hub: list[list[float]], image_id: str = "r"
) -> dict[str, Any]:
    names = ["nutrition-table", "nutrition-table-small", "nutrition-table-text"][: len(boxes_hub)]
    return {
        "image_id": image_id,
        "width": width_px,
        "height": height_px,
        "objects": {
            "bbox": boxes_hub,
            "category_id": list(range(len(boxes_hub))),
            "category_name": names,
        },
    }


@pytest.fixture
def stats_records() -> list[dict[str, Any]]:
    """Two records: one box in a 200x100 image, two boxes (largest second) in a 100x100 image."""
    return [
        _record(200, 100, [[0.0, 0.0, 0.5, 0.5]], image_id="wide"),  # box 100x50 px
        _record(
            100, 100, [[0.0, 0.0, 0.1, 0.2], [0.5, 0.5, 1.0, 0.9]], image_id="square"
        ),  # 20x10 px, 40x50 px
    ]


def test_describe_record_boxes_uses_pixels_for_the_aspect_ratio(stats_records):
    described = describe_record_boxes(stats_records[0])
    assert described == pytest.approx(
        {"num_boxes": 1, "area_fraction": 0.25, "largest_box_aspect_ratio": 2.0}
    )


def test_describe_record_boxes_picks_the_largest_box_wherever_it_is_listed(stats_records):
    described = describe_record_boxes(stats_records[1])
    # areas 0.2*0.1 = 0.02 and 0.4*0.5 = 0.2; the largest is 40x50 px
    assert described == pytest.approx(
        {"num_boxes": 2, "area_fraction": 0.22, "largest_box_aspect_ratio": 0.8}
    )


def test_describe_record_boxes_gives_zeros_without_boxes():
    assert describe_record_boxes(_record(10, 10, [])) == {
        "num_boxes": 0,
        "area_fraction": 0.0,
        "largest_box_aspect_ratio": 0.0,
    }


def test_compute_image_stats_has_one_row_per_image(stats_records):
    image_stats = compute_image_stats(stats_records)
    assert list(image_stats["image_id"]) == ["wide", "square"]
    assert list(image_stats["num_boxes"]) == [1, 2]
    assert list(image_stats["aspect_ratio"]) == [2.0, 1.0]
    assert list(image_stats["num_pixels"]) == [20000, 10000]


def test_compute_box_stats_has_one_row_per_box_with_centres_and_pixel_sizes(stats_records):
    box_stats = compute_box_stats(stats_records)
    assert len(box_stats) == 3 and list(box_stats["box_index"]) == [0, 0, 1]
    wide_box = box_stats.iloc[0]
    assert (wide_box["centre_x"], wide_box["centre_y"]) == (0.25, 0.25)
    assert (wide_box["width_px"], wide_box["height_px"], wide_box["aspect_ratio"]) == (
        100.0,
        50.0,
        2.0,
    )


def test_compute_stats_read_a_dataset_without_decoding_images(
    synthetic_small_dataset_dict: datasets.DatasetDict,
):
    split = synthetic_small_dataset_dict["train"]
    image_stats, box_stats = compute_image_stats(split), compute_box_stats(split)
    assert len(image_stats) == len(split)
    assert len(box_stats) == sum(len(objects["bbox"]) for objects in split["objects"])


@pytest.mark.parametrize(
    ("width_px", "height_px", "budget"),
    [
        (224, 224, (12544, 50176)),
        (113, 175, (12544, 50176)),
        (3024, 4032, (200704, 501760)),
        (60, 80, (200704, 501760)),
        (1400, 100, (200704, 501760)),
    ],
    ids=["inside-budget", "rounded", "shrunk", "enlarged", "very-wide"],
)
def test_compute_image_token_budget_matches_the_image_processor(
    width_px: int, height_px: int, budget: tuple[int, int]
):
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": budget[0], "longest_edge": budget[1]}
    )
    grid_thw = image_processor(
        images=[Image.new("RGB", (width_px, height_px))], return_tensors="pt"
    )["image_grid_thw"][0]
    token_budget = compute_image_token_budget(width_px, height_px, *budget)
    assert token_budget.num_patches == int(grid_thw.prod())
    assert token_budget.num_image_tokens == int(grid_thw.prod()) // 4
    assert (token_budget.resized_height_px // 14, token_budget.resized_width_px // 14) == tuple(
        grid_thw[1:].tolist()
    )


def test_recommended_max_pixels_brings_small_boxes_to_two_image_tokens(tiny_processor):
    # 1000x1000 photos with 100x100 px tables: a 56 px table side needs the
    # photo at 560x560 = 313,600 pixels
    records = [
        _record(1000, 1000, [[0.1, 0.1, 0.2, 0.2]], image_id=str(index)) for index in range(20)
    ]
    recommendations = recommend_training_settings(records, tiny_processor)
    assert recommendations.recommended_max_pixels == 313600  # 400 blocks of 28x28
    assert recommendations.recommended_image_tokens_max == 400


def test_recommended_max_pixels_never_exceeds_the_largest_photo(tiny_processor):
    # 200x200 photos with 20 px tables: no budget makes them 56 px without
    # enlarging, so the photo's size is enough
    records = [
        _record(200, 200, [[0.1, 0.1, 0.2, 0.2]], image_id=str(index)) for index in range(20)
    ]
    recommendations = recommend_training_settings(records, tiny_processor)
    assert (
        recommendations.recommended_max_pixels == 40768
    )  # 200 x 200 rounded up to 52 blocks of 28x28
    assert (
        recommendations.share_of_boxes_kept_at_current == 1.0
    )  # the tiny budget (78,400) already holds them


def test_recommendations_measure_box_counts_order_and_answer_length(stats_records, tiny_processor):
    recommendations = recommend_training_settings(stats_records, tiny_processor)
    longest_answer_tokens = len(
        tiny_processor.tokenizer(format_answer(stats_records[1]["objects"]))["input_ids"]
    )
    assert (recommendations.share_multi_box, recommendations.max_num_boxes) == (0.5, 2)
    assert (
        recommendations.share_largest_first == 0.0
    )  # the two-box record lists its smaller box first
    assert recommendations.answer_tokens_max == longest_answer_tokens
    assert recommendations.recommended_max_new_tokens >= longest_answer_tokens + 1
    assert recommendations.recommended_max_new_tokens % 16 == 0
    assert recommendations.to_frame().loc[3, "recommendation"] == "sort before training"
