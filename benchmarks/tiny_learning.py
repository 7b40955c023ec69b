"""Benchmark: does the tiny profile learn? From random weights to boxes, timed, in one run.

Usage, from the repository root (tiny profile, CPU, offline):
    python -m benchmarks.tiny_learning --seed 0
    python -m benchmarks.tiny_learning --seed 1 --json outputs/benchmarks/tiny_learning_seed1.json

Goal (issue 6): on 100 held-out synthetic images, mean IoU >= 0.70 with no parse failures, at least
0.35 above the mean-box baseline, within 10 minutes of CPU counted from random initialisation.

What it runs is what the course runs, in order:
1. `build_tiny_model`: the random tiny Qwen2-VL (the seed sets the weights and every data stream);
2. `pretrain_tiny_model`: the pretraining `vlmlib make-tiny` caches (tables and
   logos, sampled softmax);
3. `training.train`: the chapters' fine-tuning, LoRA through TRL's SFTTrainer, on a fresh synthetic
   training split with the course's prompt;
4. scoring on 100 images drawn from a seed used by no step above: the fine-tuned model, the
   pretrained model before fine-tuning ("zero-shot"), and the baseline that always answers the
   training split's mean box. The zero-shot and baseline scores are not part of the timed path.
Wall time counts steps 1-3 and the fine-tuned model's scoring; the machine and its load are printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from benchmarks.workload import describe_machine, write_json
from vlmlib.callbacks import score_parsed_answers
from vlmlib.config import Config, load_config
from vlmlib.evaluation import score_mean_box_baseline
from vlmlib.inference import predict_boxes
from vlmlib.tiny import build_tiny_model, build_tiny_processor, pretrain_tiny_model
from vlmlib.tiny.synthetic import generate_synthetic_dataset
from vlmlib.training import train

HELD_OUT_SEED_OFFSET = (
    10_000  # held-out images come from seed + this; training data uses seed itself
)
NUM_HELD_OUT = 100


def score_model(model, processor, config: Config, records: list[dict]) -> dict[str, Any]:
    """Mean IoU and parse-failure rate of greedy answers to the course's prompt,
    and the mean IoU by table count.
    """
    parsed = predict_boxes(
        model,
        processor,
        records,
        prompt=config.data.prompt,
        system_message=config.data.system_message,
        max_new_tokens=config.callbacks.max_new_tokens,
        batch_size=16,
    )
    by_count: dict[int, list[float]] = {}
    for record, answer in zip(records, parsed):
        by_count.setdefault(len(record["objects"]["bbox"]), []).append(
            score_parsed_answers([record], [answer])["mean_iou"]
        )
    return score_parsed_answers(records, parsed) | {
        "mean_iou_by_num_tables": {
            count: (len(ious), float(np.mean(ious))) for count, ious in sorted(by_count.items())
        }
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--seed", type=int, default=0, help="sets the initial weights and every data stream"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config overrides"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--num-held-out",
        type=int,
        default=NUM_HELD_OUT,
        help="held-out images to score (the goal: 100)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    config = load_config(
        "assistant_only",
        profile="tiny",
        overrides=[
            f"tiny.seed={args.seed}",
            f"data.synthetic_seed={args.seed}",
            f"training.seed={args.seed}",
            "callbacks.iou_eval=false",
            *args.set,
        ],
    )
    data = config.data
    started = time.perf_counter()
    model, processor = build_tiny_model(config), build_tiny_processor(config)
    pretraining_log = pretrain_tiny_model(model, processor, config)
    pretrained_state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    splits = generate_synthetic_dataset(
        num_train=data.synthetic_num_train,
        num_val=data.synthetic_num_val,
        seed=data.synthetic_seed,
        min_side_px=data.synthetic_min_side_px,
        max_side_px=data.synthetic_max_side_px,
        is_square=data.synthetic_square,
    )
    fine_tuning_started = time.perf_counter()
    with tempfile.TemporaryDirectory() as output_dir:
        run = train(
            config,
            output_dir=output_dir,
            model=model,
            processor=processor,
            splits={"train": splits["train"], "eval": splits["val"]},
        )
    fine_tuning_seconds = time.perf_counter() - fine_tuning_started
    held_out_split = generate_synthetic_dataset(
        num_train=0,
        num_val=args.num_held_out,
        seed=args.seed + HELD_OUT_SEED_OFFSET,
        min_side_px=data.synthetic_min_side_px,
        max_side_px=data.synthetic_max_side_px,
        is_square=data.synthetic_square,
    )["val"]
    held_out = [held_out_split[index] for index in range(len(held_out_split))]
    fine_tuned = score_model(run.trainer.model, processor, config, held_out)
    wall_seconds = time.perf_counter() - started

    zero_shot_model = build_tiny_model(config)
    zero_shot_model.load_state_dict(pretrained_state)
    zero_shot = score_model(zero_shot_model, processor, config, held_out)
    baseline = score_mean_box_baseline(splits["train"].select_columns(["objects"]), held_out)
    losses = [entry["loss"] for entry in run.log_history if "loss" in entry]

    figures = {
        "seed": args.seed,
        "overrides": args.set,
        "mean_iou": fine_tuned["mean_iou"],
        "parse_failure_rate": fine_tuned["parse_failure_rate"],
        "zero_shot_mean_iou": zero_shot["mean_iou"],
        "zero_shot_parse_failure_rate": zero_shot["parse_failure_rate"],
        "mean_iou_by_num_tables": {
            str(count): {"images": n, "mean_iou": iou}
            for count, (n, iou) in fine_tuned["mean_iou_by_num_tables"].items()
        },
        "mean_box_baseline_iou": baseline,
        "margin_over_baseline": fine_tuned["mean_iou"] - baseline,
        "wall_seconds": wall_seconds,
        "pretraining_seconds": pretraining_log.seconds,
        "fine_tuning_seconds": fine_tuning_seconds,
        "pretraining_steps": config.tiny.pretrain_steps,
        "fine_tuning_steps": config.training.max_steps,
        "pretraining_loss_first_last": [pretraining_log.losses[0], pretraining_log.losses[-1]],
        "fine_tuning_loss_first_last": [losses[0], losses[-1]] if losses else None,
        "torch_threads": torch.get_num_threads(),
        "machine": describe_machine(torch.device("cpu")),
    }
    meets_goal = (
        args.num_held_out >= NUM_HELD_OUT
        and figures["mean_iou"] >= 0.70
        and figures["parse_failure_rate"] == 0
        and figures["margin_over_baseline"] >= 0.35
        and wall_seconds <= 600
    )
    print(
        f"seed {args.seed}: mean IoU {fine_tuned['mean_iou']:.3f} (parse failures "
        f"{fine_tuned['parse_failure_rate']:.0%}) | zero-shot {zero_shot['mean_iou']:.3f} (parse "
        f"failures {zero_shot['parse_failure_rate']:.0%}) | mean-box baseline {baseline:.3f} | "
        f"wall {wall_seconds:.0f} s (pretraining {pretraining_log.seconds:.0f} s, fine-tuning "
        f"{fine_tuning_seconds:.0f} s) | goal {'met' if meets_goal else 'NOT met'}"
    )
    print(
        "fine-tuned mean IoU by tables per image: "
        + ", ".join(
            f"{count}: {iou:.3f} ({n} images)"
            for count, (n, iou) in fine_tuned["mean_iou_by_num_tables"].items()
        )
    )
    print(f"machine: {figures['machine']}")
    figures["meets_goal"] = meets_goal
    if args.json:
        write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
