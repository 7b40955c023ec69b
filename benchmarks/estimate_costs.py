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
from pathlib import Path

from vlmlib.config import Config, load_config, with_overrides

# The arithmetic lives in vlmlib.costs (chapter 05 draws it); these names stay importable from here.
from vlmlib.costs import (
    ANSWER_TOKENS,
    PHOTO_HEIGHT_PX,
    PHOTO_WIDTH_PX,
    PROMPT_TOKENS,
    CostEstimate,
    ModelSizes,
    activation_bytes_per_token_per_layer,
    count_lora_parameters,
    estimate_costs,
    read_model_sizes_from_dict,
)

__all__ = [
    "ANSWER_TOKENS",
    "GPU_PEAK_TFLOPS",
    "PHOTO_HEIGHT_PX",
    "PHOTO_WIDTH_PX",
    "PROMPT_TOKENS",
    "CostEstimate",
    "ModelSizes",
    "activation_bytes_per_token_per_layer",
    "count_lora_parameters",
    "estimate_costs",
    "format_grid",
    "format_report",
    "main",
    "read_model_sizes",
]

CONFIG_FILE = Path(__file__).with_name("qwen2_vl_2b_instruct_config.json")
# bf16 dense tensor-core peaks from NVIDIA's data sheets (the sparsity figures are twice these).
GPU_PEAK_TFLOPS = {"L4": 121.0, "A100": 312.0, "H100 SXM": 989.0}
UTILISATION = 0.30  # share of the peak assumed reached; as book/costs.md's budgets assume


def read_model_sizes(path: Path = CONFIG_FILE) -> ModelSizes:
    """Return the sizes of the model a (transformers 5, nested) Qwen2-VL config.json describes."""
    return read_model_sizes_from_dict(json.loads(path.read_text()))


def format_report(estimate: CostEstimate, batch_size: int) -> str:
    """Return the estimate as Markdown tables (compute, time, memory), as book/costs.md shows."""
    flops = estimate.training_flops
    lines = [
        f"Estimate, not a measurement: batch {batch_size}, {estimate.image_tokens} image tokens, "
        f"{estimate.sequence_length} tokens and {estimate.labelled_tokens} labelled per example.",
        "",
        "| part | TFLOPs per example | share |",
        "| --- | --- | --- |",
        *(
            f"| {part} | {value / 1e12:.3f} | {value / flops:.1%} |"
            for part, value in estimate.flops.items()
        ),
        f"| one example | {flops / 1e12:.2f} | 100% |",
        "",
        f"| card | seconds per example at {UTILISATION:.0%} of peak | epoch of 1,083 (min) |",
        "| --- | --- | --- |",
    ]
    for card, peak in GPU_PEAK_TFLOPS.items():
        seconds = flops / (peak * 1e12 * UTILISATION)
        lines.append(f"| {card} | {seconds:.3f} | {seconds * 1083 / 60:.1f} |")
    lines += ["", "| memory | GB |", "| --- | --- |"]
    memory = [
        ("weights as loaded (4-bit linear layers, 16-bit rest)", estimate.weights_gb),
        ("weights while training (16-bit rest cast to float32)", estimate.weights_training_gb),
        ("LoRA adapters, gradients, AdamW m and v (float32)", estimate.adapter_state_gb),
        ("checkpointed layer inputs", estimate.checkpoint_gb),
        (
            "activations of the layer being recomputed (all layers without checkpointing)",
            estimate.layer_recompute_gb,
        ),
        ("logits of the labelled positions", estimate.logits_gb),
        ("peak, allocated by tensors", estimate.peak_gb),
    ]
    lines += [f"| {name} | {value:.2f} |" for name, value in memory]
    return "\n".join(lines)


def _with_budget(config: Config, budget: int) -> Config:
    """Return config with a pixel budget of `budget` image tokens (max_pixels / 784)."""
    max_pixels = budget * 28 * 28
    min_pixels = min(config.model.min_pixels, max_pixels)
    return with_overrides(
        config, [f"model.max_pixels={max_pixels}", f"model.min_pixels={min_pixels}"]
    )


def format_grid(config: Config, sizes: ModelSizes, card: str = "H100 SXM") -> str:
    """Return the estimate for each row of gpu_train_step's CUDA grid, as one Markdown table.

    Why: these are the rows book/costs.md's measured table will hold; side by side, an estimate and
    its measurement show how far the arithmetic is off.
    """
    sustained = GPU_PEAK_TFLOPS[card] * 1e12 * UTILISATION
    lines = [
        f"| collator | batch | budget (image tokens) | step on an {card} (s) "
        "| epoch of 1,083 (min) | peak memory (GB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for collator in ("v3", "v1"):
        for budget in (640, 320):
            for batch_size in (1, 2, 4):
                estimate = estimate_costs(
                    _with_budget(config, budget),
                    sizes,
                    batch_size,
                    labels_every_token=collator == "v1",
                )
                step = estimate.training_flops * batch_size / sustained
                lines.append(
                    f"| {collator.upper()} | {batch_size} | {budget} | {step:.2f} "
                    f"| {step * 1083 / batch_size / 60:.1f} | {estimate.peak_gb:.1f} |"
                )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=None, help="default: full.yaml's (4)")
    parser.add_argument(
        "--budget",
        type=int,
        default=None,
        help="pixel budget in image tokens (max_pixels / 784); default: 640",
    )
    parser.add_argument(
        "--collator",
        choices=["v1", "v3"],
        default="v3",
        help="v1 labels every position, v3 only the answer",
    )
    parser.add_argument(
        "--no-checkpointing", action="store_true", help="estimate with activation checkpointing off"
    )
    parser.add_argument(
        "--grid",
        action="store_true",
        help="one row per collator, budget and batch size of gpu_train_step's grid",
    )
    arguments = parser.parse_args(argv)
    config = load_config(profile="full")
    if arguments.grid:
        print(format_grid(config, read_model_sizes()))
        return 0
    if arguments.budget is not None:
        config = _with_budget(config, arguments.budget)
    batch_size = arguments.batch_size or config.training.per_device_train_batch_size
    estimate = estimate_costs(
        config,
        read_model_sizes(),
        batch_size,
        is_checkpointing=not arguments.no_checkpointing,
        labels_every_token=arguments.collator == "v1",
    )
    print(format_report(estimate, batch_size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
