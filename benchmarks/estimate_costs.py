"""Estimate one QLoRA training step of Qwen2-VL-2B by arithmetic: FLOPs per example and GPU memory.

Why: book/costs.md's measured tables need a GPU. Until `benchmarks.gpu_train_step` has run on one,
this prints what the arithmetic predicts, from the published architecture
(`benchmarks/qwen2_vl_2b_instruct_config.json`) and the `full` profile's settings
(`vlmlib/configs/full.yaml`: pixel budget, batch size, LoRA rank and targets). Nothing is
downloaded and no model is built, so it runs anywhere in a second.
Explained in: book/costs.md, "Estimates: the arithmetic behind a step".

Usage, from the repository root:
    python -m benchmarks.estimate_costs                   # the full profile: batch 4, 640 tokens
    python -m benchmarks.estimate_costs --batch-size 1 --no-checkpointing --collator v1
    python -m benchmarks.estimate_costs --grid            # the rows of gpu_train_step's table
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from vlmlib.config import Config, load_config, with_overrides

__all__ = [
    "GPU_PEAK_TFLOPS", "CostEstimate", "ModelSizes", "activation_bytes_per_token_per_layer",
    "count_lora_parameters", "estimate_costs", "format_grid", "format_report", "main",
    "read_model_sizes",
]

CONFIG_FILE = Path(__file__).with_name("qwen2_vl_2b_instruct_config.json")
# Text around the image, counted by running CollatorV3 on a one-box record at the full budget:
# 669 tokens = 609 <|image_pad|> + 36 (system prompt, question, chat template, vision start/end)
# + 24 labelled (a one-box answer and its <|im_end|>; 22 to 24 as the digits vary).
PROMPT_TOKENS = 36
ANSWER_TOKENS = 24
# A 4:3 phone photo; any 4:3 photo larger than the budget shrinks to the same 21 x 29 tokens.
PHOTO_HEIGHT_PX, PHOTO_WIDTH_PX = 1944, 2592
# bf16 dense tensor-core peaks from NVIDIA's data sheets (the sparsity figures are twice these).
GPU_PEAK_TFLOPS = {"L4": 121.0, "A100": 312.0, "H100 SXM": 989.0}
UTILISATION = 0.30  # share of the peak assumed reached; as book/costs.md's budgets assume
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


def read_model_sizes(path: Path = CONFIG_FILE) -> ModelSizes:
    """Return the sizes of the model a (transformers 5, nested) Qwen2-VL config.json describes."""
    raw = json.loads(path.read_text())
    text, vision = raw["text_config"], raw["vision_config"]
    width = vision["embed_dim"]
    return ModelSizes(
        hidden=text["hidden_size"], intermediate=text["intermediate_size"],
        num_layers=text["num_hidden_layers"], num_heads=text["num_attention_heads"],
        num_kv_heads=text["num_key_value_heads"], vocab=text["vocab_size"],
        vision_width=width, vision_depth=vision["depth"],
        vision_mlp=int(width * vision["mlp_ratio"]),
        patch_inputs=(vision["in_channels"] * vision["temporal_patch_size"]
                      * vision["patch_size"] ** 2),
        merge=vision["spatial_merge_size"],
    )


def _projection_shapes(sizes: ModelSizes) -> dict[str, tuple[int, int]]:
    """Return (in, out) of the seven linear layers of one language-model layer."""
    h, kv, mlp = sizes.hidden, sizes.kv_width, sizes.intermediate
    return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
            "gate_proj": (h, mlp), "up_proj": (h, mlp), "down_proj": (mlp, h)}


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
        return (self.weights_training_gb + self.adapter_state_gb + self.checkpoint_gb
                + self.layer_recompute_gb + self.logits_gb)


def estimate_costs(config: Config, sizes: ModelSizes, batch_size: int,
                   is_checkpointing: bool = True, labels_every_token: bool = False) -> CostEstimate:
    """Return the estimate for one step of `batch_size` one-box examples under `config`."""
    height, width = smart_resize(PHOTO_HEIGHT_PX, PHOTO_WIDTH_PX, factor=28,
                                 min_pixels=config.model.min_pixels,
                                 max_pixels=config.model.max_pixels)
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
    flops = {"language model, 4-bit linear layers": frozen_factor * lm_linear * length,
             "language model, LoRA adapters": adapter_factor * lora * length,
             "language model, attention": attention * length,
             "language model, head on labelled positions": 4 * sizes.vocab * h * labelled}

    w, depth = sizes.vision_width, sizes.vision_depth
    block = (w * 3 * w) + (w * w) + 2 * (w * sizes.vision_mlp)  # qkv, proj, fc1, fc2
    merged = w * sizes.merge**2
    merger = merged * merged + merged * h
    vision_linear = depth * block + merger
    # Forward only: the tower is frozen and its input needs no gradient. Its attention is full
    # (every patch of an image sees every other), so it grows with the square of the patches.
    flops["vision tower, linear layers"] = 2 * ((depth * block + sizes.patch_inputs * w) * patches
                                                + merger * image_tokens)
    flops["vision tower, attention"] = 4 * patches * patches * w * depth

    embedding = sizes.vocab * h
    small = (layers * (h + 2 * sizes.kv_width + 2 * h) + h  # q/k/v biases, two norms per layer
             + depth * (5 * w + sizes.vision_mlp + 4 * w)  # vision biases, two LayerNorms
             + 2 * w + merged + h)  # the merger's LayerNorm and biases
    unquantised = embedding + sizes.patch_inputs * w + small
    quantised_bytes = (lm_linear + vision_linear) * NF4_BITS / 8
    tokens = batch_size * length
    per_layer = activation_bytes_per_token_per_layer(sizes, config.lora.r)
    return CostEstimate(
        image_tokens=image_tokens, sequence_length=length, labelled_tokens=labelled,
        lm_linear_parameters=lm_linear, vision_linear_parameters=vision_linear,
        unquantised_parameters=unquantised, lora_parameters=lora,
        flops=flops,
        weights_gb=(quantised_bytes + 2 * unquantised) / BYTES_PER_GB,
        weights_training_gb=(quantised_bytes + 4 * unquantised) / BYTES_PER_GB,
        adapter_state_gb=16 * lora / BYTES_PER_GB,
        checkpoint_gb=(layers * tokens * h * 4 if is_checkpointing else 0) / BYTES_PER_GB,
        layer_recompute_gb=(1 if is_checkpointing else layers) * tokens * per_layer / BYTES_PER_GB,
        logits_gb=batch_size * labelled * sizes.vocab * LOGIT_BYTES / BYTES_PER_GB,
    )


def format_report(estimate: CostEstimate, batch_size: int) -> str:
    """Return the estimate as Markdown tables (compute, time, memory), as book/costs.md shows."""
    flops = estimate.training_flops
    lines = [
        f"Estimate, not a measurement: batch {batch_size}, {estimate.image_tokens} image tokens, "
        f"{estimate.sequence_length} tokens and {estimate.labelled_tokens} labelled per example.",
        "", "| part | TFLOPs per example | share |", "| --- | --- | --- |",
        *(f"| {part} | {value / 1e12:.3f} | {value / flops:.1%} |"
          for part, value in estimate.flops.items()),
        f"| one example | {flops / 1e12:.2f} | 100% |",
        "", f"| card | seconds per example at {UTILISATION:.0%} of peak | epoch of 1,083 (min) |",
        "| --- | --- | --- |",
    ]
    for card, peak in GPU_PEAK_TFLOPS.items():
        seconds = flops / (peak * 1e12 * UTILISATION)
        lines.append(f"| {card} | {seconds:.3f} | {seconds * 1083 / 60:.1f} |")
    lines += ["", "| memory | GB |", "| --- | --- |"]
    memory = [("weights as loaded (4-bit linear layers, 16-bit rest)", estimate.weights_gb),
              ("weights while training (16-bit rest cast to float32)",
               estimate.weights_training_gb),
              ("LoRA adapters, gradients, AdamW m and v (float32)", estimate.adapter_state_gb),
              ("checkpointed layer inputs", estimate.checkpoint_gb),
              ("activations of the layer being recomputed (all layers without checkpointing)",
               estimate.layer_recompute_gb),
              ("logits of the labelled positions", estimate.logits_gb),
              ("peak, allocated by tensors", estimate.peak_gb)]
    lines += [f"| {name} | {value:.2f} |" for name, value in memory]
    return "\n".join(lines)


def _with_budget(config: Config, budget: int) -> Config:
    """Return config with a pixel budget of `budget` image tokens (max_pixels / 784)."""
    max_pixels = budget * 28 * 28
    min_pixels = min(config.model.min_pixels, max_pixels)
    return with_overrides(config, [f"model.max_pixels={max_pixels}",
                                   f"model.min_pixels={min_pixels}"])


def format_grid(config: Config, sizes: ModelSizes, card: str = "H100 SXM") -> str:
    """Return the estimate for each row of gpu_train_step's CUDA grid, as one Markdown table.

    Why: these are the rows book/costs.md's measured table will hold; side by side, an estimate and
    its measurement show how far the arithmetic is off.
    """
    sustained = GPU_PEAK_TFLOPS[card] * 1e12 * UTILISATION
    lines = [f"| collator | batch | budget (image tokens) | step on an {card} (s) "
             "| epoch of 1,083 (min) | peak memory (GB) |", "| --- | --- | --- | --- | --- | --- |"]
    for collator in ("v3", "v1"):
        for budget in (640, 320):
            for batch_size in (1, 2, 4):
                estimate = estimate_costs(_with_budget(config, budget), sizes, batch_size,
                                          labels_every_token=collator == "v1")
                step = estimate.training_flops * batch_size / sustained
                lines.append(f"| {collator.upper()} | {batch_size} | {budget} | {step:.2f} "
                             f"| {step * 1083 / batch_size / 60:.1f} | {estimate.peak_gb:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=None, help="default: full.yaml's (4)")
    parser.add_argument("--budget", type=int, default=None,
                        help="pixel budget in image tokens (max_pixels / 784); default: 640")
    parser.add_argument("--collator", choices=["v1", "v3"], default="v3",
                        help="v1 labels every position, v3 only the answer")
    parser.add_argument("--no-checkpointing", action="store_true",
                        help="estimate with activation checkpointing off")
    parser.add_argument("--grid", action="store_true",
                        help="one row per collator, budget and batch size of gpu_train_step's grid")
    arguments = parser.parse_args(argv)
    config = load_config(profile="full")
    if arguments.grid:
        print(format_grid(config, read_model_sizes()))
        return 0
    if arguments.budget is not None:
        config = _with_budget(config, arguments.budget)
    batch_size = arguments.batch_size or config.training.per_device_train_batch_size
    estimate = estimate_costs(config, read_model_sizes(), batch_size,
                              is_checkpointing=not arguments.no_checkpointing,
                              labels_every_token=arguments.collator == "v1")
    print(format_report(estimate, batch_size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
