"""Draw boxes on images, lay images out in grids, and browse dataset records one at a time.

Why: every chapter shows boxes on photos; one set of functions keeps ground truth solid blue and
predictions dashed orange everywhere.
Explained in: chapter 01, "Looking at the data" and "Browsing the records".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image, ImageDraw, ImageFont

from vlmlib.boxes import convert_hub_box_to_xyxy
from vlmlib.viz.style import (
    FIGURE_SIZE,
    GRID_FIGURE_SIZE,
    GROUND_TRUTH_COLOR,
    PREDICTION_COLOR,
    _new_axis,
    new_figure,
)

__all__ = [
    "RecordExplorer",
    "build_record_explorer",
    "draw_boxes",
    "plot_image_grid",
    "plot_record",
    "plot_record_grid",
    "plot_records_with_boxes",
]


# Text colour on each label's filled background, chosen for contrast: white on
# blue, black on orange.
_LABEL_TEXT_COLORS = {GROUND_TRUTH_COLOR: "#FFFFFF", PREDICTION_COLOR: "#000000"}


def _draw_dashed_rectangle(
    draw: ImageDraw.ImageDraw, box_xyxy: Sequence[float], color: str, line_width: int
) -> None:
    """Draw a rectangle outline as dashes; PIL has no dashed line style of its own."""
    x1, y1, x2, y2 = box_xyxy
    dash_px, period_px = 4 * line_width, 7 * line_width  # a dash, then a gap of 3 line widths
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    for (start_x, start_y), (end_x, end_y) in zip(corners, corners[1:] + corners[:1]):
        length_px = math.hypot(end_x - start_x, end_y - start_y)
        for dash_start_px in np.arange(0.0, length_px, period_px):
            from_fraction = dash_start_px / length_px
            to_fraction = min(dash_start_px + dash_px, length_px) / length_px
            draw.line(
                [
                    (
                        start_x + (end_x - start_x) * from_fraction,
                        start_y + (end_y - start_y) * from_fraction,
                    ),
                    (
                        start_x + (end_x - start_x) * to_fraction,
                        start_y + (end_y - start_y) * to_fraction,
                    ),
                ],
                fill=color,
                width=line_width,
            )


def _draw_label(
    draw: ImageDraw.ImageDraw, box_xyxy: Sequence[float], label: str, color: str, font: Any
) -> None:
    """Write the label on a filled background just above the box (inside it when
    the box touches the top).
    """
    x1, y1 = box_xyxy[0], box_xyxy[1]
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    text_width, text_height = right - left, bottom - top
    padding_px = max(1, text_height // 4)
    label_top = y1 - text_height - 2 * padding_px if y1 - text_height - 2 * padding_px >= 0 else y1
    draw.rectangle(
        [x1, label_top, x1 + text_width + 2 * padding_px, label_top + text_height + 2 * padding_px],
        fill=color,
    )
    draw.text(
        (x1 + padding_px - left, label_top + padding_px - top),
        label,
        fill=_LABEL_TEXT_COLORS[color],
        font=font,
    )


def draw_boxes(
    image: Image.Image,
    ground_truth_xyxy: Sequence[Sequence[float]] = (),
    predicted_xyxy: Sequence[Sequence[float]] = (),
    ground_truth_labels: Sequence[str] | None = None,
    predicted_labels: Sequence[str] | None = None,
    line_width: int | None = None,
) -> Image.Image:
    """Return a copy of the image with ground-truth boxes (solid blue) and
    predictions (dashed orange).

    Why: one picture of both boxes shows at a glance what an IoU number means.
    Explained in: chapter 01, "Looking at the data"; chapter 05, "Where the model goes wrong".

    Args:
        image: the photo; it is not modified.
        ground_truth_xyxy, predicted_xyxy: boxes as (x1, y1, x2, y2) in pixels of this image.
        ground_truth_labels, predicted_labels: one text per box, written on a
            filled background; None for no labels.
        line_width: in pixels; None scales it with the image (about 1/200 of the
            shorter side, at least 2).
    Returns:
        A new RGB image of the same size.
    """
    drawn = image.convert(
        "RGB"
    )  # convert() always returns a new image, so the caller's stays as it was
    if line_width is None:
        line_width = max(2, round(min(drawn.size) / 200))
    draw = ImageDraw.Draw(drawn)
    font = ImageFont.load_default(size=max(12, 6 * line_width))
    for boxes_xyxy, labels, color in (
        (ground_truth_xyxy, ground_truth_labels, GROUND_TRUTH_COLOR),
        (predicted_xyxy, predicted_labels, PREDICTION_COLOR),
    ):
        for box_index, box_xyxy in enumerate(boxes_xyxy):
            box_xyxy = [float(value) for value in box_xyxy]
            if color == GROUND_TRUTH_COLOR:
                draw.rectangle(box_xyxy, outline=color, width=line_width)
            else:
                _draw_dashed_rectangle(draw, box_xyxy, color, line_width)
            if labels is not None:
                _draw_label(draw, box_xyxy, labels[box_index], color, font)
    return drawn


def plot_image_grid(
    images: Sequence[Image.Image | np.ndarray],
    titles: Sequence[str] | None = None,
    num_columns: int = 3,
    figure_size: tuple[float, float] = GRID_FIGURE_SIZE,
) -> Figure:
    """Return a figure showing the images in a grid, one titled panel per image, axes hidden.

    Why: a dozen images side by side reveal the dataset's variety (size, angle,
    lighting) better than any table.
    Explained in: chapter 01, "Looking at the data".

    Args:
        images: PIL images or (height, width, 3) arrays.
        titles: one per image, or None.
        num_columns: panels per row (fewer when there are fewer images).
        figure_size: (width, height) in inches.
    Raises:
        ValueError: no images, or a number of titles that differs from the number of images.
    """
    if len(images) == 0:
        raise ValueError(
            "plot_image_grid got no images; pass at least one (for example dataset[:6]['image'])."
        )
    if titles is not None and len(titles) != len(images):
        raise ValueError(
            f"plot_image_grid got {len(images)} images but {len(titles)} titles; pass "
            "one title per image or None."
        )
    num_columns = min(num_columns, len(images))
    num_rows = math.ceil(len(images) / num_columns)
    figure = new_figure(figure_size)
    for index, image in enumerate(images):
        axis = figure.add_subplot(num_rows, num_columns, index + 1)
        axis.imshow(image)
        axis.set_axis_off()
        if titles is not None:
            axis.set_title(titles[index], fontsize="small")
    return figure


def plot_records_with_boxes(records: Sequence[dict[str, Any]], num_columns: int = 3) -> Figure:
    """Return a grid of dataset records with their ground-truth boxes and category names drawn in.

    Why: looking at the annotations themselves is the quickest way to catch a wrong box convention.
    Explained in: chapter 01, "Three box conventions".

    Args:
        records: records in the Hub schema, with a decoded PIL `image` and `objects.bbox` as
            `box_hub` ([y_min, x_min, y_max, x_max], 0-1), e.g.
            `[dataset[index] for index in range(6)]`.
        num_columns: panels per row.
    """
    drawn_images, titles = [], []
    for record in records:
        image = record["image"]
        width_px, height_px = image.size
        boxes_xyxy = [
            convert_hub_box_to_xyxy(box_hub, width_px, height_px)
            for box_hub in record["objects"]["bbox"]
        ]
        drawn_images.append(
            draw_boxes(
                image,
                ground_truth_xyxy=boxes_xyxy,
                ground_truth_labels=record["objects"]["category_name"],
            )
        )
        num_boxes = len(boxes_xyxy)
        titles.append(
            f"{record['image_id']}\n{width_px}x{height_px} px, {num_boxes} "
            f"box{'es' if num_boxes != 1 else ''}"
        )
    figure = plot_image_grid(drawn_images, titles=titles, num_columns=num_columns)
    legend_handle = Line2D(
        [], [], color=GROUND_TRUTH_COLOR, linestyle="-", linewidth=2, label="ground truth"
    )
    figure.legend(handles=[legend_handle], loc="outside lower center")
    figure.suptitle("Ground-truth boxes from the dataset")
    return figure


def plot_record(record: dict[str, Any], show_boxes: bool = True, ax: Axes | None = None) -> Figure:
    """Return one record's image, with its ground-truth boxes (solid blue)
    unless `show_boxes` is False.

    Why: the explorer's view, and the simplest look at one annotation; the x label gives each box on
    Qwen2-VL's grid of 0 to 999 as the answer writes it, `(x1,y1),(x2,y2)`, one line per box.
    Explained in: chapter 01, "Browsing the records".

    Category labels are matplotlib text, not pixels, so they stay readable on small images.
    """
    from vlmlib.boxes import convert_hub_box_to_qwen

    axis = _new_axis(ax, (FIGURE_SIZE[0], FIGURE_SIZE[1] * 1.3))
    image, objects = record["image"], record["objects"]
    width_px, height_px = image.size
    boxes_xyxy = [
        convert_hub_box_to_xyxy(box_hub, width_px, height_px) for box_hub in objects["bbox"]
    ]
    axis.imshow(draw_boxes(image, boxes_xyxy) if show_boxes else image)
    for (x1, y1, _, _), category_name in zip(
        boxes_xyxy if show_boxes else [], objects["category_name"]
    ):
        is_at_top = y1 < 0.08 * height_px  # no room above the box: write the label inside it
        axis.text(
            x1,
            y1,
            category_name,
            fontsize=9,
            color="white",
            ha="left",
            va="top" if is_at_top else "bottom",
            clip_on=False,
            bbox={"facecolor": GROUND_TRUTH_COLOR, "edgecolor": "none", "pad": 1.0},
        )
    axis.set_xticks([])
    axis.set_yticks([])
    boxes_qwen = [convert_hub_box_to_qwen(box_hub) for box_hub in objects["bbox"]]
    axis.set_xlabel(
        "\n".join(f"({x1},{y1}),({x2},{y2})" for x1, y1, x2, y2 in boxes_qwen), fontsize=10
    )
    num_boxes = len(boxes_xyxy)
    axis.set_title(
        (
            f"{record['image_id']}\n{width_px}x{height_px} px, {num_boxes} "
            f"box{'es' if num_boxes != 1 else ''}"
        ),
        fontsize=11,
    )
    return axis.figure


def plot_record_grid(records: Sequence[dict[str, Any]], num_columns: int = 3) -> Figure:
    """Return a grid of records (`plot_record` panels): boxes and categories
    drawn, Qwen boxes written below.

    Why: a handful of annotated records, readable at the width of a book page,
    before any statistics.
    Explained in: chapter 01, "Looking at the data".

    Raises:
        ValueError: no records.
    """
    if len(records) == 0:
        raise ValueError("plot_record_grid got no records; pass at least one, e.g. [dataset[0]].")
    num_columns = min(num_columns, len(records))
    num_rows = math.ceil(len(records) / num_columns)
    figure = new_figure(
        (GRID_FIGURE_SIZE[0] * 2 / 3, 3.6 * num_rows)
    )  # 8 in: text stays legible at page width
    for index, record in enumerate(records):
        plot_record(record, ax=figure.add_subplot(num_rows, num_columns, index + 1))
    legend_handle = Line2D(
        [],
        [],
        color=GROUND_TRUTH_COLOR,
        linestyle="-",
        linewidth=2,
        label="ground truth (box_qwen below each image)",
    )
    figure.legend(handles=[legend_handle], loc="outside lower center")
    return figure


class RecordExplorer:
    """A slider over records and a "show boxes" checkbox; where no kernel runs,
    a still picture of the first record.

    Why: browsing dozens of records by hand catches odd annotations that summary plots hide, and a
    rendered page (no kernel behind it) should still show something useful.
    Explained in: chapter 01, "Browsing the records".

    Displayed in Jupyter, the output holds both the live widget and a PNG of its
    first view; JupyterLab shows the widget, and the book shows the PNG (its
    `_config.yml` ranks widget views below images).
    """

    def __init__(self, records: Sequence[dict[str, Any]]) -> None:
        import ipywidgets  # imported here: only the explorer needs it

        self.records = records
        self.index_slider = ipywidgets.IntSlider(
            value=0, min=0, max=len(records) - 1, description="record"
        )
        self.box_checkbox = ipywidgets.Checkbox(value=True, description="show boxes")
        output = ipywidgets.interactive_output(
            self._show, {"index": self.index_slider, "show_boxes": self.box_checkbox}
        )
        self.widget = ipywidgets.VBox(
            [ipywidgets.HBox([self.index_slider, self.box_checkbox]), output]
        )

    def _show(self, index: int, show_boxes: bool) -> None:
        from IPython.display import display

        display(plot_record(self.records[index], show_boxes))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        import base64
        import io

        buffer = io.BytesIO()
        plot_record(self.records[self.index_slider.value], self.box_checkbox.value).savefig(
            buffer, format="png", dpi=100
        )
        bundle = dict(self.widget._repr_mimebundle_())
        bundle["image/png"] = base64.b64encode(buffer.getvalue()).decode("ascii")
        bundle["text/plain"] = f"RecordExplorer over {len(self.records)} records"
        return bundle


def build_record_explorer(records: Sequence[dict[str, Any]]) -> RecordExplorer:
    """Return an explorer over the records: a slider picks one, a checkbox toggles its boxes.

    Explained in: chapter 01, "Browsing the records".

    Args:
        records: Hub-schema records with decoded PIL images, e.g.
            `[dataset[index] for index in range(50)]`.
    Raises:
        ValueError: no records.
    """
    if len(records) == 0:
        raise ValueError(
            "build_record_explorer got no records; pass at least one, e.g. [dataset[0]]."
        )
    return RecordExplorer(records)
