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
# # 6. Evaluation: what the fine-tuned model finds

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
The outputs on this page were produced with the **tiny** profile: a tiny Qwen2-VL and synthetic
data on the CPU. Every number in the text is read from those outputs. The full profile runs this
page on a GPU; its time and memory there are estimated on
{doc}`the course's cost page <../book/costs>`.
```
""",
)
show_profile_note(
    "full",
    """
```{note}
The outputs on this page were produced with the **full** profile: Qwen2-VL-2B-Instruct and the
Open Food Facts dataset on a GPU. Every number in the text is read from those outputs. Its GPU
time is an estimate, not a measurement: about 10 minutes on an NVIDIA L4 and 7 on an A100 when
chapter 5's run is there to reuse (13 on the L4 when the page trains), the longest cell
(evaluating both models) about 7 minutes on the L4, on a card of 12 GB or more. The arithmetic
is on {doc}`the course's cost page <../book/costs>`.
```
""",
)

# %% [markdown]
# **Learning objectives**
#
# - Score a model's boxes on held-out images: mean IoU with one-to-one matching, precision, recall and F1 at IoU 0.5, and how they change with the threshold.
# - Compute COCO mAP@0.5 and mAP@[.5:.95], and explain what the model's confidence does to them.
# - Compare the zero-shot and the fine-tuned model on the same images, in one table and per category.
# - Find failures by kind: answers that give no box, missed tables in multi-table images, small tables.
# - Merge the LoRA adapter into the base model, and explain what the equivalence check proves.
#
# Chapter 5 trained adapters and watched the held-out IoU of a few images while training. Here we
# measure properly: every held-out image, every figure the field uses, the model before and after
# fine-tuning side by side, and then a look at the images behind the numbers.

# %% [markdown]
# ## Setup

# %%
from pathlib import Path

import datasets
import pandas as pd
import torch
from myst_nb import glue

import vlmlib
from vlmlib import data, dataset_stats, evaluation, memory, merging, models, training, viz
from vlmlib.config import (
    RUN_CONFIG_FILE,
    Config,
    config_to_dict,
    get_profile,
    load_config,
    with_overrides,
)

torch.manual_seed(0)
vlmlib.quiet_progress_bars()

# %%
# This page's budget: the ONLY settings to retune.
# Steps, learning rate, batch size and LoRA come from the profile's
# config (vlmlib/configs/tiny.yaml or full.yaml).
# - data.num_eval: held-out images; each is answered twice (zero-shot
#   and fine-tuned), so this sets most of the page's running time.
# - callbacks.iou_eval=false: this page evaluates after training instead.
# - max_steps (full): chapter 5's budget, so that its run can be reused.
budget = {
    "tiny": ["callbacks.iou_eval=false", "data.num_eval=32"],  # 32 of 64
    "full": ["callbacks.iou_eval=false", "training.max_steps=100"],  # all 123 val images
}[get_profile()]
# A run of the same recipe to load instead of training again: under full,
# chapter 5's; tiny trains in under a minute, so its page stands alone.
earlier_run = {"tiny": None, "full": "outputs/chapter05"}[get_profile()]
num_merge_check_records = 4  # images the merged model must answer as before
config = load_config("assistant_only", overrides=[*budget, "training.output_dir=outputs/chapter06"])
budget

# %% [markdown]
# ## A model to evaluate
#
# The model to evaluate is an adapter trained with chapter 5's recipe (`assistant_only`, the page's
# steps). Training it again costs minutes of GPU time under `full`, so this page first looks for the
# run chapter 5 saved, and loads it when its recipe is this page's. A run counts as the same recipe
# when every setting that shapes the adapter is equal; where a run saves its checkpoints, how often
# it logs and what its callbacks measure do not change the weights:


# %%
def describe_recipe(config: Config) -> dict:
    """Return the settings that shape a trained adapter: all but outputs, logging and callbacks."""
    neutral = [
        "training.output_dir=.",
        "training.logging_steps=1",
        "training.save_steps=1",
        "data.num_eval=null",
    ]
    recipe = config_to_dict(with_overrides(config, neutral))
    del recipe["callbacks"]
    return recipe


def load_or_train(
    config: Config, earlier_run: str | None, splits: datasets.DatasetDict
) -> tuple[torch.nn.Module, Path, str]:
    """Return (fine-tuned model, run folder, its origin): `earlier_run` if its recipe matches."""
    if earlier_run and (Path(earlier_run) / RUN_CONFIG_FILE).exists():
        earlier_config = load_config(Path(earlier_run) / RUN_CONFIG_FILE)
        if describe_recipe(earlier_config) == describe_recipe(config):
            model = models.load_run(earlier_run)[0]
            return model, Path(earlier_run), f"loaded chapter 5's run from {earlier_run}"
    run = training.train(config, splits=splits)
    return run.trainer.model, run.output_dir, "trained its own adapter"  # the trainer is dropped


# %% [markdown]
# When this page trains, the IoU callback is off, and the log is folded; chapter 5 discusses it.

# %% tags=["hide-output"]
splits = data.load_configured_splits(config)
fine_tuned_model, run_dir, model_source = load_or_train(config, earlier_run, splits)

# %%
model_source  # where the adapter evaluated below comes from

# %% [markdown]
# The line above says whether this page loaded chapter 5's run or trained its own adapter. The
# zero-shot baseline is the same base model with no adapter, loaded fresh:

# %%
base_model, processor = models.load_model_and_processor(config)
eval_split = splits["eval"]
num_eval_tables = sum(len(objects["bbox"]) for objects in eval_split["objects"])
glue("num_eval_images", len(eval_split), display=False)
glue("num_eval_tables", num_eval_tables, display=False)
f"{len(eval_split)} held-out images, {num_eval_tables} tables"

# %% [markdown]
# ## From answers to figures
#
# `evaluation.evaluate_model` asks the model about every image (greedy decoding), parses each answer
# into boxes (`vlmlib.parsing`), converts the dataset's `box_hub` and the model's `box_qwen` to pixel
# boxes, and scores them. The central step is **matching**: in an image with two tables, a predicted
# box must not score against the table it did not find, and one box must not count for two tables.
# `match_boxes` pairs predictions and tables one-to-one, with the largest total IoU:

# %% [markdown]
# ```{literalinclude} ../vlmlib/metrics.py
# :pyobject: compute_image_mean_iou
# ```

