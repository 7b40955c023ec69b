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
# The outputs on this page were produced with the **{glue:text}`training_profile`** profile (tiny:
# a small Qwen2-VL and synthetic data on the CPU; full: Qwen2-VL-2B-Instruct and the Open Food
# Facts data on a GPU). Every number in the text is read from those outputs.
# Under the full profile the page needs a GPU: about 9 minutes on an NVIDIA L4 and 5 on an
# A100, the longest cell (the training run) about 7 minutes on the L4,
# on a card of 12 GB or more. These are estimates, not measurements; the arithmetic is on
# {doc}`the course's cost page <../book/costs>`.
# ```
#
# **Learning objectives**
#
# - Read the whole training recipe as one YAML config, and explain the `SFTConfig` settings this
#   task needs.
# - Choose which layers get LoRA adapters and at what rank, and count the parameters that then
#   train.
# - Explain QLoRA (4-bit nf4 weights, bf16 compute) and account for a training step's memory.
# - Measure the cost of TRL's default loss against the answer-only loss, and check that both give
#   the same number.
# - Train with the plain `BitsAndBytesConfig`, `LoraConfig`, `SFTConfig` and `SFTTrainer` calls,
#   watch the loss, gradient norm and held-out IoU, and resume from a checkpoint.
#
# Chapters 3 and 4 settled *what* the loss sees: the answer and its closing `<|im_end|>`, nothing
# else. This chapter is about the loop around it: which weights train, how TRL's `SFTTrainer` is set
# up for a vision-language model, how to watch a run, and how to save and resume one. The run itself
# is written out in plain Hugging Face calls, as the Hugging Face cookbook writes it; `vlmlib train`
# on the command line builds the same objects, and a test keeps the two equal.

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
from vlmlib import costs, data, memory, models, training, viz
from vlmlib.collators import IGNORE_INDEX
from vlmlib.config import config_to_dict, get_profile, load_config, with_overrides

torch.manual_seed(0)
vlmlib.quiet_progress_bars()

# %% [markdown]
# The run on this page is the profile's recipe with a few page settings on top, all in the next
# cell.

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
    "full": [
        "training.max_steps=100",
        "callbacks.iou_eval_every_steps=25",
        "callbacks.iou_eval_num_samples=16",
        "training.save_steps=25",
    ],
}[get_profile()]
config = load_config("assistant_only", overrides=[*budget, "training.output_dir=outputs/chapter05"])
# The loss timing below runs in eval mode, which also switches activation checkpointing off: on a
# GPU one example keeps its activations well inside a 16 GB card, four would not (book/costs.md).
num_timing_records = {"tiny": config.training.per_device_train_batch_size, "full": 1}[
    config.profile
]
glue("training_profile", config.profile, display=False)
budget

# %% [markdown]
# ## The training recipe
#
# Everything a run depends on is one typed config (`vlmlib.config`), built in layers: the dataclass
# defaults, the profile's YAML file, named configs such as `assistant_only`, then `key=value`
# overrides. A misspelt key or a wrong type stops the load with a message naming it, so a typo
# cannot silently train with a default. These are the sections this chapter uses:

# %%
recipe_dict = config_to_dict(config)
sections = {name: recipe_dict[name] for name in ("model", "lora", "training", "callbacks")}
print(yaml.safe_dump(sections, sort_keys=False))

# %% [markdown]
# The same recipe from the command line is `vlmlib show-config --config assistant_only`, and `vlmlib
# train --config assistant_only` trains with it.

# %% [markdown]
# ## Choosing LoRA
#
# LoRA {cite}`hu2021lora` freezes every weight of the model and learns, beside chosen linear layers,
# a low-rank update: a layer `W` (`out x in`) becomes `W + (alpha / r) * B @ A`, with `A` of shape
# `r x in` and `B` of shape `out x r`. `B` starts at zero, so training starts from exactly the base
# model, and each adapted layer trains `r * (in + out)` parameters. `build_lora_config` puts
# adapters on the language model's layers named in `lora.target_modules`, and on the vision tower
# only when `lora.train_vision` is set:

# %% [markdown]
# ```{literalinclude} ../vlmlib/models.py
# :pyobject: build_lora_config
# ```

# %% [markdown]
# First the base model, and every linear layer in it with its sizes:

# %%
model, processor = models.load_model_and_processor(config)
splits = data.load_configured_splits(config)
linear_shapes = {
    name: (module.in_features, module.out_features)  # (in, out) per linear layer
    for name, module in model.named_modules()
    if isinstance(module, torch.nn.Linear)
}
base_counts = models.count_parameters(model)
f"{len(linear_shapes)} linear layers; {base_counts.total:,} parameters in all"

# %% [markdown]
# With `r * (in + out)` per adapted layer we can price the three LoRA configs that ship with
# `vlmlib` before building any of them. PEFT matches a layer when the whole name fits the pattern
# (`re.fullmatch`), so we do the same.


# %%
def count_lora_parameters(lora_config_name: str) -> dict[str, object]:
    """Return a named LoRA config's rank, targets and trainable parameters, from sizes alone."""
    named = load_config(lora_config_name, profile=config.profile)
    pattern = models.build_lora_config(named).target_modules
    adapted = [shape for name, shape in linear_shapes.items() if re.fullmatch(pattern, name)]
    num_trainable = sum(
        named.lora.r * (in_features + out_features) for in_features, out_features in adapted
    )
    return {
        "r": named.lora.r,
        "vision tower": named.lora.train_vision,
        "adapted layers": len(adapted),
        "trainable parameters": num_trainable,
        "% of the model": 100 * num_trainable / base_counts.total,
    }


