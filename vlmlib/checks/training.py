"""Check the training exercises: LoRA's parameter count, the checkpoint to resume from, an IoU callback.

Why: each is compared with what the libraries themselves do (PEFT's adapters, transformers'
`get_last_checkpoint`, a real `Trainer`), so a passing answer matches the run it stands for.
Explained in: book/labs, lab 05 (exercises 5.1 to 5.3).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from vlmlib.checks.runner import CheckCase, CheckResult, run_check

__all__ = ["check_choose_checkpoint", "check_count_lora_parameters", "check_iou_callback"]


def _qwen2_vl_linear_shapes(hidden_size: int, intermediate_size: int, key_value_size: int, num_layers: int,
                            vision_size: int, vision_depth: int, vocab_size: int = 151936) -> dict[str, tuple[int, int]]:
    """Return {module name: (in_features, out_features)} of every nn.Linear in a Qwen2-VL of these sizes."""
    shapes: dict[str, tuple[int, int]] = {}
    for block in range(vision_depth):
        prefix = f"model.visual.blocks.{block}."
        shapes |= {prefix + "attn.qkv": (vision_size, 3 * vision_size), prefix + "attn.proj": (vision_size, vision_size),
                   prefix + "mlp.fc1": (vision_size, 4 * vision_size), prefix + "mlp.fc2": (4 * vision_size, vision_size)}
    merged_size = 4 * vision_size  # the merger joins 2x2 patches
    shapes |= {"model.visual.merger.mlp.0": (merged_size, merged_size), "model.visual.merger.mlp.2": (merged_size, hidden_size)}
    for layer in range(num_layers):
        prefix = f"model.language_model.layers.{layer}."
        shapes |= {prefix + "self_attn.q_proj": (hidden_size, hidden_size), prefix + "self_attn.k_proj": (hidden_size, key_value_size),
                   prefix + "self_attn.v_proj": (hidden_size, key_value_size), prefix + "self_attn.o_proj": (hidden_size, hidden_size),
                   prefix + "mlp.gate_proj": (hidden_size, intermediate_size), prefix + "mlp.up_proj": (hidden_size, intermediate_size),
                   prefix + "mlp.down_proj": (intermediate_size, hidden_size)}
    return shapes | {"lm_head": (hidden_size, vocab_size)}


def _count_lora_parameters_with_peft(linear_shapes: Mapping[str, tuple[int, int]], target_modules: list[str], r: int) -> int:
    """Build a module tree of these linear layers on the meta device, let PEFT add adapters, count what trains."""
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
        parent.add_module(leaf, torch.nn.Linear(in_features, out_features, bias=False, device="meta"))
    config = Config(lora=LoRAConfig(r=r, alpha=2 * r, target_modules=list(target_modules)))
    model = inject_adapter_in_model(build_lora_config(config), root)
    return sum(parameter.numel() for name, parameter in model.named_parameters() if "lora_" in name)


def check_count_lora_parameters(function: Callable[[dict[str, tuple[int, int]], list[str], int], Any]) -> CheckResult:
    """Check a by-hand count of LoRA's trainable parameters against PEFT's own (lab 05, exercise 5.1)."""
    tiny = _qwen2_vl_linear_shapes(128, 512, 64, num_layers=4, vision_size=64, vision_depth=2)
    full = _qwen2_vl_linear_shapes(1536, 8960, 256, num_layers=28, vision_size=1280, vision_depth=32)  # Qwen2-VL-2B
    every_layer_type = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    settings = {  # name -> (shapes, target_modules, r, hint)
        "tiny sizes, the default config (r=16, seven layer types)": (
            tiny, every_layer_type, 16, None),
        "tiny sizes, attention only (q_proj and v_proj, r=8: the lightweight config)": (
            tiny, ["q_proj", "v_proj"], 8, "keep a layer only when the last part of its name is in target_modules."),
        "a name the vision tower uses too ('proj'), with q_proj and v_proj": (
            tiny, ["q_proj", "v_proj", "proj"], 8, "adapters go on model.language_model.layers.* only: skip model.visual.* "
                                                   "and lm_head, even when the last part of the name matches."),
        "Qwen2-VL-2B's sizes, the default config": (full, every_layer_type, 16, None),
        "Qwen2-VL-2B's sizes, r=64 on the MLP only": (full, ["gate_proj", "up_proj", "down_proj"], 64, None),
    }
    cases = [CheckCase(name, {"linear_shapes": shapes, "target_modules": targets, "r": r},
                       _count_lora_parameters_with_peft(shapes, targets, r), hint)
             for name, (shapes, targets, r, hint) in settings.items()]
    return run_check(function, cases, hint="each adapted layer adds A (r x in_features) and B (out_features x r): "
                                           "r * (in_features + out_features) parameters.")


def _last_checkpoint_by_transformers(listing: Mapping[str, bool]) -> str | None:
    """Recreate the listing in a temporary folder and ask `transformers.trainer_utils.get_last_checkpoint`."""
    import os
    import tempfile

    from transformers.trainer_utils import get_last_checkpoint

    with tempfile.TemporaryDirectory() as folder:
        for name, is_folder in listing.items():
            path = os.path.join(folder, name)
            if is_folder:
                os.mkdir(path)
            else:
                open(path, "w").close()
        found = get_last_checkpoint(folder)
        return None if found is None else os.path.basename(found)


def check_choose_checkpoint(function: Callable[[dict[str, bool]], Any]) -> CheckResult:
    """Check the choice of the checkpoint to resume from against transformers' `get_last_checkpoint` (exercise 5.2)."""
    listings = {  # name -> ({entry name: is a folder}, hint)
        "three checkpoints and the saved adapter": (
            {"checkpoint-20": True, "checkpoint-40": True, "checkpoint-60": True, "adapter_model.safetensors": False}, None),
        "steps compared as numbers, not as text": (
            {"checkpoint-40": True, "checkpoint-100": True, "checkpoint-80": True},
            "as text 'checkpoint-100' < 'checkpoint-40'; compare int(step) instead."),
        "a file named like a checkpoint": ({"checkpoint-80": False, "checkpoint-60": True, "runs": True},
                                           "a checkpoint is a folder; skip plain files."),
        "a save that never finished": ({"tmp-checkpoint-80": True, "checkpoint-60": True},
                                       "the whole name must be checkpoint-<digits>; an unfinished save has another name."),
        "names that only look like checkpoints": ({"checkpoint-best": True, "checkpoint-7": True, "my-checkpoint-9": True}, None),
        "no checkpoint yet": ({"runs": True, "README.md": False}, "with no checkpoint folder, return None."),
    }
    cases = [CheckCase(name, {"listing": listing}, _last_checkpoint_by_transformers(listing), hint)
             for name, (listing, hint) in listings.items()]
    return run_check(function, cases, hint="keep folders named exactly checkpoint-<digits> and return the one with the largest step.")