# %% [markdown]
# From those pairs come all the figures:
#
# - **mean IoU**: each image's matched IoUs summed and divided by the larger of its numbers of
#   predicted and true boxes (a missed or an invented box counts 0), averaged over images; an answer
#   with no box scores 0. "mean IoU (parsed)" leaves those answers out. This is the course's own
#   definition. Published "mean IoU" figures for this dataset are often computed otherwise (for
#   example over matched boxes only, or one box per image), so compare them with ours only after
#   checking how each was computed.
# - **precision, recall, F1 at IoU 0.5**: a matched pair with IoU >= 0.5 is a true positive; precision
#   is true positives over predicted boxes, recall over true boxes, F1 their harmonic mean.
# - **mAP@0.5 and mAP@[.5:.95]**: COCO's average precision ([cocodataset.org](https://cocodataset.org/#detection-eval)),
#   through pycocotools, at IoU 0.5 and averaged over the ten thresholds 0.5, 0.55, ..., 0.95.
# - **parse-failure rate**: the share of answers that gave no usable box.

# %%
zero_shot_report, zero_shot_predictions = evaluation.evaluate_model(
    base_model, processor, eval_split, config
)
fine_tuned_report, fine_tuned_predictions = evaluation.evaluate_model(
    fine_tuned_model, processor, eval_split, config
)
reports = {"zero-shot": zero_shot_report, "fine-tuned": fine_tuned_report}

# %% [markdown]
# ## Zero-shot against fine-tuned
#
# Every figure, for both models, on the same images:

# %%
comparison = evaluation.compare_reports(reports)
comparison.T.round(3)

# %% tags=["hide-input"]
before, after = zero_shot_report, fine_tuned_report
glue("zero_shot_iou", f"{before.mean_iou:.3f}", display=False)
glue("fine_tuned_iou", f"{after.mean_iou:.3f}", display=False)
glue("zero_shot_failures", f"{before.parse_failure_rate:.0%}", display=False)
glue("fine_tuned_failures", f"{after.parse_failure_rate:.0%}", display=False)
glue("fine_tuned_f1", f"{after.f1:.3f}", display=False)
for name, report in (("zero_shot", before), ("fine_tuned", after)):
    glue(f"{name}_precision", f"{report.precision:.3f}", display=False)
    glue(f"{name}_recall", f"{report.recall:.3f}", display=False)
