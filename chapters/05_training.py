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
# # 5. Training: LoRA, SFTTrainer and callbacks
#
# ```{note}
# The outputs on this page were produced with the **{glue:text}`training_profile`** profile
# ({glue:text}`training_profile_meaning`). Every number in the text is read from those outputs.
# {glue:text}`training_cost_note` {doc}`the course's cost page <../book/costs>`.
# ```
#
# **Learning objectives**
#
# - Read the whole training recipe as one YAML config, and explain the `SFTConfig` settings this task needs.
# - Choose which layers get LoRA adapters and at what rank, and count the parameters that then train.
# - Explain QLoRA (4-bit nf4 weights, bf16 compute) and when the course uses it.
# - Measure the cost of TRL's default loss against the answer-only loss, and check that both give the same number.
# - Run a short training with live loss, gradient norm and held-out IoU, plot the curves, and resume from a checkpoint.
#
# Chapters 3 and 4 settled *what* the loss sees: the answer and its closing `<|im_end|>`, nothing
# else. This chapter is about the loop around it: which weights train, how TRL's `SFTTrainer` is set
# up for a vision-language model, how to watch a run, and how to save and resume one. Every piece is
# a `vlmlib` function, and `vlmlib train` on the command line calls the same ones.

# %% tags=["remove-cell"]
# Setup for Colab or a bare Jupyter: installs the course where it is missing and picks a profile.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("vlmlib") is None:
    repository = "git+https://github.com/vlm-course/qwen2vl-nutrition-tables"
    source = os.environ.get("VLM_INSTALL_SOURCE", repository)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", source], check=True)
    importlib.invalidate_caches()
from vlmlib.notebook_setup import set_up_notebook
set_up_notebook()

# %% [markdown]
# ## Setup

# %%
import re
import time
from pathlib import Path

import pandas as pd
import torch
import yaml
from myst_nb import glue
from safetensors.torch import load_file

import vlmlib
from vlmlib import data, memory, models, training, viz
from vlmlib.collators import IGNORE_INDEX
from vlmlib.config import config_to_dict, get_profile, load_config, with_overrides

torch.manual_seed(0)
vlmlib.quiet_progress_bars()

# %% [markdown]
# The run on this page is the profile's recipe with a few page settings on top, all in the next cell.

# %%
# This page's budget: the ONLY settings to retune.
# Learning rate, batch size and LoRA come from the profile's
# config (vlmlib/configs/tiny.yaml or full.yaml, printed below).
# - max_steps (full): the recipe's 3 epochs, about 406 steps, would
#   run longer than a notebook cell may (book/costs.md); the page
#   trains 100 steps, and `vlmlib train --config full` the whole recipe.
# - iou_eval_every_steps: each evaluation answers iou_eval_num_samples
#   held-out images; about four per run draw a curve.
# - save_steps: the resume demonstration restarts from the checkpoint
#   before the last one, so it re-runs save_steps steps.
budget = {
    "tiny": ["callbacks.iou_eval_every_steps=20", "training.save_steps=20"],
    "full": ["training.max_steps=100", "callbacks.iou_eval_every_steps=25",
             "callbacks.iou_eval_num_samples=16", "training.save_steps=25"],
}[get_profile()]
config = load_config("assistant_only", overrides=[*budget, "training.output_dir=outputs/chapter05"])
# The loss timing below runs in eval mode, which also switches activation checkpointing off: on a
# GPU one example keeps its activations well inside a 16 GB card, four would not (book/costs.md).
num_timing_records = {"tiny": config.training.per_device_train_batch_size,
                      "full": 1}[config.profile]
glue("training_profile", config.profile, display=False)
glue("training_profile_meaning", "a tiny Qwen2-VL and synthetic data on the CPU" if config.profile == "tiny"
     else "Qwen2-VL-2B-Instruct and the Open Food Facts dataset on a GPU", display=False)
glue("training_cost_note", "The full profile runs this page on a GPU; its time and memory there "
     "are estimated on" if config.profile == "tiny" else
     "Its GPU time is an estimate, not a measurement: about 9 minutes on an NVIDIA L4 and 5 on an "
     "A100, the longest cell (the training run) about 7 minutes on the L4, on a card of 12 GB or "
     "more. The arithmetic is on", display=False)
budget