lora_names = ("lightweight", "assistant_only", "aggressive")
lora_choices = pd.DataFrame({name: count_lora_parameters(name) for name in lora_names}).T
lora_choices

# %% [markdown]
# This page uses the `assistant_only` row, the default adapter. PEFT builds it, and its own count of
# trainable parameters should equal the arithmetic:

# %%
model = models.apply_lora(model, config)
peft_counts = models.count_parameters(model)
glue("trainable_parameters", f"{peft_counts.trainable:,}", display=False)
glue("trainable_percent", f"{100 * peft_counts.trainable / peft_counts.total:.2f}", display=False)
glue("lora_rank", config.lora.r, display=False)
pd.Series(
    {
        "trainable (PEFT)": peft_counts.trainable,
        "trainable (r * (in + out))": lora_choices.loc["assistant_only", "trainable parameters"],
        "frozen": peft_counts.total - peft_counts.trainable,
    }
)

# %% [markdown]
# PEFT trains {glue:text}`trainable_parameters` parameters, {glue:text}`trainable_percent`% of the
# model: the first two rows above should be the same number, and `tests/test_chapter5_wiring.py`
# checks that they are. The MLP layers hold most of the adapter because they are the widest.
# {numref}`fig-05-lora-update` draws one of them, the first layer's `up_proj`, at its real shape:

# %% mystnb={"figure": {"caption": "LoRA on one MLP projection of the loaded model: the frozen W beside the two thin matrices that train. B starts at zero, so W + (alpha / r) BA starts equal to W.", "name": "fig-05-lora-update"}, "image": {"alt": "A tall grey rectangle W, a plus sign and alpha over r, then a tall thin orange rectangle B and a short flat blue rectangle A, each labelled with its shape"}}
lora_layer = next(
    name
    for name in linear_shapes
    if re.fullmatch(models.build_lora_config(config).target_modules, name)
    and name.endswith("mlp.up_proj")
)
viz.plot_lora_update(lora_layer, *linear_shapes[lora_layer], config.lora.r, config.lora.alpha)

# %% [markdown]
# The update has the shape of W, but it is stored as two matrices whose shared side is the rank `r`;
# doubling `r` doubles the trained weights, and `alpha / r` keeps the update's size about the same
# when `r` changes, so the learning rate need not be retuned with it. `lightweight` (attention only,
# half the rank) is the choice when memory is short; `aggressive` also adapts the vision tower,
# which helps when the images look unlike anything the model was trained on, at the price of more
# parameters and more risk of overfitting a dataset of about a thousand images.

# %% [markdown]
# ## QLoRA on the full profile
#
# The frozen weights still take memory: Qwen2-VL-2B in bf16 is about 4.4 GB before activations and
# optimizer state. QLoRA {cite}`dettmers2023qlora` stores the frozen weights in 4 bits and trains
# LoRA adapters on top. The full profile (`model.load_in_4bit: true`) loads the model with three
# choices from that paper:
#
# - **nf4** ("4-bit NormalFloat"): 16 levels placed at the quantiles of a normal distribution, which
#   is how trained weights are spread, so fewer levels are wasted than with evenly spaced ones;
# - **double quantisation**: each block of 64 weights has a scale factor, and the scale factors are
#   quantised too, saving about another 0.37 bits per weight;
# - **bf16 compute**: each 4-bit weight is turned back into bfloat16 just before its matrix product,
#   so the arithmetic runs in 16-bit precision.
#
# The adapters themselves are not 16-bit: PEFT creates them in float32 (and `get_peft_model` casts
# any 16-bit adapter up to float32), so their weights, their gradients and AdamW's state for them
# stay in float32, while the Trainer's bf16 autocast runs their matrix products in bfloat16. They
# are a small share of the parameters, so full precision costs little memory and keeps small updates
# from being rounded away.

# %% [markdown]
# ```{literalinclude} ../vlmlib/models.py
# :pyobject: load_model
# ```

# %% [markdown]
# On a 4-bit model `apply_lora` first calls PEFT's `prepare_model_for_kbit_training`, which keeps
# the layer norms in float32 and lets gradients flow into checkpointed layers:

# %% [markdown]
# ```{literalinclude} ../vlmlib/models.py
# :pyobject: apply_lora
# ```

# %% [markdown]
# The tiny profile trains in float32 on the CPU, where bitsandbytes' 4-bit kernels are not what we
# want to teach with, so `load_model` refuses 4-bit there. Everything after loading is the same
# code. Its base model is not Qwen2-VL-2B but a 20-million-parameter stand-in that `vlmlib
# make-tiny` pretrained from random weights; {doc}`../book/tiny_model` explains what made so small a
# model learn to localise.

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
#   backward pass instead of storing them, and the non-reentrant form lets gradients reach LoRA
#   weights inside frozen layers.
#
# `build_trainer` then adds the adapters (unless the model has them), the collator and the
# callbacks:

