"""Plot the dataset's statistics: image sizes, one-column histograms, counts,
box positions and shapes.

Why: chapter 01 looks at the data before any training, and these plots keep its figures alike (same
sizes, same colours, titles and axis labels with units).
Explained in: chapter 01, "Image sizes" to "Categories".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vlmlib.viz.style import FIGURE_SIZE, _new_axis

if TYPE_CHECKING:  # for type hints only: the tables come from vlmlib.dataset_stats
    import pandas as pd

__all__ = [
    "plot_box_centre_heatmap",
    "plot_box_size_scatter",
    "plot_count_bars",
    "plot_histogram",
    "plot_size_histogram",
]


# Okabe-Ito colours other than the ground-truth blue and prediction orange, for
# series that are neither.
_SERIES_COLORS = ("#56B4E9", "#D55E00", "#009E73", "#CC79A7", "#F0E442", "#000000")


def plot_size_histogram(image_stats: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """Return histograms of image widths and heights, in pixels, on one axis.

    Why: the processor resizes every image into the pixel budget, so the spread of sizes says how
    much each photo is shrunk (or enlarged).
    Explained in: chapter 01, "Image sizes".

    Args:
        image_stats: `vlmlib.dataset_stats.compute_image_stats` output (columns
            width_px, height_px).
    """
    axis = _new_axis(ax)
    sizes = np.concatenate([image_stats["width_px"], image_stats["height_px"]])
    bins = np.linspace(sizes.min(), sizes.max(), 25)
    for column, name, color in (
        ("width_px", "width", _SERIES_COLORS[0]),
        ("height_px", "height", _SERIES_COLORS[1]),
    ):
        axis.hist(
            image_stats[column],
            bins=bins,
            histtype="stepfilled",
            alpha=0.4,
            color=color,
            edgecolor=color,
            linewidth=1.5,
            label=f"{name} (median {image_stats[column].median():.0f} px)",
        )
    axis.set(
        xlabel="side length (px)",
        ylabel="number of images",
        title=f"Image sizes ({len(image_stats)} images)",
    )
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
    """Return a histogram of one quantity, with optional labelled vertical lines
    (e.g. "square box" at 1).

    Why: box areas, aspect ratios and token counts are each one column; one
    function keeps them alike.
    Explained in: chapter 01, "Box area coverage" and "Box shapes and positions".

    Args:
        is_log_x: log-spaced bins and axis, for ratios (a box twice as wide as
            tall sits as far from 1 as one twice as tall as wide).
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
        nice_ticks = [
            tick
            for tick in (0.25, 0.33, 0.5, 0.67, 1, 1.5, 2, 3, 4)
            if low / 1.1 <= tick <= high * 1.1
        ]
        axis.xaxis.set_major_locator(ticker.FixedLocator(nice_ticks))
        axis.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        axis.xaxis.set_minor_formatter(ticker.NullFormatter())
    else:
        bins = np.linspace(low, high, num_bins + 1) if high > low else num_bins
    axis.hist(values, bins=bins, color=_SERIES_COLORS[0], edgecolor="white")
    for index, (label, x_value) in enumerate((markers or {}).items()):
        axis.axvline(
            x_value,
            color=_SERIES_COLORS[(index + 1) % len(_SERIES_COLORS)],
            linestyle=":",
            linewidth=2,
            label=label,
        )
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if markers:
        axis.legend(fontsize="small")
    return axis.figure


def plot_count_bars(
    counts: dict[Any, int], xlabel: str, ylabel: str, title: str, ax: Axes | None = None
) -> Figure:
    """Return a bar chart of counts, each bar labelled with its count and share of the total.

    Why: boxes per image and boxes per category are small sets of counts where
    the exact numbers matter.
    Explained in: chapter 01, "Boxes per image" and "Categories".

    Args:
        counts: category -> count, drawn in the given order (e.g.
            `series.value_counts().sort_index().to_dict()`).
    """
    axis = _new_axis(ax)
    names = [str(name) for name in counts]
    total = sum(counts.values())
    bars = axis.bar(names, list(counts.values()), color=_SERIES_COLORS[0])
    axis.bar_label(
        bars,
        labels=[f"{count} ({count / total:.0%})" for count in counts.values()],
        fontsize="small",
    )
    axis.margins(y=0.15)  # room for the labels above the tallest bar
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if max(len(name) for name in names) > 8:
        axis.tick_params(axis="x", labelrotation=20)
    return axis.figure


def plot_box_centre_heatmap(
    box_stats: pd.DataFrame, num_bins: int = 10, ax: Axes | None = None
) -> Figure:
    """Return a heatmap of where box centres fall, in image coordinates (top of
    the image at the top).

    Why: if tables sit in one place, a model can score well by guessing that
    place; the heatmap shows how much a constant guess would get right.
    Explained in: chapter 01, "Box shapes and positions".

    Args:
        box_stats: `vlmlib.dataset_stats.compute_box_stats` output (columns
            centre_x, centre_y, 0-1).
    """
    axis = _new_axis(ax, (FIGURE_SIZE[0], FIGURE_SIZE[1] * 1.2))
    counts, _, _ = np.histogram2d(
        box_stats["centre_y"], box_stats["centre_x"], bins=num_bins, range=[[0, 1], [0, 1]]
    )
    image = axis.imshow(counts, extent=(0, 1, 1, 0), cmap="viridis", origin="upper")
    axis.figure.colorbar(image, ax=axis, label="number of boxes")
    axis.set(
        xlabel="box centre x (fraction of image width)",
        ylabel="box centre y (fraction of image height)",
        title=f"Where box centres fall ({len(box_stats)} boxes)",
    )
    return axis.figure


def plot_box_size_scatter(box_stats: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """Return box width against box height (fractions of the image), one colour per category.

    Why: shows at once how big tables are, whether they are square, and whether
    categories differ in size.
    Explained in: chapter 01, "Box shapes and positions".
    """
    axis = _new_axis(ax, (FIGURE_SIZE[0] * 1.4, FIGURE_SIZE[1] * 1.2))
    for index, (category_name, group) in enumerate(box_stats.groupby("category_name", sort=True)):
        axis.scatter(
            group["width_fraction"],
            group["height_fraction"],
            s=14,
            alpha=0.7,
            color=_SERIES_COLORS[index % len(_SERIES_COLORS)],
            label=f"{category_name} ({len(group)})",
        )
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="square in fractions")
    axis.set(
        xlim=(0, 1),
        ylim=(0, 1),
        aspect="equal",
        xlabel="box width (fraction of image width)",
        ylabel="box height (fraction of image height)",
        title="Box sizes by category",
    )
    axis.legend(
        fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0)
    )  # outside: points fill the corners
    return axis.figure
