"""Check the training exercises: LoRA's parameter count, reading a run's curves, an IoU callback.

Why: each is compared with what the libraries and the run itself give (PEFT's adapters, the lab's
own `log_history`, a real `Trainer`), so a passing answer matches the run it stands for. The
curve-reading cases take the lab's logs as input: their expected answers are what the runs decided.
Explained in: book/labs, lab 05 (exercises 5.1 to 5.4).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vlmlib.checks.runner import CheckCase, CheckResult, run_check

__all__ = [
    "check_count_lora_parameters",
    "check_iou_callback",
    "check_pick_better_run",
    "check_read_curve",
]


def _qwen2_vl_linear_shapes(
    hidden_size: int,
    intermediate_size: int,
    key_value_size: int,
    num_layers: int,
    vision_size: int,
    vision_depth: int,
    vocab_size: int = 151936,
) -> dict[str, tuple[int, int]]:
    """Return {module name: (in_features, out_features)} of every nn.Linear of such a Qwen2-VL."""
    shapes: dict[str, tuple[int, int]] = {}
    for block in range(vision_depth):
        prefix = f"model.visual.blocks.{block}."
        shapes |= {
            prefix + "attn.qkv": (vision_size, 3 * vision_size),
            prefix + "attn.proj": (vision_size, vision_size),
            prefix + "mlp.fc1": (vision_size, 4 * vision_size),
            prefix + "mlp.fc2": (4 * vision_size, vision_size),
        }
    merged_size = 4 * vision_size  # the merger joins 2x2 patches
    shapes |= {
        "model.visual.merger.mlp.0": (merged_size, merged_size),
        "model.visual.merger.mlp.2": (merged_size, hidden_size),
    }
    for layer in range(num_layers):
        prefix = f"model.language_model.layers.{layer}."
        shapes |= {
            prefix + "self_attn.q_proj": (hidden_size, hidden_size),
            prefix + "self_attn.k_proj": (hidden_size, key_value_size),
            prefix + "self_attn.v_proj": (hidden_size, key_value_size),
            prefix + "self_attn.o_proj": (hidden_size, hidden_size),
            prefix + "mlp.gate_proj": (hidden_size, intermediate_size),
            prefix + "mlp.up_proj": (hidden_size, intermediate_size),
            prefix + "mlp.down_proj": (intermediate_size, hidden_size),
        }
    return shapes | {"lm_head": (hidden_size, vocab_size)}


def _count_lora_parameters_with_peft(
    linear_shapes: Mapping[str, tuple[int, int]], target_modules: list[str], r: int
) -> int:
    """Build these linear layers on the meta device, let PEFT add adapters, count what trains."""
    import torch
    from peft import inject_adapter_in_model

    from vlmlib.config import Config, LoRAConfig
    from vlmlib.models import build_lora_config

    root = torch.nn.Module()
    for name, (in_features, out_features) in linear_shapes.items():
        *parents, leaf = name.split(".")
        parent = root
        for part in parents:
            if not hasattr(parent, part):
                parent.add_module(part, torch.nn.Module())
            parent = getattr(parent, part)
        parent.add_module(
            leaf, torch.nn.Linear(in_features, out_features, bias=False, device="meta")
        )
    config = Config(lora=LoRAConfig(r=r, alpha=2 * r, target_modules=list(target_modules)))
    model = inject_adapter_in_model(build_lora_config(config), root)
    return sum(parameter.numel() for name, parameter in model.named_parameters() if "lora_" in name)


def check_count_lora_parameters(
    function: Callable[[dict[str, tuple[int, int]], list[str], int], Any],
) -> CheckResult:
    """Check a by-hand count of LoRA's trainable parameters against PEFT's (exercise 5.1)."""
    tiny = _qwen2_vl_linear_shapes(128, 512, 64, num_layers=4, vision_size=64, vision_depth=2)
    full = _qwen2_vl_linear_shapes(
        1536, 8960, 256, num_layers=28, vision_size=1280, vision_depth=32
    )  # Qwen2-VL-2B
    every_layer_type = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    settings = {  # name -> (shapes, target_modules, r, hint)
        "tiny sizes, the default config (r=16, seven layer types)": (
            tiny,
            every_layer_type,
            16,
            None,
        ),
        "tiny sizes, attention only (q_proj and v_proj, r=8: the lightweight config)": (
            tiny,
            ["q_proj", "v_proj"],
            8,
            "keep a layer only when the last part of its name is in target_modules.",
        ),
        "a name the vision tower uses too ('proj'), with q_proj and v_proj": (
            tiny,
            ["q_proj", "v_proj", "proj"],
            8,
            "adapters go on model.language_model.layers.* only: skip model.visual.* "
            "and lm_head, even when the last part of the name matches.",
        ),
        "Qwen2-VL-2B's sizes, the default config": (full, every_layer_type, 16, None),
        "Qwen2-VL-2B's sizes, r=64 on the MLP only": (
            full,
            ["gate_proj", "up_proj", "down_proj"],
            64,
            None,
        ),
    }
    cases = [
        CheckCase(
            name,
            {"linear_shapes": shapes, "target_modules": targets, "r": r},
            _count_lora_parameters_with_peft(shapes, targets, r),
            hint,
        )
        for name, (shapes, targets, r, hint) in settings.items()
    ]
    return run_check(
        function,
        cases,
        hint="each adapted layer adds A (r x in_features) and B (out_features x r): "
        "r * (in_features + out_features) parameters.",
    )


def _read_curve_reference(
    log_history: Sequence[Mapping[str, Any]], metric: str
) -> list[tuple[int, float]]:
    """Return (step, value) for every row of a Trainer's log that holds `metric`, in log order."""
    return [(int(row["step"]), float(row[metric])) for row in log_history if metric in row]