# %%
trainer = training.build_trainer(
    config, model, processor, splits["train"], output_dir="outputs/chapter05_timing"
)
shown = (
    "max_length",
    "remove_unused_columns",
    "dataset_kwargs",
    "learning_rate",
    "per_device_train_batch_size",
    "max_steps",
    "use_cpu",
    "bf16",
)
pd.Series({name: getattr(trainer.args, name) for name in shown})

# %% [markdown]
# ## A cheaper loss
#
# To compute the loss, a causal language model maps every position's hidden state to one logit per
# vocabulary entry. Qwen2's vocabulary has {glue:text}`vocabulary_size` entries, so that projection
# is large, and with the answer-only collator almost all of it is thrown away: only the answer's
# positions carry a label. `compute_answer_loss` runs the same model but projects only the labelled
# positions:

# %% [markdown]
# ```{literalinclude} ../vlmlib/training.py
# :pyobject: compute_answer_loss
# ```

# %% [markdown]
# We measure one training step (forward and backward) both ways, on the same batch: TRL's own
# `SFTTrainer.compute_loss`, and ours, the `compute_loss` of `AnswerLossSFTTrainer`. Dropout is off,
# so the two losses must be the same number. One step each is enough to see the difference; on a
# busy machine the times vary from run to run, their ratio much less. The collator builds the batch
# on the CPU; the Trainer would move it to the model's device, and here we do it ourselves.

# %%
from trl import SFTTrainer

timing_records = [splits["train"][index] for index in range(num_timing_records)]
batch = {
    key: value.to(model.device)  # the collator builds on the CPU, the model may be on a GPU
    for key, value in trainer.data_collator(timing_records).items()
}
model.eval()  # no LoRA dropout: both losses see the same network


def time_training_step(compute_loss, model, batch) -> tuple[float, float]:
    """Return (seconds, loss) of one forward + backward pass of `compute_loss(model, batch)`."""
    started = time.perf_counter()
    loss = compute_loss(model, dict(batch))  # a copy: TRL adds keys to the dict it is given
    loss.backward()
    seconds = time.perf_counter() - started
    model.zero_grad(set_to_none=True)
    return seconds, loss.item()


def trl_loss(model, batch, trainer=trainer):
    return SFTTrainer.compute_loss(trainer, model, batch)  # the parent class's loss, on our trainer


step_times = pd.DataFrame(
    {
        "TRL's default loss": time_training_step(trl_loss, model, batch),
        "answer-only projection": time_training_step(trainer.compute_loss, model, batch),
    },
    index=["seconds per step", "loss"],
).T
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
glue("loss_difference", f"{loss_difference:.1e}", display=False)
pd.Series(
    {
        "positions in the batch": num_positions,
        "positions with a label": num_labelled,
        "logits, TRL's loss": num_positions * vocabulary_size,
        "logits, answer-only": num_labelled * vocabulary_size,
    }
)

# %% [markdown]
# The batch has {glue:text}`num_positions` positions, of which {glue:text}`num_labelled` carry a
# label. Projecting only those made the step {glue:text}`loss_speedup` times faster on this machine,
# and the two losses differ by {glue:text}`loss_difference`. Summing the same terms in another
# order rounds differently in float32, which explains differences up to about 1e-5; a difference
# of 1e-3 or more would mean the two compute different things. The gradients are
# the same too (`tests/test_training.py` checks both), so training is unchanged; only the wasted
# work is gone. On a GPU the saving is mostly memory: the full logits of a batch take gigabytes in
# float32.

# %% [markdown]
# ## Where the memory goes
#
# A training step holds five kinds of tensor, and LoRA and QLoRA each shrink a different one:
#
# $$
# M \approx \underbrace{N_W\, b_W}_{\text{frozen weights}}
# + \underbrace{4\, N_{\text{LoRA}}}_{\text{adapters}}
# + \underbrace{4\, N_{\text{LoRA}}}_{\text{gradients}}
# + \underbrace{8\, N_{\text{LoRA}}}_{\text{AdamW } m,\ v}
# + \underbrace{B\, T\, L\, a}_{\text{activations}}
# $$
#
# $N_W$ frozen weights take $b_W$ bytes each: about 0.52 in nf4 with double quantisation, 2 in bf16,
# 4 in float32. The $N_{\text{LoRA}}$ adapter weights are float32, and each has a float32 gradient
# and AdamW's two float32 moments. The activations grow with the batch $B$, the tokens per example
# $T$ and the layers $L$; $a$ is what one layer keeps per token for the backward pass (activation
# checkpointing keeps only each layer's input and recomputes the rest).
#
# For this page's model we count the first four from its parameters and measure the fifth: the bytes
# of every tensor autograd saves during one forward pass of the timing batch. Beside it, the same
# five parts for Qwen2-VL-2B at the full recipe (batch 4, 640-token pixel budget, activation
# checkpointing), from the arithmetic of `benchmarks/estimate_costs.py`: an estimate, not a
# measurement.


# %%
def run_training_forward(trainer=trainer, model=model, batch=batch):
    return trainer.compute_loss(model, dict(batch))  # the loss the trainer uses, no backward


