"""Training callbacks: gradient norms, IoU on held-out images while training, a
readable console log.

Why: the loss says the model is learning *something*; IoU on images it never trained on says it is
learning to find tables, and the gradient norm says whether the updates are sane.
Explained in: chapter 05, "Watching training".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from vlmlib.boxes import convert_hub_box_to_xyxy, convert_qwen_box_to_xyxy
from vlmlib.collators import IGNORE_INDEX
from vlmlib.config import Config
from vlmlib.inference import predict_boxes
from vlmlib.metrics import compute_image_mean_iou

__all__ = [
    "AnswerLossCallback",
    "ConsoleLogCallback",
    "GradNormCallback",
    "IoUEvalCallback",
    "build_callbacks",
    "score_parsed_answers",
]

logger = logging.getLogger(__name__)


class GradNormCallback(TrainerCallback):
    """Record, at every optimizer step, the gradient norm the optimizer applies
    and whether clipping cut it.

    Why: the Trainer logs the raw (pre-clipping) norm only at logging steps. Between them a run can
    clip on most steps: its gradient norm sits above `max_grad_norm`, so the threshold rescales
    every step instead of catching the odd spike (the learning rate plays no part in clipping).
    This logs `grad_norm_applied` (mean over the window) and `clipped_fraction` so that shows up.
    Explained in: chapter 04, "Gradient norms", and chapter 05, "Watching training".
    """

    def __init__(self) -> None:
        self.applied_norms: list[float] = []  # one per optimizer step, after clipping
        self.clipped: list[bool] = []
        self._window_start = 0

    def on_pre_optimizer_step(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model=None,
        **kwargs,
    ):
        # The Trainer clips just before this event (transformers 5:
        # _clip_grad_norm, then on_pre_optimizer_step).
        gradients = [
            parameter.grad.detach().float().norm()
            for parameter in model.parameters()
            if parameter.requires_grad and parameter.grad is not None
        ]
        norm = float(torch.stack(gradients).norm()) if gradients else 0.0
        self.applied_norms.append(norm)
        self.clipped.append(args.max_grad_norm > 0 and norm >= args.max_grad_norm * (1 - 1e-3))

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict | None = None,
        **kwargs,
    ):
        window = slice(self._window_start, len(self.applied_norms))
        if logs is not None and "loss" in logs and self.applied_norms[window]:
            added = {
                "grad_norm_applied": sum(self.applied_norms[window])
                / len(self.applied_norms[window]),
                "clipped_fraction": sum(self.clipped[window]) / len(self.clipped[window]),
            }
            logs.update(added)  # for the callbacks after this one (the console line)
            state.log_history[-1].update(
                added
            )  # the Trainer stored its copy of `logs` before calling us
            self._window_start = len(self.applied_norms)


def score_parsed_answers(
    records: Sequence[dict[str, Any]], parsed_answers: Sequence[Any]
) -> dict[str, float]:
    """Return mean IoU (one-to-one matching; a parse failure scores 0) and parse-failure rate."""
    ious, failures = [], 0
    for record, parsed in zip(records, parsed_answers):
        width, height = record["width"], record["height"]
        truth = [convert_hub_box_to_xyxy(box, width, height) for box in record["objects"]["bbox"]]
        predicted = [convert_qwen_box_to_xyxy(box.box_qwen, width, height) for box in parsed.boxes]
        failures += parsed.is_parse_failure
        ious.append(compute_image_mean_iou(predicted, truth))
    return {"mean_iou": sum(ious) / len(ious), "parse_failure_rate": failures / len(records)}


class IoUEvalCallback(TrainerCallback):
    """Every `every_steps` steps, answer a fixed held-out slice and log
    `eval_mean_iou` and `eval_parse_failure_rate`.

    Why: loss can fall while boxes stay wrong (the model learns the format
    first); IoU shows localisation.
    Explained in: chapter 05, "Watching training".

    At a step where the Trainer also logs the loss, the scores go into that step's row of
    `log_history`; at other steps (and before the first step) they get a row of their own.

    Args:
        records: the held-out records (the same ones every time, so values are comparable).
        processor: to build prompts and decode answers.
        every_steps: how often; also runs before the first step (so a curve starts from the model as
            loaded: zero-shot, for a fresh run) and at the end of training.
    """

    def __init__(
        self,
        records: Sequence[dict[str, Any]],
        processor,
        every_steps: int,
        prompt: str,
        system_message: str,
        max_new_tokens: int = 64,
        batch_size: int = 8,
    ) -> None:
        self.records, self.processor, self.every_steps = list(records), processor, every_steps
        self.generation_options = dict(
            prompt=prompt,
            system_message=system_message,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )
        self.history: list[dict[str, float]] = []
        self.trainer = None  # set by `attach`, so results are logged like any metric
        self._pending: dict[str, float] | None = (
            None  # scores waiting for the Trainer's own log of this step
        )

    def attach(self, trainer) -> IoUEvalCallback:
        self.trainer = trainer
        return self

    def _evaluate(self, model, state: TrainerState) -> dict[str, float]:
        scores = score_parsed_answers(
            self.records,
            predict_boxes(model, self.processor, self.records, **self.generation_options),
        )
        metrics = {
            "eval_mean_iou": scores["mean_iou"],
            "eval_parse_failure_rate": scores["parse_failure_rate"],
        }
        self.history.append({"step": state.global_step, **metrics})
        return metrics

    def _log(self, metrics: dict[str, float], state: TrainerState) -> None:
        """Log the scores as a row of their own at the current step."""
        if self.trainer is not None:
            self.trainer.log(metrics)
        else:
            state.log_history.append({**metrics, "step": state.global_step})

    def _flush_pending(self, state: TrainerState) -> None:
        if self._pending is not None:
            metrics, self._pending = self._pending, None
            self._log(metrics, state)

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model=None,
        **kwargs,
    ):
        if (
            self.every_steps > 0 and state.global_step == 0
        ):  # not when resuming: that point is already logged
            self._log(self._evaluate(model, state), state)

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model=None,
        **kwargs,
    ):
        if self.every_steps > 0 and state.global_step % self.every_steps == 0:
            metrics = self._evaluate(model, state)
            # `trainer.log` resets `control.should_log`, and the Trainer logs the
            # step's loss only after on_step_end (transformers 5: on_step_end, then
            # _maybe_log_save_evaluate), so logging here would drop that loss row.
            # When the Trainer is about to log this step (DefaultFlowCallback, always
            # first, has set should_log), the scores join its row in `on_log` instead.
            if control.should_log:
                self._pending = metrics
            else:
                self._log(metrics, state)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict | None = None,
        **kwargs,
    ):
        if self._pending is not None and logs is not None and "loss" in logs:
            logs.update(self._pending)  # for the callbacks after this one (the console line)
            state.log_history[-1].update(
                self._pending
            )  # the Trainer stored its copy of `logs` before calling us
            self._pending = None

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ):
        self._flush_pending(
            state
        )  # the Trainer did not log the last step after all: log the scores alone

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model=None,
        **kwargs,
    ):
        self._flush_pending(state)
        if not self.history or self.history[-1]["step"] != state.global_step:
            self._log(self._evaluate(model, state), state)


class ConsoleLogCallback(TrainerCallback):
    """Print one plain line per log: step, loss, gradient norm, learning rate,
    and eval IoU when present.

    Why: the default notebook progress widget does not survive into the built book, and a dict per
    step is hard to read; a fixed-format line reads well in a notebook, a terminal and a log file.
    """

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict | None = None,
        **kwargs,
    ):
        if not logs or not state.is_world_process_zero:
            return
        parts = [f"step {state.global_step:>4}/{state.max_steps}"]
        for key, label, form in (
            ("loss", "loss", ".4f"),
            ("grad_norm", "grad norm", ".3f"),
            ("clipped_fraction", "clipped", ".0%"),
            ("learning_rate", "lr", ".2e"),
            ("eval_loss", "eval loss", ".4f"),
            ("eval_mean_iou", "eval IoU", ".3f"),
            ("eval_parse_failure_rate", "parse failures", ".0%"),
        ):
            if key in logs and isinstance(logs[key], (int, float)) and math.isfinite(logs[key]):
                parts.append(f"{label} {logs[key]:{form}}")
        if "train_runtime" in logs:
            parts.append(f"done in {logs['train_runtime']:.0f} s")
        print(" | ".join(parts), flush=True)


def build_callbacks(
    config: Config, processor, eval_records: Sequence[dict[str, Any]]
) -> list[TrainerCallback]:
    """Return the callbacks the config turns on (`callbacks.*`), in a fixed order."""
    options = config.callbacks
    callbacks: list[TrainerCallback] = []
    if options.grad_norm:
        callbacks.append(GradNormCallback())
    if options.iou_eval and eval_records:
        callbacks.append(
            IoUEvalCallback(
                eval_records[: options.iou_eval_num_samples],
                processor,
                options.iou_eval_every_steps,
                config.data.prompt,
                config.data.system_message,
                options.max_new_tokens,
                config.training.per_device_eval_batch_size,
            )
        )
    if options.console_log:
        callbacks.append(ConsoleLogCallback())
    return callbacks


class AnswerLossCallback(TrainerCallback):
    """Every `every_steps` steps, log `eval_answer_loss`: the loss on the answer
    tokens of fixed held-out batches.

    Why: an `all_tokens` run's training loss averages over prompt and answer, an `assistant_only`
    run's over the answer alone, so the two numbers measure different things. This one measures the
    same thing for both: how well the model predicts the answers of images it never trained on.
    Explained in: chapter 04, "The loss on the answer alone".

    Args:
        batches: collator batches whose labels keep only the answer (`CollatorV3` with
            `assistant_only`), built once so that every measurement sees the same tokens.
        loss_function: `vlmlib.training.compute_answer_loss` (passed in because
            `training` imports this module).
        every_steps: how often; it also runs before the first step and after the last.
    """

    def __init__(
        self, batches: Sequence[dict[str, torch.Tensor]], loss_function, every_steps: int
    ) -> None:
        self.batches, self.loss_function, self.every_steps = (
            list(batches),
            loss_function,
            every_steps,
        )
        self.num_answer_tokens = sum(
            int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) for batch in self.batches
        )
        self.history: list[dict[str, float]] = []

    def _measure(self, model, state: TrainerState) -> None:
        was_training = model.training
        model.eval()  # no dropout: the measurement must not depend on the random state
        device = next(model.parameters()).device
        with (
            torch.no_grad()
        ):  # the sum over batches, divided by all their answer tokens: a per-token mean
            loss = sum(
                float(
                    self.loss_function(
                        model,
                        {key: value.to(device) for key, value in batch.items()},
                        self.num_answer_tokens,
                    )
                )
                for batch in self.batches
            )
        model.train(was_training)
        self.history.append({"step": state.global_step, "eval_answer_loss": loss})
        state.log_history.append(dict(self.history[-1]))

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model=None,
        **kwargs,
    ):
        self._measure(model, state)

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model=None,
        **kwargs,
    ):
        if self.every_steps > 0 and state.global_step % self.every_steps == 0:
            self._measure(model, state)

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model=None,
        **kwargs,
    ):
        if self.history[-1]["step"] != state.global_step:
            self._measure(model, state)
