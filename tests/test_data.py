"""Tests for `vlmlib.data`: loading local copies, cleaning bad records, and building the chat."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pytest
from PIL import Image

from vlmlib.data import (
    DEFAULT_PROMPT,
    DEFAULT_SYSTEM_MESSAGE,
    MIN_IMAGE_SIDE_PX,
    BadRecordError,
    build_conversation,
    clean_split,
    convert_image_to_rgb,
    find_image_size_problem,
    format_answer,
    hub_features,
    load_split,
)


def _dataset_from(records: list[dict[str, Any]]) -> datasets.Dataset:
    """Build a split in the Hub schema from plain records (images as {'bytes', 'path'})."""
    return datasets.Dataset.from_list(records, features=hub_features())


def _raw_records(dataset: datasets.Dataset) -> list[dict[str, Any]]:
    """Return the records with images as stored bytes, so pixels compare byte for byte."""
    return list(dataset.cast_column("image", datasets.Image(decode=False)))


def _save_hub_parquet_layout(dataset_dict: datasets.DatasetDict, folder: Path) -> Path:
    """Write each split as `data/<split>-00000-of-00001.parquet`, the layout of
    the Hub dataset's repository.
    """
    (folder / "data").mkdir(parents=True)
    for split_name, split in dataset_dict.items():
        split.to_parquet(str(folder / "data" / f"{split_name}-00000-of-00001.parquet"))
    return folder


def _reencode_image(record: dict[str, Any], mode: str) -> None:
    """Store the record's image again as a PNG in another mode ("RGBA", "L")."""
    image = Image.open(io.BytesIO(record["image"]["bytes"])).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    record["image"] = {"bytes": buffer.getvalue(), "path": None}


def _set_first_box(record: dict[str, Any], box_hub: list[float]) -> None:
    """Replace the record's first box_hub ([y_min, x_min, y_max, x_max], 0-1)."""
    record["objects"]["bbox"][0] = box_hub


def _rename_first_category(record: dict[str, Any], category_name: str) -> None:
    """Give the record's first box a category name (its category_id stays as it was)."""
    record["objects"]["category_name"][0] = category_name


# Each bad kind: how to break a record, whether clean_split drops or mends it,
# and the kind it counts it under.
BAD_RECORD_CASES: dict[str, tuple[Callable[[dict[str, Any]], None], str, str]] = {
    "unreadable_image_bytes": (
        lambda record: record.update(image={"bytes": b"not an image", "path": None}),
        "dropped",
        "image does not open",
    ),
    "rgba_image": (lambda record: _reencode_image(record, "RGBA"), "mended", "converted to RGB"),
    "grayscale_image": (lambda record: _reencode_image(record, "L"), "mended", "converted to RGB"),
    "box_far_out_of_range": (
        lambda record: _set_first_box(record, [-0.5, 0.1, 0.5, 0.6]),
        "dropped",
        "outside 0-1",
    ),
    "box_slightly_out_of_range": (
        lambda record: _set_first_box(record, [-0.005, 0.1, 0.5, 0.6]),
        "mended",
        "clamped to 0-1",
    ),
    "inverted_box": (
        lambda record: _set_first_box(record, [0.5, 0.1, 0.2, 0.6]),
        "dropped",
        "inverted or has zero area",
    ),
    "zero_area_box": (
        lambda record: _set_first_box(record, [0.2, 0.1, 0.2, 0.6]),
        "dropped",
        "inverted or has zero area",
    ),
    "no_objects": (
        lambda record: record.update(objects={"bbox": [], "category_id": [], "category_name": []}),
        "dropped",
        "no objects",
    ),
    "unknown_category": (
        lambda record: _rename_first_category(record, "price-tag"),
        "dropped",
        "is not one of",
    ),
}