activation_bytes = costs.measure_activation_bytes(model, run_training_forward)
measured = costs.count_training_memory(model, activation_bytes)
full_config = load_config("assistant_only", profile="full")
full_estimate = costs.estimate_costs(
    full_config, costs.QWEN2_VL_2B_SIZES, full_config.training.per_device_train_batch_size
)
estimated = costs.summarise_estimate_memory(full_estimate)
pd.DataFrame(
    {
        "this page's model (MB)": pd.Series(measured.parts) / 1e6,
        "Qwen2-VL-2B, full recipe (GB, estimate)": pd.Series(estimated.parts) / 1e9,
    }
).round(3)

# %% mystnb={"figure": {"caption": "Memory of one training step by kind: counted and measured on this page's model (left), estimated by arithmetic for Qwen2-VL-2B under the full profile (right).", "name": "fig-05-memory"}, "image": {"alt": "Two horizontal bar charts of memory by kind (frozen weights, LoRA adapters, gradients, AdamW moments, activations), one for this page's model in megabytes, one for the 2B model's estimate in gigabytes"}}
viz.plot_memory_breakdown(
    {
        f"this page's model, batch of {len(timing_records)} (counted)": measured.parts,
        "Qwen2-VL-2B, full recipe, batch of 4 (estimate)": estimated.parts,
    }
)

# %% tags=["remove-cell"]
trained_parts = measured.adapters + measured.gradients + measured.optimizer_state
num_2b_weights = (
    full_estimate.lm_linear_parameters
    + full_estimate.vision_linear_parameters
    + full_estimate.unquantised_parameters
)
glue("memory_total_mb", f"{measured.total / 1e6:.1f}", display=False)
glue("memory_trained_percent", f"{100 * trained_parts / measured.total:.0f}", display=False)
glue("memory_activation_mb", f"{measured.activations / 1e6:.1f}", display=False)
glue("memory_2b_total_gb", f"{estimated.total / 1e9:.1f}", display=False)
glue("memory_2b_weights_gb", f"{estimated.frozen_weights / 1e9:.1f}", display=False)
glue("memory_2b_full_finetune_gb", f"{16 * num_2b_weights / 1e9:.0f}", display=False)
glue("memory_2b_activations_gb", f"{estimated.activations / 1e9:.1f}", display=False)
without_checkpointing = costs.summarise_estimate_memory(
    costs.estimate_costs(
        full_config,
        costs.QWEN2_VL_2B_SIZES,
        full_config.training.per_device_train_batch_size,
        is_checkpointing=False,
    )
)
glue(
    "memory_2b_activations_unchecked_gb",
    f"{without_checkpointing.activations / 1e9:.1f}",
    display=False,
)
glue("memory_2b_total_unchecked_gb", f"{without_checkpointing.total / 1e9:.1f}", display=False)

# %% [markdown]
# On this page's model a step holds {glue:text}`memory_total_mb` MB, of which everything that trains
# (adapters, their gradients, AdamW's moments) is {glue:text}`memory_trained_percent`% and the
# activations of one batch {glue:text}`memory_activation_mb` MB ({numref}`fig-05-memory`). For
# Qwen2-VL-2B the arithmetic predicts {glue:text}`memory_2b_total_gb` GB,
# {glue:text}`memory_2b_weights_gb` GB of it the frozen weights. Training all 2.2 billion weights
# with AdamW in float32 would need 16 bytes each for the weights, gradients and moments alone,
# {glue:text}`memory_2b_full_finetune_gb` GB: LoRA removes that part, 4-bit weights shrink the
# largest part left, and checkpointing bounds the activations.

# %% [markdown]
# ## Watching training
#
# The loss says the model is learning *something*. Three callbacks (`vlmlib.callbacks`, switched on
# in the config's `callbacks` section) say more:
#
# - `GradNormCallback` records the gradient norm at every optimizer step, after clipping, and the
#   share of steps that clipping cut. Clipping compares the gradient's norm with `max_grad_norm` and
#   shrinks it to that length when it is larger; the learning rate plays no part. Most steps clipped
#   means the gradients sit above the threshold, so it rescales every step rather than catching the
#   odd spike: raise `max_grad_norm` if you want it to act only on spikes.
# - `IoUEvalCallback` answers a fixed slice of held-out images every
#   `callbacks.iou_eval_every_steps` steps and logs their mean IoU and parse-failure rate: the loss
#   can fall while the boxes stay wrong, because the model learns the answer's format before it
#   learns where tables are.
# - `ConsoleLogCallback` prints one plain line per log, readable in a notebook, a terminal and a log
#   file.

# %% [markdown]
# ```{literalinclude} ../vlmlib/callbacks.py
# :pyobject: IoUEvalCallback.on_step_end
# ```

# %% [markdown]
# ## A short real run
#
# This is the run the rest of the chapter (and chapter 6, under the full profile) uses, written in
# the same plain Hugging Face calls as the Hugging Face cookbook's Qwen2-VL recipe
# {cite}`vonwerra2022trl`: four cells, one per object. Every value comes from `config`, so the cells
# train the tiny and the full profile alike, and changing a value here changes the run.
# `training.train(config)` builds exactly these objects; `tests/test_chapter5_wiring.py` runs these
# four cells beside `training.build_trainer` and fails if either side changes a setting. The
# timing's model is freed first, because the run loads its own.

# %%
del trainer, model, batch  # the timing's trainer and model, and the batch on the model's device
memory.free_memory()

