"""The tiny model's pretraining: from random weights to a model that grounds
objects, in minutes on a CPU.

Why: the real course starts from Qwen2-VL-2B-Instruct, which already answers
grounding questions. The offline course needs a base model that behaves alike, or
its chapters could only show noise. So `vlmlib make-tiny` pretrains the tiny model
once, full fine-tuning from random weights, on labels drawn like the dataset's but
boxing every object: the tables and the logo (`generate_pretraining_records`).
Explained in: book/tiny_model.md.

This is a plain PyTorch loop, not `SFTTrainer`: it uses a *sampled softmax*. Each step scores
the answer tokens against themselves and a few random other words instead of all 151,936 (Jean
et al., 2015), and only the embedding rows it touched get a (sparse) update. That makes a step
about three times cheaper on a CPU; the course's own training (chapter 05) keeps the exact loss.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from qwen_vl_utils import fetch_image
from transformers import Qwen2VLForConditionalGeneration, Qwen2VLProcessor

from vlmlib.collators import IGNORE_INDEX, CollatorV3
from vlmlib.config import TinyModelConfig
from vlmlib.models import get_pixel_budget

__all__ = [
    "PRETRAINING_PROMPT",
    "PretrainingSettings",
    "compute_sampled_softmax_loss",
    "patch_embedding_as_matmul",
    "pretrain",
    "resize_images_once",
]

logger = logging.getLogger(__name__)

PRETRAINING_PROMPT = (
    TinyModelConfig.pretrain_prompt
)  # the question; `vlmlib.config` says why it is this long


@dataclass(frozen=True)
class PretrainingSettings:
    """How long and how hard to pretrain. The course's values: `vlmlib.config.TinyModelConfig`."""

    num_steps: int
    batch_size: int = 8
    learning_rate: float = 1e-3
    warmup_steps: int = 30
    num_sampled_negatives: int = 1024
    max_grad_norm: float = 1.0
    seed: int = 0
    log_every_steps: int = 100
    prompt: str = PRETRAINING_PROMPT


