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
# # 4. Masking comparison: train on every token, or on the answer alone?

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

# %% tags=["remove-input"] mystnb={"markdown_format": "myst"}
from vlmlib.notes import show_profile_note

show_profile_note(
    "tiny",
    """
```{note}
The outputs on this page were produced with the **tiny** profile: the pretrained tiny Qwen2-VL
({doc}`../book/tiny_model`), fine-tuned for a few minutes on synthetic images. Its numbers show
how to run and read the comparison; the full profile's numbers are the ones to quote. The full
profile runs this page on a GPU; its time and memory there are estimated on
{doc}`the course's cost page <../book/costs>`.
```
""",
)
show_profile_note(
    "full",
    """
```{note}
The outputs on this page were produced with the **full** profile: Qwen2-VL-2B-Instruct and the
Open Food Facts dataset on a GPU. Its GPU time is an estimate, not a measurement: about 13 minutes
on an NVIDIA L4 and 7 on an A100, the longest cell (one training run) about 5 minutes on the L4,
on a card of 12 GB or more. The arithmetic is on {doc}`the course's cost page <../book/costs>`.
```
""",
)

# %% [markdown]
# **Learning objectives**
#
# - Set up a fair comparison: the same model, seed, data and number of steps, with only the masking strategy changed.
# - Explain why the training losses of the two strategies cannot be compared directly.
# - Measure the loss on the answer tokens alone, on held-out images, for both runs.
# - Measure why a smaller weight on the answer shrinks an SGD step but hardly an AdamW step, and
#   compare the two runs' gradients by size, direction and clipping.
# - Decide which strategy finds nutrition tables better, from IoU and parse failures on held-out images.
#
# Chapter 3 built `CollatorV3`, which trains either on all text (`all_tokens`) or on the answer and its
# closing `<|im_end|>` alone (`assistant_only`). Both are reasonable on paper: the first gives the
# model more tokens to learn from, the second spends every unit of loss on what the model must write.
# This chapter settles the question the way it should be settled: by training both and measuring.

# %% [markdown]
# ## Setup

# %%
import math
import tempfile
from pathlib import Path

import pandas as pd
import torch
from myst_nb import glue

import vlmlib
from vlmlib import collators, data, evaluation, models, optimizer_steps, training, viz
from vlmlib.callbacks import AnswerLossCallback, GradNormCallback, IoUEvalCallback, build_callbacks
from vlmlib.config import config_to_dict, load_config

vlmlib.quiet_progress_bars()
STRATEGIES = ("all_tokens", "assistant_only")  # the two named configs compared on this page
config = load_config()
processor = models.load_processor(config)
splits = data.load_configured_splits(config)
pd.Series(
    {
        "profile": config.profile,
        "training images": len(splits["train"]),
        "held-out images": len(splits["eval"]),
    }
)

# %% [markdown]
# ## One line of difference
#
# The two named configs, `all_tokens` and `assistant_only`, are laid over the profile's config. Everything
# else (model, LoRA, learning rate, schedule, seed) comes from the same place, so the only difference
# should be the masking strategy. We check that rather than trust it.

# %%
settings = pd.DataFrame(
    {name: config_to_dict(load_config(name))["training"] for name in STRATEGIES}
).astype(str)
settings[settings[STRATEGIES[0]] != settings[STRATEGIES[1]]]  # the settings that differ

# %% [markdown]
# Of all the training settings, only `mask_strategy` differs between the two configs.
#
# That one setting changes how much of each batch reaches the loss. Here is the first training batch
# through both strategies, counting the labelled positions that the loss sees (the first position
# has no token before it, so it is never predicted).

# %%
batch_size = config.training.per_device_train_batch_size
first_batch = [splits["train"][index] for index in range(batch_size)]
num_in_loss = {}
for strategy in STRATEGIES:
    labels = collators.CollatorV3(processor, mask_strategy=strategy)(first_batch)["labels"]
    num_in_loss[strategy] = int(
        (labels[:, 1:] != collators.IGNORE_INDEX).sum()
    )  # (batch, seq_len - 1)
answer_share = num_in_loss["assistant_only"] / num_in_loss["all_tokens"]
glue("masking_answer_share", f"{answer_share:.0%}", display=False)
pd.Series(num_in_loss, name="tokens in the loss, first batch")