# %% [markdown]
# **The model.** `BitsAndBytesConfig` holds QLoRA's three choices; it is used only where the config
# says `model.load_in_4bit` (the full profile), and the tiny model loads in float32.

# %% tags=["training-recipe"]
from transformers import BitsAndBytesConfig, Qwen2VLForConditionalGeneration

from vlmlib.sources import resolve_sources

compute_dtype = models.resolve_compute_dtype(config)  # bf16 (fp16 on a T4); float32 on tiny
quantization_config = BitsAndBytesConfig(
    load_in_4bit=True,
    bnb_4bit_quant_type="nf4",
    bnb_4bit_use_double_quant=True,
    bnb_4bit_compute_dtype=compute_dtype,
)
model = Qwen2VLForConditionalGeneration.from_pretrained(
    resolve_sources(config).model,  # the Hub id, or the tiny model's folder
    dtype=compute_dtype,
    attn_implementation=config.model.attn_implementation,
    quantization_config=quantization_config if config.model.load_in_4bit else None,
    device_map=models.get_device_map(config),  # this process's GPU; None on the CPU
)

# %% [markdown]
# **The adapters.** `LoraConfig` names the rank, the scaling and the layers: a regular expression
# that matches the language model's projections and not the vision tower's, whose layers have some
# of the same names. PEFT adds them here rather than inside `SFTTrainer(peft_config=...)`, which
# would keep a bf16 model's adapters in bf16 instead of float32.

# %% tags=["training-recipe"]
import warnings

from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import set_seed

if config.model.load_in_4bit:  # float32 norms, frozen base; the trainer does checkpointing
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
targets = "|".join(config.lora.target_modules)  # q_proj|k_proj|...|down_proj
lora_config = LoraConfig(
    r=config.lora.r,
    lora_alpha=config.lora.alpha,
    lora_dropout=config.lora.dropout,
    target_modules=rf".*language_model\.layers\.\d+\..*\.({targets})",
    bias="none",
    task_type="CAUSAL_LM",
)
set_seed(config.training.seed)  # A starts random: seed it, so that reruns and resumes agree
with warnings.catch_warnings():  # peft 0.21 reads a property transformers 5 renamed: noise only
    warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
    model = get_peft_model(model, lora_config)

# %% [markdown]
# **The arguments.** `SFTConfig` is the Trainer's `TrainingArguments` plus TRL's own settings. The
# last block holds the settings explained in "Wiring the trainer"; the rest are the recipe's.

# %% tags=["training-recipe"]
from trl import SFTConfig

recipe, on_cpu = config.training, models.resolve_device(config).type == "cpu"
run_dir = Path(recipe.output_dir)
sft_config = SFTConfig(
    output_dir=str(run_dir),
    max_steps=recipe.max_steps,
    num_train_epochs=recipe.num_train_epochs,
    per_device_train_batch_size=recipe.per_device_train_batch_size,
    per_device_eval_batch_size=recipe.per_device_eval_batch_size,
    gradient_accumulation_steps=recipe.gradient_accumulation_steps,
    learning_rate=recipe.learning_rate,
    lr_scheduler_type=recipe.lr_scheduler_type,
    warmup_steps=recipe.warmup_ratio,  # transformers 5 reads a float below 1 as a fraction
    weight_decay=recipe.weight_decay,
    max_grad_norm=recipe.max_grad_norm,
    logging_steps=recipe.logging_steps,
    logging_first_step=True,
    report_to=recipe.report_to,
    save_strategy="steps",
    save_steps=recipe.save_steps,
    save_total_limit=recipe.save_total_limit,
    eval_strategy="steps" if recipe.eval_steps else "no",
    eval_steps=recipe.eval_steps,
    prediction_loss_only=True,
    seed=recipe.seed,
    data_seed=recipe.seed,
    use_cpu=on_cpu,
    bf16=not on_cpu and compute_dtype == torch.bfloat16,
    fp16=not on_cpu and compute_dtype == torch.float16,
    dataloader_num_workers=recipe.dataloader_num_workers,
    ddp_find_unused_parameters=False,
    disable_tqdm=config.callbacks.console_log,  # ConsoleLogCallback prints a line per log instead
    gradient_checkpointing=False,
    activation_checkpointing=recipe.gradient_checkpointing,
    activation_checkpointing_kwargs={"use_reentrant": False},
    max_length=None,
    remove_unused_columns=False,
    dataset_kwargs={"skip_prepare_dataset": True},
)

# %% [markdown]
# **The trainer.** `AnswerLossSFTTrainer` is `SFTTrainer` with the answer-only loss of "A cheaper
# loss"; `SFTTrainer` in its place trains the same model, more slowly. The collator is chapter 3's
# V3 and the callbacks are those of "Watching training". The lines below are printed live while it
# trains.

# %% tags=["training-recipe"]
from transformers import PrinterCallback

from vlmlib.callbacks import ConsoleLogCallback, GradNormCallback, IoUEvalCallback
from vlmlib.collators import CollatorV3

