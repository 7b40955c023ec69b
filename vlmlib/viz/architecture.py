"""Draw how an image enters Qwen2-VL: patches, merged image tokens, and their position ids.

Why: the path from pixels to the language model's sequence (14 px patches, a 2x2 merge, one
`<|image_pad|>` per merged patch) and the three position ids each token gets (M-RoPE) are easier
to see than to describe; both figures are drawn from the processor's and model's real numbers.
Explained in: chapter 02, "The architecture" and "M-RoPE: three position ids per token".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import ConnectionPatch, Rectangle
from PIL import Image

from vlmlib.tokens import IMAGE_PAD_TOKEN
from vlmlib.viz.style import GRID_FIGURE_SIZE, new_figure

__all__ = ["plot_model_architecture", "plot_mrope_positions"]

_HIGHLIGHT_COLOR = "#D55E00"  # Okabe-Ito vermillion: the one token followed through the figure
_AXIS_STYLES = {  # M-RoPE axis: (colour, line style), Okabe-Ito and distinct without colour too
    "temporal": ("#0072B2", "-"),
    "height": ("#E69F00", "--"),
    "width": ("#009E73", ":"),
}


def plot_model_architecture(
    image: Image.Image,
    image_grid_thw: Sequence[int],
    patch_size_px: int,
    merge_size: int,
    token_texts: Sequence[str],
    num_context_tokens: int = 3,
) -> Figure:
    """Return a three-panel figure: patches, merged image tokens, and the pads in the sequence.

    Why: shows which 2x2 block of 14 px patches becomes which `<|image_pad|>` of the language
    model's input, following one token (outlined) through the vision tower and the merger.
    Explained in: chapter 02, "The architecture".

    Args:
        image: the record's image; it is drawn at the processor's size, grid x patch size.
        image_grid_thw: (frames, rows, columns) of patches, one row of the processor's
            `image_grid_thw`.
        patch_size_px, merge_size: the image processor's `patch_size` and `merge_size`.
        token_texts: one string per token of the sequence (`tokenizer.decode([id])`), pads included.
        num_context_tokens: text tokens drawn on each side of the image's run of pads.
    """
    _, num_rows, num_columns = (int(size) for size in image_grid_thw)
    token_rows, token_columns = num_rows // merge_size, num_columns // merge_size
    size_px = (num_columns * patch_size_px, num_rows * patch_size_px)
    figure = new_figure((GRID_FIGURE_SIZE[0], 7.0))
    axes = figure.subplot_mosaic(
        [["patches", "tokens"], ["sequence", "sequence"]], height_ratios=[4, 1]
    )
    followed = (token_rows // 3, token_columns // 3)  # the token traced from panel to panel

    patches = axes["patches"]
    patches.imshow(image.convert("RGB").resize(size_px, Image.Resampling.BICUBIC))
    _draw_grid(patches, num_rows, num_columns, patch_size_px, "white")
    top_left = tuple(index * merge_size * patch_size_px - 0.5 for index in followed)
    block_px = merge_size * patch_size_px
    patches.add_patch(
        Rectangle(
            top_left[::-1],
            block_px,
            block_px,
            fill=False,
            edgecolor=_HIGHLIGHT_COLOR,
            linewidth=2.5,
        )
    )
    patches.set(
        xlabel="x (px, after resizing)",
        ylabel="y (px, after resizing)",
        title=f"1. Vision tower: {num_rows} x {num_columns} patches of "
        f"{patch_size_px} x {patch_size_px} px",
    )

    tokens = axes["tokens"]
    # Each image token drawn in its block's mean colour: one vector per merged block of patches.
    block_means = (
        image.convert("RGB")
        .resize(size_px)
        .resize((token_columns, token_rows), Image.Resampling.BOX)
    )
    tokens.imshow(block_means, interpolation="nearest")
    _draw_grid(tokens, token_rows, token_columns, 1, "white")
    tokens.add_patch(
        Rectangle(
            (followed[1] - 0.5, followed[0] - 0.5),
            1,
            1,
            fill=False,
            edgecolor=_HIGHLIGHT_COLOR,
            linewidth=2.5,
        )
    )
    tokens.set(
        xlabel="token column",
        ylabel="token row",
        title=f"2. Patch merger: {merge_size} x {merge_size} patches -> 1 token, "
        f"{token_rows} x {token_columns} = {token_rows * token_columns} tokens",
    )

    followed_index = followed[0] * token_columns + followed[1]  # pads are read row by row
    pad_x = _draw_sequence(
        axes["sequence"], token_texts, np.asarray(block_means), followed_index, num_context_tokens
    )
    for start, start_axis, end, end_axis in [
        (
            (top_left[1] + block_px, top_left[0] + block_px / 2),
            patches,
            (followed[1] - 0.5, followed[0]),
            tokens,
        ),
        ((followed[1], followed[0] + 0.5), tokens, (pad_x, 0.9), axes["sequence"]),
    ]:
        figure.add_artist(
            ConnectionPatch(
                start,
                end,
                "data",
                "data",
                axesA=start_axis,
                axesB=end_axis,
                arrowstyle="-|>",
                color=_HIGHLIGHT_COLOR,
                linewidth=1.5,
                mutation_scale=15,
            )
        )
    return figure


def _draw_grid(axis: Axes, num_rows: int, num_columns: int, cell: float, color: str) -> None:
    """Draw thin lines between the cells of a rows x columns grid of `cell` units each."""
    for row in range(num_rows + 1):
        axis.axhline(row * cell - 0.5, color=color, linewidth=0.5, alpha=0.7)
    for column in range(num_columns + 1):
        axis.axvline(column * cell - 0.5, color=color, linewidth=0.5, alpha=0.7)


def _draw_sequence(
    axis: Axes,
    token_texts: Sequence[str],
    block_means: np.ndarray,
    followed_index: int,
    num_context_tokens: int,
) -> float:
    """Draw text cells, then one coloured cell per pad, then text cells; return
    the followed pad's x.

    Each pad's colour is its image token's mean colour (`block_means`, (rows, columns, 3) uint8).
    """
    pad_positions = [index for index, text in enumerate(token_texts) if text == IMAGE_PAD_TOKEN]
    first, last = pad_positions[0], pad_positions[-1]
    before = token_texts[max(0, first - num_context_tokens) : first]
    after = token_texts[last + 1 : last + 1 + num_context_tokens]
    num_pads = len(pad_positions)
    text_chars = sum(len(text) + 1 for text in [*before, *after])
    ribbon_width = max(text_chars, 40)  # the pads take at least as much room as the text
    x_position = 0.0
    for text in before:
        x_position = _draw_text_cell(axis, x_position, text)
    pad_width = ribbon_width / num_pads
    colors = block_means.reshape(-1, 3)[:num_pads] / 255
    for index, color in enumerate(colors):
        axis.add_patch(
            Rectangle(
                (x_position + index * pad_width, 0.1),
                pad_width,
                0.8,
                facecolor=color,
                edgecolor="none",
            )
        )
    followed_x = x_position + (followed_index + 0.5) * pad_width
    axis.add_patch(
        Rectangle(
            (x_position + followed_index * pad_width, 0.05),
            pad_width,
            0.9,
            fill=False,
            edgecolor=_HIGHLIGHT_COLOR,
            linewidth=2,
        )
    )
    axis.text(
        x_position + ribbon_width / 2,
        -0.25,
        f"{num_pads} x {IMAGE_PAD_TOKEN}, each replaced by its image token's vector",
        ha="center",
        va="center",
        fontsize="small",
    )
    x_position += ribbon_width + 0.5
    for text in after:
        x_position = _draw_text_cell(axis, x_position, text)
    axis.set(xlim=(-0.5, x_position), ylim=(1.1, -0.6))
    axis.set_axis_off()
    axis.set_title(
        f"3. Language model: the input sequence around the image (indices {first} "
        f"to {last} are pads, read row by row)"
    )
    return followed_x


def _draw_text_cell(axis: Axes, x_position: float, text: str) -> float:
    """Draw one text token as a grey cell at `x_position`; return where the next cell starts."""
    label = text.replace("\n", "\\n")
    width = len(label) + 0.6
    axis.add_patch(
        Rectangle(
            (x_position, 0.1), width, 0.8, facecolor="#EEEEEE", edgecolor="#888888", linewidth=0.6
        )
    )
    axis.text(
        x_position + width / 2,
        0.5,
        label,
        ha="center",
        va="center",
        family="DejaVu Sans Mono",
        fontsize="small",
        parse_math=False,
    )
    return x_position + width + 0.4


def plot_mrope_positions(
    position_ids: torch.Tensor, is_image: Sequence[bool], num_context_tokens: int = 12
) -> Figure:
    """Return M-RoPE's three position ids around an image, and the image tokens' (row, column) ids.

    Why: shows that text tokens get one number on all three axes, image tokens get their row and
    column, and the text after an image resumes at its start plus its longest side, not its length.
    Explained in: chapter 02, "M-RoPE: three position ids per token".

    Args:
        position_ids: (3, seq_len) int64 for one sequence (temporal, height, width), as
            `vlmlib.positions.get_model_mrope_position_ids(...)[:, row]`.
        is_image: one bool per position, True on the image's `<|image_pad|>` tokens.
        num_context_tokens: text positions drawn on each side of the image.
    """
    positions = torch.as_tensor(position_ids).cpu().numpy()
    image_indices = np.flatnonzero(np.asarray(is_image, dtype=bool))
    first, last = int(image_indices[0]), int(image_indices[-1])
    window = np.arange(
        max(0, first - num_context_tokens), min(positions.shape[1], last + 1 + num_context_tokens)
    )
    figure = new_figure((GRID_FIGURE_SIZE[0], 4.5))
    line_axis, grid_axis = figure.subplots(1, 2, width_ratios=[2, 1])
    line_axis.axvspan(first - 0.5, last + 0.5, color="#DDDDDD", label="image tokens")
    line_axis.plot(window, window, color="#999999", linewidth=1, label="plain RoPE (= index)")
    for axis_name, row in zip(_AXIS_STYLES, positions):
        color, line_style = _AXIS_STYLES[axis_name]
        line_axis.step(
            window,
            row[window],
            where="mid",
            color=color,
            linestyle=line_style,
            linewidth=1.8,
            label=f"{axis_name} id",
        )
    if last + 1 < positions.shape[1]:  # the first text token after the image, if any
        resume = (last + 1, int(positions[0, last + 1]))
        line_axis.annotate(
            f"text resumes: index {resume[0]}, position {resume[1]}",
            resume,
            xytext=(resume[0] - 0.02 * len(window), resume[1] + 0.15 * len(window)),
            arrowprops={"arrowstyle": "->", "color": "#555555"},
            fontsize="small",
            ha="right",
        )
    line_axis.set(
        xlabel="index in the sequence (tokens)",
        ylabel="position id",
        title="Three position ids per token around the image",
    )
    line_axis.legend(fontsize="small", loc="upper left")

    heights, widths = positions[1, image_indices], positions[2, image_indices]
    num_rows, num_columns = np.ptp(heights) + 1, np.ptp(widths) + 1
    order = (image_indices - first).reshape(num_rows, num_columns)  # pads are read row by row
    shown = grid_axis.imshow(order, cmap="viridis", interpolation="nearest")
    figure.colorbar(shown, ax=grid_axis, label="pads since the image began (tokens)")
    step = max(1, int(np.ceil(max(num_rows, num_columns) / 10)))  # at most about ten tick labels
    grid_axis.set_xticks(range(0, num_columns, step), widths[:num_columns:step])
    grid_axis.set_yticks(range(0, num_rows, step), heights[::num_columns][::step])
    grid_axis.set(
        xlabel="width id",
        ylabel="height id",
        title=f"The image's {num_rows} x {num_columns} tokens",
    )
    return figure