glue("fine_tuned_map_50", f"{after.map_50:.3f}", display=False)
glue("fine_tuned_map_50_95", f"{after.map_50_95:.3f}", display=False)
mean_box_iou = evaluation.score_mean_box_baseline(
    splits["train"].select_columns(["objects"]),
    eval_split.select_columns(["width", "height", "objects"]),
)
glue("mean_box_iou", f"{mean_box_iou:.3f}", display=False)

# %% [markdown]
# On {glue:text}`num_eval_images` held-out images, the mean IoU is {glue:text}`zero_shot_iou`
# zero-shot and {glue:text}`fine_tuned_iou` after fine-tuning, while the share of answers with no
# usable box went from {glue:text}`zero_shot_failures` to {glue:text}`fine_tuned_failures`. The fine-tuned
# model's F1 at IoU 0.5 is {glue:text}`fine_tuned_f1`, its mAP@0.5 {glue:text}`fine_tuned_map_50` and
# its mAP@[.5:.95] {glue:text}`fine_tuned_map_50_95`. Read the rows together: mean IoU mixes "where"
# and "whether", precision and recall separate invented boxes from missed ones, and the parse-failure
# rate says how often the model did not answer in the format at all.
#
# A second yardstick: answering every image with one fixed box, the mean of all training boxes, scores
# a mean IoU of {glue:text}`mean_box_iou` on the same images. A model that learned the answer format but
# not where tables are scores about that much; only a clear margin above it shows localisation.
#
# Precision went from {glue:text}`zero_shot_precision` to {glue:text}`fine_tuned_precision` and recall
# from {glue:text}`zero_shot_recall` to {glue:text}`fine_tuned_recall`. An extra box is a false
# positive that lowers precision, and it also halves its image's IoU.

# %% tags=["remove-input"] mystnb={"markdown_format": "myst"}
show_profile_note(
    "tiny",
    """
```{note}
Under `tiny`, the zero-shot model's extra boxes are mostly the logo: it was pretrained to box
every object ({doc}`../book/tiny_model`). Fine-tuning teaches it which objects this dataset means.
```
""",
)
show_profile_note(
    "full",
    """
```{note}
Qwen2-VL-2B's zero-shot mistakes are of other kinds than the tiny model's logo boxes: whole-label
boxes, prose instead of boxes, labels of its own. The gallery and the failure analysis below show
which of them this run has.
```
""",
)

# %% tags=["remove-input"] mystnb={"markdown_format": "myst"}
show_profile_note(
    "tiny",
    """
```{admonition} What the real model does
:class: tip
These figures come from the tiny stand-in on synthetic labels. On the real data, the published
fine-tunes are of Qwen2-VL-7B-Instruct, scored on the dataset's 123 validation images: zero-shot,
a mean IoU of 0.590 and an F1 at IoU 0.5 of 0.654; after QLoRA with the loss on the answer only,
0.771 and 0.893 {cite}`abdullah2025qwen2vlnutrition`; after LoRA on the vision tower and the
language model, a mean IoU of 0.82 {cite}`dehdashti2025qwen2vlnutrition`. Check how each project
computes its mean IoU before comparing it with this page's (the list in "From answers to
figures" above). No figure is published for Qwen2-VL-2B; the full profile runs this page on it.
```
""",
)

# %% [markdown]
# ## How tight are the boxes?
#
# "Correct at IoU 0.5" is a convention. The sweep raises the bar from 0.5 to 0.95 and recounts:
# a model whose boxes are roughly right keeps its scores at 0.5 and loses them quickly above.

# %% mystnb={"figure": {"caption": "Precision, recall and F1 of both models as the IoU needed for a true positive rises from 0.5 to 0.95.", "name": "fig-06-threshold-sweep"}, "image": {"alt": "Line charts of precision, recall and F1 against the IoU threshold from 0.5 to 0.95, for the zero-shot and the fine-tuned model"}}
viz.plot_threshold_sweep({name: report.sweep for name, report in reports.items()})

# %%
f1_by_threshold = after.sweep.set_index("iou_threshold")["f1"]
glue("f1_at_75", f"{f1_by_threshold.loc[0.75]:.3f}", display=False)
glue("f1_at_95", f"{f1_by_threshold.loc[0.95]:.3f}", display=False)
after.sweep.round(3)

# %% [markdown]
# The fine-tuned model's F1 goes from {glue:text}`fine_tuned_f1` at IoU 0.5 to
# {glue:text}`f1_at_75` at 0.75 and {glue:text}`f1_at_95` at 0.95 ({numref}`fig-06-threshold-sweep`).
# The drop from 0.5 upwards measures how many boxes are only roughly placed; a sweep flat at zero
# means that no box reaches IoU 0.5 yet.