# %% [markdown]
# Under `all_tokens` the answer is only {glue:text}`masking_answer_share` of the tokens in the loss.
# The loss is a mean over those tokens, so the answer's part of the `all_tokens` loss is $w L$,
# where $L$ is the `assistant_only` loss and $w$ is that share: the answer's gradient is $w$ times
# smaller. The rest of the gradient comes from predicting system and user text that never changes,
# so the `all_tokens` gradient also points elsewhere. Whether a smaller gradient means a smaller
# step depends on the optimizer: with plain SGD it does, but the course trains with AdamW, which
# divides each gradient by its own running size. Once both runs are trained, the section
# {ref}`sec-04-answer-weight` measures which of the two differences, size or direction, survives
# the optimizer. Whether the prompt's share hurts, or the extra tokens help, is what the two runs
# will tell.

# %% [markdown]
# ## The budget
#
# Both runs get the same budget: the profile's steps, batch size and learning rate, from
# `configs/{profile}.yaml`. The overrides below only choose how often we measure; under `full` they
# also cap the steps and the held-out answers, since this page trains twice and every answer the
# model writes while training costs GPU time ({doc}`../book/costs`). **This cell is the one to
# edit** to retune the comparison.

# %%
# Overrides shared by both runs. Steps, batch size, learning rate and seed come from the profile.
budget = {
    "tiny": [
        "training.logging_steps=5",  # a point on the curves every 5 steps
        "callbacks.iou_eval_every_steps=20",
    ],  # held-out IoU every 20 steps
    "full": [
        "training.max_steps=60",  # 480 images per run, 2 minutes on an L4
        "training.logging_steps=10",
        "callbacks.iou_eval_every_steps=30",  # each IoU point answers the held-out slice
        "callbacks.iou_eval_num_samples=16",
    ],
}[config.profile]
num_eval_images = 64  # scored by both runs at the end: all of tiny's, 64 of full's 123
run_configs = {strategy: load_config(strategy, overrides=budget) for strategy in STRATEGIES}
recipe = run_configs[STRATEGIES[0]].training  # the same in both runs but for mask_strategy
images_per_step = recipe.per_device_train_batch_size * recipe.gradient_accumulation_steps
num_steps = (
    recipe.max_steps
    if recipe.max_steps > 0
    else math.ceil(recipe.num_train_epochs * len(splits["train"]) / images_per_step)
)  # max_steps -1 means "use the epochs"
print(
    f"each run: {num_steps} steps of {images_per_step} images "
    f"({num_steps * images_per_step / len(splits['train']):.2f} epochs)"
)
print(f"learning rate {recipe.learning_rate:g} ({recipe.lr_scheduler_type}), seed {recipe.seed}")

# %% [markdown]
# ## The loss on the answer alone
#
# The training loss of each run is a mean over *its own* trained tokens: prompt and answer for
# `all_tokens`, the answer alone for `assistant_only`. The prompt is the same in every example and
# quickly becomes easy to predict, so an `all_tokens` loss can fall for reasons that have nothing to
# do with boxes. To compare like with like, `AnswerLossCallback` measures both runs on the same thing:
# the loss on the answer tokens of a fixed set of held-out images, labelled by `CollatorV3` with
# `assistant_only`, computed without gradients every few steps.

# %% [markdown]
# ```{literalinclude} ../vlmlib/callbacks.py
# :pyobject: AnswerLossCallback._measure
# ```

# %%
num_heldout = run_configs[STRATEGIES[0]].callbacks.iou_eval_num_samples
heldout_records = [splits["eval"][index] for index in range(num_heldout)]
answer_collator = collators.CollatorV3(processor, mask_strategy="assistant_only")
eval_batch_size = config.training.per_device_eval_batch_size
heldout_batches = [
    answer_collator(heldout_records[start : start + eval_batch_size])
    for start in range(0, num_heldout, eval_batch_size)
]
num_answer_tokens = sum(
    int((batch["labels"][:, 1:] != collators.IGNORE_INDEX).sum()) for batch in heldout_batches
)
print(
    f"{num_heldout} held-out images, {num_answer_tokens} answer tokens, measured every logging step"
)

# %% [markdown]
# The same held-out images also feed `IoUEvalCallback` (chapter 5), which generates answers and
# logs their mean IoU and parse-failure rate while training runs.

