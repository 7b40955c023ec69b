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
# # Lab 2: image tokens and answers
#
# This lab goes with chapter 2, "Model understanding". You will write the arithmetic and the parsing
# that sit on either side of the model:
#
# 1. **2.1** count the `<|image_pad|>` tokens of an image from the processor's `image_grid_thw` (warm-up);
# 2. **2.2** count them from the image size and the pixel budget alone, by redoing the processor's resize;
# 3. **2.3** parse a model answer into boxes;
# 4. **2.4** say why an answer gives no box.
#
# **How it works.** Each exercise is a code cell with a `TODO` and a `raise NotImplementedError`.
# Replace those two lines with your code, run the cell, then run the check cell below it. The check
# prints how many cases passed; if one fails, it shows the input, the expected and the actual
# result, and a hint. "not attempted yet" means the `raise NotImplementedError` is still there.

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
# The processor is all the first two exercises need: it loads in a second under both profiles.

# %%
import math
import re

from PIL import Image

from vlmlib import checks, models
from vlmlib.config import load_config

config = load_config()
processor = models.load_processor(config)
min_pixels, max_pixels = models.get_pixel_budget(processor)
print(f"profile {config.profile}: pixel budget {min_pixels:,} to {max_pixels:,} pixels")

# %% [markdown]
# ## Exercise 2.1: image tokens from the processor's grid
#
# The image processor returns `image_grid_thw`: one row per image, the number of 14x14 patches in
# time (1 for a still image), height and width. The patch merger then joins each 2x2 block of patches
# into one token. Here is the grid of a blank 300x200 px image:

# %%
image = Image.new("RGB", (300, 200), "white")
grid_thw = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][
    0
].tolist()
grid_thw

# %% [markdown]
# Write `count_image_tokens_from_grid(grid_thw)`, returning the number of `<|image_pad|>` tokens as an int.


# %% tags=["exercise"]
def count_image_tokens_from_grid(grid_thw: list[int]) -> int:
    """Return how many <|image_pad|> tokens an image gets from its (time, height, width) grid."""
    # TODO (exercise 2.1): how many patches are in the grid, and how many patches make one token?
    raise NotImplementedError("Exercise 2.1: write count_image_tokens_from_grid")


# %%
checks.check_count_image_tokens_from_grid(count_image_tokens_from_grid)

# %% [markdown]
# ## Exercise 2.2: image tokens from the size and the pixel budget
#
# Before cutting patches, the processor resizes the image so that both sides are multiples of 28
# (two patches) and the area lies between `min_pixels` and `max_pixels`, keeping the aspect ratio:
#
# 1. round each side to the nearest multiple of 28;
# 2. if the area is now above `max_pixels`: divide both **original** sides by
#    `beta = sqrt(width * height / max_pixels)` and round each **down** to a multiple of 28 (at least 28);
# 3. else if it is below `min_pixels`: multiply both original sides by `beta = sqrt(min_pixels / (width * height))`
#    and round each **up** to a multiple of 28.
#
# Each 28x28 block of the resized image is then one `<|image_pad|>` token. Write
# `count_image_tokens(width_px, height_px, min_pixels, max_pixels)`. Chapter 2, "From pixels to image
# tokens", walks through examples; `vlmlib.dataset_stats.compute_image_token_budget` is the answer.


# %% tags=["exercise"]
def count_image_tokens(width_px: int, height_px: int, min_pixels: int, max_pixels: int) -> int:
    """Return how many <|image_pad|> tokens Qwen2-VL's processor makes of an image this size."""
    factor = 28  # 2x2 patches of 14 px
    # TODO (exercise 2.2): follow the three steps above; which way does each step round?
    raise NotImplementedError("Exercise 2.2: write count_image_tokens")


# %%
checks.check_count_image_tokens(count_image_tokens)

# %% [markdown]
# **Question.** Under the `full` profile's budget (`max_pixels` = 501,760), how many image tokens do a
# 3024x4032 phone photo and a 1512x2016 copy of it cost? What does that tell you about downscaling
# photos before training?

# %% [markdown]
# ## Exercise 2.3: from an answer to boxes
#
# A fine-tuned model answers with one group per box,
# `<|object_ref_start|>nutrition-table<|object_ref_end|><|box_start|>(120,340),(560,910)<|box_end|>`,
# but a real answer can lose its special tokens (decoding with `skip_special_tokens=True`), stop in
# the middle of a box (`max_new_tokens` ran out), or hold numbers off the 0-1000 grid. Write
# `parse_boxes(text)`, returning a list of `(x1, y1, x2, y2)` tuples of ints, one per **valid** box
# in the order they appear: every coordinate from 0 to 1000, `x2 > x1` and `y2 > y1`. A regular
# expression with `re.finditer` is the tool; `vlmlib.parsing.parse_box_answer` is the full version.


# %% tags=["exercise"]
def parse_boxes(text: str) -> list[tuple[int, int, int, int]]:
    """Return every valid (x1, y1, x2, y2) box on the 0-1000 grid in the answer, in order."""
    # TODO (exercise 2.3): what does one box look like in the text, and which boxes are invalid?
    raise NotImplementedError("Exercise 2.3: write parse_boxes")


# %%
checks.check_parse_boxes(parse_boxes)

# %% [markdown]
# ## Exercise 2.4: why an answer gives no box
#
# Counting parse failures is one of chapter 6's metrics, and *why* they fail tells you what to fix.
# Write `describe_parse_failure(text)`, returning `None` when at least one valid box parses, else
# the first that applies of:
#
# - `"empty answer"`: nothing but whitespace;
# - `"all boxes rejected"`: whole boxes were found, but none is valid;
# - `"truncated box"`: the text ends inside a box, as when generation hits its token limit: an opening
#   `(` followed by a digit that is never closed, or a closed corner `(x,y)` followed by a comma;
# - `"no box found"`: anything else.
#
# Reuse your `parse_boxes`.


# %% tags=["exercise"]
def describe_parse_failure(text: str) -> str | None:
    """Return None if the answer holds a valid box, else why not (one of four short reasons)."""
    # TODO (exercise 2.4): which reason can be decided first? What does parse_boxes tell you?
    raise NotImplementedError("Exercise 2.4: write describe_parse_failure")


# %%
checks.check_describe_parse_failure(describe_parse_failure)

# %% [markdown]
# ## The model's own answers
#
# Time to read real answers. This cell asks the profile's model about two evaluation images and
# parses the answers with the library's parser (so it runs before you finish the exercises). Under
# `tiny` the pretrained tiny model answers in the grounding format, and boxes the logo as well as the
# tables (its pretraining asked for every object); under `full`, Qwen2-VL-2B-Instruct usually answers
# in the grounding format already.

# %%
import pandas as pd

from vlmlib import data, inference, parsing

model = models.load_model(config)
records = [data.load_configured_splits(config)["eval"][index] for index in range(2)]
answers = inference.generate_answers(
    model, processor, records, max_new_tokens=config.callbacks.max_new_tokens
)
pd.DataFrame(
    {
        "answer": answers,
        "failure": [parsing.parse_box_answer(answer).failure_reason for answer in answers],
    }
)

# %% [markdown]
# ## What you built
#
# - The processor's arithmetic: from an image's size and the pixel budget to its `<|image_pad|>` count.
# - A parser for grounding answers that skips truncated and invalid boxes instead of crashing.
# - A classifier of parse failures: the numbers chapter 6 reports.