heldout = [splits["eval"][index] for index in range(config.callbacks.iou_eval_num_samples)]
iou_callback = IoUEvalCallback(
    heldout,
    processor,
    config.callbacks.iou_eval_every_steps,
    config.data.prompt,
    config.data.system_message,
    config.callbacks.max_new_tokens,
    recipe.per_device_eval_batch_size,
)
collator = CollatorV3(
    processor, config.data.prompt, config.data.system_message, mask_strategy=recipe.mask_strategy
)
trainer = training.AnswerLossSFTTrainer(
    model=model,
    args=sft_config,
    train_dataset=splits["train"],
    eval_dataset=splits["eval"] if recipe.eval_steps else None,
    data_collator=collator,
    processing_class=processor,
    callbacks=[
        GradNormCallback(),
        iou_callback,
        ConsoleLogCallback(),
        training.KeepVisionTowerOutOfBackwardCallback(),
    ],  # frozen tower: no backward
)
trainer.remove_callback(PrinterCallback)  # ConsoleLogCallback prints the same logs, one line each
iou_callback.attach(trainer)
trainer.train()
training.save_run(trainer, processor, config, run_dir)  # adapter, processor, config

# %% [markdown]
# `training.train(config)` builds the same model, settings, collator and callbacks, so the two
# settings objects should compare equal (PEFT writes the base model's name into the `LoraConfig` it
# is given, so that one field is copied over first):

# %%
vlmlib_lora_config = models.build_lora_config(config)
vlmlib_lora_config.base_model_name_or_path = lora_config.base_model_name_or_path
pd.Series(
    {
        "SFTConfig": sft_config.to_dict() == training.build_sft_config(config).to_dict(),
        "LoraConfig": lora_config.to_dict() == vlmlib_lora_config.to_dict(),
    },
    name="same as vlmlib's",
)

# %% [markdown]
# The log history holds one row per logging step (loss, gradient norms, learning rate), with the IoU
# callback's scores in the same row when it scores at that step, and in a row of its own otherwise.

# %%
history = pd.DataFrame(trainer.state.log_history)
columns = [
    "step",
    "loss",
    "grad_norm",
    "grad_norm_applied",
    "clipped_fraction",
    "learning_rate",
    "eval_mean_iou",
    "eval_parse_failure_rate",
]
logged = [column for column in columns if column in history]
history[logged].dropna(how="all", subset=logged[1:]).round(4)

# %% mystnb={"figure": {"caption": "The short run, step by step: training loss (left), gradient norm before and after clipping (middle), and mean IoU and parse-failure rate on held-out images (right).", "name": "fig-05-training-curves"}, "image": {"alt": "Three line charts against the training step: the training loss, the gradient norm before and after clipping with the clipping threshold, and the held-out mean IoU with the parse-failure rate"}}
viz.plot_training_curves(history, max_grad_norm=config.training.max_grad_norm)

# %% tags=["remove-cell"]
losses = history["loss"].dropna()
iou = history[["step", "eval_mean_iou"]].dropna()
glue("num_steps", int(history["step"].max()), display=False)
glue("first_loss", f"{losses.iloc[0]:.3f}", display=False)
glue("last_loss", f"{losses.iloc[-1]:.3f}", display=False)
glue("first_iou", f"{iou['eval_mean_iou'].iloc[0]:.3f}", display=False)
glue("last_iou", f"{iou['eval_mean_iou'].iloc[-1]:.3f}", display=False)
glue("last_iou_step", int(iou["step"].iloc[-1]), display=False)
glue("clipped_share", f"{history['clipped_fraction'].dropna().mean():.0%}", display=False)

# %% [markdown]
# Over {glue:text}`num_steps` steps the training loss went from {glue:text}`first_loss` at the first
# log to {glue:text}`last_loss` at the last, and the held-out mean IoU from {glue:text}`first_iou`
# before training to {glue:text}`last_iou` at step {glue:text}`last_iou_step`
# ({numref}`fig-05-training-curves`). Read the two together: a loss that falls while the IoU stays
# flat means the model is learning the answer's format before where tables are. Averaged over the
# logging windows, clipping cut {glue:text}`clipped_share` of the steps. A short run shows the
# mechanics; chapter 6 measures what a model trained this way actually finds.

# %% tags=["remove-input"] mystnb={"markdown_format": "myst"}
from vlmlib.notes import show_profile_note

show_profile_note(
    "tiny",
    """
```{admonition} What the real model does
:class: tip
These curves come from the tiny stand-in on synthetic labels. The published runs on the real
data are of Qwen2-VL-7B-Instruct: QLoRA (rank 64) with the loss on the answer only, about 1,900
steps over 7 epochs, some two hours on an A100, reached a mean IoU of 0.771 on the dataset's 123
validation images {cite}`abdullah2025qwen2vlnutrition`; LoRA on the vision tower and the language
model reached 0.82 {cite}`dehdashti2025qwen2vlnutrition`. No figure is published for
Qwen2-VL-2B; the full profile runs this page on it, for far fewer steps.
```
""",
)

# %% [markdown]
# ## Saving the run
#
# `save_run` writes the adapter, the processor and the resolved config into one folder, so that the
# folder alone is enough to evaluate, predict or merge (`vlmlib evaluate --model FOLDER`). The
# Trainer writes the adapter on the main process only, and so does `save_run` for the rest, which
# matters with several GPUs:

# %% [markdown]
# ```{literalinclude} ../vlmlib/training.py
# :pyobject: save_run
# ```

