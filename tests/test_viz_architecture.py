"""Tests for vlmlib.viz.architecture: the patches-to-tokens figure and the M-RoPE figure."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from PIL import Image

from vlmlib.positions import compute_mrope_position_ids
from vlmlib.tokens import IMAGE_PAD_TOKEN, VISION_END_TOKEN, VISION_START_TOKEN
from vlmlib.viz import plot_model_architecture, plot_mrope_positions

PAD_ID = 99  # any id stands for <|image_pad|> in these hand-made sequences


def _token_texts(num_pads: int) -> list[str]:
    """A short chat around an image of `num_pads` image tokens, one string per token."""
    return [
        "user",
        "\n",
        VISION_START_TOKEN,
        *[IMAGE_PAD_TOKEN] * num_pads,
        VISION_END_TOKEN,
        "Find",
        " every",
    ]


def test_plot_model_architecture_titles_each_panel_with_the_real_grid() -> None:
    # 6 x 8 patches of 14 px merge 2 x 2 into 3 x 4 = 12 image tokens.
    figure = plot_model_architecture(
        Image.new("RGB", (120, 90), "teal"), (1, 6, 8), 14, 2, _token_texts(12)
    )
    assert isinstance(figure, Figure)
    titles = [axis.get_title() for axis in figure.axes]
    assert "1. Vision tower: 6 x 8 patches of 14 x 14 px" in titles
    assert "2. Patch merger: 2 x 2 patches -> 1 token, 3 x 4 = 12 tokens" in titles
    assert any("indices 3 to 14 are pads" in title for title in titles)


def test_plot_model_architecture_draws_one_cell_in_its_tokens_colour_per_pad() -> None:
    image = Image.new("RGB", (112, 56), (255, 0, 0))
    image.paste((0, 0, 255), (56, 0, 112, 56))  # right half blue: tokens 0-1 red, 2-3 blue per row
    figure = plot_model_architecture(image, (1, 4, 8), 14, 2, _token_texts(8))
    sequence_axis = figure.axes[2]
    colours = [
        tuple(round(value, 2) for value in patch.get_facecolor()[:3])
        for patch in sequence_axis.patches
        if patch.get_edgecolor()[3] == 0
    ]
    assert (
        colours
        == [(1.0, 0.0, 0.0)] * 2
        + [(0.0, 0.0, 1.0)] * 2
        + [(1.0, 0.0, 0.0)] * 2
        + [(0.0, 0.0, 1.0)] * 2
    )


def test_plot_mrope_positions_labels_the_image_grid_with_its_height_and_width_ids() -> None:
    input_ids = torch.tensor([[5, 6, *[PAD_ID] * 6, 7, 8]])  # an image of 2 x 3 tokens
    position_ids = compute_mrope_position_ids(
        input_ids, torch.ones_like(input_ids), torch.tensor([[1, 4, 6]]), image_pad_id=PAD_ID
    )
    figure = plot_mrope_positions(position_ids[:, 0], (input_ids[0] == PAD_ID).tolist())
    line_axis, grid_axis = figure.axes[:2]
    assert grid_axis.get_title() == "The image's 2 x 3 tokens"
    assert [label.get_text() for label in grid_axis.get_xticklabels()] == ["2", "3", "4"]
    assert [label.get_text() for label in grid_axis.get_yticklabels()] == ["2", "3"]
    # The text resumes at index 8 with position 2 + max(2, 3) = 5.
    assert "text resumes: index 8, position 5" in [text.get_text() for text in line_axis.texts]
