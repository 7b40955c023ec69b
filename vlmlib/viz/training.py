"""Plot training logs: one run's loss, gradient norm and held-out IoU, or one
metric across several runs.

Why: a run is judged by its curves, not its last number; they show whether it is still improving,
has flattened, or is unstable.
Explained in: chapter 04, "Loss curves"; chapter 05, "A short real run".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vlmlib.viz.style import (
    _MODEL_COLORS,
    FIGURE_SIZE,
    GRID_FIGURE_SIZE,
    _new_axis,
    new_figure,
)

if TYPE_CHECKING:  # for type hints only: the histories are the caller's DataFrames
    import pandas as pd

__all__ = ["plot_loss_curves", "plot_training_curves"]


# --- training curves (chapter 05) ---

# (column of the log history, legend label, colour, line style) per panel of `plot_training_curves`.
_TRAINING_CURVE_PANELS = (
    (
        "Training loss",
        "cross-entropy per trained token (nats)",
        (("loss", "training loss", "#000000", "-"),),
    ),
    (
        "Gradient norm",
        "L2 norm of the LoRA gradients",
        (
            ("grad_norm", "before clipping (logging step)", "#D55E00", "-"),
            ("grad_norm_applied", "applied, mean since last log", "#009E73", "--"),
        ),
    ),
    (
        "Held-out images",
        "score (0 to 1)",
        (
            ("eval_mean_iou", "mean IoU", "#0072B2", "-"),
            ("eval_parse_failure_rate", "parse-failure rate", "#CC79A7", ":"),
        ),
    ),
)


def plot_training_curves(history: pd.DataFrame, max_grad_norm: float | None = None) -> Figure:
    """Return three panels against the optimizer step: training loss, gradient
    norm, held-out IoU and parse failures.

    Why: the loss alone can fall while the boxes stay wrong; side by side with
    the gradient norm (are the updates sane?) and the held-out IoU (are the
    boxes getting better?) it tells a run's story.
    Explained in: chapter 05, "A short real run".

    Args:
        history: `trainer.state.log_history` as a DataFrame
            (`pd.DataFrame(run.log_history)`): a `step` column and any of loss, grad_norm,
            grad_norm_applied (GradNormCallback), eval_mean_iou, eval_parse_failure_rate
            (IoUEvalCallback). Rows without a value are skipped per series.
        max_grad_norm: the clipping threshold, drawn as a dotted line on the
            gradient panel; None draws none.
    Raises:
        ValueError: the table has no `step` column.
    """
    if "step" not in history.columns:
        raise ValueError(
            "plot_training_curves needs a 'step' column; pass "
            "pd.DataFrame(trainer.state.log_history)."
        )
    figure = new_figure((GRID_FIGURE_SIZE[0], FIGURE_SIZE[1]))
    axes = figure.subplots(1, len(_TRAINING_CURVE_PANELS))
    for axis, (title, ylabel, series) in zip(axes, _TRAINING_CURVE_PANELS):
        for column, label, color, line_style in series:
            if column in history.columns:
                values = history[["step", column]].dropna()
                axis.plot(
                    values["step"],
                    values[column],
                    marker="o",
                    markersize=3,
                    color=color,
                    linestyle=line_style,
                    label=label,
                )
        if title == "Gradient norm" and max_grad_norm is not None:
            axis.axhline(
                max_grad_norm,
                color="grey",
                linestyle=":",
                label=f"clipping threshold ({max_grad_norm:g})",
            )
        if title == "Held-out images":
            axis.set_ylim(-0.02, 1.02)
        if axis.lines:
            axis.legend(fontsize="small")
        else:
            axis.text(
                0.5,
                0.5,
                "not logged in this run",
                ha="center",
                va="center",
                transform=axis.transAxes,
            )
        axis.set(title=title, xlabel="optimizer step", ylabel=ylabel)
    return figure


# --- the same metric for several runs (chapter 04) ---

# Runs are told apart by line style and marker as well as colour, so the plot also reads in grey.
_RUN_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))


def plot_loss_curves(
    histories: dict[str, pd.DataFrame],
    metric: str = "loss",
    ylabel: str = "loss (nats per token)",
    title: str = "Training loss",
    ax: Axes | None = None,
) -> Figure:
    """Return one logged metric against the training step, one line per run.

    Why: two runs are compared by their curves, not by their last numbers: a
    curve shows whether a run is still improving, has flattened, or is unstable.
    Explained in: chapter 04, "Loss curves" and "Gradient norms".

    Args:
        histories: run name -> `pd.DataFrame(trainer.state.log_history)`: a `step`
            column and the metric; rows without the metric (other logs) are left out.
        metric: the column to draw: `loss`, `grad_norm`, `eval_answer_loss`, `eval_mean_iou`, ...
        ylabel: the y-axis label, with units.
        ax: axes to draw on; None makes a new figure of `FIGURE_SIZE`.
    Raises:
        ValueError: no runs, or a run that never logged `metric` (the message
            lists what it did log).
    """
    if not histories:
        raise ValueError(
            "plot_loss_curves got no runs; pass {run name: "
            "pd.DataFrame(trainer.state.log_history)}."
        )
    axis = _new_axis(ax)
    for index, (name, history) in enumerate(histories.items()):
        if metric not in history.columns or history[metric].isna().all():
            raise ValueError(
                f"plot_loss_curves: run {name!r} never logged {metric!r}; it logged "
                f"{sorted(history.columns)}."
            )
        points = history.loc[history[metric].notna(), ["step", metric]].sort_values("step")
        line_style, marker = _RUN_STYLES[index % len(_RUN_STYLES)]
        axis.plot(
            points["step"],
            points[metric],
            linestyle=line_style,
            marker=marker,
            markersize=4,
            color=_MODEL_COLORS[index % len(_MODEL_COLORS)],
            label=name,
        )
    axis.set(xlabel="training step (optimizer updates)", ylabel=ylabel, title=title)
    axis.legend(fontsize="small")
    return axis.figure