# %% [markdown]
# ## Two runs, one budget
#
# Each run starts from a fresh copy of the model (LoRA adapters are added in place, so runs must not
# share one) and gets the profile's callbacks plus `AnswerLossCallback`. The seed fixes the LoRA
# initialisation and the order of the training data, so both runs see the same images in the same order.
# Each run has a cell of its own, because a notebook cell has a time limit when the book is built
# (15 minutes) and a run under `full` takes minutes.


# %%
def train_with_strategy(strategy: str, output_dir: Path) -> training.AnswerLossSFTTrainer:
    """Train a fresh copy of the model with one masking strategy; return the trainer."""
    run_config = run_configs[strategy]
    model = models.load_model(run_config)
    callbacks = build_callbacks(run_config, processor, heldout_records)
    callbacks.append(
        AnswerLossCallback(
            heldout_batches,
            training.compute_answer_loss,
            every_steps=run_config.training.logging_steps,
        )
    )
    trainer = training.build_trainer(
        run_config, model, processor, splits["train"], callbacks, output_dir / strategy
    )
    for callback in callbacks:
        if isinstance(callback, IoUEvalCallback):
            callback.attach(trainer)  # so its scores are logged like the loss
    trainer.train()
    return trainer


# %% tags=["hide-output"]
checkpoint_dir = tempfile.TemporaryDirectory()  # checkpoints are not needed after this page
trainers = {"all_tokens": train_with_strategy("all_tokens", Path(checkpoint_dir.name))}

# %% tags=["hide-output"]
trainers["assistant_only"] = train_with_strategy("assistant_only", Path(checkpoint_dir.name))
checkpoint_dir.cleanup()
histories = {
    strategy: pd.DataFrame(trainer.state.log_history) for strategy, trainer in trainers.items()
}

# %% [markdown]
# The log of each run (folded above) has one line per logging step. From here on we read the logs
# as tables, `pd.DataFrame(trainer.state.log_history)`, one per run.

# %% [markdown]
# ## Loss curves
#
# At the top, each run's training loss on the tokens it trains on; below, the loss on the answer
# tokens of the held-out images, the same measurement for both runs.

# %% mystnb={"figure": {"caption": "Top: training loss, each run on its own trained tokens. Bottom: loss on the answer tokens of held-out images, the same tokens for both runs.", "name": "fig-04-loss-curves"}, "image": {"alt": "Two line charts against training step, one line per masking strategy: the training loss of each run on its own tokens, and below it the loss on the answer tokens of held-out images"}}
figure = viz.new_figure((viz.FIGURE_SIZE[0], 2 * viz.FIGURE_SIZE[1]))
top, bottom = figure.subplots(2, 1)
viz.plot_loss_curves(
    histories,
    "loss",
    ylabel="loss per trained token (nats)",
    title="Training loss (own tokens)",
    ax=top,
)
viz.plot_loss_curves(
    histories,
    "eval_answer_loss",
    ylabel="loss per answer token (nats)",
    title="Held-out loss on the answer",
    ax=bottom,
)
figure


# %% tags=["hide-input"]
def last_value(metric: str) -> dict[str, float]:
    """Return each run's last logged value of `metric`."""
    return {name: float(history[metric].dropna().iloc[-1]) for name, history in histories.items()}


train_loss, answer_loss = last_value("loss"), last_value("eval_answer_loss")
for strategy in STRATEGIES:
    glue(f"masking_train_loss_{strategy}", f"{train_loss[strategy]:.3f}", display=False)
    glue(f"masking_answer_loss_{strategy}", f"{answer_loss[strategy]:.3f}", display=False)

# %% [markdown]
# In {numref}`fig-04-loss-curves`, the last training loss is
# {glue:text}`masking_train_loss_all_tokens` nats per token for `all_tokens` and
# {glue:text}`masking_train_loss_assistant_only` for `assistant_only`; on the held-out answers it
# is {glue:text}`masking_answer_loss_all_tokens` and {glue:text}`masking_answer_loss_assistant_only`.
# The top pair averages over different tokens, so it cannot rank the runs, even when it happens to
# agree with the bottom pair. The bottom pair measures both runs on the same answer tokens: the
# lower held-out answer loss is the run that predicts the answers better.

