"""Tests for vlmlib.boxes: the three box conventions and Qwen2-VL's [0, 1000) grid."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmlib.boxes import (
    QWEN_GRID_SIZE,
    convert_hub_box_to_qwen,
    convert_hub_box_to_xyxy,
    convert_qwen_box_to_hub,
    convert_qwen_box_to_xyxy,
    convert_xyxy_box_to_hub,
)

# fraction -> grid value, worked by hand: times 1000, then floor.
# round() would give 1000, 124, 1000 and 679 for the first four.
TRUNCATED_VALUES = {0.9996: 999, 0.1239: 123, 0.6789: 678, 1.0: 999, 0.0: 0, 0.5: 500}


@pytest.mark.parametrize(
    ("fraction", "grid_value"),
    TRUNCATED_VALUES.items(),
    ids=[str(fraction) for fraction in TRUNCATED_VALUES],
)
def test_convert_hub_box_to_qwen_truncates_instead_of_rounding(fraction: float, grid_value: int):
    assert convert_hub_box_to_qwen([fraction] * 4) == (grid_value,) * 4


def test_convert_hub_box_to_qwen_puts_x_first() -> None:
    assert convert_hub_box_to_qwen([0.25, 0.1, 0.75, 0.6]) == (100, 250, 600, 750)


def test_convert_hub_box_to_qwen_never_writes_1000_for_the_whole_image() -> None:
    assert convert_hub_box_to_qwen([0.0, 0.0, 1.0, 1.0]) == (0, 0, 999, 999)


@given(box_hub=st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4))
@settings(max_examples=300, deadline=None)
def test_convert_hub_box_to_qwen_is_int_of_value_times_1000_capped_at_999(box_hub: list[float]):
    y_min, x_min, y_max, x_max = box_hub
    box_qwen = convert_hub_box_to_qwen(box_hub)
    assert box_qwen == tuple(min(int(value * 1000), 999) for value in (x_min, y_min, x_max, y_max))
    assert all(isinstance(value, int) and 0 <= value < QWEN_GRID_SIZE for value in box_qwen)


def test_convert_qwen_box_to_hub_and_back_gives_every_grid_value_again() -> None:
    # k / 1000 * 1000 must not land just below k in floating point, or truncation would give k - 1.
    for value in range(QWEN_GRID_SIZE):
        assert convert_hub_box_to_qwen(convert_qwen_box_to_hub((value,) * 4)) == (value,) * 4, value


def test_convert_qwen_box_to_xyxy_maps_each_value_to_the_near_edge_of_its_cell() -> None:
    box_xyxy = convert_qwen_box_to_xyxy((100, 250, 600, 999), width_px=2000, height_px=1000)
    assert box_xyxy == (200.0, 250.0, 1200.0, 999.0)


def test_convert_hub_box_to_xyxy_and_back_is_the_identity() -> None:
    box_hub = [0.25, 0.1, 0.75, 0.6]
    box_xyxy = convert_hub_box_to_xyxy(box_hub, width_px=400, height_px=200)
    assert box_xyxy == (40.0, 50.0, 240.0, 150.0)
    assert convert_xyxy_box_to_hub(box_xyxy, width_px=400, height_px=200) == pytest.approx(box_hub)