def _build_toy_regression() -> tuple[Any, list[dict[str, Any]]]:
    """Return a two-weight torch model and 16 examples that a real `transformers.Trainer` trains in a second."""
    import torch

    class ToyRegression(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), labels)}

    inputs = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    return ToyRegression(), [{"x": row, "labels": row.sum()} for row in inputs]


def _drive_callback(callback_class: type, every_steps: int, num_steps: int, driven_by: str) -> list[tuple[int, float]]:
    """Run the student's callback through `num_steps` steps and return its `history`.

    The scorer returns 0.1 on its first call, 0.2 on the second, and so on, so the history shows
    when the callback scored and in which order; it returns NaN when given anything but the model.
    """
    import tempfile

    from transformers import PrinterCallback, Trainer, TrainerControl, TrainerState, TrainingArguments

    model, dataset = _build_toy_regression()
    num_calls = [0]

    def score_model(scored_model: Any) -> float:
        num_calls[0] += 1
        return round(0.1 * num_calls[0], 10) if scored_model is model else math.nan

    callback = callback_class(score_model, every_steps)
    with tempfile.TemporaryDirectory() as output_dir:
        arguments = TrainingArguments(output_dir=output_dir, max_steps=num_steps, per_device_train_batch_size=2, report_to=[],
                                      save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True)
        if driven_by == "a real transformers Trainer":
            trainer = Trainer(model=model, args=arguments, train_dataset=dataset, callbacks=[callback])
            trainer.remove_callback(PrinterCallback)  # it would print the toy run's final metrics into the lab
            trainer.train()
        else:  # the events a Trainer sends, in its order, with a state that holds only the step
            state, control = TrainerState(max_steps=num_steps), TrainerControl()
            for step in range(1, num_steps + 1):
                state.global_step = step
                callback.on_step_end(arguments, state, control, model=model)
            callback.on_train_end(arguments, state, control, model=model)
    return [tuple(entry) for entry in callback.history]


def check_iou_callback(callback_class: type) -> CheckResult:
    """Check a TrainerCallback that scores the model every N steps and at the end (exercise 5.3).

    The class is built as `callback_class(score_model, every_steps)` and must fill `history` with
    (step, score) pairs. It is driven by hand-made events and by a real `transformers.Trainer`.
    """
    def run_callback(every_steps: int, num_steps: int, driven_by: str) -> list[tuple[int, float]]:
        return _drive_callback(callback_class, every_steps, num_steps, driven_by)

    run_callback.__name__ = getattr(callback_class, "__name__", "callback")
    runs = {  # name -> (every_steps, num_steps, driven by, expected history, hint)
        "every 2 steps for 5 steps, and once at the end": (2, 5, "hand-made events", [(2, 0.1), (4, 0.2), (5, 0.3)],
                                                           "score when state.global_step % every_steps == 0, and in on_train_end."),
        "the last step was just scored: no second score": (2, 4, "hand-made events", [(2, 0.1), (4, 0.2)],
                                                           "in on_train_end, skip scoring when history already ends at this step."),
        "a run shorter than every_steps": (10, 3, "hand-made events", [(3, 0.1)], "on_train_end must score even if no step did."),
        "every 2 steps for 5 steps, in a real Trainer": (2, 5, "a real transformers Trainer", [(2, 0.1), (4, 0.2), (5, 0.3)],
                                                         "the hooks receive the model as the keyword argument `model`."),
    }
    cases = [CheckCase(name, {"every_steps": every, "num_steps": steps, "driven_by": driven_by}, expected, hint)
             for name, (every, steps, driven_by, expected, hint) in runs.items()]
    return run_check(run_callback, cases, hint="append (state.global_step, self.score_model(model)) to self.history.")
