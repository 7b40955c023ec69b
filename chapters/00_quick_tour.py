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
# # 0. Quick tour: the whole pipeline on one page

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
data on the CPU. The full profile runs this page on a GPU; its time and memory there are
estimated on {doc}`the course's cost page <../book/costs>`.
```
""",
)
show_profile_note(
    "full",
    """
```{note}
The outputs on this page were produced with the **full** profile: Qwen2-VL-2B-Instruct and the
Open Food Facts dataset on a GPU. Its GPU time is an estimate, not a measurement: about 8 minutes
on an NVIDIA L4 and 5 on an A100, the longest cell (training) about 4 minutes on the L4, on a
card of 12 GB or more. The arithmetic is on {doc}`the course's cost page <../book/costs>`.
```
""",
)

# %% [markdown]
# This page runs the whole course once, with the choices the later chapters argue for, in a few
# lines per step: look at the data, ask the model before training, build the training batch, train
# LoRA adapters, evaluate, draw predictions, and merge the adapter. Each step links to the chapter
# that takes it apart. If this page runs on your machine, every chapter will.
#
# **Learning objectives**
#
# - Run the complete fine-tuning pipeline, from dataset to merged model, with `vlmlib`.
# - Name what each step does and which chapter explains it.
# - Compare the model before and after fine-tuning on the same held-out images.

# %% [markdown]
# ## Setup
#
# One configuration drives everything: `load_config("assistant_only")` is the profile's defaults
# (`VLM_PROFILE`, `tiny` unless set) with the loss on the answer only. On top of it, this page's
# budget: a short run, so that the tour takes minutes. A note that holds under one profile only
# (like the one above) is shown by `vlmlib.notes.show_profile_note`, under that profile alone.

# %%
from pathlib import Path

import pandas as pd
from myst_nb import glue

import vlmlib
from vlmlib import data, evaluation, inference, memory, merging, models, training, viz
from vlmlib.collators import IGNORE_INDEX, CollatorV3
from vlmlib.config import get_profile, load_config

vlmlib.quiet_progress_bars()
# This page's budget. Under full every step and every held-out answer costs GPU time:
# book/costs.md works out what each setting costs.
budget = {
    "tiny": [
        "training.max_steps=80",  # about 50 s of CPU
        "callbacks.iou_eval_every_steps=40",
    ],
    "full": [
        "training.max_steps=60",  # 480 images, under half an epoch
        "callbacks.iou_eval_every_steps=30",
        "callbacks.iou_eval_num_samples=16",
    ],
}[get_profile()]
num_eval_images = {"tiny": 32, "full": 16}[get_profile()]  # scored before and after training
config = load_config(
    "assistant_only", overrides=[*budget, "training.output_dir=outputs/quick_tour"]
)
config.profile

# %% [markdown]
# ## 1. The data
#
# Each record is a product photo with one or more boxes around nutrition tables
# ({doc}`01_dataset_eda` explores them).

# %%
splits = data.load_configured_splits(config)
pd.Series({name: len(split) for name, split in splits.items()}, name="records")

# %% mystnb={"image": {"alt": "A grid of product photos from the training split, each with a solid blue box around its nutrition table"}}
viz.plot_record_grid([splits["train"][index] for index in range(2)], num_columns=2)

# %% [markdown]
# ## 2. The model, before any fine-tuning
#
# Qwen2-VL reads the image and the prompt and answers in text ({doc}`02_model_understanding`).
# Here is its answer to a held-out image, and the boxes parsed from it.

# %%
model, processor = models.load_model_and_processor(config)
held_out = [splits["eval"][index] for index in range(6)]
zero_shot_answer = inference.generate_answers(
    model,
    processor,
    held_out[:1],
    max_new_tokens=config.callbacks.max_new_tokens,
)[0]
zero_shot_answer

# %% [markdown]
# The answer is already in Qwen2-VL's grounding format: one `<|box_start|>(x1,y1),(x2,y2)<|box_end|>`
# per object, in thousandths of the image's width and height. Fine-tuning teaches the model which
# objects this dataset means, and where exactly they are.

# %% tags=["remove-input"] mystnb={"markdown_format": "myst"}
show_profile_note(
    "tiny",
    """
```{note}
Under `tiny` the answer often holds one box too many, around the logo: the tiny model was
pretrained to box every object on a label ({doc}`../book/tiny_model`).
```
""",
)

# %% [markdown]
# ## 3. The training batch
#
# The collator turns records into a batch and decides which tokens the loss sees. `CollatorV3`
# with `assistant_only` trains on the answer and its closing `<|im_end|>` only ({doc}`03_collator_evolution`,
# {doc}`04_masking_comparison`).

# %%
batch = CollatorV3(processor)(held_out[:2])
trained_text = processor.tokenizer.decode(batch["input_ids"][0][batch["labels"][0] != IGNORE_INDEX])
num_trained = int((batch["labels"] != IGNORE_INDEX).sum())
print(f"{num_trained} of {batch['input_ids'].numel()} positions are trained")
print(f"example 0 trains on: {trained_text}")

# %% [markdown]
# ## 4. A short LoRA training run
#
# TRL's `SFTTrainer` with our collator trains small LoRA adapters; a callback measures IoU on
# held-out images while training ({doc}`05_training`). The run saves the adapter, the processor
# and the config in one folder.

# %%
run = training.train(config, model=model, processor=processor, splits=splits)
history = pd.DataFrame(run.log_history)
iou_rows = history[history["eval_mean_iou"].notna()]
iou_rows[["step", "eval_mean_iou", "eval_parse_failure_rate"]]

# %% [markdown]
# ## 5. Evaluation: before and after
#
# The same held-out images, scored the same way ({doc}`06_evaluation`): mean IoU with one-to-one
# matching, precision, recall and F1 at IoU 0.5, COCO mAP@0.5, and the share of answers that gave no
# box at all.

# %%
eval_split = splits["eval"].select(range(min(num_eval_images, len(splits["eval"]))))
fine_tuned_model = run.trainer.model
base_model, _ = models.load_model_and_processor(config)
zero_shot_report, _ = evaluation.evaluate_model(base_model, processor, eval_split, config)
fine_tuned_report, fine_tuned_predictions = evaluation.evaluate_model(
    fine_tuned_model, processor, eval_split, config
)
comparison = evaluation.compare_reports(
    {"zero-shot": zero_shot_report, "fine-tuned": fine_tuned_report}
)
glue("tour_zero_shot_iou", f"{zero_shot_report.mean_iou:.3f}", display=False)
glue("tour_fine_tuned_iou", f"{fine_tuned_report.mean_iou:.3f}", display=False)
glue("tour_num_eval", len(eval_split), display=False)
comparison[["mean IoU", "F1@0.5", "mAP@0.5", "parse failure rate"]]

# %% [markdown]
# On {glue:text}`tour_num_eval` held-out images, mean IoU went from {glue:text}`tour_zero_shot_iou`
# before fine-tuning to {glue:text}`tour_fine_tuned_iou` after.

# %% tags=["remove-input"] mystnb={"markdown_format": "myst"}
show_profile_note(
    "tiny",
    """
```{admonition} What the real model does
:class: tip
These numbers come from the tiny stand-in, fine-tuned for about a minute on synthetic labels. On
the real photos there is no published figure for Qwen2-VL-2B; its 7B sibling gives the scale.
Fine-tuned on this dataset and scored on its 123 validation images, Qwen2-VL-7B-Instruct reaches
a mean IoU of 0.771 with QLoRA and the loss on the answer only, up from 0.590 zero-shot
{cite}`abdullah2025qwen2vlnutrition`, and 0.82 with LoRA on the vision tower and the language
model {cite}`dehdashti2025qwen2vlnutrition`. Those runs trained for hours on a GPU; this page
trains for minutes, and each project computes its mean IoU its own way ({doc}`06_evaluation`).
The full profile runs this page on Qwen2-VL-2B-Instruct and shows its own numbers above.
```
""",
)

# %% [markdown]
# ## 6. Predictions on held-out images
#
# Ground truth is solid blue, the fine-tuned model's boxes dashed orange.

# %% mystnb={"image": {"alt": "Held-out product photos with the true nutrition-table boxes in solid blue and the fine-tuned model's boxes in dashed orange"}}
viz.plot_prediction_gallery(
    [eval_split[index] for index in range(6)],
    fine_tuned_predictions[:6],
    num_columns=3,
)

# %% [markdown]
# ## 7. Merge the adapter
#
# For serving, the adapter can be folded into the base weights. `merge_lora` loads the base model
# unquantised (merging into 4-bit weights would round the update away), merges, saves, and checks
# that the merged model's greedy answers equal those of base + adapter. The two models above are
# done with; freeing them first leaves the GPU's memory to the unquantised copy.

# %%
run_dir = run.output_dir
del run, model, fine_tuned_model, base_model  # the trainer, its optimizer and both 4-bit models
memory.free_memory()
report = merging.merge_lora(
    run_dir,
    Path(config.training.output_dir).with_name("quick_tour_merged"),
    num_check_records=4,
    max_new_tokens=config.callbacks.max_new_tokens,
    # The folder this page merged into on its last run; without it, merge_lora refuses.
    overwrite=True,
)
print(f"merged model: {report.output_dir}")
print(f"{report.num_identical} of {report.num_checked} answers identical")

# %% [markdown]
# The same pipeline runs from the command line (see the README):
#
# ```bash
# vlmlib train --config assistant_only --set training.max_steps=80 --output-dir outputs/quick_tour
# vlmlib evaluate --model outputs/quick_tour
# vlmlib predict --model outputs/quick_tour --image my_product.jpg --save-dir outputs/predictions
# vlmlib merge-lora --model outputs/quick_tour --output outputs/quick_tour_merged
# ```
#
# ## Summary
#
# - The data: product photos with boxes, loaded in the Hub's schema ({doc}`01_dataset_eda`).
# - The model answers in Qwen2-VL's grounding format, digit by digit ({doc}`02_model_understanding`).
# - Collator V3 trains on the answer only ({doc}`03_collator_evolution`, {doc}`04_masking_comparison`).
# - `SFTTrainer` with LoRA adapters, watched by an IoU callback ({doc}`05_training`).
# - One evaluation for every model; merge the adapter and check it answers the same ({doc}`06_evaluation`).
