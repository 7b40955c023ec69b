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
# # Lab 5: LoRA, checkpoints and a training callback
#
# This lab goes with chapter 5, "Training". You will write three small pieces of a training run,
# each one harder than the last:
#
# 1. **5.1** count the parameters a LoRA config trains, by hand, and match PEFT's count;
# 2. **5.2** choose the checkpoint to resume an interrupted run from;
# 3. **5.3** write a `TrainerCallback` that scores the model on held-out images while it trains.
#
# **How it works.** Each exercise is a code cell with a `TODO` and a `raise NotImplementedError`.
# Replace those two lines with your code, run the cell, then run the check cell below it. The check
# prints how many cases passed; if one fails, it shows the input, the expected and the actual
# result, and a hint. "not attempted yet" means the `raise NotImplementedError` is still there.
# Nothing in this lab trains the big model, so it runs in well under a minute on a laptop.

# %% [markdown]
# ## Setup
#
# The profile's model (the tiny one unless `VLM_PROFILE=full`) and its processor.

# %%
import re

import pandas as pd
import torch

import vlmlib
from vlmlib import callbacks, checks, data, inference, models
from vlmlib.config import load_config

vlmlib.quiet_progress_bars()
config = load_config()
model, processor = models.load_model_and_processor(config)
print(f"profile {config.profile}: LoRA r={config.lora.r} on {config.lora.target_modules}")

# %% [markdown]
# ## Exercise 5.1: how many parameters does LoRA train?
#
# LoRA freezes a linear layer's weight `W` (`out_features x in_features`) and learns a low-rank
# update `B @ A` beside it: `A` is `r x in_features` and `B` is `out_features x r`. Each adapted layer
# therefore trains `r * (in_features + out_features)` parameters. `vlmlib.models.build_lora_config`
# decides which layers get an adapter: those of the **language model** (`model.language_model.layers.N....`)
# whose name ends in one of `lora.target_modules`; never the vision tower (`model.visual...`, unless
# `lora.train_vision`) nor `lm_head`.
#
# Every linear layer of the model, with its sizes:

