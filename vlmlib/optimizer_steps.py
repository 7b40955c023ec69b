"""Measure what an optimizer does with a gradient: how far it moves the weights, and which way.

Why: under `all_tokens` the answer's part of the loss is w times its `assistant_only` loss, so its
gradient is w times smaller. With SGD that makes the answer's step w times smaller; AdamW divides
each gradient by its running root mean square, so the same scaling barely changes the step. These
functions measure both on a real model instead of asserting it.
Explained in: chapter 04, "What the answer's weight does to a step".
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch

__all__ = [
    "LossFunction",
    "OptimizerFactory",
    "compare_update_norms",
    "compute_flat_gradient",
    "measure_relative_update",
]

LossFunction = Callable[[torch.nn.Module], torch.Tensor]  # model -> scalar loss, with gradients
OptimizerFactory = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]


def _trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if not parameters:
        raise ValueError(
            "the model has no trainable parameter; add LoRA adapters first "
            "(vlmlib.models.apply_lora)"
        )
    return parameters


def _flat_norm(tensors: list[torch.Tensor]) -> float:
    return float(torch.cat([tensor.detach().float().flatten() for tensor in tensors]).norm())


def measure_relative_update(
    model: torch.nn.Module,
    compute_loss: LossFunction,
    make_optimizer: OptimizerFactory,
    loss_scale: float = 1.0,
    num_steps: int = 3,
    seed: int = 0,
) -> float:
    """Return how far `num_steps` optimizer steps on `loss_scale * loss` move the trainable weights.

    Why: comparing the same steps on the loss L and on w * L shows whether the optimizer's step
    follows the scale of the loss (SGD) or ignores it (Adam, AdamW).
    Explained in: chapter 04, "What the answer's weight does to a step".

    The model is left as it was: its trainable weights are restored and their gradients cleared.
    The seed is set before the first step, so dropout draws the same masks for every call.

    Args:
        model: a model in training mode whose trainable parameters are the ones to update.
        compute_loss: returns the scalar loss of `model` on a fixed batch.
        make_optimizer: builds a fresh optimizer over a list of parameters.
        loss_scale: the factor w multiplying the loss before each backward pass.
        num_steps: optimizer steps, each on a freshly computed loss.
        seed: torch's random seed, set before the first step.
    Returns:
        ||weights after - weights before|| / ||weights before||, over all trainable parameters.
    """
    parameters = _trainable_parameters(model)
    before = [parameter.detach().clone() for parameter in parameters]
    optimizer = make_optimizer(parameters)
    torch.manual_seed(seed)
    try:
        for _ in range(num_steps):
            optimizer.zero_grad(set_to_none=True)
            (loss_scale * compute_loss(model)).backward()
            optimizer.step()
        change = [parameter.detach() - start for parameter, start in zip(parameters, before)]
        return _flat_norm(change) / _flat_norm(before)
    finally:
        with torch.no_grad():
            for parameter, start in zip(parameters, before):
                parameter.copy_(start)
        optimizer.zero_grad(set_to_none=True)


def compare_update_norms(
    model: torch.nn.Module,
    compute_loss: LossFunction,
    optimizers: dict[str, OptimizerFactory],
    loss_scale: float,
    num_steps: int = 3,
    seed: int = 0,
) -> pd.DataFrame:
    """Return a table of relative update norms, one row per optimizer, for the loss L and w * L.

    Why: the ratio column says at a glance how much of the loss's scale reaches the step: about w
    for SGD, about 1 for AdamW.
    Explained in: chapter 04, "What the answer's weight does to a step".

    Args:
        model, compute_loss, num_steps, seed: as in `measure_relative_update`.
        optimizers: name -> optimizer factory, e.g. {"SGD": ..., "AdamW": ...}.
        loss_scale: w, the factor of the second loss.
    Returns:
        DataFrame indexed by optimizer name, with columns "update, loss L", "update, loss w*L"
        (relative update norms) and "ratio (w*L over L)".
    """
    rows = {}
    for name, make_optimizer in optimizers.items():
        full, scaled = (
            measure_relative_update(model, compute_loss, make_optimizer, scale, num_steps, seed)
            for scale in (1.0, loss_scale)
        )
        rows[name] = {
            "update, loss L": full,
            "update, loss w*L": scaled,
            "ratio (w*L over L)": scaled / full,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def compute_flat_gradient(
    model: torch.nn.Module, compute_loss: LossFunction, seed: int = 0
) -> torch.Tensor:
    """Return the gradient of the loss for all trainable parameters, as one flat float32 vector.

    Why: two losses' gradients, flattened, can be compared by norm (what clipping sees) and by
    cosine (whether they point the same way), which is what separates the masking strategies.
    Explained in: chapter 04, "What the answer's weight does to a step".

    Args:
        model: the model; its parameters' `.grad` are cleared before and after.
        compute_loss: returns the scalar loss of `model` on a fixed batch.
        seed: torch's random seed, set before the forward pass (the same dropout masks each call).
    Returns:
        (num_trainable,) float32 on the model's device, in `model.parameters()` order; a parameter
        the loss does not reach contributes zeros.
    """
    parameters = _trainable_parameters(model)
    for parameter in parameters:
        parameter.grad = None
    torch.manual_seed(seed)
    compute_loss(model).backward()
    gradient = torch.cat(
        [
            (parameter.grad if parameter.grad is not None else torch.zeros_like(parameter))
            .detach()
            .float()
            .flatten()
            for parameter in parameters
        ]
    )
    for parameter in parameters:
        parameter.grad = None
    return gradient
