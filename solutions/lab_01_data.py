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
# # Lab 1: boxes and box statistics
#
# This lab goes with chapter 1, "Dataset EDA". You will write the four small functions that turn the
# dataset's annotations into what the model is trained on:
#
# 1. **1.1** convert a Hub box to Qwen2-VL's grid of integers from 0 to 999 (warm-up);
# 2. **1.2** convert it back, and say what the round trip loses;
# 3. **1.3** compute one image's box statistics (the numbers behind chapter 1's plots);
# 4. **1.4** write the training answer for a record, in Qwen2-VL's grounding format.
#
# **How it works.** Each exercise is a code cell with a `TODO` and a `raise NotImplementedError`.
# Replace those two lines with your code, run the cell, then run the check cell below it. The check
# runs your function on a few named cases and prints how many passed; if one fails, it shows the
# input, the expected and the actual result, and a hint. "not attempted yet" means the
# `raise NotImplementedError` is still there.

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

# %% [markdown] tags=["solution"]
# > **This is the solved lab**, the single source of `labs/lab_01_data.ipynb`: `vlmlib make-labs`
# > replaces each `BEGIN SOLUTION` ... `END SOLUTION` region with a TODO and drops the cells tagged
# > `solution` (like this one).

# %% [markdown]
# ## Setup
#
# The same configuration and data as the chapters: `load_config()` reads `VLM_PROFILE` (`tiny`
# unless you set it), and `load_configured_splits` gives the checked train and eval splits.

# %%
from vlmlib import checks, data
from vlmlib.config import load_config
from vlmlib.tokens import (
    BOX_END_TOKEN,
    BOX_START_TOKEN,
    OBJECT_REF_END_TOKEN,
    OBJECT_REF_START_TOKEN,
)

config = load_config()
splits = data.load_configured_splits(config)
record = splits["train"][0]
print(
    f"profile {config.profile}: {len(splits['train'])} training records; "
    f"record {record['image_id']} "
    f"is {record['width']}x{record['height']} px"
)
record["objects"]

# %% [markdown]
# ## Exercise 1.1: from the Hub's box to Qwen's grid
#
# The Hub stores each box as `box_hub = [y_min, x_min, y_max, x_max]`, fractions of the image
# (0 to 1), **y first**. Qwen2-VL reads and writes boxes as `(x1, y1), (x2, y2)`, **x first**,
# on a grid of integers in [0, 1000): each value is the fraction times 1000, **truncated** (not
# rounded), so 0.6789 becomes 678 and the far edge 1.0 becomes 999, never 1000. Write
# `convert_hub_box_to_qwen`. The table at the top of `vlmlib/boxes.py` lists the three conventions;
# do not call `vlmlib.boxes.convert_hub_box_to_qwen` (that is the answer), but compare with it once
# your check passes.


# %% tags=["exercise"]
def convert_hub_box_to_qwen(box_hub: list[float]) -> tuple[int, int, int, int]:
    """Convert [y_min, x_min, y_max, x_max] in 0-1 to Qwen's (x1, y1, x2, y2) in [0, 1000)."""
    # BEGIN SOLUTION: which order does Qwen want, and what does truncating do to the edge 1.0?
    y_min, x_min, y_max, x_max = box_hub
    return tuple(min(int(value * 1000), 999) for value in (x_min, y_min, x_max, y_max))
    # END SOLUTION


# %%
checks.check_convert_hub_box_to_qwen(convert_hub_box_to_qwen)

# %% [markdown]
# ## Exercise 1.2: and back
#
# Parsing the model's answer needs the opposite direction. Write `convert_qwen_box_to_hub`, which
# returns `[y_min, x_min, y_max, x_max]` as floats between 0 and 1.


# %% tags=["exercise"]
def convert_qwen_box_to_hub(box_qwen: tuple[int, int, int, int]) -> list[float]:
    """Convert Qwen's (x1, y1, x2, y2) in [0, 1000) to [y_min, x_min, y_max, x_max] in 0-1."""
    # BEGIN SOLUTION: undo exercise 1.1 one step at a time: which order, which scale?
    x1, y1, x2, y2 = box_qwen
    return [y1 / 1000, x1 / 1000, y2 / 1000, x2 / 1000]
    # END SOLUTION


