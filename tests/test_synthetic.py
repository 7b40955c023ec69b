"""Tests for `vlmlib.tiny.synthetic`: the schema, determinism, and that every
label matches its picture.
"""

from __future__ import annotations

import itertools

import datasets
import numpy as np
import pytest

from vlmlib.boxes import convert_hub_box_to_xyxy
from vlmlib.data import CATEGORY_NAMES, clean_split, hub_features
from vlmlib.tiny.synthetic import (
    BOX_COUNT_RATES,
    EXTRA_CATEGORY_RATES,
    MAIN_AREA_FRACTION_RANGE,
    MAIN_CATEGORY_RATES,
    generate_synthetic_dataset,
)


def _all_records(dataset_dict: datasets.DatasetDict) -> list[dict]:
    """Return the records of both splits, images decoded."""
    return [record for split in dataset_dict.values() for record in split]


def _raw_records(dataset: datasets.Dataset) -> list[dict]:
    """Return the records with images as stored bytes, so pixels compare byte for byte."""
    return list(dataset.cast_column("image", datasets.Image(decode=False)))


def _pixel_box(box_hub: list[float], width_px: int, height_px: int) -> tuple[int, int, int, int]:
    """Return the box's first and last pixel rows and columns, inclusive:
    (x_first, y_first, x_last, y_last).
    """
    x1, y1, x2, y2 = (
        round(value) for value in convert_hub_box_to_xyxy(box_hub, width_px, height_px)
    )
    return x1, y1, x2 - 1, y2 - 1


def test_synthetic_dataset_has_train_and_val_splits_of_the_requested_sizes(synthetic_dataset_dict):
    assert {name: len(split) for name, split in synthetic_dataset_dict.items()} == {
        "train": 300,
        "val": 100,
    }


@pytest.mark.parametrize("split_name", ["train", "val"])
def test_synthetic_dataset_features_equal_hub_schema(synthetic_dataset_dict, split_name):
    assert synthetic_dataset_dict[split_name].features == hub_features()


def test_synthetic_dataset_is_identical_for_the_same_seed():
    first = generate_synthetic_dataset(num_train=4, num_val=2, seed=3)
    second = generate_synthetic_dataset(num_train=4, num_val=2, seed=3)
    for split_name in ("train", "val"):
        assert _raw_records(first[split_name]) == _raw_records(second[split_name])


def test_synthetic_dataset_differs_for_different_seeds():
    first = generate_synthetic_dataset(num_train=4, num_val=0, seed=3)
    second = generate_synthetic_dataset(num_train=4, num_val=0, seed=4)
    first_images = [record["image"]["bytes"] for record in _raw_records(first["train"])]
    second_images = [record["image"]["bytes"] for record in _raw_records(second["train"])]
    assert not set(first_images) & set(second_images)


def test_synthetic_train_and_val_share_no_image_and_no_image_id(synthetic_dataset_dict):
    train, val = (
        _raw_records(synthetic_dataset_dict["train"]),
        _raw_records(synthetic_dataset_dict["val"]),
    )
    assert not {record["image"]["bytes"] for record in train} & {
        record["image"]["bytes"] for record in val
    }
    assert not {record["image_id"] for record in train} & {record["image_id"] for record in val}


def test_synthetic_val_split_does_not_depend_on_num_train():
    fewer_train = generate_synthetic_dataset(num_train=1, num_val=2, seed=5)
    more_train = generate_synthetic_dataset(num_train=5, num_val=2, seed=5)
    assert _raw_records(fewer_train["val"]) == _raw_records(more_train["val"])


def test_synthetic_image_sizes_stay_within_the_default_side_bounds(synthetic_dataset_dict):
    for record in _all_records(synthetic_dataset_dict):
        assert record["image"].size == (record["width"], record["height"])
        assert 112 <= record["width"] <= 224 and 112 <= record["height"] <= 224


def test_synthetic_image_sizes_follow_custom_side_bounds():
    dataset_dict = generate_synthetic_dataset(
        num_train=6, num_val=0, seed=1, min_side_px=150, max_side_px=160
    )
    for record in dataset_dict["train"]:
        assert record["image"].size == (record["width"], record["height"])
        assert 150 <= record["width"] <= 160 and 150 <= record["height"] <= 160


def test_synthetic_image_sizes_and_aspect_ratios_vary(synthetic_dataset_dict):
    sizes = {(record["width"], record["height"]) for record in synthetic_dataset_dict["train"]}
    aspect_ratios = [width / height for width, height in sizes]
    assert len(sizes) > 200
    assert min(aspect_ratios) < 0.7 and max(aspect_ratios) > 1.4


def test_synthetic_images_are_rgb(synthetic_dataset_dict):
    assert {record["image"].mode for record in _all_records(synthetic_dataset_dict)} == {"RGB"}


def test_synthetic_boxes_are_inside_zero_to_one_and_not_inverted(synthetic_dataset_dict):
    for record in synthetic_dataset_dict["train"]:
        for y_min, x_min, y_max, x_max in record["objects"]["bbox"]:
            assert 0 <= y_min < y_max <= 1 and 0 <= x_min < x_max <= 1


