"""Benchmark the collators: samples per second of CollatorV1, V2 and V3 on the
same batches, in one run.

Usage, from the repository root:
    # the profile's processor and training data (tiny by default)
    python -m benchmarks.collators
    python -m benchmarks.collators --batch-size 8 --repeats 7 --json outputs/collators.json
    # steadier on a busy machine (see below)
    python -m benchmarks.collators --torch-threads 1
    # Qwen2-VL-2B's processor and the Hub dataset
    VLM_PROFILE=full python -m benchmarks.collators

Goal: V3 no slower than V1. V3 does more work than V1 (it checks every record and finds the answer
spans), so the question is whether that work is small next to what all three share: building the
chats, resizing the images and running the processor.

A collator runs on the CPU, whatever the device the model trains on. The records are read (and their
images decoded) once, before timing, so every collator is timed on the same in-memory batches. After
the warm-up rounds, each repeat times V1, V2 and V3 in turn on all batches, so that a change in the
machine's load during the run hits the three alike, and the order rotates from one repeat to the
next, so that going first is no advantage. The table gives the median and the best repeat, and
the V3/V1 ratio is taken repeat by repeat. CPU seconds are reported too: on a busy machine they
move less than wall-clock seconds. Which machine and load gave the figures is printed with them.
On a busy machine with few cores, torch's worker threads wait for each other and the figures jump
from repeat to repeat (several-fold on a loaded 2-core machine); `--torch-threads 1` avoids that.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.workload import describe_machine, format_markdown_table, write_json
from vlmlib.collators import IGNORE_INDEX, CollatorV1, CollatorV2, CollatorV3, find_answer_mask
from vlmlib.config import load_config
from vlmlib.data import load_configured_splits
from vlmlib.models import load_processor

__all__ = ["COLLATORS", "format_collator_report", "main", "run_collator_benchmark"]

# name -> (class, what it trains on): the three versions of chapter 03, V3 with
# the course's strategy.
COLLATORS: dict[str, tuple[type, str]] = {
    "V1": (CollatorV1, "every position"),
    "V2": (CollatorV2, "text (no padding, no image)"),
    "V3": (CollatorV3, "the answer (assistant_only)"),
}


def _time_once(
    collator: Callable[[list[dict[str, Any]]], dict], batches: Sequence[list[dict[str, Any]]]
) -> tuple[float, float]:
    """Return (wall seconds, CPU seconds of this process) to collate every batch once."""
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    for batch in batches:
        collator(batch)
    return time.perf_counter() - wall_start, time.process_time() - cpu_start


def _time_v3_own_steps(
    collator: CollatorV3, records: list[dict[str, Any]], repeats: int = 50
) -> float:
    """Return the median seconds of what V3 adds to V1 on one batch: the record
    checks and the two masks.
    """
    batch = collator.encode(records)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        collator.check_records(records)
        labels = collator.mask_padding_and_vision(batch, batch["input_ids"].clone())
        labels[
            ~find_answer_mask(
                batch["input_ids"],
                batch["attention_mask"],
                collator.im_start_id,
                collator.im_end_id,
                collator.assistant_header_ids,
            )
        ] = IGNORE_INDEX
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run_collator_benchmark(
    batch_size: int | None,
    num_batches: int,
    warmup: int,
    repeats: int,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Time V1, V2 and V3 on the same batches and return a JSON-ready report.

    Args:
        batch_size: records per batch; None uses `training.per_device_train_batch_size`.
        num_batches: batches timed per repeat (consecutive training records).
        warmup: untimed rounds over all batches, per collator, before timing.
        repeats: timed rounds; each round times every collator once, in turn,
            starting with a different one.
        overrides: `section.key=value` config overrides (e.g. model.max_pixels=...).
    Returns:
        {"benchmark", "machine", "workload", "rows" (one per collator),
        "v3_over_v1" (per-repeat speed ratios), "v3_own_steps_ms_per_batch"
        (what V3 adds to V1, timed alone), "v1_ms_per_batch"}.
    """
    config = load_config(overrides=list(overrides))
    batch_size = batch_size or config.training.per_device_train_batch_size
    processor = load_processor(config)
    train = load_configured_splits(config)["train"]
    if len(train) < batch_size * num_batches:
        raise ValueError(
            f"the train split has {len(train)} records, fewer than {num_batches} batches "
            f"of {batch_size}; lower --num-batches or --batch-size"
        )
    records = [
        train[index] for index in range(batch_size * num_batches)
    ]  # images decoded here, once
    batches = [records[start : start + batch_size] for start in range(0, len(records), batch_size)]
    collators = {name: collator_class(processor) for name, (collator_class, _) in COLLATORS.items()}
    for _ in range(warmup):
        for collator in collators.values():
            _time_once(collator, batches)
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in collators}
    names = list(collators)
    for repeat in range(repeats):
        for name in (
            names[repeat % len(names) :] + names[: repeat % len(names)]
        ):  # rotate who goes first: no order effect
            timings[name].append(_time_once(collators[name], batches))
    num_samples = batch_size * num_batches
    rows = []
    for name, runs in timings.items():
        speeds = [num_samples / wall for wall, _ in runs]
        rows.append(
            {
                "collator": name,
                "trains_on": COLLATORS[name][1],
                "median_samples_per_s": statistics.median(speeds),
                "best_samples_per_s": max(speeds),
                "samples_per_cpu_s": num_samples / statistics.median(cpu for _, cpu in runs),
            }
        )
    ratios = [
        v1_wall / v3_wall for (v1_wall, _), (v3_wall, _) in zip(timings["V1"], timings["V3"])
    ]  # speed of V3 over V1
    return {
        "benchmark": "collators",
        "machine": describe_machine(torch.device("cpu")),  # collators run on the CPU
        "workload": {
            "profile": config.profile,
            "batch_size": batch_size,
            "num_batches": num_batches,
            "warmup": warmup,
            "repeats": repeats,
            "max_pixels": config.model.max_pixels,
            "sequence_length": int(collators["V1"](batches[0])["input_ids"].shape[1]),
        },
        "rows": rows,
        "v3_over_v1": ratios,
        "v3_own_steps_ms_per_batch": 1000 * _time_v3_own_steps(collators["V3"], batches[0]),
        "v1_ms_per_batch": 1000 * batch_size / rows[0]["median_samples_per_s"],
    }