def _synthetic_history() -> list[dict[str, Any]]:
    """Return a log shaped like a Trainer's: loss rows, callback rows, a merged row, a summary."""
    return [
        {"loss": 2.5, "grad_norm": 1.2, "step": 1},
        {"eval_mean_iou": 0.1, "step": 1},
        {"loss": 1.5, "grad_norm": 0.8, "eval_mean_iou": 0.4, "step": 5},
        {"eval_answer_loss": 1.9, "step": 5},
        {"loss": 1.25, "grad_norm": 0.7, "step": 10},
        {"train_runtime": 12.0, "train_loss": 1.75, "step": 10},
    ]


def check_read_curve(
    function: Callable[[list[dict[str, Any]], str], Any], log_history: Sequence[Mapping[str, Any]]
) -> CheckResult:
    """Check reading one metric's curve from a Trainer's `log_history` (lab 05, exercise 5.2).

    Args:
        function: the student's `read_curve(log_history, metric)`.
        log_history: a real run's `log_history` from the lab, so the cases are that run's curves.
    """
    real = [dict(row) for row in log_history]
    exact_key = "match the key exactly: the summary row's 'train_loss' is not 'loss'."
    settings = {  # name -> (history, metric, hint)
        "your run's training loss": (real, "loss", exact_key),
        "your run's held-out answer loss (logged by a callback, in rows of its own)": (
            real,
            "eval_answer_loss",
            None,
        ),
        "your run's held-out IoU (sometimes in the same row as the loss)": (
            real,
            "eval_mean_iou",
            "a row can hold several metrics; keep every row that has this key.",
        ),
        "a short log: 'loss' must not match the summary row's 'train_loss'": (
            _synthetic_history(),
            "loss",
            exact_key,
        ),
        "a metric the run never logged": (
            _synthetic_history(),
            "eval_loss",
            "no row has the key: the curve is an empty list.",
        ),
    }
    cases = [
        CheckCase(
            name,
            {"log_history": history, "metric": metric},
            _read_curve_reference(history, metric),
            hint,
        )
        for name, (history, metric, hint) in settings.items()
    ]
    return run_check(
        function,
        cases,
        hint="each row of log_history is a dict with a 'step'; "
        "keep (step, value) for the rows that hold the metric.",
    )


def _pick_better_reference(
    histories: Mapping[str, Sequence[Mapping[str, Any]]], metric: str, is_higher_better: bool
) -> str:
    """Return the run whose last logged `metric` is best, or "tie" when the best value is shared."""
    last = {
        name: _read_curve_reference(history, metric)[-1][1] for name, history in histories.items()
    }
    best = max(last.values()) if is_higher_better else min(last.values())
    winners = [name for name, value in last.items() if value == best]
    return winners[0] if len(winners) == 1 else "tie"


def check_pick_better_run(
    function: Callable[[dict[str, list[dict[str, Any]]], str, bool], Any],
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
) -> CheckResult:
    """Check choosing the better of several runs by a metric's last logged value (exercise 5.3).

    The expected answers are computed from the same logs, so they are whatever your runs decided.

    Args:
        function: the student's `pick_better_run(histories, metric, is_higher_better)`.
        histories: run name -> that run's `log_history`, from the lab's own training runs.
    """
    real = {name: [dict(row) for row in history] for name, history in histories.items()}
    ending = _synthetic_history()
    best_early = [*ending[:2], {"loss": 0.5, "step": 5}, {"loss": 1.5, "step": 10}]
    settings = {  # name -> (histories, metric, is_higher_better, hint)
        "your runs, held-out answer loss (lower is better)": (
            real,
            "eval_answer_loss",
            False,
            None,
        ),
        "your runs, held-out mean IoU (higher is better)": (real, "eval_mean_iou", True, None),
        "your runs, training loss (lower is better)": (real, "loss", False, None),
        "the best value came early, the last one is worse": (
            {"early": best_early, "steady": ending},
            "loss",
            False,
            "compare the LAST logged value of each run: where it ended, not its best moment.",
        ),
        "two runs end level": (
            {"first": ending, "second": ending},
            "loss",
            False,
            "when the best last value is shared, return 'tie'.",
        ),
        "three runs": ({"a": ending, "b": best_early, "c": best_early[:3]}, "loss", False, None),
    }
    cases = [
        CheckCase(
            name,
            {"histories": runs, "metric": metric, "is_higher_better": higher},
            _pick_better_reference(runs, metric, higher),
            hint,
        )
        for name, (runs, metric, higher, hint) in settings.items()
    ]
    return run_check(
        function,
        cases,
        hint="read each run's curve with read_curve and compare the LAST logged values (where "
        "each run ended, not its best moment); return the best run's name.",
    )


