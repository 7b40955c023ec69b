"""Tests for vlmlib.training and vlmlib.callbacks: the loss, a short run, exact
resume, what is saved.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from vlmlib.callbacks import GradNormCallback, IoUEvalCallback
from vlmlib.collators import CollatorV1, CollatorV3, build_collator
from vlmlib.config import Config, load_config, with_overrides
from vlmlib.models import apply_lora, load_model
from vlmlib.training import (
    RUN_CONFIG_FILE,
    build_sft_config,
    build_trainer,
    compute_answer_loss,
    train,
)

SHORT_RUN = [
    "training.max_steps=6",
    "training.per_device_train_batch_size=4",
    "training.logging_steps=1",
    "training.save_steps=3",
    "training.warmup_ratio=0.0",
    "training.lr_scheduler_type=constant",
    "callbacks.iou_eval=false",
    "callbacks.console_log=false",
]


@pytest.fixture(scope="module")
def short_run_config(tiny_config: Config) -> Config:
    return with_overrides(tiny_config, SHORT_RUN)


@pytest.mark.parametrize(
    "collator_class", [CollatorV1, CollatorV3], ids=["v1-all-positions", "v3-answer-only"]
)
def test_compute_answer_loss_equals_the_standard_loss(
    tiny_config, tiny_processor, tiny_splits, collator_class
):
    model = apply_lora(load_model(tiny_config), tiny_config)
    batch = collator_class(tiny_processor)([tiny_splits["train"][index] for index in range(3)])
    model.eval()  # no LoRA dropout, so both passes see the same network
    with torch.no_grad():
        standard = model(**batch).loss
        ours = compute_answer_loss(model, batch)
    assert torch.allclose(ours, standard, rtol=1e-5)


def test_compute_answer_loss_gradients_equal_the_standard_ones(
    tiny_config, tiny_processor, tiny_splits
):
    model = apply_lora(load_model(tiny_config), tiny_config)
    model.eval()
    batch = CollatorV3(tiny_processor)([tiny_splits["train"][index] for index in range(2)])
    gradients = []
    for loss_function in (lambda: model(**batch).loss, lambda: compute_answer_loss(model, batch)):
        model.zero_grad()
        loss_function().backward()
        gradients.append(
            torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
        )
    assert torch.allclose(gradients[0], gradients[1], rtol=1e-4, atol=1e-7)


def test_build_sft_config_uses_cpu_settings_on_cpu(tiny_config):
    arguments = build_sft_config(tiny_config)
    assert arguments.use_cpu and not arguments.bf16 and not arguments.activation_checkpointing
    assert arguments.max_length is None and arguments.remove_unused_columns is False
    assert arguments.dataset_kwargs == {"skip_prepare_dataset": True}


@pytest.mark.parametrize(
    ("eval_steps", "strategy"), [("null", "no"), ("5", "steps")], ids=["off", "every-5"]
)
def test_build_sft_config_asks_for_validation_loss_only_when_eval_steps_is_set(
    tiny_config, eval_steps, strategy
):
    arguments = build_sft_config(with_overrides(tiny_config, [f"training.eval_steps={eval_steps}"]))
    assert arguments.eval_strategy == strategy
    assert arguments.prediction_loss_only  # never the full-vocabulary logits of a whole eval batch


def test_build_trainer_without_eval_dataset_names_eval_steps(
    short_run_config, tiny_processor, tiny_splits
):
    config = with_overrides(short_run_config, ["training.eval_steps=2"])
    with pytest.raises(ValueError, match="training.eval_steps=2"):
        build_trainer(config, load_model(config), tiny_processor, tiny_splits["train"])


def test_train_logs_eval_loss_at_eval_steps_equal_to_the_answer_loss_on_the_eval_split(
    short_run_config, tiny_processor, tiny_splits, tmp_path
):
    config = with_overrides(short_run_config, ["training.max_steps=4", "training.eval_steps=2"])
    run = train(config, output_dir=tmp_path / "run", splits=tiny_splits)
    evaluated = [entry for entry in run.log_history if "eval_loss" in entry]
    assert [entry["step"] for entry in evaluated] == [2, 4]
    assert all(
        torch.isfinite(torch.tensor(entry["eval_loss"])) and entry["eval_loss"] > 0
        for entry in evaluated
    )
    # The eval records fit one eval batch: the loss at the last step is the final model's on them.
    eval_records = list(tiny_splits["eval"])
    assert len(eval_records) <= config.training.per_device_eval_batch_size
    collator = build_collator(
        config.training.collator,
        tiny_processor,
        config.data.prompt,
        config.data.system_message,
        config.training.mask_strategy,
    )
    model = run.trainer.model.eval()  # as the Trainer evaluates: no LoRA dropout
    with torch.no_grad():
        expected = compute_answer_loss(model, collator(eval_records))
    assert evaluated[-1]["eval_loss"] == pytest.approx(float(expected), rel=1e-5)


def test_trainer_runs_and_loss_falls_on_tiny_profile(short_run_config, tiny_splits, tmp_path):
    config = with_overrides(
        short_run_config,
        ["lora.enabled=false", "training.learning_rate=1e-3", "training.max_steps=8"],
    )
    run = train(config, output_dir=tmp_path / "run", splits=tiny_splits)
    losses = [entry["loss"] for entry in run.log_history if "loss" in entry]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert (
        sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    )  # the last steps' mean is below the first steps'


def test_train_saves_adapter_processor_and_config_together(short_run_config, tiny_splits, tmp_path):
    config = with_overrides(short_run_config, ["training.max_steps=2"])
    run = train(config, output_dir=tmp_path / "run", splits=tiny_splits)
    saved = {path.name for path in run.output_dir.iterdir()}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        RUN_CONFIG_FILE,
    } <= saved
    assert load_config(run.output_dir / RUN_CONFIG_FILE) == config


class _StopAfter(TrainerCallback):
    """Ends training after `step`, as a killed job would (after its checkpoint at that step)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_resume_from_checkpoint_equals_uninterrupted_run(short_run_config, tiny_splits, tmp_path):
    whole = train(short_run_config, output_dir=tmp_path / "whole", splits=tiny_splits)

    from vlmlib.models import load_model_and_processor
    from vlmlib.training import build_trainer

    model, processor = load_model_and_processor(short_run_config)
    interrupted = build_trainer(
        short_run_config,
        model,
        processor,
        tiny_splits["train"],
        [_StopAfter(3)],
        tmp_path / "resumed",
    )
    interrupted.train()
    assert (tmp_path / "resumed" / "checkpoint-3").exists()
    resumed = train(
        short_run_config,
        output_dir=tmp_path / "resumed",
        splits=tiny_splits,
        resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-3"),
    )
    assert resumed.trainer.state.global_step == whole.trainer.state.global_step == 6
    weights_whole = load_file(whole.output_dir / "adapter_model.safetensors")
    weights_resumed = load_file(resumed.output_dir / "adapter_model.safetensors")
    assert weights_whole.keys() == weights_resumed.keys()
    for name in weights_whole:
        assert torch.allclose(weights_whole[name], weights_resumed[name], atol=1e-6), name