def format_collator_report(report: dict[str, Any]) -> str:
    """Return the report as a Markdown table and one line on the goal."""
    table = format_markdown_table(
        report["rows"],
        [
            ("collator", "collator"),
            ("trains_on", "trains on"),
            ("median_samples_per_s", "samples/s (median)"),
            ("best_samples_per_s", "samples/s (best)"),
            ("samples_per_cpu_s", "samples per CPU s"),
        ],
    )
    ratios = report["v3_over_v1"]
    median_ratio = statistics.median(ratios)
    if median_ratio >= 1.0:
        verdict = "met"
    elif max(ratios) >= 1.0:
        verdict = (
            "not shown: the median is below 1 but the repeats straddle 1, within this run's noise"
        )
    else:
        verdict = "not met: V3 was slower in every repeat"
    own_share = report["v3_own_steps_ms_per_batch"] / report["v1_ms_per_batch"]
    return (
        f"{table}\n\nV3 speed / V1 speed, repeat by repeat: median {median_ratio:.3f} "
        f"(range {min(ratios):.3f} to {max(ratios):.3f}). Goal, V3 no slower than V1: "
        f"{verdict}.\nV3's own steps (record checks, padding/vision mask, answer mask), "
        f"timed alone: {report['v3_own_steps_ms_per_batch']:.3f} ms per batch, "
        f"{own_share:.1%} of V1's median time per batch."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Samples per second of CollatorV1, V2 and V3 on the same batches."
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="records per batch (default: the config's training batch size)",
    )
    parser.add_argument(
        "--num-batches", type=int, default=8, help="batches per timed round (default: 8)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default: 1)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed rounds, each collator once per round (default: 5)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. --set model.max_pixels=200704 (repeatable)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help=(
            "torch intra-op threads (default: torch's own choice); 1 gives steadier "
            "figures on a busy machine"
        ),
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the report as JSON to this path"
    )
    arguments = parser.parse_args(argv)
    for name in ("num_batches", "repeats", "torch_threads"):
        if getattr(arguments, name) is not None and getattr(arguments, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if arguments.torch_threads is not None:
        torch.set_num_threads(
            arguments.torch_threads
        )  # the image processor's tensor work uses them
    report = run_collator_benchmark(
        arguments.batch_size,
        arguments.num_batches,
        arguments.warmup,
        arguments.repeats,
        arguments.overrides,
    )
    workload, machine = report["workload"], report["machine"]
    print(
        f"profile {workload['profile']}: {workload['num_batches']} batches of "
        f"{workload['batch_size']} records ({workload['sequence_length']} tokens in the "
        f"first), {workload['repeats']} repeats after {workload['warmup']} warm-up"
    )
    print(
        f"machine: {machine['cpu']}, {machine['num_cpu_cores']} cores, torch threads "
        f"{machine['torch_num_threads']}, load average {machine['load_average_1_5_15_min']}"
    )
    print(format_collator_report(report))
    if arguments.json is not None:
        print(f"wrote {write_json(arguments.json, report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
