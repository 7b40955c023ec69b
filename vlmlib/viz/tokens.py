"""Draw what the model reads: image patches and tokens, the chat's tokens, and
what each collator trains on.

Why: the sequence Qwen2-VL sees is hidden behind the processor and the chat template; drawing it
shows where the image, the prompt and the answer sit, and which of them reach the loss.
Explained in: chapter 02, "From pixels to image tokens"; chapter 03, "What each version trains on".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image

from vlmlib.viz.style import GRID_FIGURE_SIZE, _new_axis, new_figure

__all__ = ["MASKED_COLOR", "ROLE_COLORS", "plot_patch_grid", "plot_token_mask", "plot_token_strip"]


# What each kind of token looks like in `plot_token_strip`: (fill colour, legend text).
_TOKEN_KIND_STYLES = {
    "text": ("#EEEEEE", "text"),
    "chat": ("#CC79A7", "chat markup"),
    "vision": ("#56B4E9", "image"),
    "grounding": ("#E69F00", "grounding (the box)"),
}


def plot_patch_grid(
    image: Image.Image,
    resized_width_px: int,
    resized_height_px: int,
    patch_size_px: int = 14,
    merge_size: int = 2,
    ax: Axes | None = None,
) -> Figure:
    """Return the image at the processor's size with its patches (thin lines)
    and image tokens (thick lines).

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
        style = {
            "color": "white",
            "linewidth": 1.2 if is_token_edge else 0.4,
            "alpha": 0.9 if is_token_edge else 0.5,
        }
        if position <= resized_width_px:
            axis.axvline(position - 0.5, **style)
        if position <= resized_height_px:
            axis.axhline(position - 0.5, **style)
    num_tokens = (resized_width_px // token_px) * (resized_height_px // token_px)
    axis.set(
        xlabel="x (px, after resizing)",
        ylabel="y (px, after resizing)",
        title=(
            f"{resized_width_px}x{resized_height_px} px: {num_tokens * merge_size**2} "
            f"patches, {num_tokens} image tokens"
        ),
    )
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
        collapsed += (
            [f"{tokens[index]} x{end - index}"]
            if end - index >= min_run
            else list(tokens[index:end])
        )
        index = end
    return collapsed


def plot_token_strip(token_texts: Sequence[str], title: str, max_row_chars: int = 100) -> Figure:
    """Return the tokens of a text as a row-wrapped strip of cells, coloured by kind of token.

    Why: the chat template hides many special tokens; drawing each token as a cell shows where the
    image, the prompt and the answer sit, and that box coordinates are one token per digit.
    Explained in: chapter 02, "The chat template and its special tokens".

    Args:
        token_texts: one string per token, as decoded one at a time
            (`tokenizer.decode([token_id])`); newlines are drawn as "\\n", and
            runs of one token (the image pads) as "token xN".
        max_row_chars: characters per row before wrapping; the font is sized so
            that a row fills the width.
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
    font_size_pt = (
        0.99 * width_in * 72 / (max_row_chars + 0.6) / 0.602
    )  # a DejaVu Sans Mono character is 0.602 em wide
    for row_index, row in enumerate(rows):
        x_position = 0.3
        for cell in row:
            color = _TOKEN_KIND_STYLES[_token_kind(cell.split(" x")[0])][0]
            axis.add_patch(
                Rectangle(
                    (x_position - 0.2, row_index + 0.1),
                    len(cell) + 0.4,
                    0.8,
                    facecolor=color,
                    edgecolor="#888888",
                    linewidth=0.6,
                )
            )
            axis.text(
                x_position,
                row_index + 0.5,
                cell,
                family="DejaVu Sans Mono",
                fontsize=font_size_pt * 0.95,
                va="center",
                parse_math=False,
            )
            x_position += len(cell) + 1
    handles = [
        Line2D(
            [],
            [],
            marker="s",
            linestyle="",
            markersize=10,
            markerfacecolor=color,
            markeredgecolor="#888888",
            label=label,
        )
        for color, label in _TOKEN_KIND_STYLES.values()
    ]
    figure.legend(handles=handles, loc="lower center", ncols=4, fontsize="medium", frameon=False)
    figure.suptitle(title, y=1 - 0.1 / height_in, va="top", fontsize="x-large")
    return figure


# --- what each collator trains on (chapter 03) ---

# Okabe-Ito colours per token role; masked positions are drawn in light grey.
ROLE_COLORS = {
    "padding": "#000000",
    "vision": "#CC79A7",
    "system": "#009E73",
    "user": "#56B4E9",
    "assistant": "#E69F00",
}
MASKED_COLOR = "#EEEEEE"


def plot_token_mask(
    roles: Sequence[str], trained_by_name: dict[str, Sequence[bool]], title: str = ""
) -> Figure:
    """Return one example's tokens as strips: the role of each position, then
    what each collator trains on.

    Why: a wall of -100s hides the difference between collators; one coloured strip per collator
    shows at a glance which parts of the sequence (image, prompt, answer, padding) reach the loss.
    Explained in: chapter 03, "What each version trains on".

    Args:
        roles: the role of each position (`vlmlib.collators.find_token_roles` for one row).
        trained_by_name: for each collator's name, a bool per position: True
            where the label is not -100.
    """
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch

    role_row = [to_rgb(ROLE_COLORS[role]) for role in roles]
    rows = [role_row] + [
        [
            to_rgb(ROLE_COLORS[role]) if is_trained else to_rgb(MASKED_COLOR)
            for role, is_trained in zip(roles, trained)
        ]
        for trained in trained_by_name.values()
    ]
    figure = new_figure((GRID_FIGURE_SIZE[0], 0.55 * len(rows) + 1.3))
    axis = figure.add_subplot()
    axis.imshow(np.array(rows), aspect="auto", interpolation="nearest")
    axis.set_yticks(
        range(len(rows)), ["token role", *[f"{name} trains on" for name in trained_by_name]]
    )
    axis.set_xlabel("position in the sequence (tokens)")
    for row in range(1, len(rows)):
        axis.axhline(row - 0.5, color="white", linewidth=3)
    handles = [
        Patch(facecolor=color, label=role)
        for role, color in ROLE_COLORS.items()
        if role in set(roles)
    ]
    handles.append(Patch(facecolor=MASKED_COLOR, edgecolor="#999999", label="not trained (-100)"))
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small")
    axis.set_title(title or "Which positions reach the loss")
    return figure