# %% [markdown]
# ## Gradient norms
#
# The Trainer logs the gradient norm before clipping at each logging step, and `GradNormCallback`
# adds the fraction of steps whose gradient was clipped. Clipping compares the gradient's norm with
# `max_grad_norm` ({glue:text}`masking_max_grad_norm` here) and, when the norm is larger, shrinks
# the gradient to that length before the optimizer sees it; the learning rate plays no part in it.
# The `all_tokens` loss averages over more tokens, many of them prompt tokens, so its gradient has
# another size and another direction, and clipping may fire on different steps in the two runs.
# A run clipped on most steps has gradients above the threshold, so the threshold rescales every
# step instead of catching the odd spike.

# %% mystnb={"figure": {"caption": "Top: gradient norm before clipping. Bottom: the fraction of steps since the previous log whose gradient was clipped.", "name": "fig-04-gradient-norms"}, "image": {"alt": "Two line charts against training step, one line per masking strategy: the gradient norm before clipping, and below it the fraction of steps whose gradient was clipped"}}
figure = viz.new_figure((viz.FIGURE_SIZE[0], 2 * viz.FIGURE_SIZE[1]))
top, bottom = figure.subplots(2, 1)
viz.plot_loss_curves(
    histories,
    "grad_norm",
    ylabel="L2 norm of the LoRA gradients",
    title="Gradient norm before clipping",
    ax=top,
)
viz.plot_loss_curves(
    histories,
    "clipped_fraction",
    ylabel="fraction of steps clipped (0 to 1)",
    title="Clipping since the previous log",
    ax=bottom,
)
figure


# %% tags=["hide-input"]
def fraction_clipped(trainer: training.AnswerLossSFTTrainer) -> float:
    """Return the share of optimizer steps with a clipped gradient (GradNormCallback's record)."""
    callback = next(
        item for item in trainer.callback_handler.callbacks if isinstance(item, GradNormCallback)
    )
    return sum(callback.clipped) / len(callback.clipped)


gradient_summary = pd.DataFrame(
    {
        name: {
            "mean gradient norm": histories[name]["grad_norm"].mean(),
            "last gradient norm": histories[name]["grad_norm"].dropna().iloc[-1],
            "steps clipped": fraction_clipped(trainer),
        }
        for name, trainer in trainers.items()
    }
)
for strategy in STRATEGIES:
    glue(
        f"masking_mean_norm_{strategy}",
        f"{gradient_summary.loc['mean gradient norm', strategy]:.3f}",
        display=False,
    )
    glue(
        f"masking_clipped_{strategy}",
        f"{gradient_summary.loc['steps clipped', strategy]:.0%}",
        display=False,
    )
glue("masking_max_grad_norm", f"{recipe.max_grad_norm:g}", display=False)
gradient_summary.round(3)

# %% [markdown]
# The mean gradient norm is {glue:text}`masking_mean_norm_all_tokens` for `all_tokens` and
# {glue:text}`masking_mean_norm_assistant_only` for `assistant_only`; clipping cut
# {glue:text}`masking_clipped_all_tokens` of the `all_tokens` steps and
# {glue:text}`masking_clipped_assistant_only` of the `assistant_only` steps. The run with the larger
# norms is the one clipping reshapes more often.

# %% [markdown]
# (sec-04-answer-weight)=
# ## What the answer's weight does to a step
#
# Under `all_tokens` the answer's part of the loss is $w L$ instead of $L$, with $w$ =
# {glue:text}`masking_answer_share`. With SGD a step is the learning rate times the gradient, so
# the answer's step shrinks by $w$ too, and a learning rate divided by $w$ would give it back.
# AdamW ({cite}`kingma2015adam`, {cite}`loshchilov2019adamw`) keeps two running averages per
# weight, $\hat m$ of the gradient $g$ and $\hat v$ of its square, and steps by
#
# $$\Delta\theta = -\eta\,\frac{\hat m}{\sqrt{\hat v} + \epsilon}$$
#
# (plus weight decay, `training.weight_decay`, 0 by default). Multiply every gradient by $w$ and
# $\hat m$ grows $w$ times, $\sqrt{\hat v}$ too, and the step stays the same: only $\epsilon$
# (`1e-8`) keeps the cancellation from being exact.
#
# `optimizer_steps.compare_update_norms` measures it on the `assistant_only` model just trained:
# from the same weights it takes three steps on one training record with the loss $L$, then three
# with $w L$, with each optimizer at the recipe's learning rate and without clipping, and reports
# how far the LoRA weights moved, relative to their size. The model's weights are restored after
# each measurement.

