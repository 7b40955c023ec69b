"""Price a QLoRA training step by arithmetic, and count what a loaded model really holds.

Why: memory decides which card a run needs. The arithmetic (Qwen2-VL-2B's sizes, the `full`
profile's settings) runs anywhere in a second, without the model; the counts
(`count_training_memory`) read a loaded model's tensors, so the two can be put side by side.
Explained in: chapter 05, "Where the memory goes"; book/costs.md, "Estimates: the arithmetic
behind a step" (`benchmarks/estimate_costs.py` prints the full report).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from vlmlib.config import Config

__all__ = [
    "ANSWER_TOKENS",
    "NF4_BITS",
    "PHOTO_HEIGHT_PX",
    "PHOTO_WIDTH_PX",
    "PROMPT_TOKENS",
    "QWEN2_VL_2B_SIZES",
    "CostEstimate",
    "MemoryCounts",
    "ModelSizes",
    "activation_bytes_per_token_per_layer",
    "count_lora_parameters",
    "count_training_memory",
    "estimate_costs",
    "measure_activation_bytes",
    "read_model_sizes_from_dict",
    "summarise_estimate_memory",
]

# Text around the image, counted by running CollatorV3 on a one-box record at the full budget:
# 669 tokens = 609 <|image_pad|> + 36 (system prompt, question, chat template, vision start/end)
# + 24 labelled (a one-box answer and its <|im_end|>; 22 to 24 as the digits vary).
PROMPT_TOKENS = 36
ANSWER_TOKENS = 24
# A 4:3 phone photo; any 4:3 photo larger than the budget shrinks to the same 21 x 29 tokens.
PHOTO_HEIGHT_PX, PHOTO_WIDTH_PX = 1944, 2592
# nf4 with double quantisation: a 4-bit code per weight, an 8-bit scale per block of 64 weights,
# and a float32 scale per 256 of those.
NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)
LOGIT_BYTES = 2 + 4 + 4  # bf16 logit, its float32 copy for the loss, and that copy's gradient
BYTES_PER_GB = 1e9


@dataclass(frozen=True)
class ModelSizes:
    """The sizes of Qwen2-VL that decide its cost, read from a config.json."""

    hidden: int  # language model width, h
    intermediate: int  # MLP width, I
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab: int
    vision_width: int
    vision_depth: int
    vision_mlp: int
    patch_inputs: int  # values in one patch: channels x time x patch x patch
    merge: int  # patches merged per image token, per side (2: four patches per token)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.num_heads

    @property
    def kv_width(self) -> int:
        return self.num_kv_heads * self.head_dim


def read_model_sizes_from_dict(raw: dict[str, Any]) -> ModelSizes:
    """Return the sizes of the model a (transformers 5, nested) Qwen2-VL config.json describes."""
    text, vision = raw["text_config"], raw["vision_config"]
    width = vision["embed_dim"]
    return ModelSizes(
        hidden=text["hidden_size"],
        intermediate=text["intermediate_size"],
        num_layers=text["num_hidden_layers"],
        num_heads=text["num_attention_heads"],
        num_kv_heads=text["num_key_value_heads"],
        vocab=text["vocab_size"],
        vision_width=width,
        vision_depth=vision["depth"],
        vision_mlp=int(width * vision["mlp_ratio"]),
        patch_inputs=(
            vision["in_channels"] * vision["temporal_patch_size"] * vision["patch_size"] ** 2
        ),
        merge=vision["spatial_merge_size"],
    )


# Qwen/Qwen2-VL-2B-Instruct's config.json (benchmarks/qwen2_vl_2b_instruct_config.json; a test
# checks the two agree), so the chapters have the 2B sizes without the Hub.
QWEN2_VL_2B_SIZES = ModelSizes(
    hidden=1536,
    intermediate=8960,
    num_layers=28,
    num_heads=12,
    num_kv_heads=2,
    vocab=151936,
    vision_width=1280,
    vision_depth=32,
    vision_mlp=5120,
    patch_inputs=3 * 2 * 14 * 14,
    merge=2,
)


def _projection_shapes(sizes: ModelSizes) -> dict[str, tuple[int, int]]:
    """Return (in, out) of the seven linear layers of one language-model layer."""
    h, kv, mlp = sizes.hidden, sizes.kv_width, sizes.intermediate
    return {
        "q_proj": (h, h),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (h, h),
        "gate_proj": (h, mlp),
        "up_proj": (h, mlp),
        "down_proj": (mlp, h),
    }


def count_lora_parameters(sizes: ModelSizes, rank: int, targets: Sequence[str]) -> int:
    """Return LoRA's trainable parameters: r x (in + out) per adapted layer."""
    shapes = _projection_shapes(sizes)
    return sizes.num_layers * sum(rank * sum(shapes[name]) for name in targets)