@pytest.mark.parametrize("split_name", ["train", "val"])
def test_load_split_reads_the_same_records_from_save_to_disk_and_hub_parquet_layout(
    synthetic_small_dataset_dict, tmp_path, split_name
):
    synthetic_small_dataset_dict.save_to_disk(str(tmp_path / "saved"))
    _save_hub_parquet_layout(synthetic_small_dataset_dict, tmp_path / "hub")
    from_disk = load_split(split_name, local_path=tmp_path / "saved")
    from_parquet = load_split(split_name, local_path=tmp_path / "hub")
    assert from_disk.features == from_parquet.features == hub_features()
    assert (
        _raw_records(from_disk)
        == _raw_records(from_parquet)
        == _raw_records(synthetic_small_dataset_dict[split_name])
    )


@pytest.mark.parametrize("layout", ["save_to_disk", "hub_parquet"])
def test_load_split_unknown_split_error_names_the_existing_splits(
    synthetic_small_dataset_dict, tmp_path, layout
):
    if layout == "save_to_disk":
        synthetic_small_dataset_dict.save_to_disk(str(tmp_path))
    else:
        _save_hub_parquet_layout(synthetic_small_dataset_dict, tmp_path)
    with pytest.raises(KeyError, match=r"'test'.*\['train', 'val'\]"):
        load_split("test", local_path=tmp_path)


def test_load_split_missing_folder_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_split("train", local_path=tmp_path / "no_such_folder")


def test_load_split_folder_without_a_dataset_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dataset_dict.json"):
        load_split("train", local_path=tmp_path)


@pytest.mark.parametrize("case_name", list(BAD_RECORD_CASES), ids=list(BAD_RECORD_CASES))
def test_clean_split_drop_policy_counts_each_bad_kind(synthetic_raw_records, case_name):
    break_record, outcome, kind = BAD_RECORD_CASES[case_name]
    break_record(synthetic_raw_records[1])
    cleaned, report = clean_split(_dataset_from(synthetic_raw_records), policy="drop")
    expected_kept = len(synthetic_raw_records) - (outcome == "dropped")
    assert len(cleaned) == report.num_kept == expected_kept
    assert report.dropped == (Counter({kind: 1}) if outcome == "dropped" else Counter())
    assert report.mended == (Counter({kind: 1}) if outcome == "mended" else Counter())


def test_clean_split_drop_policy_counts_every_bad_kind_in_one_split(
    synthetic_raw_records, synthetic_small_dataset_dict
):
    records = synthetic_raw_records + _raw_records(
        synthetic_small_dataset_dict["val"]
    )  # 12 records
    for record, (break_record, _, _) in zip(records, BAD_RECORD_CASES.values()):
        break_record(record)
    cleaned, report = clean_split(_dataset_from(records), policy="drop")
    assert report.dropped == Counter(
        {
            "image does not open": 1,
            "outside 0-1": 1,
            "inverted or has zero area": 2,
            "no objects": 1,
            "is not one of": 1,
        }
    )
    assert report.mended == Counter({"converted to RGB": 2, "clamped to 0-1": 1})
    assert len(cleaned) == report.num_kept == 12 - 6


@pytest.mark.parametrize("case_name", ["rgba_image", "grayscale_image"])
def test_clean_split_converts_non_rgb_images_to_rgb(synthetic_raw_records, case_name):
    BAD_RECORD_CASES[case_name][0](synthetic_raw_records[1])
    cleaned, _ = clean_split(_dataset_from(synthetic_raw_records), policy="drop")
    assert cleaned.features == hub_features()
    assert {record["image"].mode for record in cleaned} == {"RGB"}


def test_clean_split_clamps_a_slightly_out_of_range_box_to_zero(synthetic_raw_records):
    BAD_RECORD_CASES["box_slightly_out_of_range"][0](synthetic_raw_records[1])
    cleaned, _ = clean_split(_dataset_from(synthetic_raw_records), policy="drop")
    assert cleaned[1]["objects"]["bbox"][0] == pytest.approx([0.0, 0.1, 0.5, 0.6])