def test_callbacks_log_grad_norms_and_eval_iou(short_run_config, tiny_splits, tmp_path):
    config = with_overrides(
        short_run_config,
        [
            "training.max_steps=4",
            "callbacks.iou_eval=true",
            "callbacks.iou_eval_every_steps=2",
            "callbacks.iou_eval_num_samples=2",
            "callbacks.max_new_tokens=4",
        ],
    )
    run = train(config, output_dir=tmp_path / "run", splits=tiny_splits)
    callbacks = run.trainer.callback_handler.callbacks
    grad_norms = next(callback for callback in callbacks if isinstance(callback, GradNormCallback))
    assert len(grad_norms.applied_norms) == 4 and all(norm > 0 for norm in grad_norms.applied_norms)
    iou = next(callback for callback in callbacks if isinstance(callback, IoUEvalCallback))
    assert [entry["step"] for entry in iou.history] == [
        0,
        2,
        4,
    ]  # before the first step, every 2 steps
    logged = [entry for entry in run.log_history if "eval_mean_iou" in entry]
    assert len(logged) == 3 and all(0.0 <= entry["eval_mean_iou"] <= 1.0 for entry in logged)
    assert any("grad_norm_applied" in entry for entry in run.log_history)


# IoU every 2 of 4 steps. Logging every step, steps 2 and 4 log both; logging every 3 (and at
# step 1, logging_first_step), they never coincide.
@pytest.mark.parametrize(
    ("logging_steps", "loss_steps"),
    [(1, [1, 2, 3, 4]), (3, [1, 3])],
    ids=["log-every-step", "log-every-3"],
)
def test_iou_eval_callback_keeps_every_loss_row_and_logs_iou_at_its_steps(
    short_run_config, tiny_splits, tmp_path, logging_steps: int, loss_steps: list[int]
):
    config = with_overrides(
        short_run_config,
        [
            "training.max_steps=4",
            f"training.logging_steps={logging_steps}",
            "callbacks.iou_eval=true",
            "callbacks.iou_eval_every_steps=2",
            "callbacks.iou_eval_num_samples=1",
            "callbacks.max_new_tokens=4",
        ],
    )
    log_history = train(config, output_dir=tmp_path / "run", splits=tiny_splits).log_history
    loss_rows = [entry for entry in log_history if "loss" in entry and "grad_norm" in entry]
    assert [entry["step"] for entry in loss_rows] == loss_steps
    assert [entry["step"] for entry in log_history if "eval_mean_iou" in entry] == [0, 2, 4]


