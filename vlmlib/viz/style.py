"""Set the course's figure sizes and colours, and make figures that a notebook shows once.

Why: every figure in the book takes its size from `FIGURE_SIZE` or
`GRID_FIGURE_SIZE` and draws ground truth and predictions in the same two
colours; the other `vlmlib.viz` modules import them from here.
Explained in: chapter 01, "Looking at the data".
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "FIGURE_SIZE",
    "GRID_FIGURE_SIZE",
    "GROUND_TRUTH_COLOR",
    "PREDICTION_COLOR",
    "new_figure",
]


FIGURE_SIZE = (6.0, 4.0)  # inches, for single plots
GRID_FIGURE_SIZE = (12.0, 8.0)  # inches, for grids of images
GROUND_TRUTH_COLOR = "#0072B2"  # Okabe-Ito blue, drawn solid
PREDICTION_COLOR = "#E69F00"  # Okabe-Ito orange, drawn dashed

# Okabe-Ito colours other than the ground-truth blue and prediction orange: one
# per model in comparisons.
_MODEL_COLORS = ("#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#000000", "#F0E442")


def new_figure(figure_size: tuple[float, float] = FIGURE_SIZE) -> Figure:
    """Return an empty figure that a notebook shows once when a cell ends with it.

    Why: a figure made through pyplot gets the inline backend's display hook; closing it at once
    stops pyplot from showing it a second time at the end of the cell.
    """
    figure = plt.figure(figsize=figure_size, layout="constrained")
    plt.close(figure)
    return figure


def _new_axis(ax: Axes | None, figure_size: tuple[float, float] = FIGURE_SIZE) -> Axes:
    """Return `ax`, or the axes of a new figure when it is None."""
    return new_figure(figure_size).add_subplot() if ax is None else ax
