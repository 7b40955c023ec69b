"""Benchmark the training step of the course's recipe: seconds per step, samples
per second, peak GPU memory.

Usage, from the repository root:
    # a CUDA GPU: Qwen2-VL-2B (random weights), the full profile
    python -m benchmarks.gpu_train_step
    # the same, refusing memory past 8 GiB (a student's card)
    python -m benchmarks.gpu_train_step --memory-limit-gib 8
    python -m benchmarks.gpu_train_step --set model.attn_implementation=flash_attention_2 \
        --set lora.target_modules=[q_proj,v_proj]
    # no GPU: the tiny configuration (what CI runs)
    python -m benchmarks.gpu_train_step --device cpu

One step is what the trainer does per batch: `vlmlib.training.compute_answer_loss` (the
trainer's loss) under bf16 autocast, backward, and an AdamW step on the LoRA weights. The
model is loaded by `vlmlib.models.load_model` (4-bit nf4, double quantisation, bf16
compute on CUDA) and adapted by `vlmlib.models.apply_lora` with the profile's LoRA
settings; activation checkpointing is switched on as `vlmlib.training.build_sft_config`
asks the trainer to. The first steps of each row are warm-up (CUDA kernels are chosen and
cached then) and are left out of the timing. Collation runs on the CPU and is timed apart
(`collate_s`): with `dataloader_num_workers=0` the trainer pays it on top of the step.

The goal (issue 8): on one H100, batch 4 at a 640-token pixel budget with collator V3, peak GPU
memory at most 8 GiB (a student's 8 GB card fits the default config) and one epoch of the train
split (1,083 images) in at most 2 minutes; the epoch estimate is 1,083 / samples per second.
Explained in: book/costs.md.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from benchmarks.workload import (
    TRAIN_SPLIT_NUM_IMAGES,
    build_benchmark_config,
    build_photo_records,
    describe_machine,
    format_cell,
    format_markdown_table,
    limit_gpu_memory,
    load_benchmark_model,
    read_peak_memory_gib,
    reset_peak_memory,
    resolve_benchmark_device,
    synchronize,
    write_json,
)
from vlmlib.collators import IGNORE_INDEX, CollatorV1, CollatorV2, CollatorV3
from vlmlib.config import Config
from vlmlib.models import apply_lora, count_parameters, resolve_compute_dtype
from vlmlib.tiny import build_tiny_processor
from vlmlib.tokens import IMAGE_PAD_TOKEN
from vlmlib.training import compute_answer_loss

__all__ = [
    "GOAL",
    "TrainStepRow",
    "TrainStepSettings",
    "check_goal",
    "format_train_step_table",
    "main",
    "run_train_step_benchmark",
]

logger = logging.getLogger(__name__)

COLLATORS = {"v1": CollatorV1, "v2": CollatorV2, "v3": CollatorV3}
# Grids per device. CUDA: the full profile's budget (640 tokens) and half of it.
# CPU: 64 tokens (a little under the tiny profile's 100) and a quarter of it,
# with few steps, so CI checks the script in about a minute on two cores.
DEFAULT_GRIDS: dict[str, dict[str, Any]] = {
    "cuda": {"batch_sizes": (1, 2, 4), "budgets": (320, 640), "warmup_steps": 2, "timed_steps": 5},
    "cpu": {"batch_sizes": (1, 2), "budgets": (16, 64), "warmup_steps": 1, "timed_steps": 1},
}
GOAL = {
    "collator": "v3",
    "batch_size": 4,
    "budget_image_tokens": 640,
    "max_peak_allocated_gib": 8.0,
    "max_epoch_minutes": 2.0,
}


@dataclass(frozen=True)
class TrainStepSettings:
    """What to measure. None means the device's default from `DEFAULT_GRIDS`."""

    device: str = "auto"  # "auto" (CUDA when visible), "cuda" or "cpu"
    batch_sizes: tuple[int, ...] | None = None
    budgets: tuple[int, ...] | None = (
        None  # pixel budgets, in image tokens (model.max_pixels / 784)
    )
    collators: tuple[str, ...] = ("v1", "v3")
    warmup_steps: int | None = None
    timed_steps: int | None = None
    overrides: tuple[str, ...] = ()  # "section.key=value" applied to the profile's config
    memory_limit_gib: float | None = None  # cap GPU memory, to act like a smaller card