# %% [markdown]
# ## Where the IoU goes
#
# A mean IoU of 0.5 can be every image at 0.5, or half the images perfect and half missed. The
# histogram of per-image IoU tells them apart; the bar at 0 counts missed images and answers with no box.

# %% mystnb={"figure": {"caption": "Per-image IoU of both models on the same held-out images.", "name": "fig-06-iou-distribution"}, "image": {"alt": "Histograms of per-image IoU from 0 to 1 for the zero-shot and the fine-tuned model on the same held-out images"}}
viz.plot_iou_distribution({name: report.per_image["iou"] for name, report in reports.items()})

# %%
share_missed = (after.per_image["iou"] == 0).mean()
share_good = (after.per_image["iou"] >= 0.5).mean()
glue("share_missed", f"{share_missed:.0%}", display=False)
glue("share_good", f"{share_good:.0%}", display=False)
pd.Series(
    {"IoU 0 (missed or no box)": share_missed, "IoU >= 0.5": share_good},
    name="share of images, fine-tuned",
).round(3)

# %% [markdown]
# For the fine-tuned model, {glue:text}`share_missed` of the images score 0 and
# {glue:text}`share_good` reach IoU 0.5 or more ({numref}`fig-06-iou-distribution`).

# %% [markdown]
# ## COCO mAP and the model's confidence
#
# Average precision rewards a model whose *confident* boxes are right: all boxes of all images are
# ranked by score, precision is read at 101 recall levels along that ranking, and averaged. A generative
# model gives no score per box, so `evaluate_model` gives every box of an answer the answer's
# confidence, `exp(mean log-probability)` of its tokens (`vlmlib.inference.generate_scored_answers`).
# Without it every box would score 1.0, and the ranking, and so the AP, would follow the order of the
# images. That is why mAP is best read next to precision and recall, and compared only on the same
# split; lab 6 builds AP by hand and shows the effect.

# %% [markdown]
# ## Per category
#
# The headline figures are class-agnostic: the task is "find nutrition tables". The dataset also names
# four kinds of table, and the model writes a label before each box, so COCO can score each label on
# its own. A category the model never names gets AP 0 even if its boxes are right.

# %%
per_category = pd.concat(
    {name: report.per_category.set_index("category") for name, report in reports.items()}, axis=1
)
per_category.round(3)

# %% [markdown]
# Categories with few tables in the held-out images have noisy figures; the class-agnostic table
# above is the one to compare models with.

# %% [markdown]
# ## Best, typical and worst images
#
# Numbers summarise; images explain. We rank the held-out images by the fine-tuned model's IoU and
# show the two best, the two worst, and, among the others, the two closest to the median.

# %%
per_image = after.per_image.reset_index(drop=True)
ranked = per_image.sort_values("iou", ascending=False, kind="stable").index.tolist()
middle = per_image.loc[ranked[2:-2], "iou"]
chosen = {
    "best": ranked[:2],
    "typical": (middle - per_image["iou"].median())
    .abs()
    .sort_values(kind="stable")
    .index[:2]
    .tolist(),
    "worst": ranked[-2:],
}
pd.DataFrame(
    [
        {
            "shown as": kind,
            "image_id": per_image.loc[index, "image_id"],
            "IoU": round(per_image.loc[index, "iou"], 3),
        }
        for kind, indices in chosen.items()
        for index in indices
    ]
)

# %% mystnb={"figure": {"caption": "The fine-tuned model's two best (left), two typical (middle) and two worst (right) held-out images. Ground truth is solid blue, predictions dashed orange.", "name": "fig-06-gallery"}, "image": {"alt": "Six held-out product photos in three columns (best, typical, worst), each with the true nutrition-table boxes in solid blue and the fine-tuned model's boxes in dashed orange"}}
gallery = [(kind, chosen[kind][row]) for row in range(2) for kind in chosen]  # one column per kind
viz.plot_prediction_gallery(
    [eval_split[index] for _, index in gallery],
    [fine_tuned_predictions[index] for _, index in gallery],
    titles=[f"{kind}: {fine_tuned_predictions[index].image_id}" for kind, index in gallery],
    num_columns=3,
)

# %% [markdown]
# {numref}`fig-06-gallery` puts faces to the histogram: the left column shows the model at its best,
# the right column where to look for the next improvement.

