"""Draw boxes on images and lay images out in grids, with one look across the whole course.

Why: every chapter shows boxes, and a reader should never have to work out which colour is the
ground truth. Ground truth is always solid blue and a prediction always dashed orange (Okabe-Ito
colours, which stay distinct under the common forms of colour blindness), and every figure takes
its size from `FIGURE_SIZE` or `GRID_FIGURE_SIZE`.
Explained in: chapter 01, "Looking at the data".

`plot_*` functions return a `matplotlib.figure.Figure` made through pyplot and closed at once, so
Jupyter's inline backend renders it and a notebook cell that ends with the call shows it exactly once; `draw_*` functions return a new PIL image. Nothing here
calls `plt.show()` or writes files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image, ImageDraw, ImageFont

from vlmlib.boxes import convert_hub_box_to_xyxy
from vlmlib.metrics import compute_image_mean_iou

if TYPE_CHECKING:  # for type hints only: vlmlib.evaluation pulls in pycocotools and pandas
    import pandas as pd

    from vlmlib.evaluation import ImagePrediction

__all__ = [
    "MASKED_COLOR",
    "ROLE_COLORS",
    "plot_token_mask",
    "new_figure",
    "FIGURE_SIZE",
    "GRID_FIGURE_SIZE",
    "GROUND_TRUTH_COLOR",
    "PREDICTION_COLOR",
    "draw_boxes",
    "plot_image_grid",
    "plot_records_with_boxes",
    "RecordExplorer",
    "build_record_explorer",
    "plot_box_centre_heatmap",
    "plot_box_size_scatter",
    "plot_count_bars",
    "plot_histogram",
    "plot_patch_grid",
    "plot_record",
    "plot_record_grid",
    "plot_size_histogram",
    "plot_token_strip",
    "plot_iou_distribution",
    "plot_threshold_sweep",
    "plot_prediction_gallery",
    "plot_training_curves",
    "plot_loss_curves",
]

FIGURE_SIZE = (6.0, 4.0)  # inches, for single plots
GRID_FIGURE_SIZE = (12.0, 8.0)  # inches, for grids of images
GROUND_TRUTH_COLOR = "#0072B2"  # Okabe-Ito blue, drawn solid
PREDICTION_COLOR = "#E69F00"  # Okabe-Ito orange, drawn dashed

# Text colour on each label's filled background, chosen for contrast: white on blue, black on orange.
_LABEL_TEXT_COLORS = {GROUND_TRUTH_COLOR: "#FFFFFF", PREDICTION_COLOR: "#000000"}


def new_figure(figure_size: tuple[float, float] = FIGURE_SIZE) -> Figure:
    """Return an empty figure that a notebook shows once when a cell ends with it.

    Why: a figure made through pyplot gets the inline backend's display hook; closing it at once
    stops pyplot from showing it a second time at the end of the cell.
    """
    figure = plt.figure(figsize=figure_size, layout="constrained")
    plt.close(figure)
    return figure


def _draw_dashed_rectangle(draw: ImageDraw.ImageDraw, box_xyxy: Sequence[float], color: str, line_width: int) -> None:
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
                    (start_x + (end_x - start_x) * from_fraction, start_y + (end_y - start_y) * from_fraction),
                    (start_x + (end_x - start_x) * to_fraction, start_y + (end_y - start_y) * to_fraction),
                ],
                fill=color,
                width=line_width,
            )


def _draw_label(draw: ImageDraw.ImageDraw, box_xyxy: Sequence[float], label: str, color: str, font: Any) -> None:
    """Write the label on a filled background just above the box (inside it when the box touches the top)."""
    x1, y1 = box_xyxy[0], box_xyxy[1]
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    text_width, text_height = right - left, bottom - top
    padding_px = max(1, text_height // 4)
    label_top = y1 - text_height - 2 * padding_px if y1 - text_height - 2 * padding_px >= 0 else y1
    draw.rectangle([x1, label_top, x1 + text_width + 2 * padding_px, label_top + text_height + 2 * padding_px], fill=color)
    draw.text((x1 + padding_px - left, label_top + padding_px - top), label, fill=_LABEL_TEXT_COLORS[color], font=font)


def draw_boxes(
    image: Image.Image,
    ground_truth_xyxy: Sequence[Sequence[float]] = (),
    predicted_xyxy: Sequence[Sequence[float]] = (),
    ground_truth_labels: Sequence[str] | None = None,
    predicted_labels: Sequence[str] | None = None,
    line_width: int | None = None,
) -> Image.Image:
    """Return a copy of the image with ground-truth boxes (solid blue) and predictions (dashed orange).

    Why: one picture of both boxes shows at a glance what an IoU number means.
    Explained in: chapter 01, "Looking at the data"; chapter 05, "Where the model goes wrong".

    Args:
        image: the photo; it is not modified.
        ground_truth_xyxy, predicted_xyxy: boxes as (x1, y1, x2, y2) in pixels of this image.
        ground_truth_labels, predicted_labels: one text per box, written on a filled background; None for no labels.
        line_width: in pixels; None scales it with the image (about 1/200 of the shorter side, at least 2).
    Returns:
        A new RGB image of the same size.
    """
    drawn = image.convert("RGB")  # convert() always returns a new image, so the caller's stays as it was
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

    Why: a dozen images side by side reveal the dataset's variety (size, angle, lighting) better than any table.
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
        raise ValueError("plot_image_grid got no images; pass at least one (for example dataset[:6]['image']).")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"plot_image_grid got {len(images)} images but {len(titles)} titles; pass one title per image or None.")
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
            `box_hub` ([y_min, x_min, y_max, x_max], 0-1), e.g. `[dataset[index] for index in range(6)]`.
        num_columns: panels per row.
    """
    drawn_images, titles = [], []
    for record in records:
        image = record["image"]
        width_px, height_px = image.size
        boxes_xyxy = [convert_hub_box_to_xyxy(box_hub, width_px, height_px) for box_hub in record["objects"]["bbox"]]
        drawn_images.append(draw_boxes(image, ground_truth_xyxy=boxes_xyxy, ground_truth_labels=record["objects"]["category_name"]))
        num_boxes = len(boxes_xyxy)
        titles.append(f"{record['image_id']}\n{width_px}x{height_px} px, {num_boxes} box{'es' if num_boxes != 1 else ''}")
    figure = plot_image_grid(drawn_images, titles=titles, num_columns=num_columns)
    legend_handle = Line2D([], [], color=GROUND_TRUTH_COLOR, linestyle="-", linewidth=2, label="ground truth")
    figure.legend(handles=[legend_handle], loc="outside lower center")
    figure.suptitle("Ground-truth boxes from the dataset")
    return figure