@dataclass
class TrainStepRow:
    """One measured combination. Times are means over the timed steps; memory is None on a CPU."""

    collator: str
    batch_size: int
    budget_image_tokens: int
    status: str  # "ok" or "out of memory"
    seq_len: int  # padded length of the batch, in tokens
    image_tokens_per_sample: float
    labelled_tokens_per_sample: (
        float  # positions whose label is not -100: what the loss projects to the vocabulary
    )
    collate_s: float
    step_s: float | None = None
    step_s_min: float | None = None
    samples_per_second: float | None = None
    epoch_minutes: float | None = (
        None  # TRAIN_SPLIT_NUM_IMAGES / samples_per_second, collation not included
    )
    peak_allocated_gib: float | None = None
    peak_reserved_gib: float | None = None
    loss: float | None = None


def _autocast_dtype(config: Config, device: torch.device) -> torch.dtype | None:
    """Return the autocast dtype the trainer would use (its bf16/fp16 flags); None for float32."""
    if device.type != "cuda":
        return None
    dtype = resolve_compute_dtype(config)
    return dtype if dtype in (torch.bfloat16, torch.float16) else None


def _prepare_model(config: Config, device: torch.device) -> torch.nn.Module:
    """Load the random-weight model as the profile does, add LoRA, and switch on
    checkpointing as the trainer does.
    """
    model = apply_lora(load_benchmark_model(config), config)
    if config.training.gradient_checkpointing and device.type == "cuda":
        # The same call and arguments the Trainer makes for
        # activation_checkpointing=True (vlmlib.training.build_sft_config).
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    model.train()
    return model


def _time_training_steps(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    learning_rate: float,
    num_warmup: int,
    num_timed: int,
) -> tuple[list[float], float]:
    """Run warm-up then timed steps on one batch; return (seconds of each timed step, last loss)."""
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, fused=device.type == "cuda")
    step_seconds = []
    for step in range(num_warmup + num_timed):
        synchronize(device)
        started = time.perf_counter()
        with torch.autocast(
            device_type=device.type,
            dtype=autocast_dtype or torch.bfloat16,
            enabled=autocast_dtype is not None,
        ):
            loss = compute_answer_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if step >= num_warmup:
            step_seconds.append(time.perf_counter() - started)
    return step_seconds, float(loss.detach())


def _measure_row(
    model: torch.nn.Module,
    collator: CollatorV1,
    records: list[dict[str, Any]],
    row: TrainStepRow,
    config: Config,
    device: torch.device,
    num_warmup: int,
    num_timed: int,
) -> TrainStepRow:
    """Collate one batch, then time steps on it; an out-of-memory error becomes the row's status."""
    started = time.perf_counter()
    batch = collator(records[: row.batch_size])
    row.collate_s = time.perf_counter() - started
    image_pad_id = collator.processor.tokenizer.convert_tokens_to_ids(IMAGE_PAD_TOKEN)
    row.seq_len = int(batch["input_ids"].shape[1])
    row.image_tokens_per_sample = float((batch["input_ids"] == image_pad_id).sum()) / row.batch_size
    row.labelled_tokens_per_sample = float((batch["labels"] != IGNORE_INDEX).sum()) / row.batch_size
    batch = {key: value.to(device) for key, value in batch.items()}
    reset_peak_memory(device)
    try:
        step_seconds, loss = _time_training_steps(
            model,
            batch,
            device,
            _autocast_dtype(config, device),
            config.training.learning_rate,
            num_warmup,
            num_timed,
        )
    except torch.OutOfMemoryError:
        model.zero_grad(set_to_none=True)
        row.status = "out of memory"
        row.peak_allocated_gib, row.peak_reserved_gib = read_peak_memory_gib(device)
        return row
    row.step_s, row.step_s_min, row.loss = statistics.mean(step_seconds), min(step_seconds), loss
    row.samples_per_second = row.batch_size / row.step_s
    row.epoch_minutes = TRAIN_SPLIT_NUM_IMAGES / row.samples_per_second / 60
    row.peak_allocated_gib, row.peak_reserved_gib = read_peak_memory_gib(device)
    return row