def test_synthetic_box_edges_are_the_drawn_table_border(synthetic_dataset_dict):
    # The middle half of each edge, because a small-energy badge has rounded corners.
    for record in _all_records(synthetic_dataset_dict):
        pixels = np.asarray(record["image"])  # (height, width, 3) uint8
        for box_hub in record["objects"]["bbox"]:
            x_first, y_first, x_last, y_last = _pixel_box(
                box_hub, record["width"], record["height"]
            )
            quarter_width, quarter_height = (x_last - x_first) // 4, (y_last - y_first) // 4
            columns = slice(x_first + quarter_width, x_last - quarter_width + 1)
            rows = slice(y_first + quarter_height, y_last - quarter_height + 1)
            edges = [
                pixels[y_first, columns],
                pixels[y_last, columns],
                pixels[rows, x_first],
                pixels[rows, x_last],
            ]
            border_colours = np.unique(np.concatenate(edges), axis=0)
            assert len(border_colours) == 1, f"{record['image_id']}: box edge is not one colour"
            assert border_colours[0].max() <= 64, f"{record['image_id']}: box edge is not dark"
            outside = [
                pixels[y_first - 1, columns],
                pixels[y_last + 1, columns],
                pixels[rows, x_first - 1],
                pixels[rows, x_last + 1],
            ]
            for line in (
                outside
            ):  # one pixel outside the box is no longer the border: the box is not too small
                assert not (line == border_colours[0]).all(), (
                    f"{record['image_id']}: border continues outside the box"
                )


def test_synthetic_tables_never_overlap(synthetic_dataset_dict):
    for record in synthetic_dataset_dict["train"]:
        for first, second in itertools.combinations(record["objects"]["bbox"], 2):
            overlap_height = min(first[2], second[2]) - max(first[0], second[0])
            overlap_width = min(first[3], second[3]) - max(first[1], second[1])
            assert overlap_height <= 0 or overlap_width <= 0, record["image_id"]


def test_synthetic_images_have_one_to_three_boxes(synthetic_dataset_dict):
    counts = {len(record["objects"]["bbox"]) for record in _all_records(synthetic_dataset_dict)}
    assert counts == {1, 2, 3}


def test_synthetic_box_count_rates_are_close_to_the_constants(synthetic_dataset_dict):
    # 400 images: the standard error of a rate near 0.75 is about 0.02, so 0.07
    # is more than three of them.
    counts = [
        len(objects["bbox"])
        for split in synthetic_dataset_dict.values()
        for objects in split["objects"]
    ]
    for num_boxes, rate in BOX_COUNT_RATES.items():
        assert abs(counts.count(num_boxes) / len(counts) - rate) < 0.07, f"{num_boxes} boxes"


def test_synthetic_rate_constants_sum_to_one_and_name_known_categories():
    assert sum(BOX_COUNT_RATES.values()) == pytest.approx(1)
    for rates in (MAIN_CATEGORY_RATES, EXTRA_CATEGORY_RATES):
        assert sum(rates.values()) == pytest.approx(1)
        assert set(rates) <= set(CATEGORY_NAMES)


def test_synthetic_categories_use_every_name_with_matching_id(synthetic_dataset_dict):
    names = set()
    for objects in synthetic_dataset_dict["train"]["objects"]:
        for category_id, category_name in zip(objects["category_id"], objects["category_name"]):
            assert CATEGORY_NAMES[category_id] == category_name
            names.add(category_name)
    assert names == set(CATEGORY_NAMES)


def test_synthetic_largest_box_covers_the_main_area_fraction_range(synthetic_dataset_dict):
    for objects in synthetic_dataset_dict["train"]["objects"]:
        areas = [
            (y_max - y_min) * (x_max - x_min) for y_min, x_min, y_max, x_max in objects["bbox"]
        ]
        assert areas == sorted(areas, reverse=True), "boxes are listed largest first"
        assert 0.05 <= areas[0] <= MAIN_AREA_FRACTION_RANGE[1] + 0.01


def test_synthetic_image_id_and_url_follow_open_food_facts_layout(synthetic_dataset_dict):
    record = synthetic_dataset_dict["train"][0]
    barcode, off_image_id = record["meta"]["barcode"], record["meta"]["off_image_id"]
    assert len(barcode) == 13 and barcode.isdigit() and off_image_id.isdigit()
    assert record["image_id"] == f"{barcode}_{off_image_id}"
    folder = f"{barcode[:3]}/{barcode[3:6]}/{barcode[6:9]}/{barcode[9:]}"
    assert (
        record["meta"]["image_url"]
        == f"https://images.openfoodfacts.org/images/products/{folder}/{off_image_id}.jpg"
    )


@pytest.mark.parametrize("split_name", ["train", "val"])
def test_clean_split_keeps_every_synthetic_record(synthetic_dataset_dict, split_name):
    cleaned, report = clean_split(synthetic_dataset_dict[split_name], policy="raise")
    assert len(cleaned) == report.num_kept == len(synthetic_dataset_dict[split_name])
    assert not report.dropped and not report.mended


def test_generate_synthetic_dataset_with_zero_val_records_gives_empty_val_split():
    dataset_dict = generate_synthetic_dataset(num_train=1, num_val=0, seed=0)
    assert len(dataset_dict["val"]) == 0 and dataset_dict["val"].features == hub_features()


@pytest.mark.parametrize(
    "arguments",
    [
        {"min_side_px": 32, "max_side_px": 64},
        {"min_side_px": 200, "max_side_px": 100},
        {"seed": -1},
        {"num_train": -1},
    ],
    ids=["side_too_small", "side_range_empty", "negative_seed", "negative_count"],
)
def test_generate_synthetic_dataset_rejects_bad_arguments(arguments):
    with pytest.raises(ValueError):
        generate_synthetic_dataset(**{"num_train": 1, "num_val": 1, "seed": 0, **arguments})
