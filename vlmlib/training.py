"""Fine-tune Qwen2-VL with TRL's SFTTrainer: the config in, a saved adapter +
processor + config out.

Why: chapters 04 and 05, `vlmlib train` and the tests all train through these few functions, so a
run in a notebook and a run on the command line are the same run.
Explained in: chapter 05, "Training".

The pieces, in the order `train` uses them:
1. `build_sft_config`: TRL's `SFTConfig` from our `TrainingConfig` (CPU or CUDA settings).
2. `AnswerLossSFTTrainer`: SFTTrainer whose loss projects only the labelled
   positions to the vocabulary.
3. `build_trainer`: model (with LoRA), collator, data, callbacks, wired together.
4. `save_run`: adapter (or full model), processor and the resolved config in one folder.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
import torch.nn.functional as F
import yaml
from peft import PeftModel
from transformers import (
    PrinterCallback,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
    TrainerCallback,
    set_seed,
)
from trl import SFTConfig, SFTTrainer

from vlmlib.callbacks import IoUEvalCallback, build_callbacks
from vlmlib.collators import IGNORE_INDEX, build_collator
from vlmlib.config import RUN_CONFIG_FILE, Config, config_to_dict
from vlmlib.data import load_configured_splits
from vlmlib.models import (
    align_pad_token,
    apply_lora,
    load_model_and_processor,
    resolve_compute_dtype,
    resolve_device,
    restrict_input_grads_to_language_model,
)
from vlmlib.run_folders import find_checkpoint_problem, find_resumable_checkpoint

__all__ = [
    "RUN_CONFIG_FILE",
    "AnswerLossSFTTrainer",
    "KeepVisionTowerOutOfBackwardCallback",
    "TrainingRun",
    "build_sft_config",
    "build_trainer",
    "compute_answer_loss",
    "resolve_checkpoint_to_resume",
    "save_run",
    "train",
]

logger = logging.getLogger(__name__)


def build_sft_config(
    config: Config, output_dir: Path | str | None = None, **overrides: Any
) -> SFTConfig:
    """Return TRL's SFTConfig for our training settings.

    Why: a few TRL defaults are wrong for this task and are set here, each for a stated reason.
    Explained in: chapter 05, "The training recipe".
    """
    training = config.training
    on_cpu = resolve_device(config).type == "cpu"
    arguments: dict[str, Any] = dict(
        output_dir=str(output_dir or training.output_dir),
        num_train_epochs=training.num_train_epochs,
        max_steps=training.max_steps,
        per_device_train_batch_size=training.per_device_train_batch_size,
        per_device_eval_batch_size=training.per_device_eval_batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        learning_rate=training.learning_rate,
        lr_scheduler_type=training.lr_scheduler_type,
        # transformers 5 reads a float below 1 as a fraction of all steps
        warmup_steps=training.warmup_ratio,
        weight_decay=training.weight_decay,
        max_grad_norm=training.max_grad_norm,
        logging_steps=training.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=training.save_steps,
        save_total_limit=training.save_total_limit,
        # Validation loss every `eval_steps` (None: none). Loss only: otherwise
        # the Trainer keeps every eval batch's logits, 151,936 per position, and
        # TRL's loss runs a second forward pass to build them.
        eval_strategy="steps" if training.eval_steps else "no",
        eval_steps=training.eval_steps,
        prediction_loss_only=True,
        seed=training.seed,
        data_seed=training.seed,
        report_to=training.report_to,
        use_cpu=on_cpu,
        **_mixed_precision_flags(config),
        # deprecated name in TRL 1.x; `activation_checkpointing` replaces it
        gradient_checkpointing=False,
        activation_checkpointing=training.gradient_checkpointing,
        # Non-reentrant checkpointing lets gradients reach LoRA weights inside
        # frozen, checkpointed layers.
        activation_checkpointing_kwargs={"use_reentrant": False},
        # truncation could cut image tokens away from their pixels (TRL docs, VLM fine-tuning)
        max_length=None,
        remove_unused_columns=False,  # the collator needs the raw "image" and "objects" columns
        dataset_kwargs={
            "skip_prepare_dataset": True
        },  # our collator builds the chat; TRL must not tokenize first
        dataloader_num_workers=training.dataloader_num_workers,
        # every trainable (LoRA) weight is used in each forward pass
        ddp_find_unused_parameters=False,
        # the console callback prints one readable line per log instead
        disable_tqdm=config.callbacks.console_log,
    )
    arguments.update(overrides)
    return SFTConfig(**arguments)


def _mixed_precision_flags(config: Config) -> dict[str, bool]:
    """Return SFTConfig's `bf16`/`fp16`: autocast in the model's compute dtype
    on a GPU, none on a CPU.

    Why: TRL 1.x defaults to bf16, which a T4 lacks; `vlmlib.models.resolve_compute_dtype` decides
    for the weights, the 4-bit compute and this autocast alike. The CPU trains without autocast.
    """
    if resolve_device(config).type == "cpu":
        return {"bf16": False, "fp16": False}
    dtype = resolve_compute_dtype(config)
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def _unwrap_to_qwen(model: torch.nn.Module) -> Qwen2VLForConditionalGeneration:
    """Return the Qwen2VLForConditionalGeneration inside DDP (`.module`) and PEFT wrappers."""
    while not isinstance(model, Qwen2VLForConditionalGeneration):
        model = model.module if hasattr(model, "module") else model.get_base_model()
    return model


def compute_answer_loss(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Return the next-token cross-entropy over labelled positions, projecting
    only those to the vocabulary.

    Why: the LM head maps each position to 151,936 logits. The standard loss does this for every
    position, though only the ~25 answer tokens per example carry labels; on a CPU that
    projection is most of a step. The result equals the standard loss (a test checks it).
    Explained in: chapter 05, "A cheaper loss".

    The model runs through its usual forward (so DDP, PEFT and checkpointing wrappers all apply),
    asked for the logits of the last position only; a forward hook keeps the final hidden states.

    Args:
        inputs: a collator batch, with `labels` (batch, seq_len), -100 where nothing is learned.
        num_items_in_batch: labelled tokens in the whole (accumulated) batch;
            None = this batch's count.
    Returns:
        Scalar loss: the sum of token losses divided by `num_items_in_batch` (or the mean).
    """
    labels = inputs["labels"]
    qwen = _unwrap_to_qwen(model)
    captured: dict[str, torch.Tensor] = {}
    hook = qwen.model.register_forward_hook(
        lambda module, args, output: captured.__setitem__("hidden", output.last_hidden_state)
    )
    try:
        model(
            **{key: value for key, value in inputs.items() if key != "labels"},
            logits_to_keep=1,
            use_cache=False,
        )
    finally:
        hook.remove()
    targets = labels[:, 1:].to(captured["hidden"].device)  # position t predicts token t + 1
    is_labelled = targets != IGNORE_INDEX
    logits = qwen.lm_head(captured["hidden"][:, :-1][is_labelled]).float()  # (num_labelled, vocab)
    loss_sum = F.cross_entropy(logits, targets[is_labelled], reduction="sum")
    denominator = (
        num_items_in_batch if num_items_in_batch is not None else is_labelled.sum().clamp(min=1)
    )
    return loss_sum / denominator


class AnswerLossSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss projects only labelled positions to the vocabulary
    (`compute_answer_loss`).

    Why: same loss, several times faster on a CPU (chapter 05 measures it);
    everything else is TRL's.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Evaluation with prediction_loss_only (build_sft_config) calls with return_outputs=False
        # and gets this loss; only a caller that wants the logits too takes TRL's full path.
        if return_outputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        uses_item_count = self.model_accepts_loss_kwargs and num_items_in_batch is not None
        loss = compute_answer_loss(model, inputs, num_items_in_batch if uses_item_count else None)
        if uses_item_count and self.args.average_tokens_across_devices:
            loss = (
                loss * self.accelerator.num_processes
            )  # as Trainer.compute_loss does: DDP averages gradients
        return loss


class KeepVisionTowerOutOfBackwardCallback(TrainerCallback):
    """When training starts, remove the vision tower's input-gradient hook
    (`restrict_input_grads_to_language_model`).

    Why: the trainer switches checkpointing on at the start of `train()`, and that hooks the vision
    tower's input too; a callback is the first place that runs after it, before the first step.
    """

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        removed = restrict_input_grads_to_language_model(model)
        if removed:
            logger.info(
                "the frozen vision tower stays out of backward (%d input-gradient hook removed)",
                removed,
            )


def build_trainer(
    config: Config,
    model: Qwen2VLForConditionalGeneration | PeftModel,
    processor: Qwen2VLProcessor,
    train_dataset: datasets.Dataset,
    callbacks: Sequence[TrainerCallback] = (),
    output_dir: Path | str | None = None,
    eval_dataset: datasets.Dataset | None = None,
) -> AnswerLossSFTTrainer:
    """Return a ready trainer: LoRA applied (if enabled and not already), our
    collator, our callbacks.

    Why: the minimal TRL recipe (model, data, collator, SFTConfig, SFTTrainer) in one call.
    Explained in: chapter 05, "Wiring the trainer".

    Args:
        eval_dataset: held-out records for the validation loss; needed when
            `training.eval_steps` is set.
    Raises:
        ValueError: `training.eval_steps` is set but no `eval_dataset` is given.
    """
    if config.training.eval_steps and eval_dataset is None:
        raise ValueError(
            f"training.eval_steps={config.training.eval_steps} asks for a validation "
            "loss, but build_trainer got no eval_dataset; pass the eval split, or set "
            "training.eval_steps=null"
        )
    if config.lora.enabled and not isinstance(model, PeftModel):
        set_seed(
            config.training.seed
        )  # LoRA's A matrices start random: seed them, or reruns and resumes differ
        model = apply_lora(model, config)
    collator = build_collator(
        config.training.collator,
        processor,
        config.data.prompt,
        config.data.system_message,
        config.training.mask_strategy,
    )
    align_pad_token(model, processor)
    if not config.lora.train_vision:
        callbacks = [*callbacks, KeepVisionTowerOutOfBackwardCallback()]
    trainer = AnswerLossSFTTrainer(
        model=model,
        args=build_sft_config(config, output_dir),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset if config.training.eval_steps else None,
        data_collator=collator,
        processing_class=processor,
        callbacks=list(callbacks),
    )
    if config.callbacks.console_log:
        trainer.remove_callback(
            PrinterCallback
        )  # ConsoleLogCallback prints the same logs, one line each
    return trainer