# %% [markdown]
# ## The training recipe
#
# Everything a run depends on is one typed config (`vlmlib.config`), built in layers: the dataclass
# defaults, the profile's YAML file, named configs such as `assistant_only`, then `key=value`
# overrides. A misspelt key or a wrong type stops the load with a message naming it, so a typo cannot
# silently train with a default. These are the sections this chapter uses:

# %%
sections = {name: config_to_dict(config)[name] for name in ("model", "lora", "training", "callbacks")}
print(yaml.safe_dump(sections, sort_keys=False))

# %% [markdown]
# The same recipe from the command line is `vlmlib show-config --config assistant_only`, and
# `vlmlib train --config assistant_only` trains with it.

# %% [markdown]
# ## Choosing LoRA
#
# LoRA {cite}`hu2021lora` freezes every weight of the model and learns, beside chosen linear layers, a
# low-rank update: a layer `W` (`out x in`) becomes `W + (alpha / r) * B @ A`, with `A` of shape
# `r x in` and `B` of shape `out x r`. `B` starts at zero, so training starts from exactly the base
# model, and each adapted layer trains `r * (in + out)` parameters. `build_lora_config` puts adapters
# on the language model's layers named in `lora.target_modules`, and on the vision tower only when
# `lora.train_vision` is set:

# %% [markdown]
# ```{literalinclude} ../vlmlib/models.py
# :pyobject: build_lora_config
# ```

# %% [markdown]
# First the base model, and every linear layer in it with its sizes:

