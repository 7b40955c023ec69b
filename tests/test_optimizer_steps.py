"""Tests for vlmlib.optimizer_steps: SGD's step follows the loss's scale, AdamW's does not."""

from __future__ import annotations

import pytest
import torch

from vlmlib.optimizer_steps import (
    compare_update_norms,
    compute_flat_gradient,
    measure_relative_update,
)

LOSS_SCALE = 0.25  # w: about the answer's share of the all_tokens loss on tiny's batches


@pytest.fixture
def linear_model() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(8, 3)


def _regression_loss(model: torch.nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)  # the same batch at every call
    inputs = torch.randn(16, 8, generator=generator)
    targets = torch.randn(16, 3, generator=generator)
    return torch.nn.functional.mse_loss(model(inputs), targets)


def _sgd(parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=1e-2)


def _adamw(parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameters, lr=1e-2, weight_decay=0.0)


def test_measure_relative_update_scales_an_sgd_step_by_the_loss_scale(linear_model):
    full = measure_relative_update(linear_model, _regression_loss, _sgd, 1.0, num_steps=1)
    scaled = measure_relative_update(linear_model, _regression_loss, _sgd, LOSS_SCALE, num_steps=1)
    assert scaled / full == pytest.approx(LOSS_SCALE, rel=1e-5)  # one SGD step is lr * w * gradient


def test_measure_relative_update_leaves_an_adamw_step_unchanged_by_the_loss_scale(linear_model):
    full = measure_relative_update(linear_model, _regression_loss, _adamw, 1.0, num_steps=5)
    scaled = measure_relative_update(
        linear_model, _regression_loss, _adamw, LOSS_SCALE, num_steps=5
    )
    assert scaled / full == pytest.approx(1.0, rel=1e-3)  # Adam divides by the gradient's RMS


def test_measure_relative_update_restores_the_weights_and_clears_gradients(linear_model):
    before = [parameter.detach().clone() for parameter in linear_model.parameters()]
    measure_relative_update(linear_model, _regression_loss, _adamw, LOSS_SCALE, num_steps=3)
    after = list(linear_model.parameters())
    assert all(torch.equal(start, end) for start, end in zip(before, after))
    assert all(parameter.grad is None for parameter in after)


def test_compare_update_norms_has_a_row_per_optimizer_and_the_ratio(linear_model):
    table = compare_update_norms(
        linear_model, _regression_loss, {"SGD": _sgd, "AdamW": _adamw}, LOSS_SCALE, num_steps=1
    )
    assert list(table.index) == ["SGD", "AdamW"]
    assert table.loc["SGD", "ratio (w*L over L)"] == pytest.approx(LOSS_SCALE, rel=1e-5)
    assert table.loc["AdamW", "ratio (w*L over L)"] == pytest.approx(1.0, rel=1e-3)


def test_compute_flat_gradient_is_linear_in_the_loss(linear_model):
    gradient = compute_flat_gradient(linear_model, _regression_loss)
    scaled = compute_flat_gradient(linear_model, lambda model: LOSS_SCALE * _regression_loss(model))
    num_parameters = sum(parameter.numel() for parameter in linear_model.parameters())
    assert gradient.shape == (num_parameters,)
    torch.testing.assert_close(scaled, LOSS_SCALE * gradient)
    assert all(parameter.grad is None for parameter in linear_model.parameters())


def test_measure_relative_update_names_the_fix_when_nothing_trains(linear_model):
    linear_model.requires_grad_(False)
    with pytest.raises(ValueError, match="apply_lora"):
        measure_relative_update(linear_model, _regression_loss, _sgd)