def test_train_saves_into_given_output_dir(short_run_config, tiny_splits, tmp_path):
    config = with_overrides(short_run_config, ["training.max_steps=1"])
    run = train(config, output_dir=tmp_path / "elsewhere", splits=tiny_splits)
    assert (
        run.output_dir == Path(tmp_path / "elsewhere")
        and (run.output_dir / RUN_CONFIG_FILE).exists()
    )


def test_two_process_data_parallel_run_trains_and_saves_once(tiny_config, tiny_assets, tmp_path):
    """torchrun with 2 CPU processes (gloo): DDP wraps the model, our loss runs
    through it, rank 0 saves.
    """
    import os
    import subprocess
    import sys

    output_dir = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "vlmlib",
        "train",
        "--config",
        "tiny",
        "--set",
        "data.synthetic_num_train=24",
        "--set",
        "data.synthetic_num_val=8",
        "--set",
        "tiny.pretrain_steps=0",
        "--set",
        "training.max_steps=2",
        "--set",
        "training.per_device_train_batch_size=2",
        "--set",
        "callbacks.iou_eval=false",
        "--output-dir",
        str(output_dir),
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        result.stdout.count("saved adapter, processor and config") == 1
    )  # only the main process reports
    assert (output_dir / "adapter_model.safetensors").exists() and (
        output_dir / RUN_CONFIG_FILE
    ).exists()
    assert "step    2/2" in result.stdout


class _RecordVisionGradsCallback(TrainerCallback):
    """Record, in the first training step, whether the vision tower's output carries a gradient."""

    def __init__(self):
        self.requires_grad: list[bool] = []

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        qwen = model.get_base_model()
        if (
            not qwen.model.visual._forward_hooks
            and state.global_step == 0
            and not self.requires_grad
        ):
            qwen.model.visual.register_forward_hook(
                lambda module, inputs, output: self.requires_grad.append(
                    output.pooler_output.requires_grad
                    if hasattr(output, "pooler_output")
                    else output.requires_grad
                )
            )


def test_frozen_vision_tower_stays_out_of_backward_with_checkpointing(
    short_run_config, tiny_splits, tmp_path
):
    config = with_overrides(
        short_run_config,
        [
            "training.max_steps=1",
            "training.gradient_checkpointing=true",
            "callbacks.iou_eval=false",
        ],
    )
    recorder = _RecordVisionGradsCallback()
    train(
        config,
        output_dir=tmp_path / "run",
        model=load_model(config),
        splits=tiny_splits,
        extra_callbacks=[recorder],
    )
    assert recorder.requires_grad and not any(recorder.requires_grad)


def test_build_sft_config_checkpoints_on_cpu_when_the_config_asks(tiny_config):
    config = with_overrides(tiny_config, ["training.gradient_checkpointing=true"])
    arguments = build_sft_config(config, output_dir="unused")
    assert arguments.activation_checkpointing and arguments.activation_checkpointing_kwargs == {
        "use_reentrant": False
    }
