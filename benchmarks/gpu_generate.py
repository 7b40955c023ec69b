"""Benchmark the evaluation path: answers per second of batched greedy
generation, and peak GPU memory.

Usage, from the repository root:
    # a CUDA GPU: Qwen2-VL-2B (random weights), the full profile
    python -m benchmarks.gpu_generate
    # other batch sizes (`training.per_device_eval_batch_size` is 4)
    python -m benchmarks.gpu_generate --batch-sizes 8 32
    # no GPU: the tiny configuration (what CI runs)
    python -m benchmarks.gpu_generate --device cpu

Each answer is made by `vlmlib.inference.generate_scored_answers`, the call the IoU callback,
`vlmlib evaluate` and chapter 06 use: chat template and image processing, `generate` with
scores, decoding. The model is loaded as the profile loads it (4-bit nf4 on CUDA under `full`).

Random weights never choose to stop, so every answer is made exactly `--new-tokens` long (by
default the length of a one-box answer with its `<|im_end|>`: 24 tokens): the work per answer is
that of a trained model answering with one box. Each extra box adds about as many tokens again.
Explained in: book/costs.md.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from transformers import Qwen2VLProcessor

from benchmarks.workload import (
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
from vlmlib.data import format_answer
from vlmlib.inference import generate_scored_answers
from vlmlib.models import resolve_compute_dtype
from vlmlib.tiny import build_tiny_processor

__all__ = [
    "GenerateRow",
    "GenerateSettings",
    "count_one_box_answer_tokens",
    "format_generate_table",
    "main",
    "run_generate_benchmark",
]

logger = logging.getLogger(__name__)

DEFAULT_GRIDS: dict[str, dict[str, Any]] = {
    "cuda": {"batch_sizes": (1, 4, 8, 16), "budget": 640, "num_batches": 3},
    "cpu": {"batch_sizes": (1, 4), "budget": 64, "num_batches": 1},
}


@dataclass(frozen=True)
class GenerateSettings:
    """What to measure. None means the device's default from `DEFAULT_GRIDS`."""

    device: str = "auto"
    batch_sizes: tuple[int, ...] | None = None
    budget: int | None = None  # pixel budget in image tokens (model.max_pixels / 784)
    num_batches: int | None = None  # timed batches per batch size, after one warm-up batch
    new_tokens: int | None = None  # None = the length of a one-box answer
    overrides: tuple[str, ...] = ()
    memory_limit_gib: float | None = None


@dataclass
class GenerateRow:
    """One batch size: `num_answers` answers of `new_tokens` tokens each, in `seconds`."""

    batch_size: int
    num_answers: int
    new_tokens: int
    status: str  # "ok" or "out of memory"
    seconds: float | None = None
    answers_per_second: float | None = None
    new_tokens_per_second: float | None = None
    peak_allocated_gib: float | None = None
    peak_reserved_gib: float | None = None


def count_one_box_answer_tokens(processor: Qwen2VLProcessor) -> int:
    """Return the tokens of a one-box answer plus its closing `<|im_end|>` (each
    coordinate digit is one token).
    """
    objects = {
        "bbox": [[0.25, 0.5, 0.75, 0.95]],
        "category_name": ["nutrition-table"],
    }  # box_hub: three-digit coordinates
    return len(processor.tokenizer.encode(format_answer(objects), add_special_tokens=False)) + 1


def _measure_row(
    model: torch.nn.Module,
    processor: Qwen2VLProcessor,
    records: list[dict[str, Any]],
    row: GenerateRow,
    device: torch.device,
) -> GenerateRow:
    """Warm up on one batch, then time `generate_scored_answers` over all
    records at the row's batch size.
    """
    options = {"max_new_tokens": row.new_tokens, "batch_size": row.batch_size}
    reset_peak_memory(device)
    try:
        generate_scored_answers(model, processor, records[: row.batch_size], **options)
        synchronize(device)
        started = time.perf_counter()
        answers = generate_scored_answers(model, processor, records[: row.num_answers], **options)
        synchronize(device)
    except torch.OutOfMemoryError:
        row.status = "out of memory"
        row.peak_allocated_gib, row.peak_reserved_gib = read_peak_memory_gib(device)
        return row
    row.seconds = time.perf_counter() - started
    if len(answers) != row.num_answers:
        raise RuntimeError(
            f"generate_scored_answers returned {len(answers)} answers for {row.num_answers} records"
        )
    row.answers_per_second = row.num_answers / row.seconds
    row.new_tokens_per_second = row.num_answers * row.new_tokens / row.seconds
    row.peak_allocated_gib, row.peak_reserved_gib = read_peak_memory_gib(device)
    return row