# %%
pd.DataFrame(
    [
        {"file": path.name, "kB": round(path.stat().st_size / 1000, 1)}
        for path in sorted(run_dir.iterdir())
        if path.is_file()
    ]
)

# %% [markdown]
# `adapter_model.safetensors` holds only the {glue:text}`trainable_parameters` LoRA weights
# ({glue:text}`trainable_percent`% of the model); the base model is not copied, and `load_run` reads
# it from where the config says.

# %% [markdown]
# ## Checkpoints and resuming
#
# Every `training.save_steps` steps the Trainer also saves a `checkpoint-N` folder;
# `save_total_limit` keeps the newest few. A checkpoint holds more than the adapter: the optimizer's
# moments, the learning-rate schedule, the random-number state and `trainer_state.json` (step, log
# history), which is what makes resuming exact rather than approximate.


# %%
def checkpoint_step(path: Path) -> int:
    return int(path.name.split("-")[1])


checkpoints = sorted(run_dir.glob("checkpoint-*"), key=checkpoint_step)
final_step = int(history["step"].max())
earlier = [path for path in checkpoints if checkpoint_step(path) < final_step]
resume_from = max(earlier, key=checkpoint_step, default=checkpoints[0])
glue("resume_from", resume_from.name, display=False)
files = pd.DataFrame(
    [
        {"file": path.name, "kB": round(path.stat().st_size / 1000, 1)}
        for path in sorted(resume_from.iterdir())
        if path.is_file()
    ]
)
files.rename_axis(resume_from.name, axis="columns")

# %% [markdown]
# To check that resuming is exact, we restart from {glue:text}`resume_from` into a new folder, as if
# the run had crashed just after saving it, and compare the adapter it ends with to the
# uninterrupted run's. The resumed run goes through `training.train`, `vlmlib`'s wrapper, so this
# also checks that the wrapper continues the run of our four cells exactly. The IoU callback is
# switched off for it to save time; greedy generation draws no random numbers, so it cannot change
# the training.

# %%
del trainer, model  # the trained model and its optimizer: the resumed run loads its own copy
memory.free_memory()
resumed = training.train(
    with_overrides(config, ["callbacks.iou_eval=false"]),
    output_dir="outputs/chapter05_resumed",
    resume_from_checkpoint=str(resume_from),
    splits=splits,
)

# %%
uninterrupted_weights = load_file(run_dir / "adapter_model.safetensors")
resumed_weights = load_file(resumed.output_dir / "adapter_model.safetensors")
differences = pd.Series(
    {
        name: (uninterrupted_weights[name] - resumed_weights[name]).abs().max().item()
        for name in uninterrupted_weights
    },
    name="largest absolute difference",
)
glue("num_adapter_tensors", len(differences), display=False)
glue("largest_resume_difference", f"{differences.max():.1e}", display=False)
pd.Series(
    {"adapter tensors compared": len(differences), "largest absolute difference": differences.max()}
)

# %% [markdown]
# Over the {glue:text}`num_adapter_tensors` adapter tensors, the largest difference between the
# resumed and the uninterrupted run is {glue:text}`largest_resume_difference`. Zero means the resume
# continued the same run, bit for bit; a difference near float32 rounding (1e-7) would mean a
# different order of the same sums; anything larger, that something (data order, the schedule, the
# optimizer's state) was not restored. From the command line the same is `vlmlib train ... --resume`
# (the newest complete checkpoint in the output folder; one half written by a killed process is
# skipped, with a warning) or `--resume outputs/run/checkpoint-N`.

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
# The command is the single-GPU one, started once per GPU. The effective batch grows to
# `per_device_train_batch_size x gradient_accumulation_steps x num_processes`, so halve the
# accumulation steps (or raise the learning rate) to keep the recipe's batch. Only the main process
# saves: the Trainer guards `save_model`, and `save_run` checks `trainer.is_world_process_zero()`
# before writing the processor and config. The answer-only loss divides by the labelled tokens of
# all processes, as TRL's does.

