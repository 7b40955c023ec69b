"""Tests for vlmlib.viz: boxes drawn on images, and image grids."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image, ImageColor

from vlmlib.viz import (
    GRID_FIGURE_SIZE,
    GROUND_TRUTH_COLOR,
    PREDICTION_COLOR,
    draw_boxes,
    plot_image_grid,
    plot_records_with_boxes,
)

GROUND_TRUTH_RGB = ImageColor.getrgb(GROUND_TRUTH_COLOR)
PREDICTION_RGB = ImageColor.getrgb(PREDICTION_COLOR)


@pytest.fixture
def box_white_image() -> Image.Image:
    """A plain white 200x100 RGB image, so every coloured pixel comes from drawing."""
    return Image.new("RGB", (200, 100), "white")


@pytest.fixture
def box_records() -> list[dict[str, Any]]:
    """Four records in the Hub schema (box_hub = [y_min, x_min, y_max, x_max],
    0-1), with one or two boxes each.
    """
    records = []
    for index in range(4):
        num_boxes = 1 + index % 2
        records.append(
            {
                "image_id": f"image-{index}",
                "image": Image.new("RGB", (160, 120), "lightgray"),
                "width": 160,
                "height": 120,
                "objects": {
                    "bbox": [[0.1, 0.1, 0.5, 0.5], [0.6, 0.5, 0.9, 0.9]][:num_boxes],
                    "category_id": [0, 1][:num_boxes],
                    "category_name": ["nutrition-table", "nutrition-table-small"][:num_boxes],
                },
            }
        )
    return records


def test_draw_boxes_returns_a_new_image_of_the_same_size(box_white_image: Image.Image) -> None:
    drawn = draw_boxes(
        box_white_image, ground_truth_xyxy=[(20, 20, 120, 80)], predicted_xyxy=[(30, 10, 150, 90)]
    )
    assert isinstance(drawn, Image.Image)
    assert drawn is not box_white_image
    assert drawn.size == box_white_image.size


def test_draw_boxes_leaves_the_input_image_unchanged(box_white_image: Image.Image) -> None:
    before = np.asarray(box_white_image).copy()
    draw_boxes(
        box_white_image,
        [(20, 20, 120, 80)],
        [(30, 10, 150, 90)],
        ["nutrition-table"],
        ["nutrition-table"],
    )
    np.testing.assert_array_equal(np.asarray(box_white_image), before)


def test_draw_boxes_paints_ground_truth_colour_on_the_box_edge_and_nowhere_inside(
    box_white_image: Image.Image,
) -> None:
    pixels = np.asarray(
        draw_boxes(box_white_image, ground_truth_xyxy=[(20, 20, 120, 80)], line_width=2)
    )
    assert (
        tuple(pixels[50, 20]) == GROUND_TRUTH_RGB
    )  # left edge, pixels are indexed [row (y), column (x)]
    assert tuple(pixels[20, 70]) == GROUND_TRUTH_RGB  # top edge
    assert tuple(pixels[50, 70]) == (255, 255, 255)  # inside the box


def test_draw_boxes_draws_predictions_dashed_in_prediction_colour(
    box_white_image: Image.Image,
) -> None:
    pixels = np.asarray(
        draw_boxes(box_white_image, predicted_xyxy=[(20, 20, 180, 80)], line_width=2)
    )
    top_edge = pixels[20, 22:178]
    is_prediction_colour = np.all(top_edge == PREDICTION_RGB, axis=-1)
    assert is_prediction_colour.any()
    assert not is_prediction_colour.all()  # gaps between dashes


def test_draw_boxes_draws_label_background_above_the_box(box_white_image: Image.Image) -> None:
    pixels = np.asarray(
        draw_boxes(
            box_white_image,
            [(20, 50, 150, 90)],
            ground_truth_labels=["nutrition-table"],
            line_width=2,
        )
    )
    label_area = pixels[30:50, 20:150]
    assert np.all(label_area == GROUND_TRUTH_RGB, axis=-1).sum() > 100


def test_plot_image_grid_returns_a_figure_with_one_axis_per_image(
    box_white_image: Image.Image,
) -> None:
    figure = plot_image_grid(
        [box_white_image] * 5, titles=[f"image {index}" for index in range(5)], num_columns=3
    )
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 5
    assert [axis.get_title() for axis in figure.axes] == [f"image {index}" for index in range(5)]
    assert tuple(figure.get_size_inches()) == GRID_FIGURE_SIZE


def test_plot_image_grid_hides_the_axes(box_white_image: Image.Image) -> None:
    figure = plot_image_grid([box_white_image, np.zeros((10, 10, 3), dtype=np.uint8)])
    assert not any(axis.axison for axis in figure.axes)


def test_plot_image_grid_error_names_the_counts_when_titles_do_not_match(
    box_white_image: Image.Image,
) -> None:
    with pytest.raises(ValueError, match="2 images but 1 titles"):
        plot_image_grid([box_white_image, box_white_image], titles=["only one"])


def test_plot_records_with_boxes_titles_each_panel_with_id_size_and_box_count(
    box_records: list[dict[str, Any]],
) -> None:
    figure = plot_records_with_boxes(box_records, num_columns=2)
    assert isinstance(figure, Figure)
    assert len(figure.axes) == len(box_records)
    assert figure.axes[0].get_title() == "image-0\n160x120 px, 1 box"
    assert figure.axes[1].get_title() == "image-1\n160x120 px, 2 boxes"
    assert len(figure.legends) == 1


def test_plot_records_with_boxes_draws_boxes_where_the_hub_box_says(
    box_records: list[dict[str, Any]],
) -> None:
    figure = plot_records_with_boxes(box_records[:1])
    pixels = figure.axes[0].get_images()[0].get_array()
    # box_hub [0.1, 0.1, 0.5, 0.5] on 160x120 px is box_xyxy (16, 12, 80, 60);
    # its right edge is at x = 80.
    assert tuple(pixels[40, 80][:3]) == GROUND_TRUTH_RGB