@dataclass
class PretrainingLog:
    """What `pretrain` returns: the mean loss of each logged stretch of steps, and the wall time."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def compute_sampled_softmax_loss(
    model: Qwen2VLForConditionalGeneration,
    inputs: dict[str, torch.Tensor],
    num_sampled_negatives: int | None,
) -> torch.Tensor:
    """Return the cross-entropy of the labelled tokens over a sampled vocabulary.

    The candidates are every labelled token of the batch plus `num_sampled_negatives`
    uniformly drawn ids; the logits are the final hidden states times those rows of
    the (tied) embedding matrix. With None, every word is a candidate and the loss
    equals `vlmlib.training.compute_answer_loss` (a test checks it).
    """
    # The inner model stops before the LM head: projecting onto all 151,936
    # words is what this loss avoids.
    outputs = model.model(
        **{key: value for key, value in inputs.items() if key != "labels"}, use_cache=False
    )
    targets = inputs["labels"][:, 1:]  # position t predicts token t + 1
    is_labelled = targets != IGNORE_INDEX
    hidden = outputs.last_hidden_state[:, :-1][is_labelled]
    targets = targets[is_labelled]
    embedding = model.get_input_embeddings()
    if num_sampled_negatives is None:
        negatives = torch.arange(embedding.num_embeddings, device=targets.device)
    else:
        negatives = torch.randint(
            0, embedding.num_embeddings, (num_sampled_negatives,), device=targets.device
        )
    candidates, candidate_index = torch.unique(torch.cat([targets, negatives]), return_inverse=True)
    logits = hidden @ F.embedding(candidates, embedding.weight, sparse=embedding.sparse).T
    return F.cross_entropy(logits.float(), candidate_index[: len(targets)])


def pretrain(
    model: Qwen2VLForConditionalGeneration,
    processor: Qwen2VLProcessor,
    records: Sequence[dict[str, Any]],
    settings: PretrainingSettings,
    system_message: str,
) -> PretrainingLog:
    """Train every weight of `model` on `records` with `settings.prompt`, in
    place; return the loss log.

    AdamW updates the dense weights and SparseAdam the embedding rows a step
    touched; the learning rate warms up linearly, then follows a cosine to zero.
    """
    if settings.num_steps < 1 or len(records) < settings.batch_size:
        raise ValueError(
            f"pretraining needs num_steps >= 1 and at least batch_size={settings.batch_size} "
            f"records, got {settings.num_steps} steps and {len(records)} records"
        )
    torch.manual_seed(settings.seed)
    sampler = random.Random(settings.seed)
    collator = CollatorV3(processor, settings.prompt, system_message)
    records = resize_images_once(records, processor)
    embedding = model.get_input_embeddings()
    embedding.sparse = True  # its gradient holds only the rows a step used
    dense_parameters = [
        parameter for parameter in model.parameters() if parameter is not embedding.weight
    ]
    optimizers = [
        torch.optim.AdamW(
            dense_parameters, lr=settings.learning_rate, weight_decay=0.0, betas=(0.9, 0.98)
        ),
        torch.optim.SparseAdam([embedding.weight], lr=settings.learning_rate, betas=(0.9, 0.98)),
    ]
    log, window, started = PretrainingLog(), [], time.perf_counter()
    model.train()
    try:
        with patch_embedding_as_matmul(model.model.visual.patch_embed):
            for step in range(settings.num_steps):
                rate = settings.learning_rate * _warmup_cosine(
                    step, settings.warmup_steps, settings.num_steps
                )
                for optimizer in optimizers:
                    for group in optimizer.param_groups:
                        group["lr"] = rate
                loss = compute_sampled_softmax_loss(
                    model,
                    collator(sampler.sample(list(records), settings.batch_size)),
                    settings.num_sampled_negatives,
                )
                for optimizer in optimizers:
                    optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(dense_parameters, settings.max_grad_norm)
                for optimizer in optimizers:
                    optimizer.step()
                window.append(loss.item())
                if (step + 1) % settings.log_every_steps == 0 or step + 1 == settings.num_steps:
                    log.steps.append(step + 1)
                    log.losses.append(sum(window) / len(window))
                    window = []
                    logger.info(
                        "pretraining step %d/%d: loss %.3f (%.0f s)",
                        step + 1,
                        settings.num_steps,
                        log.losses[-1],
                        time.perf_counter() - started,
                    )
    finally:
        embedding.sparse = (
            False  # later training (LoRA, SFTTrainer) expects a dense embedding gradient
        )
        model.eval()
    log.seconds = time.perf_counter() - started
    return log


def resize_images_once(
    records: Sequence[dict[str, Any]], processor: Qwen2VLProcessor
) -> list[dict[str, Any]]:
    """Return copies of `records` whose images are already at the size the
    processor's pixel budget gives.

    Why: pretraining draws each image about ten times. Resizing it once, not in
    every batch, leaves the batches identical (the collator's resize is then a
    no-op; a test checks) and makes a step about 6% cheaper.
    """
    min_pixels, max_pixels = get_pixel_budget(processor)
    return [
        record
        | {
            "image": fetch_image(
                {"image": record["image"], "min_pixels": min_pixels, "max_pixels": max_pixels}
            )
        }
        for record in records
    ]


@contextmanager
def patch_embedding_as_matmul(patch_embed: torch.nn.Module) -> Iterator[None]:
    """Inside the block, compute Qwen2-VL's patch embedding as one matrix
    product instead of a Conv3d.

    Why: its kernel equals its stride (2 x 14 x 14), so each patch meets the
    kernel once and the convolution is a linear map of the flattened patch. On a
    CPU the matrix product takes a step about 9% cheaper than the Conv3d and its
    backward; the weights and the result are the same (a test checks).
    """
    weight, bias = (
        patch_embed.proj.weight,
        patch_embed.proj.bias,
    )  # weight: (embed_dim, channels, frames, height, width)
    patch_embed.forward = lambda pixel_values: F.linear(
        pixel_values.reshape(-1, weight[0].numel()).to(weight.dtype), weight.flatten(1), bias
    )
    try:
        yield
    finally:
        del patch_embed.forward  # back to the class's Conv3d forward


def _warmup_cosine(step: int, warmup_steps: int, num_steps: int) -> float:
    """Return the learning-rate factor at `step`: linear warm-up, then a cosine from 1 to 0."""
    return (
        min(1.0, (step + 1) / max(warmup_steps, 1))
        * 0.5
        * (1 + math.cos(math.pi * step / num_steps))
    )