# %%
model, processor = models.load_model_and_processor(config)
splits = data.load_configured_splits(config)
linear_shapes = {name: (module.in_features, module.out_features)
                 for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
base_counts = models.count_parameters(model)
f"{len(linear_shapes)} linear layers; {base_counts.total:,} parameters in all"

# %% [markdown]
# With `r * (in + out)` per adapted layer we can price the three LoRA configs that ship with `vlmlib`
# before building any of them. PEFT matches a layer when the whole name fits the pattern
# (`re.fullmatch`), so we do the same.

# %%
def count_lora_parameters(lora_config_name: str) -> dict[str, object]:
    """Return the rank, targets and trainable parameters of a named LoRA config, from layer sizes alone."""
    named = load_config(lora_config_name, profile=config.profile)
    pattern = models.build_lora_config(named).target_modules
    adapted = {name: shape for name, shape in linear_shapes.items() if re.fullmatch(pattern, name)}
    num_trainable = sum(named.lora.r * (in_features + out_features) for in_features, out_features in adapted.values())
    return {"r": named.lora.r, "vision tower": named.lora.train_vision, "adapted layers": len(adapted),
            "trainable parameters": num_trainable, "% of the model": 100 * num_trainable / base_counts.total}


lora_choices = pd.DataFrame({name: count_lora_parameters(name) for name in ("lightweight", "assistant_only", "aggressive")}).T
lora_choices

# %% [markdown]
# This page uses the `assistant_only` row, the default adapter. PEFT builds it, and its own count of
# trainable parameters should equal the arithmetic:

# %%
model = models.apply_lora(model, config)
peft_counts = models.count_parameters(model)
glue("trainable_parameters", f"{peft_counts.trainable:,}", display=False)
glue("trainable_percent", f"{100 * peft_counts.trainable / peft_counts.total:.2f}", display=False)
glue("lora_count_agrees", "equals" if peft_counts.trainable == lora_choices.loc["assistant_only", "trainable parameters"]
     else "does not equal", display=False)
pd.Series({"trainable (PEFT)": peft_counts.trainable, "trainable (r * (in + out))": lora_choices.loc["assistant_only", "trainable parameters"],
           "frozen": peft_counts.total - peft_counts.trainable})

# %% [markdown]
# PEFT trains {glue:text}`trainable_parameters` parameters, {glue:text}`trainable_percent`% of the
# model, and that {glue:text}`lora_count_agrees` the count from layer sizes. The MLP layers hold most of
# the adapter because they are the widest. `lightweight` (attention only, half the rank) is the choice
# when memory is short; `aggressive` also adapts the vision tower, which helps when the images look
# unlike anything the model was trained on, at the price of more parameters and more risk of
# overfitting a dataset of about a thousand images.

# %% [markdown]
# ## QLoRA on the full profile
#
# The frozen weights still take memory: Qwen2-VL-2B in bf16 is about 4.4 GB before activations and
# optimizer state. QLoRA {cite}`dettmers2023qlora` stores the frozen weights in 4 bits and trains
# LoRA adapters on top. The full profile (`model.load_in_4bit: true`) loads the
# model with three choices from that paper:
#
# - **nf4** ("4-bit NormalFloat"): 16 levels placed at the quantiles of a normal distribution, which
#   is how trained weights are spread, so fewer levels are wasted than with evenly spaced ones;
# - **double quantisation**: each block of 64 weights has a scale factor, and the scale factors are
#   quantised too, saving about another 0.37 bits per weight;
# - **bf16 compute**: each 4-bit weight is turned back into bfloat16 just before its matrix
#   product, so the arithmetic runs in 16-bit precision.
#
# The adapters themselves are not 16-bit: PEFT creates them in float32 (and `get_peft_model` casts
# any 16-bit adapter up to float32), so their weights, their gradients and AdamW's state for them
# stay in float32, while the Trainer's bf16 autocast runs their matrix products in bfloat16. They
# are a small share of the parameters, so full precision costs little memory and keeps small
# updates from being rounded away.

# %% [markdown]
# ```{literalinclude} ../vlmlib/models.py
# :pyobject: load_model
# ```

# %% [markdown]
# On a 4-bit model `apply_lora` first calls PEFT's `prepare_model_for_kbit_training`, which keeps the
# layer norms in float32 and lets gradients flow into checkpointed layers:

# %% [markdown]
# ```{literalinclude} ../vlmlib/models.py
# :pyobject: apply_lora
# ```

# %% [markdown]
# The tiny profile trains in float32 on the CPU, where bitsandbytes' 4-bit kernels are not what we want
# to teach with, so `load_model` refuses 4-bit there. Everything after loading is the same code. Its
# base model is not Qwen2-VL-2B but a 20-million-parameter stand-in that `vlmlib make-tiny` pretrained
# from random weights; {doc}`../book/tiny_model` explains what made so small a model learn to localise.

# %% [markdown]
# ## Wiring the trainer
#
# TRL's `SFTTrainer` {cite}`vonwerra2022trl` runs the loop; `build_sft_config` turns our
# `TrainingConfig` into its `SFTConfig`. Most settings pass straight through. A few TRL defaults are
# wrong for this task, and each is set with its reason next to it:

# %% [markdown]
# ```{literalinclude} ../vlmlib/training.py
# :pyobject: build_sft_config
# ```

# %% [markdown]
# - `max_length=None`: TRL truncates long examples by default; a cut inside the image's
#   `<|image_pad|>` run leaves pixels without their tokens, and Qwen2-VL then fails with "Image
#   features and image tokens do not match". Our pixel budget already bounds the length.
# - `remove_unused_columns=False`: the Trainer drops dataset columns the model's `forward` does not
#   name, and `image` and `objects` are not arguments of `forward`; our collator needs both.
# - `dataset_kwargs={"skip_prepare_dataset": True}`: TRL would otherwise apply the chat template and
#   tokenize the dataset itself; the collator does that, with the image, batch by batch.
# - activation checkpointing with `use_reentrant=False` on GPU: it recomputes activations in the
#   backward pass instead of storing them, and the non-reentrant form lets gradients reach LoRA weights
#   inside frozen layers.
#
# `build_trainer` then adds the adapters (unless the model has them), the collator and the callbacks:

# %%
trainer = training.build_trainer(config, model, processor, splits["train"], output_dir="outputs/chapter05_timing")
arguments = trainer.args
pd.Series({name: getattr(arguments, name) for name in ("max_length", "remove_unused_columns", "dataset_kwargs", "learning_rate",
                                                        "per_device_train_batch_size", "max_steps", "use_cpu", "bf16")})

# %% [markdown]
# ## A cheaper loss
#
# To compute the loss, a causal language model maps every position's hidden state to one logit per
# vocabulary entry. Qwen2's vocabulary has {glue:text}`vocabulary_size` entries, so that projection is
# large, and with the answer-only collator almost all of it is thrown away: only the answer's
# positions carry a label. `compute_answer_loss` runs the same model but projects only the labelled
# positions:

# %% [markdown]
# ```{literalinclude} ../vlmlib/training.py
# :pyobject: compute_answer_loss
# ```

# %% [markdown]
# We measure one training step (forward and backward) both ways, on the same batch: TRL's own
# `SFTTrainer.compute_loss`, and ours, the `compute_loss` of `AnswerLossSFTTrainer`. Dropout is off, so
# the two losses must be the same number. One step each is enough to see the difference; on a busy
# machine the times vary from run to run, their ratio much less. The collator builds the batch on
# the CPU; the Trainer would move it to the model's device, and here we do it ourselves.

# %%
from trl import SFTTrainer

timing_records = [splits["train"][index] for index in range(num_timing_records)]
batch = {key: value.to(model.device)  # the collator builds on the CPU, the model may be on a GPU
         for key, value in trainer.data_collator(timing_records).items()}
model.eval()  # no LoRA dropout: both losses see the same network


def time_training_step(compute_loss) -> tuple[float, float]:
    """Return (seconds, loss) of one forward + backward pass of `compute_loss(model, batch)`."""
    started = time.perf_counter()
    loss = compute_loss(model, dict(batch))  # a copy: TRL adds keys to the dict it is given
    loss.backward()
    seconds = time.perf_counter() - started
    model.zero_grad(set_to_none=True)
    return seconds, loss.item()


step_times = pd.DataFrame({"TRL's default loss": time_training_step(lambda m, b: SFTTrainer.compute_loss(trainer, m, b)),
                           "answer-only projection": time_training_step(trainer.compute_loss)},
                          index=["seconds per step", "loss"]).T
step_times.round({"seconds per step": 2})

# %%
labels = batch["labels"]
num_positions, num_labelled = labels.numel(), int((labels != IGNORE_INDEX).sum())
vocabulary_size = model.get_base_model().lm_head.out_features
trl_seconds, ours_seconds = step_times["seconds per step"]
loss_difference = abs(step_times["loss"].iloc[0] - step_times["loss"].iloc[1])
glue("vocabulary_size", f"{vocabulary_size:,}", display=False)
glue("num_positions", f"{num_positions:,}", display=False)
glue("num_labelled", f"{num_labelled:,}", display=False)
glue("loss_speedup", f"{trl_seconds / ours_seconds:.1f}", display=False)
glue("loss_sentence", (f"the two losses agree to within {loss_difference:.1e}, float32 rounding" if loss_difference < 1e-4
                       else f"the two losses differ by {loss_difference:.2e}, more than float32 rounding explains"), display=False)
pd.Series({"positions in the batch": num_positions, "positions with a label": num_labelled,
           "logits, TRL's loss": num_positions * vocabulary_size, "logits, answer-only": num_labelled * vocabulary_size})

# %% [markdown]
# The batch has {glue:text}`num_positions` positions, of which {glue:text}`num_labelled` carry a
# label. Projecting only those made the step {glue:text}`loss_speedup` times faster on this machine,
# and {glue:text}`loss_sentence`. The gradients are the same too (`tests/test_training.py` checks
# both), so training is unchanged; only the wasted work is gone. On a GPU the saving is mostly memory:
# the full logits of a batch take gigabytes in float32.

# %% [markdown]
# ## Watching training
#
# The loss says the model is learning *something*. Three callbacks (`vlmlib.callbacks`, switched on
# in the config's `callbacks` section) say more:
#
# - `GradNormCallback` records the gradient norm at every optimizer step, after clipping, and the
#   share of steps that clipping cut. Clipping compares the gradient's norm with `max_grad_norm`
#   and shrinks it to that length when it is larger; the learning rate plays no part. Most steps
#   clipped means the gradients sit above the threshold, so it rescales every step rather than
#   catching the odd spike: raise `max_grad_norm` if you want it to act only on spikes.
# - `IoUEvalCallback` answers a fixed slice of held-out images every `callbacks.iou_eval_every_steps`
#   steps and logs their mean IoU and parse-failure rate: the loss can fall while the boxes stay wrong,
#   because the model learns the answer's format before it learns where tables are.
# - `ConsoleLogCallback` prints one plain line per log, readable in a notebook, a terminal and a log file.

# %% [markdown]
# ```{literalinclude} ../vlmlib/callbacks.py
# :pyobject: IoUEvalCallback.on_step_end
# ```

# %% [markdown]
# ## A short real run
#
# `training.train` is the whole loop in one call: load the model and data, add LoRA, build the
# trainer and callbacks, train, save. It loads a fresh base model from the config, as `vlmlib train`
# does, so the timing's model is freed first. The lines below are printed live while it trains.

# %%
del trainer, model, batch  # the timing's trainer and model, and the batch on the model's device
memory.free_memory()
run = training.train(config, splits=splits)
run_dir, history = run.output_dir, pd.DataFrame(run.log_history)

# %% [markdown]
# The log history holds one row per logging step (loss, gradient norms, learning rate), with the IoU
# callback's scores in the same row when it scores at that step, and in a row of its own otherwise.

# %%
columns = ["step", "loss", "grad_norm", "grad_norm_applied", "clipped_fraction", "learning_rate", "eval_mean_iou",
           "eval_parse_failure_rate"]
logged = [column for column in columns if column in history]
history[logged].dropna(how="all", subset=logged[1:]).round(4)

# %% mystnb={"figure": {"caption": "The short run, step by step: training loss (left), gradient norm before and after clipping (middle), and mean IoU and parse-failure rate on held-out images (right).", "name": "fig-05-training-curves"}}
viz.plot_training_curves(history, max_grad_norm=config.training.max_grad_norm)

# %% tags=["hide-input"]
losses = history["loss"].dropna()
iou = history[["step", "eval_mean_iou"]].dropna()
iou_change = iou["eval_mean_iou"].iloc[-1] - iou["eval_mean_iou"].iloc[0]
glue("num_steps", int(history["step"].max()), display=False)
glue("loss_sentence_run", f"fell from {losses.iloc[0]:.3f} to {losses.iloc[-1]:.3f}" if losses.iloc[-1] < losses.iloc[0]
     else f"did not fall ({losses.iloc[0]:.3f} at the first log, {losses.iloc[-1]:.3f} at the last)", display=False)
first_iou, last_iou, first_step, last_step = (*iou["eval_mean_iou"].iloc[[0, -1]], *iou["step"].iloc[[0, -1]].astype(int))
glue("iou_sentence", (f"stayed at {first_iou:.3f} from step {first_step} to step {last_step}" if iou_change == 0 else
                      f"{'rose' if iou_change > 0 else 'fell'} from {first_iou:.3f} at step {first_step} to {last_iou:.3f} "
                      f"at step {last_step}"), display=False)
glue("clipped_share", f"{history['clipped_fraction'].dropna().mean():.0%}", display=False)

# %% [markdown]
# Over {glue:text}`num_steps` steps the training loss {glue:text}`loss_sentence_run`, and the held-out
# mean IoU {glue:text}`iou_sentence` ({numref}`fig-05-training-curves`). Averaged over the logging
# windows, clipping cut {glue:text}`clipped_share` of the steps. A short run shows the mechanics; chapter 6
# measures what a model trained this way actually finds.

# %% [markdown]
# ## Saving the run
#
# `save_run` writes the adapter, the processor and the resolved config into one folder, so that the
# folder alone is enough to evaluate, predict or merge (`vlmlib evaluate --model FOLDER`). The Trainer
# writes the adapter on the main process only, and so does `save_run` for the rest, which matters with
# several GPUs:

# %% [markdown]
# ```{literalinclude} ../vlmlib/training.py
# :pyobject: save_run
# ```

# %%
pd.DataFrame([{"file": path.name, "kB": round(path.stat().st_size / 1000, 1)}
              for path in sorted(run_dir.iterdir()) if path.is_file()])

# %% [markdown]
# `adapter_model.safetensors` holds only the {glue:text}`trainable_parameters` LoRA weights
# ({glue:text}`trainable_percent`% of the model); the base model is not copied, and `load_run` reads it
# from where the config says.

# %% [markdown]
# ## Checkpoints and resuming
#
# Every `training.save_steps` steps the Trainer also saves a `checkpoint-N` folder; `save_total_limit`
# keeps the newest few. A checkpoint holds more than the adapter: the optimizer's moments, the
# learning-rate schedule, the random-number state and `trainer_state.json` (step, log history), which
# is what makes resuming exact rather than approximate.

# %%
def checkpoint_step(path: Path) -> int:
    return int(path.name.split("-")[1])


checkpoints = sorted(run_dir.glob("checkpoint-*"), key=checkpoint_step)
final_step = int(history["step"].max())
resume_from = max((path for path in checkpoints if checkpoint_step(path) < final_step), key=checkpoint_step, default=checkpoints[0])
glue("resume_from", resume_from.name, display=False)
pd.DataFrame([{"file": path.name, "kB": round(path.stat().st_size / 1000, 1)}
              for path in sorted(resume_from.iterdir()) if path.is_file()]).rename_axis(resume_from.name, axis="columns")

# %% [markdown]
# To check that resuming is exact, we restart from {glue:text}`resume_from` into a new folder, as if
# the run had crashed just after saving it, and compare the adapter it ends with to the uninterrupted
# run's. The IoU callback is switched off for this run to save time; greedy generation draws no random
# numbers, so it cannot change the training.

# %%
del run  # the trained model and its optimizer: the resumed run loads its own copy
memory.free_memory()
resumed = training.train(with_overrides(config, ["callbacks.iou_eval=false"]), output_dir="outputs/chapter05_resumed",
                         resume_from_checkpoint=str(resume_from), splits=splits)

# %%
uninterrupted_weights = load_file(run_dir / "adapter_model.safetensors")
resumed_weights = load_file(resumed.output_dir / "adapter_model.safetensors")
differences = pd.Series({name: (uninterrupted_weights[name] - resumed_weights[name]).abs().max().item()
                         for name in uninterrupted_weights}, name="largest absolute difference")
largest = differences.max()
glue("resume_sentence", (f"all {len(differences)} adapter tensors are bit-for-bit those of the uninterrupted run" if largest == 0
                         else f"all {len(differences)} adapter tensors match the uninterrupted run's to within {largest:.1e}"
                         if largest < 1e-6 else f"its adapter differs from the uninterrupted run's by up to {largest:.1e}"),
     display=False)
pd.Series({"adapter tensors compared": len(differences), "largest absolute difference": largest})

# %% [markdown]
# The resumed run ends where the uninterrupted one did: {glue:text}`resume_sentence`. It continued the
# same run, not a similar one.
# From the command line the same is `vlmlib train ... --resume` (the latest checkpoint in the output
# folder, found as lab 5.2 does) or `--resume outputs/run/checkpoint-N`.

# %% [markdown]
# ## More than one GPU
#
# The same recipe trains data-parallel on several GPUs through Hugging Face Accelerate: each process
# holds a copy of the model, takes its share of every batch, and the gradients are averaged.
#
# ```bash
# accelerate launch --num_processes 2 -m vlmlib train --config full
# ```
#
# The command is the single-GPU one, started once per GPU. The effective batch grows to `per_device_train_batch_size x
# gradient_accumulation_steps x num_processes`, so halve the accumulation steps (or raise the
# learning rate) to keep the recipe's batch. Only the main process saves: the Trainer guards
# `save_model`, and `save_run` checks `trainer.is_world_process_zero()` before writing the processor
# and config. The answer-only loss divides by the labelled tokens of all processes, as TRL's does.

# %% [markdown]
# ## Summary
#
# - One typed config is the whole recipe; the profile, named configs and overrides are layers of it.
# - LoRA trains `r * (in + out)` parameters per adapted layer, a small share of the model; the MLP layers hold most of it.
# - QLoRA keeps the frozen weights in 4-bit nf4 with double quantisation and computes in bf16 (full profile only).
# - `SFTConfig` needs `max_length=None`, `remove_unused_columns=False` and `skip_prepare_dataset` for our collator.
# - Projecting only the labelled positions gives the same loss for less work; callbacks log gradient norms and held-out IoU live.
# - A run saves adapter, processor and config together; checkpoints resume exactly.
#
# ## Exercises
#
# ```{exercise}
# :label: ex-05-lightweight
# Train the same budget with the `lightweight` LoRA config (`load_config("assistant_only", "lightweight")`)
# and plot both runs' curves. Where does the smaller adapter fall behind?
# ```
#
# ```{solution} ex-05-lightweight
# :class: dropdown
# Run `training.train(load_config("assistant_only", "lightweight", overrides=budget), output_dir=...)` and
# pass each `pd.DataFrame(run.log_history)` to `viz.plot_training_curves`. With fewer trainable
# parameters the loss usually falls more slowly; compare the held-out IoU at the same steps rather
# than the loss alone, since the IoU is what the task needs.
# ```
#
# ```{exercise}
# :label: ex-05-lab
# Lab 5 (`labs/lab_05_training.ipynb`) asks you to count LoRA's parameters by hand and match PEFT, to
# choose the checkpoint to resume from, and to write the held-out IoU callback yourself.
# ```
#
# ## References
#
# LoRA: {cite}`hu2021lora`. QLoRA and the nf4 data type: {cite}`dettmers2023qlora`. TRL's `SFTTrainer`:
# {cite}`vonwerra2022trl`. The full list is in {doc}`../book/references`.
