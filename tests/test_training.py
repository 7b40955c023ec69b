"""Tests for vlmlib.training and vlmlib.callbacks: the loss, a short run, exact resume, what is saved."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from vlmlib.callbacks import GradNormCallback, IoUEvalCallback
from vlmlib.collators import CollatorV1, CollatorV3
from vlmlib.config import Config, load_config, with_overrides
from vlmlib.models import apply_lora, load_model
from vlmlib.training import RUN_CONFIG_FILE, build_sft_config, compute_answer_loss, train

SHORT_RUN = [
    "training.max_steps=6", "training.per_device_train_batch_size=4", "training.logging_steps=1",
    "training.save_steps=3", "training.warmup_ratio=0.0", "training.lr_scheduler_type=constant",
    "callbacks.iou_eval=false", "callbacks.console_log=false",
]


@pytest.fixture(scope="module")
def short_run_config(tiny_config: Config) -> Config:
    return with_overrides(tiny_config, SHORT_RUN)


@pytest.mark.parametrize("collator_class", [CollatorV1, CollatorV3], ids=["v1-all-positions", "v3-answer-only"])
def test_compute_answer_loss_equals_the_standard_loss(tiny_config, tiny_processor, tiny_splits, collator_class):
    model = apply_lora(load_model(tiny_config), tiny_config)
    batch = collator_class(tiny_processor)([tiny_splits["train"][index] for index in range(3)])
    model.eval()  # no LoRA dropout, so both passes see the same network
    with torch.no_grad():
        standard = model(**batch).loss
        ours = compute_answer_loss(model, batch)
    assert torch.allclose(ours, standard, rtol=1e-5)


def test_compute_answer_loss_gradients_equal_the_standard_ones(tiny_config, tiny_processor, tiny_splits):
    model = apply_lora(load_model(tiny_config), tiny_config)
    model.eval()
    batch = CollatorV3(tiny_processor)([tiny_splits["train"][index] for index in range(2)])
    gradients = []
    for loss_function in (lambda: model(**batch).loss, lambda: compute_answer_loss(model, batch)):
        model.zero_grad()
        loss_function().backward()
        gradients.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]))
    assert torch.allclose(gradients[0], gradients[1], rtol=1e-4, atol=1e-7)


def test_build_sft_config_uses_cpu_settings_on_cpu(tiny_config):
    arguments = build_sft_config(tiny_config)
    assert arguments.use_cpu and not arguments.bf16 and not arguments.activation_checkpointing
    assert arguments.max_length is None and arguments.remove_unused_columns is False
    assert arguments.dataset_kwargs == {"skip_prepare_dataset": True}


def test_trainer_runs_and_loss_falls_on_tiny_profile(short_run_config, tiny_splits, tmp_path):
    config = with_overrides(short_run_config, ["lora.enabled=false", "training.learning_rate=1e-3", "training.max_steps=8"])
    run = train(config, output_dir=tmp_path / "run", splits=tiny_splits)
    losses = [entry["loss"] for entry in run.log_history if "loss" in entry]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # the last steps' mean is below the first steps'


def test_train_saves_adapter_processor_and_config_together(short_run_config, tiny_splits, tmp_path):
    config = with_overrides(short_run_config, ["training.max_steps=2"])
    run = train(config, output_dir=tmp_path / "run", splits=tiny_splits)
    saved = {path.name for path in run.output_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "processor_config.json", "tokenizer.json", RUN_CONFIG_FILE} <= saved
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
    interrupted = build_trainer(short_run_config, model, processor, tiny_splits["train"], [_StopAfter(3)], tmp_path / "resumed")
    interrupted.train()
    assert (tmp_path / "resumed" / "checkpoint-3").exists()
    resumed = train(short_run_config, output_dir=tmp_path / "resumed", splits=tiny_splits,
                    resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-3"))
    assert resumed.trainer.state.global_step == whole.trainer.state.global_step == 6
    weights_whole = load_file(whole.output_dir / "adapter_model.safetensors")
    weights_resumed = load_file(resumed.output_dir / "adapter_model.safetensors")
    assert weights_whole.keys() == weights_resumed.keys()
    for name in weights_whole:
        assert torch.allclose(weights_whole[name], weights_resumed[name], atol=1e-6), name


def test_callbacks_log_grad_norms_and_eval_iou(short_run_config, tiny_splits, tmp_path):
    config = with_overrides(short_run_config, ["training.max_steps=4", "callbacks.iou_eval=true",
                                               "callbacks.iou_eval_every_steps=2", "callbacks.iou_eval_num_samples=2",
                                               "callbacks.max_new_tokens=4"])
    run = train(config, output_dir=tmp_path / "run", splits=tiny_splits)
    callbacks = run.trainer.callback_handler.callbacks
    grad_norms = next(callback for callback in callbacks if isinstance(callback, GradNormCallback))
    assert len(grad_norms.applied_norms) == 4 and all(norm > 0 for norm in grad_norms.applied_norms)
    iou = next(callback for callback in callbacks if isinstance(callback, IoUEvalCallback))
    assert [entry["step"] for entry in iou.history] == [0, 2, 4]  # before the first step, every 2 steps
    logged = [entry for entry in run.log_history if "eval_mean_iou" in entry]
    assert len(logged) == 3 and all(0.0 <= entry["eval_mean_iou"] <= 1.0 for entry in logged)
    assert any("grad_norm_applied" in entry for entry in run.log_history)


def test_train_saves_into_given_output_dir(short_run_config, tiny_splits, tmp_path):
    config = with_overrides(short_run_config, ["training.max_steps=1"])
    run = train(config, output_dir=tmp_path / "elsewhere", splits=tiny_splits)
    assert run.output_dir == Path(tmp_path / "elsewhere") and (run.output_dir / RUN_CONFIG_FILE).exists()


def test_two_process_data_parallel_run_trains_and_saves_once(tiny_config, tiny_assets, tmp_path):
    """torchrun with 2 CPU processes (gloo): DDP wraps the model, our loss runs through it, rank 0 saves."""
    import os
    import subprocess
    import sys

    output_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "vlmlib", "train",
               "--config", "tiny", "--set", "data.synthetic_num_train=24", "--set", "data.synthetic_num_val=8",
               "--set", "tiny.pretrain_steps=0", "--set", "training.max_steps=2", "--set", "training.per_device_train_batch_size=2",
               "--set", "callbacks.iou_eval=false", "--output-dir", str(output_dir)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("saved adapter, processor and config") == 1  # only the main process reports
    assert (output_dir / "adapter_model.safetensors").exists() and (output_dir / RUN_CONFIG_FILE).exists()
    assert "step    2/2" in result.stdout