def run_generate_benchmark(settings: GenerateSettings) -> dict[str, Any]:
    """Measure answers per second at each batch size; return a JSON-ready report.

    Returns:
        {"benchmark", "machine", "workload", "settings", "rows" (one dict per GenerateRow)}.
    """
    device = resolve_benchmark_device(settings.device)
    grid = DEFAULT_GRIDS[device.type]
    settings = replace(
        settings, **{key: value for key, value in grid.items() if getattr(settings, key) is None}
    )
    limit_gpu_memory(device, settings.memory_limit_gib)
    config = build_benchmark_config(device, settings.budget, settings.overrides)
    if device.type == "cpu":
        logger.warning(
            "no CUDA GPU: running the tiny configuration in float32 without 4-bit quantisation "
            "(bitsandbytes nf4 is the CUDA path); the figures check the script, not the GPU recipe"
        )
    processor = build_tiny_processor(config)
    new_tokens = settings.new_tokens or count_one_box_answer_tokens(processor)
    model = load_benchmark_model(config)
    # Forcing the length makes the work per answer the same for random and
    # trained weights (see the module docstring).
    model.generation_config.min_new_tokens = new_tokens
    records = build_photo_records(settings.budget, max(settings.batch_sizes) * settings.num_batches)
    rows = []
    for batch_size in settings.batch_sizes:
        row = GenerateRow(
            batch_size=batch_size,
            num_answers=batch_size * settings.num_batches,
            new_tokens=new_tokens,
            status="ok",
        )
        rows.append(_measure_row(model, processor, records, row, device))
        logger.info(
            "batch %d: %s answers/s, %s",
            batch_size,
            format_cell(rows[-1].answers_per_second),
            rows[-1].status,
        )
    return {
        "benchmark": "generate",
        "machine": describe_machine(device),
        "workload": {
            "profile": config.profile,
            "model": "Qwen2-VL-2B-Instruct architecture, random weights"
            if config.profile == "full"
            else "tiny random Qwen2-VL",
            "quantization": "nf4, double quantisation, bf16 compute (bitsandbytes)"
            if getattr(model, "is_loaded_in_4bit", False)
            else "none: bitsandbytes nf4 is the CUDA path; this run is not quantised",
            "dtype": str(resolve_compute_dtype(config)).removeprefix("torch."),
            "attn_implementation": config.model.attn_implementation,
            "budget_image_tokens": settings.budget,
            "new_tokens_per_answer": new_tokens,
            "decoding": "greedy, with scores (answer confidences), as in evaluation",
        },
        "settings": asdict(settings),
        "rows": [asdict(row) for row in rows],
    }


def format_generate_table(rows: Sequence[dict[str, Any]]) -> str:
    """Return the rows as a Markdown table (it pastes into book/costs.md as it is)."""
    columns = [
        ("batch_size", "batch"),
        ("num_answers", "answers"),
        ("new_tokens", "tokens/answer"),
        ("seconds", "time (s)"),
        ("answers_per_second", "answers/s"),
        ("new_tokens_per_second", "new tokens/s"),
        ("peak_allocated_gib", "peak alloc (GiB)"),
        ("peak_reserved_gib", "peak reserved (GiB)"),
        ("status", "status"),
    ]
    return format_markdown_table(rows, columns)


def _parse_arguments(argv: Sequence[str] | None) -> tuple[GenerateSettings, Path]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_generate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", help="default: 1 4 8 16 (CUDA), 1 4 (CPU)"
    )
    parser.add_argument(
        "--budget", type=int, help="pixel budget in image tokens; default 640 (CUDA), 64 (CPU)"
    )
    parser.add_argument(
        "--num-batches", type=int, help="timed batches per batch size; default 3 (CUDA), 1 (CPU)"
    )
    parser.add_argument(
        "--new-tokens", type=int, help="tokens per answer; default: a one-box answer's length"
    )
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
        default=Path("outputs/benchmarks/generate.json"),
        help="where to write the report",
    )
    arguments = parser.parse_args(argv)
    settings = GenerateSettings(
        device=arguments.device,
        batch_sizes=tuple(arguments.batch_sizes) if arguments.batch_sizes else None,
        budget=arguments.budget,
        num_batches=arguments.num_batches,
        new_tokens=arguments.new_tokens,
        overrides=tuple(arguments.overrides),
        memory_limit_gib=arguments.memory_limit_gib,
    )
    return settings, arguments.json


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write the JSON report."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    settings, json_path = _parse_arguments(argv)
    report = run_generate_benchmark(settings)
    machine, workload = report["machine"], report["workload"]
    print(
        f"generation on {machine.get('gpu', machine['cpu'])} ({machine['device']}), load "
        f"average {machine['load_average_1_5_15_min']}"
    )
    print(
        f"{workload['model']}; quantisation: {workload['quantization']}; attention "
        f"{workload['attn_implementation']}; budget {workload['budget_image_tokens']} "
        f"image tokens; {workload['new_tokens_per_answer']} tokens per answer"
    )
    print(format_generate_table(report["rows"]))
    print(f"wrote {write_json(json_path, report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