# %% [markdown]
# ## Failure analysis
#
# ### Answers with no box
#
# A parse failure scores 0 whatever the model "meant", so it is worth knowing why answers fail
# (chapter 2 names the kinds):

# %%
failure_kinds = pd.DataFrame(
    {name: pd.Series(report.failure_reasons, dtype="int64") for name, report in reports.items()}
)
failure_kinds.fillna(0).astype(
    int
) if not failure_kinds.empty else "no parse failures in either model"

# %%
failed = [prediction for prediction in fine_tuned_predictions if prediction.is_parse_failure][:3]
examples = pd.DataFrame(
    {
        "image_id": [prediction.image_id for prediction in failed],
        "reason": [prediction.failure_reason for prediction in failed],
        "answer (its last 60 characters)": [
            (prediction.answer_text or "")[-60:] for prediction in failed
        ],
    }
)
examples if failed else "The fine-tuned model gave at least one box in every answer."

# %% [markdown]
# The end of a failing answer says what went wrong. "no box found" means the model left the format.
# "truncated box" means generation stopped at `callbacks.max_new_tokens` inside a box: either the
# answer was longer than the budget (several tables: raise the budget), or the model never closed
# the box, as an undertrained model does when it repeats a digit (train longer).
#
# ### Several tables in one image
#
# An answer holds one group per box, so an image with two tables needs two groups. Grouping images by
# their number of tables shows whether the model writes enough of them:

# %%
by_count = per_image.groupby("num_ground_truth").agg(
    images=("iou", "size"),
    mean_iou=("iou", "mean"),
    mean_predicted_boxes=("num_predicted", "mean"),
    share_with_too_few_boxes=(
        "num_predicted",
        lambda predicted: (predicted < per_image.loc[predicted.index, "num_ground_truth"]).mean(),
    ),
)
single = by_count.loc[1, "mean_iou"] if 1 in by_count.index else float("nan")
multiple = per_image.loc[per_image["num_ground_truth"] > 1, "iou"].mean()
glue("single_table_iou", f"{single:.3f}", display=False)
glue("multi_table_iou", f"{multiple:.3f}", display=False)  # nan: no image has more than one table
by_count.round(3)

# %% [markdown]
# For the fine-tuned model, mean IoU is {glue:text}`single_table_iou` on images with one table and
# {glue:text}`multi_table_iou` on images with more ("nan" when no held-out image has more than one).
# An image whose answer holds fewer boxes than tables is capped below 1 however well the boxes it
# gives are placed.
#
# ### Small tables
#
# A small table covers few image patches, so the model sees it in fewer tokens (chapter 1 measured
# table sizes). We split the images into thirds by the mean area of their tables:

# %%
table_area = pd.Series(
    [
        stats["area_fraction"] / stats["num_boxes"]
        for stats in map(
            dataset_stats.describe_record_boxes,
            eval_split.select_columns(["width", "height", "objects"]),
        )
    ],
    name="mean table area (fraction of the image)",
)
size_third = pd.qcut(table_area.rank(method="first"), 3, labels=["small", "medium", "large"])
by_size = pd.DataFrame(
    {
        name: report.per_image["iou"].groupby(size_third.to_numpy(), observed=True).mean()
        for name, report in reports.items()
    }
)
by_size.insert(
    0, "largest table area", table_area.groupby(size_third.to_numpy(), observed=True).max()
)
glue("small_iou", f"{by_size.loc['small', 'fine-tuned']:.3f}", display=False)
glue("large_iou", f"{by_size.loc['large', 'fine-tuned']:.3f}", display=False)
by_size.round(3)

# %% [markdown]
# The fine-tuned model's mean IoU is {glue:text}`small_iou` on the third of the images with the
# smallest tables and {glue:text}`large_iou` on the third with the largest. IoU is also harsher on
# small boxes: the same few pixels of error are a larger share of a small box.

# %% [markdown]
# ## Merging the adapter
#
# For serving, the adapter can be folded into the base weights: each adapted layer becomes
# `W + (alpha / r) * B @ A`, PEFT's `merge_and_unload` returns a plain `Qwen2VLForConditionalGeneration`,
# and inference no longer needs PEFT or the extra matrix products.
#
# With QLoRA there is a trap. The frozen weights are stored in 4 bits, and merging into them would
# add the small update `B @ A` to a 4-bit weight and round the sum back to 16 levels: most of what
# training learned would be rounded away, silently. `merge_lora` therefore loads the base
# **unquantised**, merges there, saves the result, and then checks it: on held-out images, the
# merged model's logits at every position of base + adapter's answers must agree with theirs within
# the rounding of the weights' dtype. That tolerance follows the dtype because a 16-bit merge rounds
# each sum once more: bf16 keeps 8 bits of mantissa, so logits near 10 move by a few hundredths in a
# perfectly correct merge, while float32 agrees to about 1e-4 of the logit scale. An answer that
# differs while the logits agree is a near tie that rounding broke; the report lists it.

