"""Plot a model's evaluation: the per-image IoU histogram, the IoU-threshold
sweep, a gallery of predictions.

Why: one mean IoU hides whether a model is a little off everywhere or exact on some images
and lost on others; these plots show which, and let several models be compared on one axis.
Explained in: chapter 06, "Where the IoU goes".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from vlmlib.metrics import compute_image_mean_iou
from vlmlib.viz.images import draw_boxes, plot_image_grid
from vlmlib.viz.style import (
    _MODEL_COLORS,
    FIGURE_SIZE,
    GROUND_TRUTH_COLOR,
    PREDICTION_COLOR,
    new_figure,
)

if TYPE_CHECKING:  # for type hints only: vlmlib.evaluation pulls in pycocotools and pandas
    import pandas as pd

    from vlmlib.evaluation import ImagePrediction

__all__ = ["plot_iou_distribution", "plot_prediction_gallery", "plot_threshold_sweep"]


# Precision, recall and F1 are told apart by marker and line style, since colour
# already names the model.
_SWEEP_METRIC_STYLES = {
    "precision": ("precision", "o", "-"),
    "recall": ("recall", "s", "--"),
    "f1": ("F1", "^", ":"),
}


def plot_iou_distribution(
    ious_by_model: dict[str, Sequence[float]], ax: Axes | None = None
) -> Figure:
    """Return a histogram of per-image IoU for each model, on the same 0.05-wide bins from 0 to 1.

    Why: a mean IoU of 0.5 can be every image at 0.5, or half the images exact and half missed;
    the histogram tells the two apart, and the bar at 0 counts missed images and parse failures.
    Explained in: chapter 06, "Where the IoU goes".

    Args:
        ious_by_model: model name -> one IoU per image, e.g.
            `{"fine-tuned": report.per_image["iou"]}`. NaN values are left out.
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
        axis.hist(
            values,
            bins=bins,
            histtype="stepfilled",
            alpha=0.3,
            color=color,
            edgecolor=color,
            linewidth=1.5,
            label=f"{name} ({values.size} images, {mean_text})",
        )
    axis.axvline(0.5, color="grey", linestyle=":", label="IoU 0.5")
    axis.set(
        xlim=(0.0, 1.0),
        xlabel="IoU per image (0 = missed, or no box in the answer)",
        ylabel="number of images",
        title="Per-image IoU",
    )
    axis.legend(fontsize="small")
    return axis.figure


def plot_threshold_sweep(sweeps: dict[str, pd.DataFrame], ax: Axes | None = None) -> Figure:
    """Return precision, recall and F1 against the IoU threshold, one colour per model.

    Why: "correct at IoU 0.5" is a choice; the sweep shows how fast each model's boxes stop
    counting as the bar for a true positive rises towards 0.95.
    Explained in: chapter 06, "How tight are the boxes?".

    Args:
        sweeps: model name -> `EvaluationReport.sweep` (columns iou_threshold,
            precision, recall, f1).
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
            raise ValueError(
                f"plot_threshold_sweep: the table for {name!r} lacks columns "
                f"{sorted(missing)}; pass report.sweep."
            )
        for column, (metric_name, marker, line_style) in _SWEEP_METRIC_STYLES.items():
            axis.plot(
                sweep["iou_threshold"],
                sweep[column],
                marker=marker,
                linestyle=line_style,
                color=_MODEL_COLORS[index % len(_MODEL_COLORS)],
                label=f"{name}: {metric_name}",
            )
    axis.set(
        ylim=(0.0, 1.02),
        xlabel="IoU threshold for a true positive",
        ylabel="score (0 to 1)",
        title="Precision, recall and F1 against the IoU threshold",
    )
    axis.legend(fontsize="small")
    return axis.figure


def _describe_iou(prediction: ImagePrediction) -> str:
    """Return a panel's IoU line; a parse failure scores 0, and the line says why."""
    if prediction.is_parse_failure:
        return f"IoU 0, parse failure: {(prediction.failure_reason or 'no box').split(':')[0]}"
    return (
        f"IoU {compute_image_mean_iou(prediction.predicted_xyxy, prediction.ground_truth_xyxy):.2f}"
    )


def plot_prediction_gallery(
    records: Sequence[dict[str, Any]],
    predictions: Sequence[ImagePrediction],
    titles: Sequence[str] | None = None,
    num_columns: int = 3,
) -> Figure:
    """Return a grid of images with ground truth (solid blue) and predictions
    (dashed orange), IoU in each title.

    Why: the worst and best images explain an IoU histogram better than more numbers do.
    Explained in: chapter 06, "Where the model goes wrong".

    Args:
        records: Hub-schema records with decoded PIL images, in the same order as `predictions`.
        predictions: `vlmlib.evaluation.ImagePrediction`s (boxes as `box_xyxy`,
            pixels of the record's image).
        titles: a first line per panel (e.g. the model name); None uses the
            image_id. The IoU is always added.
        num_columns: panels per row.
    Raises:
        ValueError: different numbers of records, predictions or titles, or a
            pair whose image_id or size differ.
    """
    if len(predictions) != len(records) or (titles is not None and len(titles) != len(records)):
        raise ValueError(
            f"plot_prediction_gallery got {len(records)} records, {len(predictions)} "
            f"predictions and {'no' if titles is None else len(titles)} titles; pass one "
            "prediction (and title) per record."
        )
    drawn_images, panel_titles = [], []
    for index, (record, prediction) in enumerate(zip(records, predictions)):
        image = record["image"]
        if str(record["image_id"]) != prediction.image_id or image.size != (
            prediction.width_px,
            prediction.height_px,
        ):
            width_px, height_px = image.size
            raise ValueError(
                f"plot_prediction_gallery: record {index} ({record['image_id']!r}, "
                f"{width_px}x{height_px} px) does not match its prediction "
                f"({prediction.image_id!r}, {prediction.width_px}x{prediction.height_px} "
                "px); keep records and predictions in the same order."
            )
        drawn_images.append(
            draw_boxes(image, prediction.ground_truth_xyxy, prediction.predicted_xyxy)
        )
        panel_titles.append(
            f"{prediction.image_id if titles is None else titles[index]}\n"
            f"{_describe_iou(prediction)}"
        )
    figure = plot_image_grid(drawn_images, titles=panel_titles, num_columns=num_columns)
    figure.legend(
        handles=[
            Line2D(
                [], [], color=GROUND_TRUTH_COLOR, linestyle="-", linewidth=2, label="ground truth"
            ),
            Line2D([], [], color=PREDICTION_COLOR, linestyle="--", linewidth=2, label="prediction"),
        ],
        loc="outside lower center",
        ncols=2,
    )
    figure.suptitle("Ground truth and predictions")
    return figure