def _describe_workload(
    config: Config, model: torch.nn.Module, device: torch.device, model_memory_gib: float | None
) -> dict[str, Any]:
    counts = count_parameters(model)
    is_quantized = bool(getattr(model, "is_loaded_in_4bit", False))
    return {
        "profile": config.profile,
        "model": "Qwen2-VL-2B-Instruct architecture, random weights"
        if config.profile == "full"
        else "tiny random Qwen2-VL",
        "quantization": "nf4, double quantisation, bf16 compute (bitsandbytes)"
        if is_quantized
        else "none: bitsandbytes nf4 is the CUDA path; this run is not quantised",
        "dtype": str(resolve_compute_dtype(config)).removeprefix("torch."),
        "attn_implementation": config.model.attn_implementation,
        "gradient_checkpointing": config.training.gradient_checkpointing and device.type == "cuda",
        "autocast": str(_autocast_dtype(config, device)).replace("torch.", "")
        if _autocast_dtype(config, device)
        else "none",
        "lora": {
            "r": config.lora.r,
            "alpha": config.lora.alpha,
            "target_modules": list(config.lora.target_modules),
            "train_vision": config.lora.train_vision,
        },
        "optimizer": f"AdamW, lr {config.training.learning_rate:g}, LoRA weights only",
        "num_parameters": counts.total,
        "num_trainable_parameters": counts.trainable,
        "model_memory_gib": model_memory_gib,
    }


def run_train_step_benchmark(settings: TrainStepSettings) -> dict[str, Any]:
    """Measure every (budget, collator, batch size) combination; return a JSON-ready report.

    Returns:
        {"benchmark", "machine", "workload", "settings", "rows" (one dict per
        TrainStepRow), "goal"}.
    """
    device = resolve_benchmark_device(settings.device)
    grid = DEFAULT_GRIDS[device.type]
    settings = replace(
        settings, **{key: value for key, value in grid.items() if getattr(settings, key) is None}
    )
    limit_gpu_memory(device, settings.memory_limit_gib)
    configs = {
        budget: build_benchmark_config(device, budget, settings.overrides)
        for budget in settings.budgets
    }
    first_config = configs[settings.budgets[0]]
    if device.type == "cpu":
        logger.warning(
            "no CUDA GPU: running the tiny configuration in float32 without 4-bit quantisation "
            "(bitsandbytes nf4 is the CUDA path); the figures check the script, not the GPU recipe"
        )
    reset_peak_memory(device)
    model = _prepare_model(first_config, device)
    model_memory_gib = (
        torch.cuda.memory_allocated(device) / 1024**3 if device.type == "cuda" else None
    )
    rows = []
    for budget, config in configs.items():
        processor = build_tiny_processor(
            config
        )  # the real vocabulary and template, with this budget
        records = build_photo_records(budget, max(settings.batch_sizes))
        for name in settings.collators:
            strategy = (
                {"mask_strategy": config.training.mask_strategy} if name == "v3" else {}
            )  # V1 and V2 have none
            collator = COLLATORS[name](
                processor, config.data.prompt, config.data.system_message, **strategy
            )
            for batch_size in settings.batch_sizes:
                row = TrainStepRow(
                    collator=name,
                    batch_size=batch_size,
                    budget_image_tokens=budget,
                    status="ok",
                    seq_len=0,
                    image_tokens_per_sample=0.0,
                    labelled_tokens_per_sample=0.0,
                    collate_s=0.0,
                )
                rows.append(
                    _measure_row(
                        model,
                        collator,
                        records,
                        row,
                        config,
                        device,
                        settings.warmup_steps,
                        settings.timed_steps,
                    )
                )
                logger.info(
                    "%s, batch %d, budget %d: %s s/step, %s",
                    name,
                    batch_size,
                    budget,
                    format_cell(rows[-1].step_s),
                    rows[-1].status,
                )
    return {
        "benchmark": "train_step",
        "machine": describe_machine(device),
        "workload": _describe_workload(first_config, model, device, model_memory_gib),
        "settings": asdict(settings),
        "rows": [asdict(row) for row in rows],
        "goal": check_goal(rows, device),
    }


def check_goal(rows: Sequence[TrainStepRow], device: torch.device) -> dict[str, Any]:
    """Compare the goal's row (V3, batch 4, 640 tokens) with the limits; say why
    when it cannot be judged.
    """
    goal: dict[str, Any] = dict(GOAL)
    match = [
        row
        for row in rows
        if (row.collator, row.batch_size, row.budget_image_tokens)
        == (GOAL["collator"], GOAL["batch_size"], GOAL["budget_image_tokens"])
    ]
    if device.type != "cuda":
        return goal | {
            "judged": False,
            "reason": (
                "the goal is for the 2B model on a CUDA GPU; this run is the tiny CPU configuration"
            ),
        }
    if not match:
        return goal | {
            "judged": False,
            "reason": "the grid has no row with collator v3, batch 4 and a 640-token budget",
        }
    row = match[0]
    if row.status != "ok":
        return goal | {"judged": True, "memory_met": False, "time_met": False, "reason": row.status}
    return goal | {
        "judged": True,
        "peak_allocated_gib": row.peak_allocated_gib,
        "epoch_minutes": row.epoch_minutes,
        "memory_met": row.peak_allocated_gib <= GOAL["max_peak_allocated_gib"],
        "time_met": row.epoch_minutes <= GOAL["max_epoch_minutes"],
    }