# %% [markdown]
# ```{literalinclude} ../vlmlib/merging.py
# :pyobject: merge_lora
# ```

# %% [markdown]
# Both models evaluated above are done with, and the merge loads its own unquantised copy. Freeing
# them first keeps one model at a time on the GPU.

# %%
del base_model, fine_tuned_model  # both 4-bit models, and the trainer if this page trained
memory.free_memory()
merge_report = merging.merge_lora(
    run_dir,
    "outputs/chapter06_merged",
    num_check_records=num_merge_check_records,
    max_new_tokens=config.callbacks.max_new_tokens,
    overwrite=True,
)  # this page's own folder from its last run
glue("merge_num_identical", merge_report.num_identical, display=False)
glue("merge_num_checked", merge_report.num_checked, display=False)
glue("merge_max_logit_difference", f"{merge_report.max_logit_difference:.1e}", display=False)
glue("merge_tolerance", f"{merge_report.tolerance:.1e}", display=False)
glue("merge_dtype", str(merge_report.dtype), display=False)
pd.Series(
    {
        "saved to": str(merge_report.output_dir),
        "answers checked": merge_report.num_checked,
        "answers identical": merge_report.num_identical,
        "largest logit difference": f"{merge_report.max_logit_difference:.1e}",
    }
)

# %% [markdown]
# In this run {glue:text}`merge_num_identical` of {glue:text}`merge_num_checked` answers of the
# merged model are identical to those of base + adapter, and the two models' logits differ by at
# most {glue:text}`merge_max_logit_difference`, against the {glue:text}`merge_tolerance` that
# {glue:text}`merge_dtype` rounding explains. A difference above that tolerance means the merge
# went wrong: do not use the folder.
#
# What the check proves, and what it does not: it proves the merge itself, that the saved model
# computes what base + adapter computed, on the same unquantised base. Under the full profile the
# adapter was *trained* on the 4-bit base, so the merged bf16 model can answer slightly differently
# from the QLoRA model that was evaluated above; to measure that gap, evaluate the merged folder too
# (`vlmlib evaluate --model outputs/merged`) and compare the reports.

# %% [markdown]
# ## Summary
#
# - One-to-one matching turns boxes into scores; mean IoU, precision, recall and F1 at IoU 0.5, and the sweep, all build on it.
# - COCO mAP ranks boxes by the answer's confidence; read it next to precision and recall, on the same split.
# - Zero-shot and fine-tuned models are compared on the same images, in one table and per category.
# - Failures come in kinds: answers with no box, too few boxes for several tables, small tables.
# - Merge LoRA into an unquantised base, never into 4-bit weights, and check the merged model's answers.
#
# ## Exercises
#
# ```{exercise}
# :label: ex-06-max-new-tokens
# Evaluate the fine-tuned model again with `callbacks.max_new_tokens` halved
# (`evaluation.evaluate_model(..., config=vlmlib.config.with_overrides(config, ["callbacks.max_new_tokens=24"]))`). Which
# figure moves first, and why?
# ```
#
# ```{solution} ex-06-max-new-tokens
# :class: dropdown
# The parse-failure rate, through "truncated box": answers for images with several tables are the
# longest, so they are cut first, and each cut answer loses its last box (or all of them). Recall and
# mean IoU fall with it; precision barely moves, since the boxes that remain are the same.
# ```
#
# ```{exercise}
# :label: ex-06-lab
# Lab 6 (`labs/lab_06_evaluation.ipynb`) asks you to write IoU, one-to-one matching with precision
# and recall, and COCO's average precision yourself, and to compare them with `vlmlib.evaluation`.
# ```
#
# ## References
#
# Qwen2-VL and its grounding format: {cite}`wang2024qwen2vl`. LoRA and merging: {cite}`hu2021lora`.
# QLoRA: {cite}`dettmers2023qlora`. The dataset: {cite}`openfoodfacts2024nutrition`. The full list is in
# {doc}`../book/references`.