# %%
checks.check_convert_qwen_box_to_hub(convert_qwen_box_to_hub)

# %% [markdown]
# **Question.** Going to the grid and back does not always give the Hub's numbers exactly. By how much
# can a coordinate move, and how many pixels is that on a 4000 px wide photo? Write your answer here.

# %% [markdown] tags=["solution"]
# **Answer.** Truncating to the grid moves a coordinate down by less than one grid step, 0.001 of
# the image side (dividing by 1000 gives back the near edge of the grid cell). On a 4000 px side
# that is under 4 px: far below annotation noise, so the grid costs nothing in practice.

# %% [markdown]
# ## Exercise 1.3: one image's box statistics
#
# Chapter 1's plots come from one row of numbers per image. Write `describe_record_boxes`, which
# returns a dict with
#
# - `num_boxes`: how many boxes the record has;
# - `area_fraction`: the boxes' areas added up, as a fraction of the image (boxes do not overlap here);
# - `largest_box_aspect_ratio`: width over height **in pixels** of the box with the largest area
#   (the image's `width` and `height` are in the record); `0.0` if there is no box.
#
# `vlmlib.dataset_stats.compute_image_stats` applies the library's version to every record.


# %% tags=["exercise"]
def describe_record_boxes(record: dict) -> dict:
    """Return num_boxes, area_fraction and largest_box_aspect_ratio of one Hub-schema record."""
    # BEGIN SOLUTION: which numbers are fractions, and which need pixels (the record has both)?
    boxes_hub = record["objects"]["bbox"]
    if not boxes_hub:
        return {"num_boxes": 0, "area_fraction": 0.0, "largest_box_aspect_ratio": 0.0}
    areas = [(x_max - x_min) * (y_max - y_min) for y_min, x_min, y_max, x_max in boxes_hub]
    y_min, x_min, y_max, x_max = boxes_hub[areas.index(max(areas))]
    aspect_ratio = ((x_max - x_min) * record["width"]) / ((y_max - y_min) * record["height"])
    return {
        "num_boxes": len(boxes_hub),
        "area_fraction": sum(areas),
        "largest_box_aspect_ratio": aspect_ratio,
    }
    # END SOLUTION


# %%
checks.check_describe_record_boxes(describe_record_boxes)

# %% [markdown]
# ## Exercise 1.4: the training answer
#
# The model learns to write one group per box, in the format Qwen2-VL was pretrained on:
#
# ```text
# <|object_ref_start|>nutrition-table<|object_ref_end|><|box_start|>(120,340),(560,910)<|box_end|>
# ```
#
# Write `format_answer(objects)`, where `objects` is a record's `objects` field. Use your
# `convert_hub_box_to_qwen` and the token constants imported in the setup cell (`BOX_START_TOKEN`
# and friends), never the token strings typed by hand. Keep the boxes in the record's order, and put
# no spaces anywhere.


# %% tags=["exercise"]
def format_answer(objects: dict) -> str:
    """Return the target answer: one grounding group per box, in the record's order."""
    # BEGIN SOLUTION: what is one box's group made of (the example above)? Reuse exercise 1.1
    groups = []
    for box_hub, category_name in zip(objects["bbox"], objects["category_name"]):
        x1, y1, x2, y2 = convert_hub_box_to_qwen(box_hub)
        groups.append(
            f"{OBJECT_REF_START_TOKEN}{category_name}{OBJECT_REF_END_TOKEN}"
            f"{BOX_START_TOKEN}({x1},{y1}),({x2},{y2}){BOX_END_TOKEN}"
        )
    return "".join(groups)
    # END SOLUTION


# %%
checks.check_format_answer(format_answer)

# %% [markdown]
# ## What you built
#
# - Two conversions between the Hub's `[y_min, x_min, y_max, x_max]` fractions and Qwen's x-first
#   grid of integers from 0 to 999, and how little the grid's truncation costs.
# - The per-image statistics behind chapter 1's plots.
# - The exact text the model is trained to write; chapter 2 shows how the tokenizer splits it.