def activation_bytes_per_token_per_layer(sizes: ModelSizes, rank: int) -> int:
    """Return the bytes one language-model layer keeps per token for the backward pass (QLoRA).

    Why: with activation checkpointing only one layer's tensors exist at a time, and this is their
    size. Counted for bf16 autocast, a float32 residual stream (PEFT casts the 16-bit parameters to
    float32), LoRA with dropout on all seven projections and an attention kernel that keeps no
    seq_len x seq_len matrix. tests/test_estimate_costs.py checks it against the tensors autograd
    saves.
    """
    h, mlp, kv = sizes.hidden, sizes.intermediate, sizes.kv_width
    norms = 2 * 4 * h  # the float32 input of both RMSNorms
    lora_inputs = 6 * 4 * h + 4 * mlp  # PEFT casts each adapter's input to float32, then drops out
    base_inputs = 6 * 2 * h + 2 * mlp  # each 4-bit layer keeps its own bf16 copy of its input
    # rotated q and k, v, the output (bf16), a float32 logsumexp per head
    attention = 2 * 2 * h + 2 * 2 * kv + 4 * sizes.num_heads
    mlp_outputs = 3 * 2 * mlp  # gate and up outputs, SiLU(gate)
    lora_middle = 7 * 2 * rank  # x A, r values per adapter
    return norms + lora_inputs + base_inputs + attention + mlp_outputs + lora_middle


@dataclass(frozen=True)
class CostEstimate:
    """FLOPs and memory of one training step, every field an estimate."""

    image_tokens: int  # per example
    sequence_length: int  # per example
    labelled_tokens: int  # per example
    lm_linear_parameters: int  # the seven projections of every layer (4-bit)
    vision_linear_parameters: int  # vision blocks and merger (4-bit)
    unquantised_parameters: int  # embedding, patch embedding, norms, biases (16-bit)
    lora_parameters: int
    flops: dict[str, float]  # per example, by part; the vision tower's parts start with "vision"
    weights_gb: float  # as loaded: 4-bit linear layers + 16-bit rest
    weights_training_gb: float  # after prepare_model_for_kbit_training casts the rest to float32
    adapter_state_gb: float  # adapters, their gradients, AdamW's m and v, all float32
    checkpoint_gb: float  # every layer's input, kept for the backward pass
    layer_recompute_gb: float  # one layer's activations while it is recomputed
    logits_gb: float  # the labelled positions' logits, copy and gradient

    @property
    def training_flops(self) -> float:
        return sum(self.flops.values())

    @property
    def vision_flops(self) -> float:
        return sum(value for part, value in self.flops.items() if part.startswith("vision"))

    @property
    def peak_gb(self) -> float:
        return (
            self.weights_training_gb
            + self.adapter_state_gb
            + self.checkpoint_gb
            + self.layer_recompute_gb
            + self.logits_gb
        )


def estimate_costs(
    config: Config,
    sizes: ModelSizes,
    batch_size: int,
    is_checkpointing: bool = True,
    labels_every_token: bool = False,
) -> CostEstimate:
    """Return the estimate for one step of `batch_size` one-box examples under `config`."""
    height, width = smart_resize(
        PHOTO_HEIGHT_PX,
        PHOTO_WIDTH_PX,
        factor=28,
        min_pixels=config.model.min_pixels,
        max_pixels=config.model.max_pixels,
    )
    image_tokens = height * width // (28 * 28)
    patches = image_tokens * sizes.merge**2
    length = image_tokens + PROMPT_TOKENS + ANSWER_TOKENS
    labelled = length if labels_every_token else ANSWER_TOKENS
    h, layers = sizes.hidden, sizes.num_layers

    lm_linear = layers * sum(i * o for i, o in _projection_shapes(sizes).values())
    lora = count_lora_parameters(sizes, config.lora.r, config.lora.target_modules)
    # Frozen 4-bit weights: forward 2, backward to the activations 2, no weight gradient; the
    # checkpointed forward runs again in the backward pass (+2). Adapters also get weight gradients.
    frozen_factor, adapter_factor = (6, 8) if is_checkpointing else (4, 6)
    # Attention scores and their mix, q.k and p.v: 4 x length x width per token and layer; backward
    # twice the forward, plus the recompute.
    attention = (4 if is_checkpointing else 3) * 4 * length * h * layers
    flops = {
        "language model, 4-bit linear layers": frozen_factor * lm_linear * length,
        "language model, LoRA adapters": adapter_factor * lora * length,
        "language model, attention": attention * length,
        "language model, head on labelled positions": 4 * sizes.vocab * h * labelled,
    }

    w, depth = sizes.vision_width, sizes.vision_depth
    block = (w * 3 * w) + (w * w) + 2 * (w * sizes.vision_mlp)  # qkv, proj, fc1, fc2
    merged = w * sizes.merge**2
    merger = merged * merged + merged * h
    vision_linear = depth * block + merger
    # Forward only: the tower is frozen and its input needs no gradient. Its attention is full
    # (every patch of an image sees every other), so it grows with the square of the patches.
    flops["vision tower, linear layers"] = 2 * (
        (depth * block + sizes.patch_inputs * w) * patches + merger * image_tokens
    )
    flops["vision tower, attention"] = 4 * patches * patches * w * depth

    embedding = sizes.vocab * h
    small = (
        layers * (h + 2 * sizes.kv_width + 2 * h)
        + h  # q/k/v biases, two norms per layer
        + depth * (5 * w + sizes.vision_mlp + 4 * w)  # vision biases, two LayerNorms
        + 2 * w
        + merged
        + h
    )  # the merger's LayerNorm and biases
    unquantised = embedding + sizes.patch_inputs * w + small
    quantised_bytes = (lm_linear + vision_linear) * NF4_BITS / 8
    tokens = batch_size * length
    per_layer = activation_bytes_per_token_per_layer(sizes, config.lora.r)
    return CostEstimate(
        image_tokens=image_tokens,
        sequence_length=length,
        labelled_tokens=labelled,
        lm_linear_parameters=lm_linear,
        vision_linear_parameters=vision_linear,
        unquantised_parameters=unquantised,
        lora_parameters=lora,
        flops=flops,
        weights_gb=(quantised_bytes + 2 * unquantised) / BYTES_PER_GB,
        weights_training_gb=(quantised_bytes + 4 * unquantised) / BYTES_PER_GB,
        adapter_state_gb=16 * lora / BYTES_PER_GB,
        checkpoint_gb=(layers * tokens * h * 4 if is_checkpointing else 0) / BYTES_PER_GB,
        layer_recompute_gb=(1 if is_checkpointing else layers) * tokens * per_layer / BYTES_PER_GB,
        logits_gb=batch_size * labelled * sizes.vocab * LOGIT_BYTES / BYTES_PER_GB,
    )