# %%
linear_shapes = {name: (module.in_features, module.out_features)
                 for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
pd.DataFrame(linear_shapes, index=["in_features", "out_features"]).T.head(14)

# %% [markdown]
# PEFT's own count for the profile's config, the number to reproduce from `linear_shapes` alone
# (`apply_lora` adds the adapters in place, so `linear_shapes` was read first):

# %%
peft_model = models.apply_lora(model, config)
print(f"PEFT trains {models.count_parameters(peft_model).trainable:,} parameters "
      f"with r={config.lora.r} on {config.lora.target_modules}")

# %% [markdown]
# Write `count_lora_parameters(linear_shapes, target_modules, r)`. The check compares it with PEFT on
# the tiny model's sizes and on Qwen2-VL-2B's real ones.

# %% tags=["exercise"]
def count_lora_parameters(linear_shapes: dict[str, tuple[int, int]], target_modules: list[str], r: int) -> int:
    """Return the number of parameters LoRA adapters of rank r add to the language model's target layers."""
    # TODO (exercise 5.1): add r * (in + out) for each layer under "language_model.layers." whose last name part is a target
    raise NotImplementedError("Exercise 5.1: write count_lora_parameters")


# %%
checks.check_count_lora_parameters(count_lora_parameters)

# %% [markdown]
# **Question.** With the default config on Qwen2-VL-2B (the check's third case), which layers hold
# most of the adapter's parameters, and why does the `lightweight` config (`q_proj`, `v_proj`, r=8)
# train so many fewer?

# %% [markdown]
# ## Exercise 5.2: which checkpoint to resume from
#
# Every `training.save_steps` steps the Trainer saves a `checkpoint-N` folder (N is the step) into the
# run's output folder, holding the adapter, the optimizer, the learning-rate schedule, the random-number
# state and `trainer_state.json`. After a crash, `trainer.train(resume_from_checkpoint=path)` continues
# from one of them. A run folder also holds other things (the final adapter, `runs/` logs), and a
# crash during a save can leave a half-written folder under another name.
#
# Write `choose_checkpoint(listing)`: given `{name: is_folder}` for everything in a run folder,
# return the name of the latest checkpoint folder, or `None` if there is none. A checkpoint folder
# is named exactly `checkpoint-<digits>`. This is what `transformers.trainer_utils.get_last_checkpoint`
# does, and what `resume_from_checkpoint=True` uses.

# %% tags=["exercise"]
def choose_checkpoint(listing: dict[str, bool]) -> str | None:
    """Return the name of the checkpoint folder with the largest step, or None when there is none."""
    # TODO (exercise 5.2): keep folders whose whole name matches checkpoint-(digits) (re.fullmatch), then take the largest step as an int
    raise NotImplementedError("Exercise 5.2: write choose_checkpoint")


# %%
checks.check_choose_checkpoint(choose_checkpoint)

# %% [markdown]
# ## Exercise 5.3: a callback that scores held-out images
#
# The training loss says the model is learning *something*; the IoU on images it never trained on
# says whether it is learning to find tables. A `transformers.TrainerCallback` is how to run code
# inside the Trainer's loop: the Trainer calls `on_step_end(args, state, control, model=..., ...)`
# after every optimizer step (`state.global_step` is the step just finished) and `on_train_end(...)`
# once at the end ([callback events](https://huggingface.co/docs/transformers/main_classes/callback)).
#
# The scoring itself is a function of the model, here `score_held_out`: it answers a few held-out
# images and returns their mean IoU with `vlmlib.callbacks.score_parsed_answers`.

# %%
held_out = [data.load_configured_splits(config)["eval"][index] for index in range(2)]


def score_held_out(scored_model: torch.nn.Module) -> float:
    """Return the mean IoU of the model's answers on the held-out records (a parse failure scores 0)."""
    parsed = inference.predict_boxes(scored_model, processor, held_out, prompt=config.data.prompt,
                                     system_message=config.data.system_message, max_new_tokens=config.callbacks.max_new_tokens)
    return callbacks.score_parsed_answers(held_out, parsed)["mean_iou"]


print(f"mean IoU before training (a fresh adapter changes nothing yet) on {len(held_out)} held-out images: "
      f"{score_held_out(peft_model):.3f}")

# %% [markdown]
# Write `HeldOutIoUCallback(score_model, every_steps)`. It appends `(step, score)` to `self.history`
# every `every_steps` steps, and once more at the end of training unless the last step was just
# scored. The check drives it with hand-made events and inside a real `transformers.Trainer` (a toy
# model, a fake scorer), so it runs in a second. `vlmlib.callbacks.IoUEvalCallback` is the full version.

# %% tags=["exercise"]
from transformers import TrainerCallback


class HeldOutIoUCallback(TrainerCallback):
    """Every `every_steps` optimizer steps, and at the end of training, record (step, score_model(model))."""

    def __init__(self, score_model, every_steps: int) -> None:
        self.score_model = score_model
        self.every_steps = every_steps
        self.history: list[tuple[int, float]] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # TODO (exercise 5.3): when state.global_step is a multiple of every_steps, append (step, self.score_model(model))
        raise NotImplementedError("Exercise 5.3: write on_step_end")

    def on_train_end(self, args, state, control, model=None, **kwargs):
        # TODO (exercise 5.3): score once more, unless the history already ends at state.global_step
        raise NotImplementedError("Exercise 5.3: write on_train_end")


# %%
checks.check_iou_callback(HeldOutIoUCallback)

# %% [markdown]
# In a real run the callback goes to the trainer with the real scorer; `vlmlib.training.train` adds
# it after the config's own callbacks (among them `IoUEvalCallback`, the library's version of yours):
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
# - The rule `resume_from_checkpoint=True` uses to find the latest checkpoint, numeric steps included.
# - A `TrainerCallback` that measures what the loss cannot: IoU on images the model never trained on.