# --- evaluation plots (chapter 06) ---

# Okabe-Ito colours other than the ground-truth blue and prediction orange: one per model in comparisons.
_MODEL_COLORS = ("#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
# Precision, recall and F1 are told apart by marker and line style, since colour already names the model.
_SWEEP_METRIC_STYLES = {"precision": ("precision", "o", "-"), "recall": ("recall", "s", "--"), "f1": ("F1", "^", ":")}


def plot_iou_distribution(ious_by_model: dict[str, Sequence[float]], ax: Axes | None = None) -> Figure:
    """Return a histogram of per-image IoU for each model, on the same 0.05-wide bins from 0 to 1.

    Why: a mean IoU of 0.5 can be every image at 0.5, or half the images exact and half missed;
    the histogram tells the two apart, and the bar at 0 counts missed images and parse failures.
    Explained in: chapter 06, "Where the IoU goes".

    Args:
        ious_by_model: model name -> one IoU per image, e.g. `{"fine-tuned": report.per_image["iou"]}`.
            NaN values are left out.
        ax: axes to draw on; None makes a new figure of `FIGURE_SIZE`.
    Raises:
        ValueError: `ious_by_model` is empty.
    """
    if not ious_by_model:
        raise ValueError("plot_iou_distribution got no models; pass {model name: per-image IoUs}.")
    axis = new_figure(FIGURE_SIZE).add_subplot() if ax is None else ax
    bins = np.linspace(0.0, 1.0, 21)  # 0.05 wide, so 0.5 falls on a bin edge
    for index, (name, ious) in enumerate(ious_by_model.items()):
        values = np.asarray(ious, dtype=float)
        values = values[~np.isnan(values)]
        mean_text = f"mean {values.mean():.3f}" if values.size else "no values"
        color = _MODEL_COLORS[index % len(_MODEL_COLORS)]
        axis.hist(values, bins=bins, histtype="stepfilled", alpha=0.3, color=color, edgecolor=color, linewidth=1.5,
                  label=f"{name} ({values.size} images, {mean_text})")
    axis.axvline(0.5, color="grey", linestyle=":", label="IoU 0.5")
    axis.set(xlim=(0.0, 1.0), xlabel="IoU per image (0 = missed, or no box in the answer)", ylabel="number of images",
             title="Per-image IoU")
    axis.legend(fontsize="small")
    return axis.figure


def plot_threshold_sweep(sweeps: dict[str, pd.DataFrame], ax: Axes | None = None) -> Figure:
    """Return precision, recall and F1 against the IoU threshold, one colour per model.

    Why: "correct at IoU 0.5" is a choice; the sweep shows how fast each model's boxes stop
    counting as the bar for a true positive rises towards 0.95.
    Explained in: chapter 06, "How tight are the boxes?".

    Args:
        sweeps: model name -> `EvaluationReport.sweep` (columns iou_threshold, precision, recall, f1).
        ax: axes to draw on; None makes a new figure of `FIGURE_SIZE`.
    Raises:
        ValueError: `sweeps` is empty, or a table lacks one of the columns.
    """
    if not sweeps:
        raise ValueError("plot_threshold_sweep got no models; pass {model name: report.sweep}.")
    axis = new_figure(FIGURE_SIZE).add_subplot() if ax is None else ax
    for index, (name, sweep) in enumerate(sweeps.items()):
        missing = {"iou_threshold", *_SWEEP_METRIC_STYLES} - set(sweep.columns)
        if missing:
            raise ValueError(f"plot_threshold_sweep: the table for {name!r} lacks columns {sorted(missing)}; pass report.sweep.")
        for column, (metric_name, marker, line_style) in _SWEEP_METRIC_STYLES.items():
            axis.plot(sweep["iou_threshold"], sweep[column], marker=marker, linestyle=line_style,
                      color=_MODEL_COLORS[index % len(_MODEL_COLORS)], label=f"{name}: {metric_name}")
    axis.set(ylim=(0.0, 1.02), xlabel="IoU threshold for a true positive", ylabel="score (0 to 1)",
             title="Precision, recall and F1 against the IoU threshold")
    axis.legend(fontsize="small")
    return axis.figure


def _describe_iou(prediction: ImagePrediction) -> str:
    """Return a panel's IoU line; a parse failure scores 0, and the line says why."""
    if prediction.is_parse_failure:
        return f"IoU 0, parse failure: {(prediction.failure_reason or 'no box').split(':')[0]}"
    return f"IoU {compute_image_mean_iou(prediction.predicted_xyxy, prediction.ground_truth_xyxy):.2f}"


def plot_prediction_gallery(
    records: Sequence[dict[str, Any]],
    predictions: Sequence[ImagePrediction],
    titles: Sequence[str] | None = None,
    num_columns: int = 3,
) -> Figure:
    """Return a grid of images with ground truth (solid blue) and predictions (dashed orange), IoU in each title.

    Why: the worst and best images explain an IoU histogram better than more numbers do.
    Explained in: chapter 06, "Where the model goes wrong".

    Args:
        records: Hub-schema records with decoded PIL images, in the same order as `predictions`.
        predictions: `vlmlib.evaluation.ImagePrediction`s (boxes as `box_xyxy`, pixels of the record's image).
        titles: a first line per panel (e.g. the model name); None uses the image_id. The IoU is always added.
        num_columns: panels per row.
    Raises:
        ValueError: different numbers of records, predictions or titles, or a pair whose image_id or size differ.
    """
    if len(predictions) != len(records) or (titles is not None and len(titles) != len(records)):
        raise ValueError(f"plot_prediction_gallery got {len(records)} records, {len(predictions)} predictions and "
                         f"{'no' if titles is None else len(titles)} titles; pass one prediction (and title) per record.")
    drawn_images, panel_titles = [], []
    for index, (record, prediction) in enumerate(zip(records, predictions)):
        image = record["image"]
        if str(record["image_id"]) != prediction.image_id or image.size != (prediction.width_px, prediction.height_px):
            width_px, height_px = image.size
            raise ValueError(f"plot_prediction_gallery: record {index} ({record['image_id']!r}, {width_px}x{height_px} px) "
                             f"does not match its prediction ({prediction.image_id!r}, {prediction.width_px}x"
                             f"{prediction.height_px} px); keep records and predictions in the same order.")
        drawn_images.append(draw_boxes(image, prediction.ground_truth_xyxy, prediction.predicted_xyxy))
        panel_titles.append(f"{prediction.image_id if titles is None else titles[index]}\n{_describe_iou(prediction)}")
    figure = plot_image_grid(drawn_images, titles=panel_titles, num_columns=num_columns)
    figure.legend(handles=[Line2D([], [], color=GROUND_TRUTH_COLOR, linestyle="-", linewidth=2, label="ground truth"),
                           Line2D([], [], color=PREDICTION_COLOR, linestyle="--", linewidth=2, label="prediction")],
                  loc="outside lower center", ncols=2)
    figure.suptitle("Ground truth and predictions")
    return figure


# --- dataset and token plots (chapters 01 and 02) ---

# Okabe-Ito colours other than the ground-truth blue and prediction orange, for series that are neither.
_SERIES_COLORS = ("#56B4E9", "#D55E00", "#009E73", "#CC79A7", "#F0E442", "#000000")
# What each kind of token looks like in `plot_token_strip`: (fill colour, legend text).
_TOKEN_KIND_STYLES = {
    "text": ("#EEEEEE", "text"),
    "chat": ("#CC79A7", "chat markup"),
    "vision": ("#56B4E9", "image"),
    "grounding": ("#E69F00", "grounding (the box)"),
}


def _new_axis(ax: Axes | None, figure_size: tuple[float, float] = FIGURE_SIZE) -> Axes:
    """Return `ax`, or the axes of a new figure when it is None."""
    return new_figure(figure_size).add_subplot() if ax is None else ax


def plot_size_histogram(image_stats: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """Return histograms of image widths and heights, in pixels, on one axis.

    Why: the processor resizes every image into the pixel budget, so the spread of sizes says how
    much each photo is shrunk (or enlarged).
    Explained in: chapter 01, "Image sizes".

    Args:
        image_stats: `vlmlib.dataset_stats.compute_image_stats` output (columns width_px, height_px).
    """
    axis = _new_axis(ax)
    sizes = np.concatenate([image_stats["width_px"], image_stats["height_px"]])
    bins = np.linspace(sizes.min(), sizes.max(), 25)
    for column, name, color in (("width_px", "width", _SERIES_COLORS[0]), ("height_px", "height", _SERIES_COLORS[1])):
        axis.hist(image_stats[column], bins=bins, histtype="stepfilled", alpha=0.4, color=color, edgecolor=color,
                  linewidth=1.5, label=f"{name} (median {image_stats[column].median():.0f} px)")
    axis.set(xlabel="side length (px)", ylabel="number of images", title=f"Image sizes ({len(image_stats)} images)")
    axis.legend(fontsize="small")
    return axis.figure


def plot_histogram(
    values: Sequence[float],
    xlabel: str,
    title: str,
    ylabel: str = "count",
    num_bins: int = 25,
    is_log_x: bool = False,
    markers: dict[str, float] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Return a histogram of one quantity, with optional labelled vertical lines (e.g. "square box" at 1).

    Why: box areas, aspect ratios and token counts are each one column; one function keeps them alike.
    Explained in: chapter 01, "Box area coverage" and "Box shapes and positions".

    Args:
        is_log_x: log-spaced bins and axis, for ratios (a box twice as wide as tall sits as far from 1
            as one twice as tall as wide).
        markers: label -> x value, drawn as dotted vertical lines with a legend.
    """
    axis = _new_axis(ax)
    values = np.asarray(values, dtype=float)
    low, high = values.min(), values.max()
    if is_log_x:
        from matplotlib import ticker  # only log axes need it

        bins = np.geomspace(low, high, num_bins + 1) if high > low else num_bins
        axis.set_xscale("log")
        # Plain numbers at ratios a reader knows (1/4 ... 4), instead of matplotlib's "6 x 10^-1"
        nice_ticks = [tick for tick in (0.25, 0.33, 0.5, 0.67, 1, 1.5, 2, 3, 4) if low / 1.1 <= tick <= high * 1.1]
        axis.xaxis.set_major_locator(ticker.FixedLocator(nice_ticks))
        axis.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        axis.xaxis.set_minor_formatter(ticker.NullFormatter())
    else:
        bins = np.linspace(low, high, num_bins + 1) if high > low else num_bins
    axis.hist(values, bins=bins, color=_SERIES_COLORS[0], edgecolor="white")
    for index, (label, x_value) in enumerate((markers or {}).items()):
        axis.axvline(x_value, color=_SERIES_COLORS[(index + 1) % len(_SERIES_COLORS)], linestyle=":", linewidth=2, label=label)
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if markers:
        axis.legend(fontsize="small")
    return axis.figure


def plot_count_bars(counts: dict[Any, int], xlabel: str, ylabel: str, title: str, ax: Axes | None = None) -> Figure:
    """Return a bar chart of counts, each bar labelled with its count and share of the total.

    Why: boxes per image and boxes per category are small sets of counts where the exact numbers matter.
    Explained in: chapter 01, "Boxes per image" and "Categories".

    Args:
        counts: category -> count, drawn in the given order (e.g. `series.value_counts().sort_index().to_dict()`).
    """
    axis = _new_axis(ax)
    names = [str(name) for name in counts]
    total = sum(counts.values())
    bars = axis.bar(names, list(counts.values()), color=_SERIES_COLORS[0])
    axis.bar_label(bars, labels=[f"{count} ({count / total:.0%})" for count in counts.values()], fontsize="small")
    axis.margins(y=0.15)  # room for the labels above the tallest bar
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if max(len(name) for name in names) > 8:
        axis.tick_params(axis="x", labelrotation=20)
    return axis.figure


def plot_box_centre_heatmap(box_stats: pd.DataFrame, num_bins: int = 10, ax: Axes | None = None) -> Figure:
    """Return a heatmap of where box centres fall, in image coordinates (top of the image at the top).

    Why: if tables sit in one place, a model can score well by guessing that place; the heatmap shows
    how much a constant guess would get right.
    Explained in: chapter 01, "Box shapes and positions".

    Args:
        box_stats: `vlmlib.dataset_stats.compute_box_stats` output (columns centre_x, centre_y, 0-1).
    """
    axis = _new_axis(ax, (FIGURE_SIZE[0], FIGURE_SIZE[1] * 1.2))
    counts, _, _ = np.histogram2d(box_stats["centre_y"], box_stats["centre_x"], bins=num_bins, range=[[0, 1], [0, 1]])
    image = axis.imshow(counts, extent=(0, 1, 1, 0), cmap="viridis", origin="upper")
    axis.figure.colorbar(image, ax=axis, label="number of boxes")
    axis.set(xlabel="box centre x (fraction of image width)", ylabel="box centre y (fraction of image height)",
             title=f"Where box centres fall ({len(box_stats)} boxes)")
    return axis.figure


def plot_box_size_scatter(box_stats: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """Return box width against box height (fractions of the image), one colour per category.

    Why: shows at once how big tables are, whether they are square, and whether categories differ in size.
    Explained in: chapter 01, "Box shapes and positions".
    """
    axis = _new_axis(ax, (FIGURE_SIZE[0] * 1.4, FIGURE_SIZE[1] * 1.2))
    for index, (category_name, group) in enumerate(box_stats.groupby("category_name", sort=True)):
        axis.scatter(group["width_fraction"], group["height_fraction"], s=14, alpha=0.7,
                     color=_SERIES_COLORS[index % len(_SERIES_COLORS)], label=f"{category_name} ({len(group)})")
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="square in fractions")
    axis.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", xlabel="box width (fraction of image width)",
             ylabel="box height (fraction of image height)", title="Box sizes by category")
    axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: points fill the corners
    return axis.figure


def plot_patch_grid(image: Image.Image, resized_width_px: int, resized_height_px: int, patch_size_px: int = 14,
                    merge_size: int = 2, ax: Axes | None = None) -> Figure:
    """Return the image at the processor's size with its patches (thin lines) and image tokens (thick lines).

    Why: one picture shows what `<|image_pad|>` means: each thick cell is one token, made of
    `merge_size` x `merge_size` patches of `patch_size_px` pixels.
    Explained in: chapter 02, "From pixels to image tokens".

    Args:
        resized_width_px, resized_height_px: from `vlmlib.dataset_stats.compute_image_token_budget`.
    """
    axis = _new_axis(ax)
    axis.imshow(image.convert("RGB").resize((resized_width_px, resized_height_px)))
    token_px = patch_size_px * merge_size
    for position in range(0, max(resized_width_px, resized_height_px) + 1, patch_size_px):
        is_token_edge = position % token_px == 0
        style = {"color": "white", "linewidth": 1.2 if is_token_edge else 0.4, "alpha": 0.9 if is_token_edge else 0.5}
        if position <= resized_width_px:
            axis.axvline(position - 0.5, **style)
        if position <= resized_height_px:
            axis.axhline(position - 0.5, **style)
    num_tokens = (resized_width_px // token_px) * (resized_height_px // token_px)
    axis.set(xlabel="x (px, after resizing)", ylabel="y (px, after resizing)",
             title=f"{resized_width_px}x{resized_height_px} px: {num_tokens * merge_size**2} patches, {num_tokens} image tokens")
    return axis.figure


def _token_kind(token: str) -> str:
    """Return the `_TOKEN_KIND_STYLES` key for a token's text."""
    if token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        return "chat"
    if token.startswith(("<|vision", "<|image_pad")):
        return "vision"
    if token.startswith(("<|object_ref", "<|box_")):
        return "grounding"
    return "text"


def _collapse_runs(tokens: Sequence[str], min_run: int = 3) -> list[str]:
    """Replace a run of `min_run` or more identical tokens by one cell "token x count"."""
    collapsed: list[str] = []
    index = 0
    while index < len(tokens):
        end = index
        while end < len(tokens) and tokens[end] == tokens[index]:
            end += 1
        collapsed += [f"{tokens[index]} x{end - index}"] if end - index >= min_run else list(tokens[index:end])
        index = end
    return collapsed


def plot_token_strip(token_texts: Sequence[str], title: str, max_row_chars: int = 100) -> Figure:
    """Return the tokens of a text as a row-wrapped strip of cells, coloured by kind of token.

    Why: the chat template hides many special tokens; drawing each token as a cell shows where the
    image, the prompt and the answer sit, and that box coordinates are one token per digit.
    Explained in: chapter 02, "The chat template and its special tokens".

    Args:
        token_texts: one string per token, as decoded one at a time (`tokenizer.decode([token_id])`);
            newlines are drawn as "\\n", and runs of one token (the image pads) as "token xN".
        max_row_chars: characters per row before wrapping; the font is sized so that a row fills the width.
    """
    from matplotlib.patches import Rectangle  # only the token strip draws rectangles by hand

    cells = [text.replace("\n", "\\n") for text in _collapse_runs(list(token_texts))]
    rows: list[list[str]] = [[]]
    for cell in cells:
        if rows[-1] and sum(len(text) + 1 for text in rows[-1]) + len(cell) > max_row_chars:
            rows.append([])
        rows[-1].append(cell)
    width_in, row_in, title_in, legend_in = GRID_FIGURE_SIZE[0], 0.34, 0.5, 0.45
    height_in = row_in * len(rows) + title_in + legend_in
    figure = new_figure((width_in, height_in))
    figure.set_layout_engine("none")  # the cells are placed by hand, character by character
    axis = figure.add_axes((0.005, legend_in / height_in, 0.99, row_in * len(rows) / height_in))
    axis.set(xlim=(0, max_row_chars + 0.6), ylim=(len(rows), 0))
    axis.set_axis_off()
    font_size_pt = 0.99 * width_in * 72 / (max_row_chars + 0.6) / 0.602  # a DejaVu Sans Mono character is 0.602 em wide
    for row_index, row in enumerate(rows):
        x_position = 0.3
        for cell in row:
            color = _TOKEN_KIND_STYLES[_token_kind(cell.split(" x")[0])][0]
            axis.add_patch(Rectangle((x_position - 0.2, row_index + 0.1), len(cell) + 0.4, 0.8, facecolor=color,
                                     edgecolor="#888888", linewidth=0.6))
            axis.text(x_position, row_index + 0.5, cell, family="DejaVu Sans Mono", fontsize=font_size_pt * 0.95, va="center",
                      parse_math=False)
            x_position += len(cell) + 1
    handles = [Line2D([], [], marker="s", linestyle="", markersize=10, markerfacecolor=color, markeredgecolor="#888888", label=label)
               for color, label in _TOKEN_KIND_STYLES.values()]
    figure.legend(handles=handles, loc="lower center", ncols=4, fontsize="medium", frameon=False)
    figure.suptitle(title, y=1 - 0.1 / height_in, va="top", fontsize="x-large")
    return figure


def plot_record(record: dict[str, Any], show_boxes: bool = True, ax: Axes | None = None) -> Figure:
    """Return one record's image, with its ground-truth boxes (solid blue) unless `show_boxes` is False.

    Why: the explorer's view, and the simplest look at one annotation; the x label gives each box on
    Qwen2-VL's 0-1000 grid as the answer writes it, `(x1,y1),(x2,y2)`, one line per box.
    Explained in: chapter 01, "Browsing the records".

    Category labels are matplotlib text, not pixels, so they stay readable on small images.
    """
    from vlmlib.boxes import convert_hub_box_to_qwen

    axis = _new_axis(ax, (FIGURE_SIZE[0], FIGURE_SIZE[1] * 1.3))
    image, objects = record["image"], record["objects"]
    width_px, height_px = image.size
    boxes_xyxy = [convert_hub_box_to_xyxy(box_hub, width_px, height_px) for box_hub in objects["bbox"]]
    axis.imshow(draw_boxes(image, boxes_xyxy) if show_boxes else image)
    for (x1, y1, _, _), category_name in zip(boxes_xyxy if show_boxes else [], objects["category_name"]):
        is_at_top = y1 < 0.08 * height_px  # no room above the box: write the label inside it
        axis.text(x1, y1, category_name, fontsize=9, color="white", ha="left", va="top" if is_at_top else "bottom",
                  clip_on=False, bbox={"facecolor": GROUND_TRUTH_COLOR, "edgecolor": "none", "pad": 1.0})
    axis.set_xticks([])
    axis.set_yticks([])
    boxes_qwen = [convert_hub_box_to_qwen(box_hub) for box_hub in objects["bbox"]]
    axis.set_xlabel("\n".join(f"({x1},{y1}),({x2},{y2})" for x1, y1, x2, y2 in boxes_qwen), fontsize=10)
    num_boxes = len(boxes_xyxy)
    axis.set_title(f"{record['image_id']}\n{width_px}x{height_px} px, {num_boxes} box{'es' if num_boxes != 1 else ''}", fontsize=11)
    return axis.figure


def plot_record_grid(records: Sequence[dict[str, Any]], num_columns: int = 3) -> Figure:
    """Return a grid of records (`plot_record` panels): boxes and categories drawn, Qwen boxes written below.

    Why: a handful of annotated records, readable at the width of a book page, before any statistics.
    Explained in: chapter 01, "Looking at the data".

    Raises:
        ValueError: no records.
    """
    if len(records) == 0:
        raise ValueError("plot_record_grid got no records; pass at least one, e.g. [dataset[0]].")
    num_columns = min(num_columns, len(records))
    num_rows = math.ceil(len(records) / num_columns)
    figure = new_figure((GRID_FIGURE_SIZE[0] * 2 / 3, 3.6 * num_rows))  # 8 in: text stays legible at page width
    for index, record in enumerate(records):
        plot_record(record, ax=figure.add_subplot(num_rows, num_columns, index + 1))
    legend_handle = Line2D([], [], color=GROUND_TRUTH_COLOR, linestyle="-", linewidth=2, label="ground truth (box_qwen below each image)")
    figure.legend(handles=[legend_handle], loc="outside lower center")
    return figure


class RecordExplorer:
    """A slider over records and a "show boxes" checkbox; where no kernel runs, a still picture of the first record.

    Why: browsing dozens of records by hand catches odd annotations that summary plots hide, and a
    rendered page (no kernel behind it) should still show something useful.
    Explained in: chapter 01, "Browsing the records".

    Displayed in Jupyter, the output holds both the live widget and a PNG of its first view; JupyterLab
    shows the widget, and the book shows the PNG (its `_config.yml` ranks widget views below images).
    """

    def __init__(self, records: Sequence[dict[str, Any]]) -> None:
        import ipywidgets  # imported here: only the explorer needs it

        self.records = records
        self.index_slider = ipywidgets.IntSlider(value=0, min=0, max=len(records) - 1, description="record")
        self.box_checkbox = ipywidgets.Checkbox(value=True, description="show boxes")
        output = ipywidgets.interactive_output(self._show, {"index": self.index_slider, "show_boxes": self.box_checkbox})
        self.widget = ipywidgets.VBox([ipywidgets.HBox([self.index_slider, self.box_checkbox]), output])

    def _show(self, index: int, show_boxes: bool) -> None:
        from IPython.display import display

        display(plot_record(self.records[index], show_boxes))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        import base64
        import io

        buffer = io.BytesIO()
        plot_record(self.records[self.index_slider.value], self.box_checkbox.value).savefig(buffer, format="png", dpi=100)
        bundle = dict(self.widget._repr_mimebundle_())
        bundle["image/png"] = base64.b64encode(buffer.getvalue()).decode("ascii")
        bundle["text/plain"] = f"RecordExplorer over {len(self.records)} records"
        return bundle


def build_record_explorer(records: Sequence[dict[str, Any]]) -> RecordExplorer:
    """Return an explorer over the records: a slider picks one, a checkbox toggles its boxes.

    Explained in: chapter 01, "Browsing the records".

    Args:
        records: Hub-schema records with decoded PIL images, e.g. `[dataset[index] for index in range(50)]`.
    Raises:
        ValueError: no records.
    """
    if len(records) == 0:
        raise ValueError("build_record_explorer got no records; pass at least one, e.g. [dataset[0]].")
    return RecordExplorer(records)


# --- what each collator trains on (chapter 03) ---

# Okabe-Ito colours per token role; masked positions are drawn in light grey.
ROLE_COLORS = {"padding": "#000000", "vision": "#CC79A7", "system": "#009E73", "user": "#56B4E9", "assistant": "#E69F00"}
MASKED_COLOR = "#EEEEEE"


def plot_token_mask(roles: Sequence[str], trained_by_name: dict[str, Sequence[bool]], title: str = "") -> Figure:
    """Return one example's tokens as strips: the role of each position, then what each collator trains on.

    Why: a wall of -100s hides the difference between collators; one coloured strip per collator shows
    at a glance which parts of the sequence (image, prompt, answer, padding) reach the loss.
    Explained in: chapter 03, "What each version trains on".

    Args:
        roles: the role of each position (`vlmlib.collators.find_token_roles` for one row).
        trained_by_name: for each collator's name, a bool per position: True where the label is not -100.
    """
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch

    role_row = [to_rgb(ROLE_COLORS[role]) for role in roles]
    rows = [role_row] + [[to_rgb(ROLE_COLORS[role]) if is_trained else to_rgb(MASKED_COLOR)
                          for role, is_trained in zip(roles, trained)] for trained in trained_by_name.values()]
    figure = new_figure((GRID_FIGURE_SIZE[0], 0.55 * len(rows) + 1.3))
    axis = figure.add_subplot()
    axis.imshow(np.array(rows), aspect="auto", interpolation="nearest")
    axis.set_yticks(range(len(rows)), ["token role", *[f"{name} trains on" for name in trained_by_name]])
    axis.set_xlabel("position in the sequence (tokens)")
    for row in range(1, len(rows)):
        axis.axhline(row - 0.5, color="white", linewidth=3)
    handles = [Patch(facecolor=color, label=role) for role, color in ROLE_COLORS.items() if role in set(roles)]
    handles.append(Patch(facecolor=MASKED_COLOR, edgecolor="#999999", label="not trained (-100)"))
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small")
    axis.set_title(title or "Which positions reach the loss")
    return figure


# --- training curves (chapter 05) ---

# (column of the log history, legend label, colour, line style) per panel of `plot_training_curves`.
_TRAINING_CURVE_PANELS = (
    ("Training loss", "cross-entropy per trained token (nats)",
     (("loss", "training loss", "#000000", "-"),)),
    ("Gradient norm", "L2 norm of the LoRA gradients",
     (("grad_norm", "before clipping (logging step)", "#D55E00", "-"),
      ("grad_norm_applied", "applied, mean since last log", "#009E73", "--"))),
    ("Held-out images", "score (0 to 1)",
     (("eval_mean_iou", "mean IoU", "#0072B2", "-"), ("eval_parse_failure_rate", "parse-failure rate", "#CC79A7", ":"))),
)


def plot_training_curves(history: pd.DataFrame, max_grad_norm: float | None = None) -> Figure:
    """Return three panels against the optimizer step: training loss, gradient norm, held-out IoU and parse failures.

    Why: the loss alone can fall while the boxes stay wrong; side by side with the gradient norm (are
    the updates sane?) and the held-out IoU (are the boxes getting better?) it tells a run's story.
    Explained in: chapter 05, "A short real run".

    Args:
        history: `trainer.state.log_history` as a DataFrame (`pd.DataFrame(run.log_history)`): a `step`
            column and any of loss, grad_norm, grad_norm_applied (GradNormCallback), eval_mean_iou,
            eval_parse_failure_rate (IoUEvalCallback). Rows without a value are skipped per series.
        max_grad_norm: the clipping threshold, drawn as a dotted line on the gradient panel; None draws none.
    Raises:
        ValueError: the table has no `step` column.
    """
    if "step" not in history.columns:
        raise ValueError("plot_training_curves needs a 'step' column; pass pd.DataFrame(trainer.state.log_history).")
    figure = new_figure((GRID_FIGURE_SIZE[0], FIGURE_SIZE[1]))
    axes = figure.subplots(1, len(_TRAINING_CURVE_PANELS))
    for axis, (title, ylabel, series) in zip(axes, _TRAINING_CURVE_PANELS):
        for column, label, color, line_style in series:
            if column in history.columns:
                values = history[["step", column]].dropna()
                axis.plot(values["step"], values[column], marker="o", markersize=3, color=color, linestyle=line_style, label=label)
        if title == "Gradient norm" and max_grad_norm is not None:
            axis.axhline(max_grad_norm, color="grey", linestyle=":", label=f"clipping threshold ({max_grad_norm:g})")
        if title == "Held-out images":
            axis.set_ylim(-0.02, 1.02)
        if axis.lines:
            axis.legend(fontsize="small")
        else:
            axis.text(0.5, 0.5, "not logged in this run", ha="center", va="center", transform=axis.transAxes)
        axis.set(title=title, xlabel="optimizer step", ylabel=ylabel)
    return figure


# --- the same metric for several runs (chapter 04) ---

# Runs are told apart by line style and marker as well as colour, so the plot also reads in grey.
_RUN_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))


def plot_loss_curves(histories: dict[str, pd.DataFrame], metric: str = "loss", ylabel: str = "loss (nats per token)",
                     title: str = "Training loss", ax: Axes | None = None) -> Figure:
    """Return one logged metric against the training step, one line per run.

    Why: two runs are compared by their curves, not by their last numbers: a curve shows whether a run
    is still improving, has flattened, or is unstable.
    Explained in: chapter 04, "Loss curves" and "Gradient norms".

    Args:
        histories: run name -> `pd.DataFrame(trainer.state.log_history)`: a `step` column and the metric;
            rows without the metric (other logs) are left out.
        metric: the column to draw: `loss`, `grad_norm`, `eval_answer_loss`, `eval_mean_iou`, ...
        ylabel: the y-axis label, with units.
        ax: axes to draw on; None makes a new figure of `FIGURE_SIZE`.
    Raises:
        ValueError: no runs, or a run that never logged `metric` (the message lists what it did log).
    """
    if not histories:
        raise ValueError("plot_loss_curves got no runs; pass {run name: pd.DataFrame(trainer.state.log_history)}.")
    axis = _new_axis(ax)
    for index, (name, history) in enumerate(histories.items()):
        if metric not in history.columns or history[metric].isna().all():
            raise ValueError(f"plot_loss_curves: run {name!r} never logged {metric!r}; it logged {sorted(history.columns)}.")
        points = history.loc[history[metric].notna(), ["step", metric]].sort_values("step")
        line_style, marker = _RUN_STYLES[index % len(_RUN_STYLES)]
        axis.plot(points["step"], points[metric], linestyle=line_style, marker=marker, markersize=4,
                  color=_MODEL_COLORS[index % len(_MODEL_COLORS)], label=name)
    axis.set(xlabel="training step (optimizer updates)", ylabel=ylabel, title=title)
    axis.legend(fontsize="small")
    return axis.figure