def save_run(
    trainer: SFTTrainer, processor: Qwen2VLProcessor, config: Config, output_dir: Path | str
) -> Path:
    """Save the adapter (or full model), the processor and the resolved config
    together, on the main process only.

    Why: one folder is then enough to evaluate, predict or merge;
    `vlmlib evaluate --model DIR` reads it.
    Explained in: chapter 05, "Saving the run".
    """
    output_dir = Path(output_dir)
    trainer.save_model(str(output_dir))  # the Trainer already writes on the main process only
    if trainer.is_world_process_zero():
        processor.save_pretrained(output_dir)
        (output_dir / RUN_CONFIG_FILE).write_text(
            yaml.safe_dump(config_to_dict(config), sort_keys=False)
        )
    return output_dir


@dataclass
class TrainingRun:
    """What `train` returns: where the run was saved, its log, and the live
    trainer (model included).
    """

    output_dir: Path
    log_history: list[dict[str, Any]]
    trainer: AnswerLossSFTTrainer


def resolve_checkpoint_to_resume(output_dir: Path | str, checkpoint: str | Path | bool) -> Path:
    """Return the checkpoint folder a resume should load: the one named, or
    True's newest complete one.

    Why: the Trainer's own search takes the newest folder even when a kill left it half written, and
    then stops; this one skips such folders and says which, and checks a named
    folder before any load.
    Explained in: chapter 05, "Resuming".

    Raises:
        FileNotFoundError: no complete checkpoint, or the named folder is missing.
        ValueError: the named checkpoint is incomplete (the message names the
            missing or broken file).
    """
    if checkpoint is True:
        checkpoint_dir, skipped = find_resumable_checkpoint(output_dir)
        for incomplete in skipped:
            logger.warning(
                "skipped %s: incomplete (%s), probably killed while saving",
                incomplete.path,
                incomplete.reason,
            )
        logger.info("resuming from %s", checkpoint_dir)
        return checkpoint_dir
    checkpoint_dir = Path(checkpoint)
    if not checkpoint_dir.is_dir():
        raise FileNotFoundError(f"the checkpoint to resume from, {checkpoint_dir}, is not a folder")
    problem = find_checkpoint_problem(checkpoint_dir)
    if problem is not None:
        raise ValueError(
            f"the checkpoint {checkpoint_dir} is incomplete ({problem}); pass --resume alone to "
            "take the newest complete one"
        )
    return checkpoint_dir


def train(
    config: Config,
    output_dir: Path | str | None = None,
    resume_from_checkpoint: str | bool | None = None,
    model: Qwen2VLForConditionalGeneration | PeftModel | None = None,
    processor: Qwen2VLProcessor | None = None,
    splits: datasets.DatasetDict | None = None,
    extra_callbacks: Sequence[TrainerCallback] = (),
) -> TrainingRun:
    """Train as the config says, then save adapter, processor and config to `output_dir`.

    Why: the whole loop in one call, shared by chapter 05 and `vlmlib train`.
    Explained in: chapter 05, "A short real run".

    Args:
        output_dir: defaults to `training.output_dir`; checkpoints go to
            `checkpoint-N` folders inside.
        resume_from_checkpoint: a checkpoint folder, or True for the newest
            complete one in `output_dir` (a checkpoint half written when the
            process was killed is skipped, with a warning).
        model, processor, splits: pass them to reuse objects already loaded
            (chapters do); else loaded from the config.
        extra_callbacks: added after the config's callbacks (e.g. chapter 04's AnswerLossCallback).
    """
    output_dir = Path(output_dir or config.training.output_dir)
    if resume_from_checkpoint is not None and resume_from_checkpoint is not False:
        resume_from_checkpoint = str(
            resolve_checkpoint_to_resume(output_dir, resume_from_checkpoint)
        )
    if model is None or processor is None:
        model, processor = load_model_and_processor(config)
    splits = splits if splits is not None else load_configured_splits(config)
    num_eval_records = min(len(splits["eval"]), config.callbacks.iou_eval_num_samples)
    callbacks = build_callbacks(
        config, processor, [splits["eval"][index] for index in range(num_eval_records)]
    )
    callbacks += list(extra_callbacks)
    trainer = build_trainer(
        config,
        model,
        processor,
        splits["train"],
        callbacks,
        output_dir,
        eval_dataset=splits["eval"] if config.training.eval_steps else None,
    )
    for callback in callbacks:
        if isinstance(callback, IoUEvalCallback):
            callback.attach(trainer)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    save_run(trainer, processor, config, output_dir)
    return TrainingRun(
        output_dir=output_dir, log_history=list(trainer.state.log_history), trainer=trainer
    )
