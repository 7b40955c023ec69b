# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lab 5: LoRA, a short training run and a training callback
#
# This lab goes with chapter 5, "Training". You will size a LoRA adapter, train the model twice with
# two adapter ranks, read what the runs logged, and let the logs say which rank did better:
#
# 1. **5.1** count the parameters a LoRA config trains, by hand, and match PEFT's count;
# 2. **5.2** read one metric's curve out of a run's `log_history`;
# 3. **5.3** decide, from two runs' logs, which one ended better on a metric;
# 4. **5.4** write a `TrainerCallback` that scores the model on held-out images while it trains.
#
# **How it works.** Each exercise is a code cell with a `TODO` and a `raise NotImplementedError`.
# Replace those two lines with your code, run the cell, then run the check cell below it. The check
# prints how many cases passed; if one fails, it shows the input, the expected and the actual
# result, and a hint. "not attempted yet" means the `raise NotImplementedError` is still there.
# Under the tiny profile the two training runs take well under a minute on a laptop; under
# `VLM_PROFILE=full` they run on a GPU, with the budget set in "the only cell to edit".

# %% tags=["remove-cell"]
# Setup for Colab or a bare Jupyter: installs the course where it is missing and picks a profile.
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("vlmlib") is None:
    repository = "git+https://github.com/vlm-course/qwen2vl-nutrition-tables"
    source = os.environ.get("VLM_INSTALL_SOURCE", repository)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", source], check=True)
    importlib.invalidate_caches()

from vlmlib.notebook_setup import set_up_notebook

set_up_notebook()

# %% [markdown]
# ## Setup
#
# The profile's model (the tiny one unless `VLM_PROFILE=full`), its processor and data.

# %%
import tempfile

import pandas as pd
import torch

import vlmlib
from vlmlib import callbacks, checks, collators, data, inference, models, training, viz
from vlmlib.config import load_config, with_overrides

vlmlib.quiet_progress_bars()
config = load_config()
model, processor = models.load_model_and_processor(config)
splits = data.load_configured_splits(config)
print(f"profile {config.profile}: LoRA r={config.lora.r} on {config.lora.target_modules}")

# %% [markdown]
# ## Exercise 5.1: how many parameters does LoRA train?
#
# LoRA freezes a linear layer's weight `W` (`out_features x in_features`) and learns a low-rank
# update `B @ A` beside it: `A` is `r x in_features` and `B` is `out_features x r`.
# `vlmlib.models.build_lora_config` decides which layers get an adapter: those of the **language
# model** (`model.language_model.layers.N....`) whose name ends in one of `lora.target_modules`;
# never the vision tower (`model.visual...`, unless `lora.train_vision`) nor `lm_head`.
#
# Every linear layer of the model, with its sizes:

# %%
linear_shapes = {
    name: (module.in_features, module.out_features)
    for name, module in model.named_modules()
    if isinstance(module, torch.nn.Linear)
}
pd.DataFrame(linear_shapes, index=["in_features", "out_features"]).T.head(14)

# %% [markdown]
# PEFT's own count for the profile's config, the number to reproduce from `linear_shapes` alone
# (`apply_lora` adds the adapters in place, so `linear_shapes` was read first):

# %%
peft_model = models.apply_lora(model, config)
print(
    f"PEFT trains {models.count_parameters(peft_model).trainable:,} parameters "
    f"with r={config.lora.r} on {config.lora.target_modules}"
)

# %% [markdown]
# Write `count_lora_parameters(linear_shapes, target_modules, r)`. The check compares it with PEFT
# on the tiny model's sizes and on Qwen2-VL-2B's real ones.


# %% tags=["exercise"]
def count_lora_parameters(
    linear_shapes: dict[str, tuple[int, int]], target_modules: list[str], r: int
) -> int:
    """Return the number of parameters rank-r LoRA adapters add to the language model's targets."""
    # TODO (exercise 5.1): how many numbers do A and B hold? Which layer names pass the rule?
    raise NotImplementedError("Exercise 5.1: write count_lora_parameters")


# %%
checks.check_count_lora_parameters(count_lora_parameters)

# %% [markdown]
# **Question.** With the default config on Qwen2-VL-2B (the check's fourth case), which layers hold
# most of the adapter's parameters, and why does the `lightweight` config (`q_proj`, `v_proj`, r=8)
# train so many fewer?

# %% [markdown]
# ## Two ranks, one budget
#
# Does a larger adapter learn more in the same number of steps? We train the model twice, once with
# rank 2 and once with rank 16, and change nothing else. `lora.alpha` follows `r` (alpha = 2r), so
# the update's scale `alpha / r` stays 2 and the rank is the only difference. Both runs take their
# learning rate, batch size and seed from the profile's config; the budget below only shortens
# them and sets how often they measure. **This is the only cell to edit**: change the ranks, or
# compare something else (for example `training.collator=v1` with
# `training.mask_strategy=all_tokens` against the default V3).