# %% [markdown]
# ```{literalinclude} ../vlmlib/optimizer_steps.py
# :pyobject: measure_relative_update
# ```

# %%
step_model = trainers["assistant_only"].model.train()  # dropout on, as in training
step_batches = {
    strategy: {
        key: value.to(step_model.device)
        for key, value in collators.CollatorV3(processor, mask_strategy=strategy)(
            first_batch[:1]
        ).items()
    }
    for strategy in STRATEGIES
}  # one record: the same input_ids, two sets of labels


def loss_on(strategy: str) -> optimizer_steps.LossFunction:
    """Return a function computing the model's training loss on the step batch of `strategy`."""
    return lambda model: training.compute_answer_loss(model, step_batches[strategy])


optimizers = {
    "SGD": lambda parameters: torch.optim.SGD(parameters, lr=recipe.learning_rate),
    "AdamW": lambda parameters: torch.optim.AdamW(
        parameters, lr=recipe.learning_rate, weight_decay=recipe.weight_decay
    ),
}
update_norms = optimizer_steps.compare_update_norms(
    step_model,
    loss_on("assistant_only"),
    optimizers,
    loss_scale=answer_share,
    num_steps=3,
    seed=recipe.seed,
)
update_norms.map(lambda value: f"{value:.3g}")

# %% tags=["hide-input"]
glue("masking_sgd_ratio", f"{update_norms.loc['SGD', 'ratio (w*L over L)']:.0%}", display=False)
glue("masking_adamw_ratio", f"{update_norms.loc['AdamW', 'ratio (w*L over L)']:.0%}", display=False)

# %% [markdown]
# SGD's step on $w L$ is {glue:text}`masking_sgd_ratio` of its step on $L$, about $w$; AdamW's is
# {glue:text}`masking_adamw_ratio`. With the optimizer the course uses, the answer's smaller weight
# does not make its step smaller, and dividing the learning rate by $w$ would not restore anything:
# it would make every AdamW step larger. (Compare the rows' sizes too: at the same learning rate
# the two optimizers take steps of very different lengths, so a learning rate tuned for one is no
# guide to the other.)
#
# What AdamW keeps is the direction. The `all_tokens` gradient is $w$ times the answer's gradient
# plus $(1 - w)$ times the prompt's, and normalising its size leaves that mix as it is. On the same
# record, here are the two strategies' gradients, compared by size (what clipping sees) and by the
# cosine of the angle between them (1: the same direction, 0: unrelated):

# %%
gradients = {
    strategy: optimizer_steps.compute_flat_gradient(step_model, loss_on(strategy), seed=recipe.seed)
    for strategy in STRATEGIES
}
cosine = torch.nn.functional.cosine_similarity(
    gradients["all_tokens"], gradients["assistant_only"], dim=0
)
glue("masking_gradient_cosine", f"{float(cosine):.2f}", display=False)
pd.Series(
    {
        **{
            f"gradient norm, {strategy} loss": float(gradient.norm())
            for strategy, gradient in gradients.items()
        },
        "max_grad_norm": recipe.max_grad_norm,
        "cosine between the two gradients": float(cosine),
    }
).round(3)

# %% [markdown]
# The cosine is {glue:text}`masking_gradient_cosine`. The further it is below 1, the more of each
# `all_tokens` step goes to reciting the prompt rather than to the answer, and no learning rate
# changes that under AdamW: only the loss's weights do (masking the prompt, or weighting the answer
# tokens more). The norms show the other difference: the strategy whose gradient is further above
# `max_grad_norm` gets clipped more often. Clipping scales a gradient down before AdamW sees it, so
# a clipped step weighs less in AdamW's running averages than an unclipped one.

# %% [markdown]
# ## Boxes on held-out images
#
# Loss is a means to an end; the end is a box in the right place. `evaluation.evaluate_model`
# (chapter 6) answers the held-out images with each trained model, parses the answers and scores
# them.
# Both models answer the same `num_eval_images` images, set in the budget cell.

