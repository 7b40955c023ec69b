"""Smoke tests for vlmlib/viz/lora.py: each figure builds, with the labels the chapter relies on."""

from __future__ import annotations

from matplotlib.figure import Figure

from vlmlib import viz


def test_plot_lora_update_titles_the_layer_and_its_trained_weights():
    figure = viz.plot_lora_update(
        "layers.0.mlp.up_proj", in_features=64, out_features=128, r=8, alpha=16
    )
    assert isinstance(figure, Figure)
    title = figure.axes[0].get_title()
    assert "layers.0.mlp.up_proj" in title and f"{8 * (64 + 128):,} trained weights" in title


def test_plot_memory_breakdown_draws_one_panel_per_model_in_its_own_unit():
    parts = {"frozen weights": 3e6, "activations": 1e6}
    figure = viz.plot_memory_breakdown(
        {"small": parts, "large": {"frozen weights": 2e9, "activations": 1e9}}
    )
    assert [ax.get_xlabel() for ax in figure.axes] == ["memory (MB)", "memory (GB)"]
    assert [len(ax.patches) for ax in figure.axes] == [2, 2]