def test_clean_split_mending_one_record_leaves_other_image_bytes_unchanged(synthetic_raw_records):
    for (
        record
    ) in synthetic_raw_records:  # the Hub's images are JPEG, which re-encoding would degrade
        image = Image.open(io.BytesIO(record["image"]["bytes"]))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=95)
        record["image"] = {"bytes": buffer.getvalue(), "path": None}
    BAD_RECORD_CASES["box_slightly_out_of_range"][0](synthetic_raw_records[0])
    cleaned, report = clean_split(_dataset_from(synthetic_raw_records), policy="drop")
    assert report.mended == Counter({"clamped to 0-1": 1})
    assert [record["image"] for record in _raw_records(cleaned)] == [
        record["image"] for record in synthetic_raw_records
    ]


def test_clean_split_raise_policy_error_names_index_image_id_and_problem(synthetic_raw_records):
    BAD_RECORD_CASES["box_far_out_of_range"][0](synthetic_raw_records[2])
    image_id = synthetic_raw_records[2]["image_id"]
    with pytest.raises(BadRecordError) as error_info:
        clean_split(_dataset_from(synthetic_raw_records), policy="raise", source="train")
    message = str(error_info.value)
    assert "record 2" in message and image_id in message and "outside 0-1" in message


def test_clean_split_raise_policy_keeps_mendable_records(synthetic_raw_records):
    BAD_RECORD_CASES["rgba_image"][0](synthetic_raw_records[0])
    cleaned, report = clean_split(_dataset_from(synthetic_raw_records), policy="raise")
    assert len(cleaned) == len(synthetic_raw_records) and report.mended == Counter(
        {"converted to RGB": 1}
    )


def test_format_answer_writes_one_box_x_first_on_the_1000_grid():
    objects = {
        "bbox": [[0.1, 0.2, 0.5, 0.6]],
        "category_id": [0],
        "category_name": ["nutrition-table"],
    }
    # By hand: box_hub [y_min, x_min, y_max, x_max] = [0.1, 0.2, 0.5, 0.6] ->
    # (x1, y1), (x2, y2) = (200, 100), (600, 500).
    assert format_answer(objects) == (
        "<|object_ref_start|>nutrition-table<|object_ref_end|><|box_start|>(200,100),(600,500)<|box_end|>"
    )


def test_format_answer_writes_one_group_per_box_in_order_for_three_boxes():
    objects = {
        "bbox": [[0.0, 0.0, 1.0, 1.0], [0.25, 0.125, 0.75, 0.375], [0.9, 0.05, 0.95, 0.3]],
        "category_id": [0, 1, 3],
        "category_name": ["nutrition-table", "nutrition-table-small", "nutrition-table-text"],
    }
    # By hand, x first, times 1000, truncated, 1.0 capped at 999:
    # (0,0),(999,999); (125,250),(375,750); (50,900),(300,950).
    assert format_answer(objects) == (
        "<|object_ref_start|>nutrition-table<|object_ref_end|><|box_start|>(0,0),(999,999)<|box_end|>"
        "<|object_ref_start|>nutrition-table-small<|object_ref_end|><|box_start|>(125,250),(375,750)<|box_end|>"
        "<|object_ref_start|>nutrition-table-text<|object_ref_end|><|box_start|>(50,900),(300,950)<|box_end|>"
    )


def test_build_conversation_has_system_user_and_assistant_turns(synthetic_small_dataset_dict):
    record = synthetic_small_dataset_dict["train"][0]
    conversation = build_conversation(record)
    assert [turn["role"] for turn in conversation] == ["system", "user", "assistant"]
    assert conversation[0]["content"] == [{"type": "text", "text": DEFAULT_SYSTEM_MESSAGE}]
    image_item, prompt_item = conversation[1]["content"]
    assert image_item == {"type": "image", "image": record["image"]}
    assert prompt_item == {"type": "text", "text": DEFAULT_PROMPT}
    assert conversation[2]["content"] == [
        {"type": "text", "text": format_answer(record["objects"])}
    ]


def test_build_conversation_without_answer_omits_the_assistant_turn(synthetic_small_dataset_dict):
    conversation = build_conversation(
        synthetic_small_dataset_dict["train"][0], include_answer=False
    )
    assert [turn["role"] for turn in conversation] == ["system", "user"]