def _build_toy_regression() -> tuple[Any, list[dict[str, Any]]]:
    """Return a two-weight torch model and 16 examples a real `Trainer` fits in a second."""
    import torch

    class ToyRegression(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), labels)}

    inputs = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    return ToyRegression(), [{"x": row, "labels": row.sum()} for row in inputs]


def _drive_callback(
    callback_class: type, every_steps: int, num_steps: int, driven_by: str
) -> list[tuple[int, float]]:
    """Run the student's callback through `num_steps` steps and return its `history`.

    The scorer returns 0.1 on its first call, 0.2 on the second, and so on, so the history shows
    when the callback scored and in which order; it returns NaN when given anything but the model.
    """
    import tempfile

    from transformers import (
        PrinterCallback,
        Trainer,
        TrainerControl,
        TrainerState,
        TrainingArguments,
    )

    model, dataset = _build_toy_regression()
    num_calls = [0]

    def score_model(scored_model: Any) -> float:
        num_calls[0] += 1
        return round(0.1 * num_calls[0], 10) if scored_model is model else math.nan

    callback = callback_class(score_model, every_steps)
    with tempfile.TemporaryDirectory() as output_dir:
        arguments = TrainingArguments(
            output_dir=output_dir,
            max_steps=num_steps,
            per_device_train_batch_size=2,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
        )
        if driven_by == "a real transformers Trainer":
            trainer = Trainer(
                model=model, args=arguments, train_dataset=dataset, callbacks=[callback]
            )
            trainer.remove_callback(
                PrinterCallback
            )  # it would print the toy run's final metrics into the lab
            trainer.train()
        else:  # the events a Trainer sends, in its order, with a state that holds only the step
            state, control = TrainerState(max_steps=num_steps), TrainerControl()
            for step in range(1, num_steps + 1):
                state.global_step = step
                callback.on_step_end(arguments, state, control, model=model)
            callback.on_train_end(arguments, state, control, model=model)
    return [tuple(entry) for entry in callback.history]


def check_iou_callback(callback_class: type) -> CheckResult:
    """Check a TrainerCallback that scores the model every N steps and at the end (exercise 5.4).

    The class is built as `callback_class(score_model, every_steps)` and must fill `history` with
    (step, score) pairs. It is driven by hand-made events and by a real `transformers.Trainer`.
    """

    def run_callback(every_steps: int, num_steps: int, driven_by: str) -> list[tuple[int, float]]:
        return _drive_callback(callback_class, every_steps, num_steps, driven_by)

    run_callback.__name__ = getattr(callback_class, "__name__", "callback")
    runs = {  # name -> (every_steps, num_steps, driven by, expected history, hint)
        "every 2 steps for 5 steps, and once at the end": (
            2,
            5,
            "hand-made events",
            [(2, 0.1), (4, 0.2), (5, 0.3)],
            "score when state.global_step % every_steps == 0, and in on_train_end.",
        ),
        "the last step was just scored: no second score": (
            2,
            4,
            "hand-made events",
            [(2, 0.1), (4, 0.2)],
            "in on_train_end, skip scoring when history already ends at this step.",
        ),
        "a run shorter than every_steps": (
            10,
            3,
            "hand-made events",
            [(3, 0.1)],
            "on_train_end must score even if no step did.",
        ),
        "every 2 steps for 5 steps, in a real Trainer": (
            2,
            5,
            "a real transformers Trainer",
            [(2, 0.1), (4, 0.2), (5, 0.3)],
            "the hooks receive the model as the keyword argument `model`.",
        ),
    }
    cases = [
        CheckCase(
            name, {"every_steps": every, "num_steps": steps, "driven_by": driven_by}, expected, hint
        )
        for name, (every, steps, driven_by, expected, hint) in runs.items()
    ]
    return run_check(
        run_callback,
        cases,
        hint="append (state.global_step, self.score_model(model)) to self.history.",
    )