def format_train_step_table(rows: Sequence[dict[str, Any]]) -> str:
    """Return the rows as a Markdown table (it pastes into book/costs.md as it is)."""
    columns = [
        ("collator", "collator"),
        ("batch_size", "batch"),
        ("budget_image_tokens", "budget (image tokens)"),
        ("seq_len", "seq len"),
        ("labelled_tokens_per_sample", "labelled tokens/sample"),
        ("step_s", "step (s)"),
        ("samples_per_second", "samples/s"),
        ("epoch_minutes", "epoch of 1,083 (min)"),
        ("peak_allocated_gib", "peak alloc (GiB)"),
        ("peak_reserved_gib", "peak reserved (GiB)"),
        ("collate_s", "collate (s)"),
        ("status", "status"),
    ]
    return format_markdown_table(rows, columns)


def _format_goal(goal: dict[str, Any]) -> str:
    if not goal["judged"]:
        return f"goal not judged: {goal['reason']}"
    if "reason" in goal:
        return f"goal missed: V3, batch 4, 640-token budget ran {goal['reason']}"
    verdict = "met" if goal["memory_met"] and goal["time_met"] else "missed"
    return (
        f"goal {verdict}: peak {goal['peak_allocated_gib']:.2f} GiB (limit "
        f"{goal['max_peak_allocated_gib']:g}), epoch {goal['epoch_minutes']:.2f} min "
        f"(limit {goal['max_epoch_minutes']:g})"
    )


def _parse_arguments(argv: Sequence[str] | None) -> tuple[TrainStepSettings, Path]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_train_step", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", help="default: 1 2 4 (CUDA), 1 2 (CPU)"
    )
    parser.add_argument(
        "--budgets",
        type=int,
        nargs="+",
        help="pixel budgets in image tokens; default 320 640 (CUDA), 16 64 (CPU)",
    )
    parser.add_argument("--collators", nargs="+", choices=sorted(COLLATORS), default=["v1", "v3"])
    parser.add_argument(
        "--warmup-steps", type=int, help="untimed steps per row; default 2 (CUDA), 1 (CPU)"
    )
    parser.add_argument("--steps", type=int, help="timed steps per row; default 5 (CUDA), 1 (CPU)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="change the profile's config, e.g. model.attn_implementation=flash_attention_2",
    )
    parser.add_argument(
        "--memory-limit-gib",
        type=float,
        help="refuse GPU memory past this, to act like a smaller card",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("outputs/benchmarks/train_step.json"),
        help="where to write the report",
    )
    arguments = parser.parse_args(argv)
    settings = TrainStepSettings(
        device=arguments.device,
        batch_sizes=tuple(arguments.batch_sizes) if arguments.batch_sizes else None,
        budgets=tuple(arguments.budgets) if arguments.budgets else None,
        collators=tuple(arguments.collators),
        warmup_steps=arguments.warmup_steps,
        timed_steps=arguments.steps,
        overrides=tuple(arguments.overrides),
        memory_limit_gib=arguments.memory_limit_gib,
    )
    return settings, arguments.json


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and the goal's verdict, write the JSON report."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)  # one progress line per row: a GPU grid takes minutes
    settings, json_path = _parse_arguments(argv)
    report = run_train_step_benchmark(settings)
    machine, workload = report["machine"], report["workload"]
    print(
        f"train step on {machine.get('gpu', machine['cpu'])} ({machine['device']}), load "
        f"average {machine['load_average_1_5_15_min']}"
    )
    print(
        f"{workload['model']}; quantisation: {workload['quantization']}; attention "
        f"{workload['attn_implementation']}; {workload['num_trainable_parameters']:,} of "
        f"{workload['num_parameters']:,} parameters train"
    )
    print(format_train_step_table(report["rows"]))
    print(_format_goal(report["goal"]))
    print(f"wrote {write_json(json_path, report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
