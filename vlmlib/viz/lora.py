"""Draw LoRA's update of one layer, and where a LoRA training step's memory goes.

Why: "W + (alpha / r) BA" and "4-bit weights, float32 adapters" are easier to believe as pictures
drawn from the loaded model's own sizes than as formulas alone.
Explained in: chapter 05, "Choosing LoRA" and "Where the memory goes".
"""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from vlmlib.viz.style import FIGURE_SIZE, GROUND_TRUTH_COLOR, PREDICTION_COLOR, new_figure

__all__ = ["plot_lora_update", "plot_memory_breakdown"]

_FROZEN_COLOR = "#999999"  # grey: weights that never change
_MEMORY_COLORS = ("#999999", PREDICTION_COLOR, "#009E73", "#CC79A7", GROUND_TRUTH_COLOR)
_THINNEST = 0.12  # drawing units: a rank-8 side next to a 1,536 side would be invisible to scale


def _draw_matrix(
    ax, x: float, y_top: float, width: float, height: float, color: str, label: str
) -> None:
    """Draw one matrix as a rectangle hanging from `y_top`, its label underneath."""
    ax.add_patch(Rectangle((x, y_top - height), width, height, facecolor=color, edgecolor="black"))
    ax.text(x + width / 2, y_top - height - 0.12, label, ha="center", va="top", fontsize=9)


def plot_lora_update(
    layer_name: str, in_features: int, out_features: int, r: int, alpha: float
) -> Figure:
    """Return a picture of W + (alpha / r) B A for one linear layer, at its real shapes.

    Why: the picture shows why LoRA is cheap: B (out x r) and A (r x in) are thin slices beside W.
    Sides are drawn to scale, except that the rank side is widened to stay visible.
    Explained in: chapter 05, "Choosing LoRA".

    Args:
        layer_name: the module's name in the model, for the title.
        in_features, out_features: the layer's sizes; W is (out_features, in_features).
        r, alpha: LoRA's rank and scaling numerator (`lora.r`, `lora.alpha`).
    """
    figure = new_figure((FIGURE_SIZE[0] * 1.5, FIGURE_SIZE[1]))
    ax = figure.add_subplot()
    scale = 2.5 / max(in_features, out_features)
    width, height = in_features * scale, out_features * scale
    rank_side = max(r * scale, _THINNEST)
    _draw_matrix(
        ax,
        0,
        height,
        width,
        height,
        _FROZEN_COLOR,
        (f"W, frozen\n{out_features:,} x {in_features:,}\n{out_features * in_features:,} weights"),
    )
    ax.text(width + 0.3, height / 2, "+", ha="center", va="center", fontsize=20)
    ax.text(
        width + 0.9,
        height / 2,
        f"$\\frac{{\\alpha}}{{r}} = \\frac{{{alpha:g}}}{{{r}}}$",
        ha="center",
        va="center",
        fontsize=16,
    )
    x_b = width + 1.5
    _draw_matrix(
        ax,
        x_b,
        height,
        rank_side,
        height,
        PREDICTION_COLOR,
        f"B, trained\n{out_features:,} x {r}\nstarts at 0",
    )
    x_a = x_b + rank_side + 0.9
    _draw_matrix(
        ax,
        x_a,
        height,
        width,
        rank_side,
        GROUND_TRUTH_COLOR,
        f"A, trained\n{r} x {in_features:,}\nstarts random",
    )
    num_trainable = r * (in_features + out_features)
    ax.set_xlim(-0.2, x_a + width + 0.2)
    ax.set_ylim(-1.1, height + 0.2)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(
        f"LoRA on {layer_name}: {num_trainable:,} trained weights "
        f"({100 * num_trainable / (in_features * out_features):.1f}% of W)"
    )
    return figure


def _unit(largest_bytes: float) -> tuple[str, float]:
    """Return ("MB", 1e6) or ("GB", 1e9): the unit that keeps a panel's numbers readable."""
    return ("GB", 1e9) if largest_bytes >= 1e9 else ("MB", 1e6)


def plot_memory_breakdown(panels: dict[str, dict[str, float]]) -> Figure:
    """Return one horizontal bar chart per panel: bytes per kind of training memory.

    Why: it shows at a glance which part of a step's memory a choice (4-bit weights, rank,
    activation checkpointing, batch size) changes. Each panel gets its own unit (MB or GB).
    Explained in: chapter 05, "Where the memory goes".

    Args:
        panels: {panel title: {part: bytes}}, parts in the same order in every panel
            (`vlmlib.costs.MemoryCounts.parts`).
    """
    figure = new_figure((FIGURE_SIZE[0] * 2, FIGURE_SIZE[1]))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, parts) in zip(axes, panels.items()):
        unit, divisor = _unit(max(parts.values()))
        names = list(parts)[::-1]  # the first part on top
        values = [parts[name] / divisor for name in names]
        colors = [_MEMORY_COLORS[list(parts).index(name) % len(_MEMORY_COLORS)] for name in names]
        ax.barh(names, values, color=colors, edgecolor="black")
        for row, value in enumerate(values):
            ax.text(value, row, f" {value:.3g}", va="center", fontsize=9)
        ax.set_xlim(0, max(values) * 1.25)
        ax.set_xlabel(f"memory ({unit})")
        total = sum(parts.values()) / divisor
        ax.set_title(f"{title}\ntotal {total:.3g} {unit}", fontsize=10)
    return figure
