"""Tests for vlmlib.viz's dataset and token plots (chapters 01 and 02) and the record explorer."""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from vlmlib import viz
from vlmlib.dataset_stats import compute_box_stats, compute_image_stats


@pytest.fixture
def eda_records() -> list[dict[str, Any]]:
    """Three records in the Hub schema with one, two and three boxes, on 160x120 grey images."""
    boxes_hub = [[0.1, 0.1, 0.4, 0.3], [0.5, 0.5, 0.9, 0.8], [0.1, 0.6, 0.3, 0.9]]
    names = ["nutrition-table", "nutrition-table-small", "nutrition-table-text"]
    return [
        {
            "image_id": f"image-{count}",
            "image": Image.new("RGB", (160, 120), "lightgray"),
            "width": 160,
            "height": 120,
            "objects": {
                "bbox": boxes_hub[:count],
                "category_id": list(range(count)),
                "category_name": names[:count],
            },
        }
        for count in (1, 2, 3)
    ]


def test_plots_are_closed_to_pyplot_so_a_cell_shows_them_once(eda_records):
    plt.close("all")
    viz.plot_size_histogram(compute_image_stats(eda_records))
    viz.plot_record(eda_records[0])
    assert plt.get_fignums() == []


def test_plot_size_histogram_labels_axes_and_names_both_series(eda_records):
    figure = viz.plot_size_histogram(compute_image_stats(eda_records))
    axis = figure.axes[0]
    assert axis.get_xlabel() == "side length (px)" and axis.get_ylabel() == "number of images"
    assert [text.get_text() for text in axis.get_legend().get_texts()] == [
        "width (median 160 px)",
        "height (median 120 px)",
    ]


def test_plot_count_bars_labels_each_bar_with_count_and_share():
    axis = viz.plot_count_bars(
        {1: 3, 2: 1}, xlabel="boxes", ylabel="images", title="Boxes per image"
    ).axes[0]
    labels = [text.get_text() for text in axis.texts]
    assert labels == ["3 (75%)", "1 (25%)"]


def test_plot_histogram_writes_plain_numbers_on_a_log_axis():
    figure = viz.plot_histogram(
        [0.5, 1.0, 2.0, 3.0], xlabel="ratio", title="t", is_log_x=True, markers={"square": 1.0}
    )
    figure.canvas.draw()
    tick_labels = [label.get_text() for label in figure.axes[0].get_xticklabels()]
    assert "1" in tick_labels and not any(
        "10^" in label or "times" in label for label in tick_labels
    )


def test_plot_box_centre_heatmap_counts_every_box(eda_records):
    box_stats = compute_box_stats(eda_records)
    image = viz.plot_box_centre_heatmap(box_stats).axes[0].get_images()[0]
    assert np.asarray(image.get_array()).sum() == len(box_stats) == 6


def test_plot_box_size_scatter_has_one_series_per_category(eda_records):
    legend = viz.plot_box_size_scatter(compute_box_stats(eda_records)).axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()][:3] == [
        "nutrition-table (3)",
        "nutrition-table-small (2)",
        "nutrition-table-text (1)",
    ]


def test_plot_patch_grid_title_counts_patches_and_tokens():
    figure = viz.plot_patch_grid(
        Image.new("RGB", (100, 60)), resized_width_px=112, resized_height_px=56
    )
    assert figure.axes[0].get_title() == "112x56 px: 32 patches, 8 image tokens"


def test_plot_token_strip_collapses_image_pads_and_colours_tokens_by_kind():
    tokens = (
        ["<|im_start|>", "user", "\n", "<|vision_start|>"]
        + ["<|image_pad|>"] * 24
        + ["<|vision_end|>", "<|box_start|>", "1"]
    )
    axis = viz.plot_token_strip(tokens, title="t").axes[0]
    texts = [text.get_text() for text in axis.texts]
    assert "<|image_pad|> x24" in texts and "\\n" in texts and len(texts) == 8
    colours = {
        text.get_text(): patch.get_facecolor() for text, patch in zip(axis.texts, axis.patches)
    }
    assert colours["<|image_pad|> x24"] == colours["<|vision_start|>"] != colours["user"]


def test_plot_record_writes_category_labels_and_qwen_boxes(eda_records):
    axis = viz.plot_record(eda_records[1]).axes[0]
    assert [text.get_text() for text in axis.texts] == ["nutrition-table", "nutrition-table-small"]
    assert axis.get_xlabel() == "(100,100),(300,400)\n(500,500),(800,900)"
    assert axis.get_title() == "image-2\n160x120 px, 2 boxes"


def test_plot_record_without_boxes_draws_no_labels(eda_records):
    assert len(viz.plot_record(eda_records[2], show_boxes=False).axes[0].texts) == 0


def test_plot_record_grid_has_one_panel_per_record(eda_records):
    figure = viz.plot_record_grid(eda_records, num_columns=2)
    assert isinstance(figure, Figure) and len(figure.axes) == 3


def test_record_explorer_sends_the_widget_and_a_still_png(eda_records):
    bundle = viz.build_record_explorer(eda_records)._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    png = Image.open(io.BytesIO(base64.b64decode(bundle["image/png"])))
    assert png.format == "PNG" and png.size[0] > 100


def test_record_explorer_slider_covers_every_record(eda_records):
    explorer = viz.build_record_explorer(eda_records)
    assert (explorer.index_slider.min, explorer.index_slider.max) == (0, 2)


def test_build_record_explorer_refuses_no_records():
    with pytest.raises(ValueError, match="got no records"):
        viz.build_record_explorer([])