# %%
budget = {  # shared by both runs
    "tiny": [
        "training.max_steps=20",  # about 15 s per run on two CPU cores
        "training.logging_steps=5",  # a point on the loss curves every 5 steps
        "callbacks.iou_eval_every_steps=10",
        "callbacks.iou_eval_num_samples=8",
    ],
    "full": [
        "training.max_steps=60",  # 480 images per run: a few minutes on one GPU
        "training.logging_steps=10",
        "callbacks.iou_eval_every_steps=30",
        "callbacks.iou_eval_num_samples=16",
    ],
}[config.profile]
budget += ["training.save_steps=1000"]  # no checkpoints: nothing here resumes
settings = {"r=2": ["lora.r=2", "lora.alpha=4"], "r=16": ["lora.r=16", "lora.alpha=32"]}
run_configs = {
    name: with_overrides(config, [*budget, *overrides]) for name, overrides in settings.items()
}
pd.DataFrame(
    {
        name: {
            "LoRA r": run_config.lora.r,
            "steps": run_config.training.max_steps,
            "batch": run_config.training.per_device_train_batch_size,
            "learning rate": run_config.training.learning_rate,
        }
        for name, run_config in run_configs.items()
    }
)

# %% [markdown]
# Besides the training loss, each run logs two held-out measurements: `eval_mean_iou` from
# `IoUEvalCallback` (the model answers held-out images; chapter 5, "Watching training") and
# `eval_answer_loss` from `AnswerLossCallback` (the loss on the answer tokens of the same images;
# chapter 4). Each run starts from a fresh copy of the model: LoRA adds its adapters in place.

# %%
num_held_out = run_configs["r=2"].callbacks.iou_eval_num_samples
held_out_records = [splits["eval"][index] for index in range(num_held_out)]
batch_size = config.training.per_device_eval_batch_size
answer_collator = collators.CollatorV3(processor)  # labels on the answer tokens only
held_out_batches = [
    answer_collator(held_out_records[start : start + batch_size])
    for start in range(0, num_held_out, batch_size)
]


def train_and_log(run_config) -> list[dict]:
    """Train a fresh model with `run_config` and return the run's `log_history`."""
    answer_loss = callbacks.AnswerLossCallback(
        held_out_batches,
        training.compute_answer_loss,
        every_steps=run_config.training.logging_steps,
    )
    with tempfile.TemporaryDirectory() as output_dir:  # the saved adapter is not needed here
        run = training.train(
            run_config,
            output_dir=output_dir,
            model=models.load_model(run_config),
            processor=processor,
            splits=splits,
            extra_callbacks=[answer_loss],
        )
    return run.log_history


histories = {name: train_and_log(run_config) for name, run_config in run_configs.items()}

# %% [markdown]
# The log of a run is a list of dicts, one per logging event, each with its `step`. A row holds only
# what was logged at that moment, so the metrics are spread over different rows:

# %%
pd.DataFrame(histories["r=16"]).head(8)

# %%
figure = viz.new_figure((viz.FIGURE_SIZE[0], 2 * viz.FIGURE_SIZE[1]))
top, bottom = figure.subplots(2, 1)
tables = {name: pd.DataFrame(history) for name, history in histories.items()}
viz.plot_loss_curves(
    tables,
    "eval_answer_loss",
    ylabel="loss per answer token (nats)",
    title="Held-out loss on the answer",
    ax=top,
)
viz.plot_loss_curves(
    tables, "eval_mean_iou", ylabel="mean IoU", title="Held-out mean IoU", ax=bottom
)
figure

# %% [markdown]
# ## Exercise 5.2: read one curve from the log
#
# Write `read_curve(log_history, metric)`: the `(step, value)` pairs of every row that holds
# `metric`, in the order they were logged. It is what `pd.DataFrame(log_history)[["step", metric]]`
# followed by dropping the empty rows gives, without pandas. The check reads your runs' own curves.


# %% tags=["exercise"]
def read_curve(log_history: list[dict], metric: str) -> list[tuple[int, float]]:
    """Return (step, value) for each row of a Trainer's log_history that holds `metric`."""
    # TODO (exercise 5.2): in the table above, which rows hold the metric, and where is the step?
    raise NotImplementedError("Exercise 5.2: write read_curve")


# %%
checks.check_read_curve(read_curve, histories["r=16"])