@dataclass(frozen=True)
class MemoryCounts:
    """Bytes a LoRA training step holds, by kind; `parts` gives them in the order a chart shows."""

    frozen_weights: float  # the base model, 4-bit or 16/32-bit, never updated
    adapters: float  # LoRA's A and B
    gradients: float  # one per adapter weight
    optimizer_state: float  # AdamW's two moments, m and v, per adapter weight
    activations: float  # tensors kept from the forward pass for the backward pass

    @property
    def parts(self) -> dict[str, float]:
        return {
            "frozen weights": self.frozen_weights,
            "LoRA adapters": self.adapters,
            "gradients": self.gradients,
            "AdamW m and v": self.optimizer_state,
            "activations": self.activations,
        }

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def measure_activation_bytes(
    model: torch.nn.Module, run_forward: Callable[[], torch.Tensor]
) -> int:
    """Return the bytes of the tensors autograd keeps for backward while `run_forward()` runs.

    Why: activations are the one part of training memory that depends on the batch; counting what
    autograd saves (each storage once, the model's own weights left out) measures it on any device,
    the CPU included, where no allocator statistics exist.
    Explained in: chapter 05, "Where the memory goes".

    Args:
        model: the model `run_forward` runs; its parameters are not counted as activations.
        run_forward: runs one forward pass with gradients on and returns the loss; no backward runs.
    """
    parameter_storages = {
        parameter.untyped_storage().data_ptr() for parameter in model.parameters()
    }
    saved: dict[int, int] = {}

    def remember(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameter_storages:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(remember, lambda tensor: tensor):
        loss = run_forward()
    del loss  # frees the graph and everything it saved
    return sum(saved.values())


def count_training_memory(model: torch.nn.Module, activation_bytes: int) -> MemoryCounts:
    """Return the bytes a LoRA training step of `model` holds, counted from its parameters.

    Why: the frozen weights, the adapters, their gradients and AdamW's state follow from the
    parameters alone: a trainable parameter has a gradient and two moments of its own dtype.
    Explained in: chapter 05, "Where the memory goes".

    Args:
        model: a model with LoRA adapters (only they require gradients).
        activation_bytes: from `measure_activation_bytes` on one training batch.
    """
    frozen = trainable = 0
    for parameter in model.parameters():  # each shared tensor once
        num_bytes = parameter.numel() * parameter.element_size()  # 4-bit: two weights per byte
        if parameter.requires_grad:
            trainable += num_bytes
        else:
            frozen += num_bytes
    return MemoryCounts(frozen, trainable, trainable, 2 * trainable, activation_bytes)


def summarise_estimate_memory(estimate: CostEstimate) -> MemoryCounts:
    """Return an estimate's memory in `MemoryCounts`' parts (bytes), for a chart
    beside measured counts.

    Why: `CostEstimate` splits memory the way a step allocates it; a chart compares it by kind.
    Explained in: chapter 05, "Where the memory goes".
    """
    adapter_bytes = 4 * estimate.lora_parameters  # float32, as PEFT creates them
    activations = estimate.checkpoint_gb + estimate.layer_recompute_gb + estimate.logits_gb
    return MemoryCounts(
        frozen_weights=estimate.weights_training_gb * BYTES_PER_GB,
        adapters=adapter_bytes,
        gradients=adapter_bytes,
        optimizer_state=2 * adapter_bytes,
        activations=activations * BYTES_PER_GB,
    )