def test_build_conversation_puts_the_pixel_budget_in_the_image_item(synthetic_small_dataset_dict):
    conversation = build_conversation(
        synthetic_small_dataset_dict["train"][0], min_pixels=3136, max_pixels=50176
    )
    image_item = conversation[1]["content"][0]
    assert image_item["min_pixels"] == 3136 and image_item["max_pixels"] == 50176


# --- issue 21: high-bit-depth images, images too small for Qwen2-VL, decompression bombs ---


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _gradient_16_bit() -> Image.Image:
    """A 256x64 16-bit grayscale gradient (mode I;16), values 0 to 65532 in steps of 4."""
    import numpy as np

    return Image.fromarray((np.arange(64 * 256).reshape(64, 256) * 4).astype(np.uint16))


def _assert_spans_the_8_bit_range(image: Image.Image) -> None:
    import numpy as np

    pixels = np.asarray(image)
    # clipping at 255 (PIL's convert) leaves 64 distinct values and a mean near
    # 255; scaling keeps all 256
    assert image.mode == "RGB" and len(np.unique(pixels)) == 256 and 120 < pixels.mean() < 135


def test_convert_image_to_rgb_scales_a_16_bit_gradient_instead_of_clipping_it(tmp_path):
    path = tmp_path / "gradient16.png"
    _gradient_16_bit().save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"
        _assert_spans_the_8_bit_range(convert_image_to_rgb(image))


@pytest.mark.parametrize("mode", ["I", "F"])
def test_convert_image_to_rgb_scales_32_bit_modes_by_their_range(mode):
    _assert_spans_the_8_bit_range(convert_image_to_rgb(_gradient_16_bit().convert(mode)))


def test_clean_split_converts_a_16_bit_image_without_clipping(synthetic_raw_records):
    gradient = _gradient_16_bit()
    synthetic_raw_records[1].update(
        image={"bytes": _png_bytes(gradient), "path": None},
        width=gradient.width,
        height=gradient.height,
    )
    cleaned, report = clean_split(_dataset_from(synthetic_raw_records), policy="drop")
    assert report.mended == Counter({"converted to RGB": 1})
    _assert_spans_the_8_bit_range(cleaned[1]["image"])


@pytest.mark.parametrize(
    ("width_px", "height_px", "kind"),
    [(1, 1, "smaller than"), (27, 400, "smaller than"), (6000, 28, "aspect ratio above")],
)
def test_clean_split_drops_an_image_qwen2_vl_cannot_represent(
    synthetic_raw_records, width_px, height_px, kind
):
    synthetic_raw_records[1].update(
        image={"bytes": _png_bytes(Image.new("RGB", (width_px, height_px))), "path": None},
        width=width_px,
        height=height_px,
    )
    cleaned, report = clean_split(_dataset_from(synthetic_raw_records), policy="drop")
    assert report.dropped == Counter({kind: 1}) and len(cleaned) == len(synthetic_raw_records) - 1
    assert f"{width_px}x{height_px} px" in report.examples[0]


def test_find_image_size_problem_names_the_minimum_and_accepts_it():
    assert find_image_size_problem(MIN_IMAGE_SIDE_PX, MIN_IMAGE_SIDE_PX) is None
    assert f"smaller than {MIN_IMAGE_SIDE_PX} px" in find_image_size_problem(1, 1)


def test_clean_split_drops_a_decompression_bomb(synthetic_raw_records):
    bomb = Image.new("1", (20000, 20000))  # 400 million pixels, a few KB as a 1-bit PNG
    synthetic_raw_records[1].update(
        image={"bytes": _png_bytes(bomb), "path": None}, width=20000, height=20000
    )
    cleaned, report = clean_split(_dataset_from(synthetic_raw_records), policy="drop")
    assert (
        report.dropped == Counter({"image does not open": 1})
        and "400000000 pixels" in report.examples[0]
    )