# %% [markdown]
# ## Exercise 5.3: which run ended better?
#
# Write `pick_better_run(histories, metric, is_higher_better)`: the name of the run whose **last**
# logged value of `metric` is best, or `"tie"` when the best value is shared. Lower is better for a
# loss, higher for IoU. The check asks it about your two runs, so the right answer is whatever they
# decided; a few made-up logs test the edge cases.


# %% tags=["exercise"]
def pick_better_run(histories: dict[str, list[dict]], metric: str, is_higher_better: bool) -> str:
    """Return the name of the run with the best last value of `metric`, or "tie"."""
    # TODO (exercise 5.3): reuse read_curve; why the last value, not the best along the way?
    raise NotImplementedError("Exercise 5.3: write pick_better_run")


# %%
checks.check_pick_better_run(pick_better_run, histories)

# %% [markdown]
# **Question.** Call `pick_better_run(histories, "eval_answer_loss", False)` and
# `pick_better_run(histories, "eval_mean_iou", True)`. Which rank won each, and do they agree?
# Rank 16 trains eight times as many adapter parameters as rank 2 (exercise 5.1): is the gap
# between the curves as large as that? What would you change in the budget cell to be surer of
# the answer?

# %% [markdown]
# ## Exercise 5.4: a callback that scores held-out images
#
# The training loss says the model is learning *something*; the IoU on images it never trained on
# says whether it is learning to find tables. A `transformers.TrainerCallback` is how to run code
# inside the Trainer's loop: the Trainer calls `on_step_end(args, state, control, model=..., ...)`
# after every optimizer step (`state.global_step` is the step just finished) and
# `on_train_end(...)` once at the end
# ([callback events](https://huggingface.co/docs/transformers/main_classes/callback)).
#
# The scoring itself is a function of the model, here `score_held_out`: it answers a few held-out
# images and returns their mean IoU with `vlmlib.callbacks.score_parsed_answers`.

# %%
held_out = [splits["eval"][index] for index in range(2)]


def score_held_out(scored_model: torch.nn.Module) -> float:
    """Return the mean IoU of the model's answers on the held-out records (a failure scores 0)."""
    parsed = inference.predict_boxes(
        scored_model,
        processor,
        held_out,
        prompt=config.data.prompt,
        system_message=config.data.system_message,
        max_new_tokens=config.callbacks.max_new_tokens,
    )
    return callbacks.score_parsed_answers(held_out, parsed)["mean_iou"]


print(
    f"mean IoU before training (a fresh adapter changes nothing yet) on {len(held_out)} "
    f"held-out images: {score_held_out(peft_model):.3f}"
)

# %% [markdown]
# Write `HeldOutIoUCallback(score_model, every_steps)`. It appends `(step, score)` to `self.history`
# every `every_steps` steps, and once more at the end of training unless the last step was just
# scored. The check drives it with hand-made events and inside a real `transformers.Trainer` (a toy
# model, a fake scorer), so it runs in a second. `vlmlib.callbacks.IoUEvalCallback` is the full
# version.

# %% tags=["exercise"]
from transformers import TrainerCallback


class HeldOutIoUCallback(TrainerCallback):
    """Every `every_steps` optimizer steps, and at the end of training, record (step, score)."""

    def __init__(self, score_model, every_steps: int) -> None:
        self.score_model = score_model
        self.every_steps = every_steps
        self.history: list[tuple[int, float]] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # TODO (exercise 5.4): which step just finished (see `state`), and is it one to score?
        raise NotImplementedError("Exercise 5.4: write on_step_end")

    def on_train_end(self, args, state, control, model=None, **kwargs):
        # TODO (exercise 5.4): the run may end between two scored steps; what must not happen twice?
        raise NotImplementedError("Exercise 5.4: write on_train_end")


# %%
checks.check_iou_callback(HeldOutIoUCallback)

# %% [markdown]
# In a real run the callback goes to the trainer with the real scorer; `vlmlib.training.train`
# adds it after the config's own callbacks (among them `IoUEvalCallback`, the library's version of
# yours):
#
# ```python
# run = training.train(config, extra_callbacks=[HeldOutIoUCallback(score_held_out, every_steps=20)])
# ```
#
# **Question.** Why score a *fixed* list of held-out records each time, rather than a fresh random
# sample at every call?

# %% [markdown]
# ## What you built
#
# - The arithmetic behind LoRA's size: `r * (in + out)` per adapted layer, the same count as PEFT's.
# - Two short runs that differ in one setting, and the habit of reading their logs as curves.
# - A decision taken from the logs, not from expectations: which run ended better, on which metric.
# - A `TrainerCallback` that measures what the loss cannot: IoU on images the model never saw.