# %%
eval_split = splits["eval"].select(range(min(num_eval_images, len(splits["eval"]))))
reports = {}
for strategy, trainer in trainers.items():
    reports[strategy], _ = evaluation.evaluate_model(
        trainer.model, processor, eval_split, run_configs[strategy]
    )
columns = ["images", "parse failure rate", "mean IoU", "precision@0.5", "recall@0.5", "F1@0.5"]
evaluation.compare_reports(reports)[columns].round(3)

# %% mystnb={"figure": {"caption": "Mean IoU on the held-out slice while training (IoUEvalCallback); a parse failure counts as IoU 0.", "name": "fig-04-heldout-iou"}, "image": {"alt": "A line chart of mean IoU on the held-out slice against training step, one line per masking strategy"}}
viz.plot_loss_curves(
    histories, "eval_mean_iou", ylabel="mean IoU (0 to 1)", title="Held-out IoU while training"
)

# %% tags=["hide-input"]
# Both runs answered the same images in the same order, so the IoUs pair up image by image.
per_image = {name: report.per_image["iou"] for name, report in reports.items()}
iou_difference = per_image["assistant_only"] - per_image["all_tokens"]
standard_error = float(iou_difference.std(ddof=1) / math.sqrt(len(iou_difference)))
for strategy, report in reports.items():
    glue(f"masking_iou_{strategy}", f"{report.mean_iou:.3f}", display=False)
    glue(f"masking_failures_{strategy}", f"{report.parse_failure_rate:.0%}", display=False)
glue("masking_num_scored", len(iou_difference), display=False)
glue("masking_iou_difference", f"{iou_difference.mean():+.3f}", display=False)
glue("masking_standard_error", f"{standard_error:.3f}", display=False)
glue("masking_num_curve_images", num_heldout, display=False)
glue("masking_curve_step", f"{1 / num_heldout:.3g}", display=False)

# %% [markdown]
# On the {glue:text}`masking_num_scored` held-out images, mean IoU is
# {glue:text}`masking_iou_all_tokens` for `all_tokens` and {glue:text}`masking_iou_assistant_only`
# for `assistant_only`, with parse-failure rates of {glue:text}`masking_failures_all_tokens` and
# {glue:text}`masking_failures_assistant_only`. Image by image, `assistant_only` minus `all_tokens`
# averages {glue:text}`masking_iou_difference`, with a paired standard error of
# {glue:text}`masking_standard_error`. A difference of more than two standard errors is unlikely
# to come from the choice of images alone; a smaller one could be noise. When both runs fail to
# parse every answer, IoU cannot separate them and only the loss can.
#
# The curve in {numref}`fig-04-heldout-iou` scores only the first
# {glue:text}`masking_num_curve_images` of those images, so one image moves it by up to
# {glue:text}`masking_curve_step`: it shows that a run is learning, and the table, on all of
# them, compares the runs.

# %% [markdown]
# ## Conclusion
#
# Three numbers above decide the comparison: the held-out answer loss of each run, and the paired
# IoU difference with its standard error ({glue:text}`masking_standard_error`). Side by side:

# %%
conclusion = pd.DataFrame(
    {  # one row per run, in the order all_tokens, assistant_only
        "held-out answer loss (nats per token)": answer_loss,
        "mean IoU": {name: report.mean_iou for name, report in reports.items()},
        "parse failure rate": {name: report.parse_failure_rate for name, report in reports.items()},
    }
)
conclusion.loc["assistant_only minus all_tokens"] = conclusion.diff().iloc[-1]
conclusion.round(3)

# %% [markdown]
# A strategy has learned the task better on this budget when it has the lower held-out answer
# loss *and* an IoU higher by more than two standard errors. When the IoU gap is within two
# standard errors, the boxes do not separate the strategies yet, and the answer loss is the only
# evidence; when loss and IoU point to different runs, the evidence is mixed. Under
# `all_tokens` the answer was {glue:text}`masking_answer_share` of the tokens in the loss; the
# rest trained the model to recite a prompt it is always given.
#
# ```{caution}
# This is one run per strategy, with one seed, on a small held-out set. The paired standard error of
# the IoU gap covers the choice of images, not the luck of the training run; {ref}`ex-04-seed`
# repeats the comparison with another seed.
# ```

