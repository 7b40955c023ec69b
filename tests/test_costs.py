"""Tests for vlmlib/costs.py: the 2B sizes it carries, and the memory it counts and measures.

The arithmetic itself (FLOPs, bytes per token) is checked against PEFT and autograd in
tests/test_estimate_costs.py, through benchmarks/estimate_costs.py, which imports it from here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from vlmlib import costs
from vlmlib.config import load_config

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a folder of the repository, not a package
    sys.path.insert(0, str(ROOT))

from benchmarks.estimate_costs import read_model_sizes  # noqa: E402


def test_qwen2_vl_2b_sizes_match_the_published_config_json():
    assert costs.QWEN2_VL_2B_SIZES == read_model_sizes()


def test_measure_activation_bytes_counts_the_input_a_linear_layer_saves():
    layer = torch.nn.Linear(4, 3)
    inputs = torch.ones(5, 4)
    # The weight's gradient needs the (5, 4) float32 input: 80 bytes. The weight itself is saved
    # too, but it is a parameter, not an activation.
    assert costs.measure_activation_bytes(layer, lambda: layer(inputs).sum()) == 5 * 4 * 4


def test_measure_activation_bytes_is_zero_without_gradients():
    layer = torch.nn.Linear(4, 3).requires_grad_(False)
    assert costs.measure_activation_bytes(layer, lambda: layer(torch.ones(5, 4)).sum()) == 0


def test_count_training_memory_gives_each_trainable_byte_a_gradient_and_two_moments():
    model = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 2, bias=False))
    model[0].requires_grad_(False)  # frozen: 110 float32 values
    counts = costs.count_training_memory(model, activation_bytes=7)
    trainable_bytes = 10 * 2 * 4
    assert counts.parts == {
        "frozen weights": 110 * 4,
        "LoRA adapters": trainable_bytes,
        "gradients": trainable_bytes,
        "AdamW m and v": 2 * trainable_bytes,
        "activations": 7,
    }


def test_summarise_estimate_memory_adds_up_to_the_estimate_peak():
    config = load_config(profile="full")
    estimate = costs.estimate_costs(config, costs.QWEN2_VL_2B_SIZES, batch_size=4)
    summary = costs.summarise_estimate_memory(estimate)
    assert summary.total == pytest.approx(estimate.peak_gb * 1e9)
    assert summary.optimizer_state == 8 * estimate.lora_parameters