# %% [markdown]
# ## Summary
#
# - One typed config is the whole recipe; the profile, named configs and overrides are layers of it.
# - LoRA trains `r * (in + out)` parameters per adapted layer, a small share of the model; the MLP
#   layers hold most of it.
# - QLoRA keeps the frozen weights in 4-bit nf4 with double quantisation and computes in bf16 (full
#   profile only); with LoRA, the frozen weights and the activations are most of a step's memory.
# - `SFTConfig` needs `max_length=None`, `remove_unused_columns=False` and `skip_prepare_dataset`
#   for our collator.
# - The run is four plain calls (`BitsAndBytesConfig`, `LoraConfig`, `SFTConfig`, `SFTTrainer`);
#   `training.train` builds the same objects, and a test keeps them equal.
# - Projecting only the labelled positions gives the same loss for less work; callbacks log gradient
#   norms and held-out IoU live.
# - A run saves adapter, processor and config together; checkpoints resume exactly.
#
# ## Exercises
#
# ```{exercise}
# :label: ex-05-rank
# This page's adapter has rank {glue:text}`lora_rank` and trains {glue:text}`trainable_parameters`
# parameters. Predict the count at rank 8 and at rank 16 before building either, then check your
# prediction with PEFT.
# ```
#
# ```{solution-start} ex-05-rank
# :class: dropdown
# ```
#
# Each adapted layer trains `r * (in + out)` parameters and the layers do not change with `r`, so
# the count is proportional to the rank: rank 16 trains exactly twice what rank 8 does, and each is
# this page's count times `r /` {glue:text}`lora_rank`. PEFT agrees:
#
# ```python
# for rank in (8, 16):
#     ranked = with_overrides(config, [f"lora.r={rank}"])
#     adapted = models.apply_lora(models.load_model(ranked), ranked)
#     print(rank, f"{models.count_parameters(adapted).trainable:,}")
# ```
#
# The rank sets the adapter's size, not the model's: the frozen weights, and so most of the memory
# in {numref}`fig-05-memory`, stay the same.
#
# ```{solution-end}
# ```
#
# ```{exercise}
# :label: ex-05-checkpointing
# The full profile trains with activation checkpointing (`training.gradient_checkpointing: true`).
# What happens to a step's memory and time if it is switched off? Use `costs.estimate_costs(...,
# is_checkpointing=False)` to put numbers on it.
# ```
#
# ```{solution-start} ex-05-checkpointing
# :class: dropdown
# ```
#
# With checkpointing, the forward pass keeps only each layer's input and recomputes one layer at a
# time in the backward pass; without it, every layer keeps everything it computed. For Qwen2-VL-2B
# at batch 4 the activations grow from {glue:text}`memory_2b_activations_gb` GB to
# {glue:text}`memory_2b_activations_unchecked_gb` GB, and the step from
# {glue:text}`memory_2b_total_gb` GB to {glue:text}`memory_2b_total_unchecked_gb` GB (estimates).
# Nothing else changes: weights, adapters and optimizer state do not depend on it. The step gets
# faster, because the recomputed forward pass (about a third of the frozen layers' compute) is gone.
# Checkpointing trades that time for memory, so switch it off only when the card has room; the tiny
# profile does, and trains without it.
#
# ```{solution-end}
# ```
#
# ```{exercise}
# :label: ex-05-max-length
# TRL truncates each example to `max_length` tokens by default. Why does this recipe set
# `max_length=None`, and what bounds an example's length instead?
# ```
#
# ```{solution-start} ex-05-max-length
# :class: dropdown
# ```
#
# Truncation cuts from the end of the token sequence and knows nothing about images. A cut inside
# the run of `<|image_pad|>` tokens leaves the image's features without their tokens, and Qwen2-VL
# stops with "Image features and image tokens do not match"; a cut after the image but inside the
# answer trains the model on half a box (and with the answer-only loss, a cut before the answer
# leaves nothing to learn). The length is bounded by the pixel budget instead: `model.max_pixels`
# caps the image tokens (at most 640 under the full profile), and the prompt and a three-box answer
# add well under a hundred more.
#
# ```{solution-end}
# ```
#
# ```{exercise}
# :label: ex-05-clipping
# Clipping cut {glue:text}`clipped_share` of this run's steps (the `clipped_fraction` column). What
# would a fraction near 100% tell you, would a lower learning rate change it, and what would you
# change if you wanted clipping to catch only spikes?
# ```
#
# ```{solution-start} ex-05-clipping
# :class: dropdown
# ```
#
# Clipping compares each step's gradient norm (before clipping, the `grad_norm` column) with
# `max_grad_norm`, and rescales the gradient to that length when it is larger. A fraction near 100%
# means the typical gradient is above the threshold, so every step is rescaled: clipping normalises
# the gradients rather than catching rare spikes. The learning rate plays no part in that
# comparison; lowering it changes the gradients only indirectly, through the path the weights take.
# To clip only spikes, raise `training.max_grad_norm` above the typical norm (for example a little
# above the median of `grad_norm` in the log) and check that the fraction drops. With AdamW a
# constant rescaling of every step changes the update little, since Adam divides by the gradient's
# running size; what clipping does change is the relative weight of steps with large and small
# gradients.
#
# ```{solution-end}
# ```
#
# ```{exercise}
# :label: ex-05-lightweight
# Train the same budget with the `lightweight` LoRA config (`load_config("assistant_only",
# "lightweight")`) and plot both runs' curves. Where does the smaller adapter fall behind?
# ```
#
# ```{solution} ex-05-lightweight
# :class: dropdown
# Run `training.train(load_config("assistant_only", "lightweight", overrides=budget),
# output_dir=...)` and pass each `pd.DataFrame(run.log_history)` to `viz.plot_training_curves`. With
# fewer trainable parameters the loss usually falls more slowly; compare the held-out IoU at the
# same steps rather than the loss alone, since the IoU is what the task needs.
# ```
#
# ```{exercise}
# :label: ex-05-lab
# Lab 5 (`labs/lab_05_training.ipynb`) asks you to count LoRA's parameters by hand and match PEFT,
# to train two LoRA ranks on the same budget and decide from their logs which did better, and to
# write the held-out IoU callback yourself. Lab 7 (`labs/lab_07_debugging.ipynb`) hands you a
# collator with a masking bug of the kind public repositories shipped, to find and fix.
# ```
#
# ## References
#
# LoRA: {cite}`hu2021lora`. QLoRA and the nf4 data type: {cite}`dettmers2023qlora`. TRL's
# `SFTTrainer`: {cite}`vonwerra2022trl`. The full list is in {doc}`../book/references`.