# %% tags=["remove-input"] mystnb={"markdown_format": "myst"}
show_profile_note(
    "tiny",
    """
```{admonition} What the real model does
:class: tip
The runs on this page are minutes of the tiny stand-in on synthetic labels. The published
comparison of the two strategies on this dataset used Qwen2-VL-7B-Instruct with QLoRA, trained
for 7 epochs, and scored its 123 validation images: with the loss on the answer alone it reached
a mean IoU of 0.771 and an F1 at IoU 0.5 of 0.893; with the loss on every token, 0.745 and 0.870
{cite}`abdullah2025qwen2vlnutrition`. That is one result per strategy too, with no spread
reported. No such comparison is published for Qwen2-VL-2B; the full profile runs this page on it.
```
""",
)

# %% [markdown]
# ## Summary
#
# - A fair comparison changes one setting: the two runs share model, seed, data order, steps and learning rate.
# - Training losses over different tokens measure different things; the `all_tokens` loss includes an easy, fixed prompt.
# - The loss on the answer tokens of held-out images compares both runs on the same tokens (`AnswerLossCallback`).
# - Under `all_tokens` the answer's gradient is $w$ times smaller. SGD's step shrinks with it;
#   AdamW normalises the step's size, so what the strategy changes is the gradient's direction.
# - Clipping compares each gradient's norm with `max_grad_norm`, whatever the learning rate; the
#   fraction of clipped steps shows how often the threshold rescaled each run's gradient.
# - IoU and parse failures on held-out images decide which strategy finds the tables, with a standard error to judge the gap.
#
# ## Exercises
#
# ```{exercise}
# :label: ex-04-seed
# Add `"training.seed=1"` to the budget cell and run the page again. Does the conclusion keep its
# direction? What does a second seed tell you that the paired standard error cannot?
# ```
#
# ```{solution} ex-04-seed
# :class: dropdown
# The seed sets the LoRA initialisation and the order of the training images. The standard error
# measures how much the IoU gap depends on *which held-out images* were scored; a second seed measures
# how much it depends on *the training run itself*. A conclusion worth keeping holds across seeds,
# and short runs on few images, as under `tiny`, tend to vary more from seed to seed than long ones.
# ```
#
# ```{exercise}
# :label: ex-04-learning-rate
# Under `all_tokens`, each answer token weighs {glue:text}`masking_answer_share` of what it weighs
# under `assistant_only`. A colleague proposes to divide the `all_tokens` learning rate by that
# share, "to give the answer its step back". Predict from {ref}`sec-04-answer-weight` what that does
# under AdamW, then try it: one extra override for the `all_tokens` run only,
# `f"training.learning_rate={recipe.learning_rate / answer_share:g}"`. What would give the answer
# more influence on each step instead?
# ```
#
# ```{solution} ex-04-learning-rate
# :class: dropdown
# The proposal holds for SGD, whose step is proportional to the gradient. AdamW divides each
# gradient by its running root mean square, so the answer's step was never $w$ times smaller
# (the table in {ref}`sec-04-answer-weight`: the ratio is close to 1). A learning rate divided by
# $w$ makes every AdamW step, the prompt's part included, about $1/w$ times larger: a different
# and riskier recipe, which may train faster for a few steps and then overshoot, not a fairer
# comparison. What sets the answer's influence under AdamW is its weight *relative to the
# prompt's* in the loss, since only the direction of the gradient survives the normalisation:
# mask the prompt (`assistant_only`), or weight the answer tokens more than the prompt tokens.
# ```
#
# ```{exercise}
# :label: ex-04-lab
# Lab 04 (`labs/lab_04_masking.ipynb`) has you compute, per role, the share of the trained tokens
# and of the loss under each strategy, and write down a prediction of this chapter's result before
# you look at it.
# ```
#
# ```{solution} ex-04-lab
# :class: dropdown
# The worked answers are in `solutions/lab_04_masking.ipynb`.
# ```
#
# ## References
#
# Completion-only loss and `SFTTrainer`: {cite}`vonwerra2022trl`. LoRA, the adapters both runs train:
# {cite}`hu2021lora`. Qwen2-VL and its grounding format: {cite}`wang2024qwen2vl`. Adam and AdamW,
# the optimizer whose step ignores the loss's scale: {cite}`kingma2015adam`,
# {cite}`loshchilov2019adamw`. The full list is in {doc}`../book/references`.
