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
# # 1. Dataset EDA: what the model will learn from

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
The outputs on this page were produced with the **tiny** profile, from a synthetic copy of the
dataset.
```
""",
)
show_profile_note(
    "full",
    """
```{note}
The outputs on this page were produced with the **full** profile, from the Hub dataset
`openfoodfacts/nutrition-table-detection`.
```
""",
)

# %% [markdown]
# **Learning objectives**
#
# - Load the nutrition-table dataset through `vlmlib` and inspect its features, splits and records.
# - Convert a box between the three conventions the course uses: the Hub's, pixels, and Qwen2-VL's grid.
# - Measure image sizes, boxes per image, box coverage, shapes, positions and categories.
# - Derive the pixel budget, the prompt and the answer length for training from those measurements.
#
# Fine-tuning teaches a model whatever its data shows it, including the data's quirks. Before
# touching the model we look at what it will learn from: how big the photos are, how many tables
# each holds, where they sit and how large they are. Each measurement ends in a decision for
# training, collected at the end of the page as settings computed from the data.

# %% [markdown]
# ## Setup
#
# One cell for imports and the configuration. Library warnings (for example about dropped records)
# are printed as plain lines, so they show on the page instead of disappearing into a log.

# %%
import logging
import sys

import datasets
import pandas as pd
import transformers
from myst_nb import glue

from vlmlib import boxes, data, dataset_stats, models, sources, viz
from vlmlib.config import load_config

# Library warnings go to stdout, as plain lines on the page; progress bars are noise there.
logging.basicConfig(
    level=logging.WARNING, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s"
)
datasets.disable_progress_bars()
transformers.utils.logging.disable_progress_bar()

config = load_config()
config.profile

# %% [markdown]
# ## Loading the data
#
# The data is Open Food Facts' nutrition-table detection set {cite}`openfoodfacts2024nutrition`:
# product photos, each with the boxes of its nutrition tables. `load_configured_splits` returns the
# configured train and eval splits, already checked for bad records (next section). Under `tiny`
# they are a synthetic copy in the Hub's exact schema, generated on first use.

# %%
splits = data.load_configured_splits(config)
splits

# %% [markdown]
# Every record has the same features. `bbox` holds one box per table, and the two `category`
# lists say what kind of table each box is.

# %%
splits["train"].features

# %% [markdown]
# A record is a dict. Its `image` is a decoded PIL image; the rest is plain data:

# %%
record = splits["train"][0]
{key: value for key, value in record.items() if key != "image"}

# %% tags=["remove-input"] mystnb={"markdown_format": "myst"}
show_profile_note(
    "tiny",
    """
```{admonition} The tiny profile's synthetic data
:class: tip
Under `tiny`, each image is a coloured product label with a logo, some fake text, and one to
three tables drawn at known places, so every box is exact. The sizes, counts and categories are
chosen to look like the Hub dataset's, not measured from it: the numbers on this page describe
the synthetic data. The `full` profile runs the same cells on the real photos.
```
""",
)

# %% [markdown]
# ## Bad records
#
# A wrong box teaches the model a wrong place, silently. `find_record_problems` names what is wrong
# with a record; here, a copy of the record above with its box turned upside down:

# %%
upside_down = [[0.9, 0.2, 0.1, 0.6]]  # y_min > y_max
broken = {**record, "objects": {**record["objects"], "bbox": upside_down}}
data.find_record_problems(broken)

# %% [markdown]
# `clean_split` runs that check on every record, drops the fatal ones, mends the rest (a
# coordinate a hair outside 0-1 is clamped) and counts both. Here it is on the raw training split:

# %%
source = sources.resolve_sources(config)  # the Hub under full, the synthetic copy under tiny
raw_train = data.load_split(config.data.train_split, source.dataset_id, source.dataset_path)
_, report = data.clean_split(raw_train, policy="drop", source="train")
report.summary()

# %% [markdown]
# ## Three box conventions
#
# The same rectangle appears in three forms in this course, and every variable's name says which:
#
# | name | order | units | used for |
# | --- | --- | --- | --- |
# | `box_hub` | `[y_min, x_min, y_max, x_max]` | fractions of the image, 0 to 1 | the dataset's `bbox` |
# | `box_xyxy` | `(x1, y1, x2, y2)` | pixels | drawing, IoU |
# | `box_qwen` | `(x1, y1, x2, y2)` | integers in [0, 1000), so 0 to 999 | Qwen2-VL's answers {cite}`wang2024qwen2vl` |
#
# The conversion to the model's grid puts x first, multiplies by 1000 and truncates, as Qwen2-VL was
# trained: `0.6789` becomes `678` (not `679`), and the far edge `1.0` becomes `999`, never `1000`:
#
# ```{literalinclude} ../vlmlib/boxes.py
# :pyobject: convert_hub_box_to_qwen
# ```
#
# Here is the record's first box in all three forms:

# %%
box_hub = record["objects"]["bbox"][0]
box_xyxy = boxes.convert_hub_box_to_xyxy(box_hub, record["width"], record["height"])
pd.Series(
    {
        "box_hub": [round(value, 3) for value in box_hub],
        "box_xyxy": [round(value, 1) for value in box_xyxy],
        "box_qwen": list(boxes.convert_hub_box_to_qwen(box_hub)),
    },
    name="the record's first box",
).to_frame()

# %% [markdown]
# The Qwen form does not depend on the image size: the grid is relative, so the model never needs
# to know how many pixels the original photo had.

# %% [markdown]
# ## Looking at the data
#
# Numbers come later; first, six records with their boxes drawn in. The per-image table that
# `compute_image_stats` returns (used throughout the page) lets us pick three images with one table
# and three with several.

# %%
image_stats = dataset_stats.compute_image_stats(splits["train"])
num_boxes = image_stats["num_boxes"]
single = image_stats.index[num_boxes == 1][:3]
multiple = image_stats.index[num_boxes > 1][:3]
examples = [splits["train"][int(index)] for index in [*single, *multiple]]

# %% mystnb={"figure": {"caption": "Six training records with their ground-truth boxes (solid blue) and categories; under each image, its boxes on Qwen2-VL's [0, 1000) grid.", "name": "fig-01-examples"}, "image": {"alt": "Six product photos, three with one nutrition table and three with several, each table outlined by a blue box labelled with its category"}}
viz.plot_record_grid(examples, num_columns=3)

# %% [markdown]
# The boxes in {numref}`fig-01-examples` fit the tables tightly, and where there are several tables
# each has its own box and category: the answer the model learns must list them all.

# %% [markdown]
# ## Browsing the records
#
# Summary plots hide odd annotations; browsing finds them. In JupyterLab, the explorer below has a
# slider to pick a record and a checkbox to hide the boxes (to judge a box, look at the table
# without it first). On this web page there is no Python behind it, so it shows its first view.

# %% mystnb={"image": {"alt": "The record explorer's first view: one training photo with its nutrition-table box, under a record slider and a show-boxes checkbox"}}
num_browsable = min(50, len(splits["train"]))
viz.build_record_explorer([splits["train"][index] for index in range(num_browsable)])

# %% [markdown]
# Under the image, each box is written in the model's grid coordinates, the form of the training answer.

# %% [markdown]
# ## Image sizes
#
# Qwen2-VL's processor resizes every image into a {term}`pixel budget`, so the spread of sizes says
# how much each photo will be shrunk. `compute_image_stats` reads only the `width` and `height`
# fields, never the pixels, so it covers the whole split in a moment:

# %%
size_columns = ["width_px", "height_px", "num_pixels", "aspect_ratio"]
image_stats[size_columns].describe().round(2)

# %% mystnb={"figure": {"caption": "Widths and heights of the training images.", "name": "fig-01-sizes"}, "image": {"alt": "Scatter plot of the training images' widths against their heights in pixels"}}
viz.plot_size_histogram(image_stats)

# %% tags=["hide-input"]
glue("eda_median_width", f"{image_stats['width_px'].median():.0f}", display=False)
glue("eda_median_height", f"{image_stats['height_px'].median():.0f}", display=False)
glue("eda_share_portrait", f"{(image_stats['aspect_ratio'] < 1).mean():.0%}", display=False)

# %% [markdown]
# The median image is {glue:text}`eda_median_width` x {glue:text}`eda_median_height` px
# ({numref}`fig-01-sizes`), and {glue:text}`eda_share_portrait` of the images are taller than wide:
# the budget, not the photo, will decide how many image tokens each costs.

# %% [markdown]
# ## Boxes per image

# %% mystnb={"figure": {"caption": "How many nutrition tables each training image holds.", "name": "fig-01-boxes-per-image"}, "image": {"alt": "Bar chart of how many training images hold one, two, three or more nutrition tables"}}
box_counts = num_boxes.value_counts().sort_index().to_dict()
viz.plot_count_bars(
    box_counts, xlabel="boxes in the image", ylabel="number of images", title="Boxes per image"
)

# %% tags=["hide-input"]
glue("eda_share_multi", f"{(num_boxes > 1).mean():.0%}", display=False)
glue("eda_max_boxes", int(num_boxes.max()), display=False)

# %% [markdown]
# Most images hold one table, but {glue:text}`eda_share_multi` hold more, up to
# {glue:text}`eda_max_boxes` ({numref}`fig-01-boxes-per-image`): a model trained to write one box
# would be wrong on all of those, so the prompt asks for *every* table.

# %% [markdown]
# ## Box area coverage
#
# How much of the image do the tables cover? A table that fills half the photo keeps many pixels
# after resizing; one that covers 2% may shrink to a handful of image tokens.

# %% mystnb={"figure": {"caption": "Share of each image covered by its nutrition tables.", "name": "fig-01-coverage"}, "image": {"alt": "Histogram of the share of each image that its nutrition tables cover"}}
coverage = image_stats["area_fraction"]
viz.plot_histogram(
    coverage,
    xlabel="area covered by boxes (fraction of image)",
    ylabel="number of images",
    title="Box area coverage",
    markers={"median": coverage.median()},
)

# %% tags=["hide-input"]
glue("eda_median_coverage", f"{coverage.median():.0%}", display=False)
glue("eda_p10_coverage", f"{coverage.quantile(0.1):.1%}", display=False)

# %% [markdown]
# Tables cover a median {glue:text}`eda_median_coverage` of their image, and a tenth of the images
# less than {glue:text}`eda_p10_coverage` ({numref}`fig-01-coverage`): those small tables set the
# pixel budget below.

# %% [markdown]
# ## Box shapes and positions
#
# `compute_box_stats` gives one row per box: corners, size, centre and aspect ratio.

# %%
box_stats = dataset_stats.compute_box_stats(splits["train"])
shape_columns = ["width_fraction", "height_fraction", "area_fraction", "aspect_ratio"]
box_stats[shape_columns].describe().round(3)

# %% [markdown]
# **Aspect ratios.** Width over height in pixels, on a log scale so that a box twice as wide as tall
# sits as far from 1 as one twice as tall as wide.

# %% mystnb={"figure": {"caption": "Aspect ratios of the boxes (width / height in pixels).", "name": "fig-01-aspect"}, "image": {"alt": "Histogram of the boxes' aspect ratios, width over height in pixels"}}
aspect_ratio = box_stats["aspect_ratio"]
viz.plot_histogram(
    aspect_ratio,
    xlabel="width / height (log scale)",
    ylabel="number of boxes",
    title="Box aspect ratios",
    is_log_x=True,
    markers={"square": 1.0},
)

# %% tags=["hide-input"]
glue("eda_aspect_low", f"{aspect_ratio.quantile(0.05):.2f}", display=False)
glue("eda_aspect_high", f"{aspect_ratio.quantile(0.95):.2f}", display=False)

# %% [markdown]
# Nine boxes in ten have an aspect ratio between {glue:text}`eda_aspect_low` and
# {glue:text}`eda_aspect_high` ({numref}`fig-01-aspect`): tables come both tall and wide, so the
# model cannot assume a shape.
#
# **Positions.** Where do the box centres fall? If they crowded in one spot, always answering that
# spot would already score well, and a low training loss would mean little.

# %% mystnb={"figure": {"caption": "Where box centres fall in the image (top of the image at the top).", "name": "fig-01-centres"}, "image": {"alt": "Scatter plot of where box centres fall in the image, with the image's top at the top"}}
viz.plot_box_centre_heatmap(box_stats)

# %% tags=["hide-input"]
for axis_name in ("x", "y"):
    centres = box_stats[f"centre_{axis_name}"]
    glue(f"eda_centre_{axis_name}_low", f"{centres.quantile(0.25):.2f}", display=False)
    glue(f"eda_centre_{axis_name}_high", f"{centres.quantile(0.75):.2f}", display=False)

# %% [markdown]
# The middle half of the centres spans x from {glue:text}`eda_centre_x_low` to
# {glue:text}`eda_centre_x_high` and y from {glue:text}`eda_centre_y_low` to
# {glue:text}`eda_centre_y_high` of the image ({numref}`fig-01-centres`): the tables are spread
# out, so the model has to look for them rather than remember one place (the exercise
# {ref}`ex-01-constant-guess` below puts a number on how little a constant guess gets).
#
# **Sizes.** Box width against height, as fractions of the image, one colour per category:

# %% mystnb={"figure": {"caption": "Box widths and heights (fractions of the image) by category.", "name": "fig-01-box-sizes"}, "image": {"alt": "Scatter plot of box widths against heights as fractions of the image, coloured by category"}}
viz.plot_box_size_scatter(box_stats)

# %% [markdown]
# Categories differ in size ({numref}`fig-01-box-sizes`): the small kinds cluster near the origin,
# and those are the boxes a tight pixel budget hurts first.

# %% [markdown]
# ## Categories
#
# Each box has one of four categories. The model writes the category as the box's label, so rare
# ones are labels it sees little of.

# %% mystnb={"figure": {"caption": "Boxes per category in the training split.", "name": "fig-01-categories"}, "image": {"alt": "Bar chart of the number of boxes of each category in the training split"}}
category_counts = box_stats["category_name"].value_counts().to_dict()
viz.plot_count_bars(
    category_counts, xlabel="category", ylabel="number of boxes", title="Categories"
)

# %%
box_stats.groupby("category_name").agg(
    boxes=("image_id", "size"),
    images=("image_id", "nunique"),
    median_area=("area_fraction", "median"),
    median_aspect_ratio=("aspect_ratio", "median"),
).sort_values("boxes", ascending=False).round(3)

# %% [markdown]
# ## Do train and eval look alike?
#
# An evaluation split drawn from a different distribution would measure something other than what
# training taught. The same statistics, side by side:


# %%
def summarise_split(stats: pd.DataFrame) -> dict[str, str]:
    """Return the headline numbers of one split's image statistics."""
    return {
        "images": f"{len(stats)}",
        "median width (px)": f"{stats['width_px'].median():.0f}",
        "median height (px)": f"{stats['height_px'].median():.0f}",
        "with 2+ boxes": f"{(stats['num_boxes'] > 1).mean():.1%}",
        "median coverage": f"{stats['area_fraction'].median():.1%}",
    }


eval_image_stats = dataset_stats.compute_image_stats(splits["eval"])
pd.DataFrame({"train": summarise_split(image_stats), "eval": summarise_split(eval_image_stats)})

# %% [markdown]
# ## What this means for training
#
# Every measurement above bears on a setting. `recommend_training_settings` turns them into
# numbers: the smallest {term}`pixel budget` that keeps small tables at two {term}`image tokens <image token>`
# across or more, the image tokens that budget costs, the prompt, the box order, the generation
# length and the sequence length. It needs the processor only for its current budget and its tokenizer.

# %%
processor = models.load_processor(config)
recommendations = dataset_stats.recommend_training_settings(
    splits["train"], processor, prompt=config.data.prompt
)
recommendations.to_frame().set_index("setting")

# %% tags=["hide-input"]
wanted_new_tokens = recommendations.recommended_max_new_tokens
configured_new_tokens = config.callbacks.max_new_tokens
glue("eda_recommended_max_pixels", f"{recommendations.recommended_max_pixels:,}", display=False)
glue("eda_current_max_pixels", f"{recommendations.max_pixels:,}", display=False)
glue("eda_tokens_median", f"{recommendations.recommended_image_tokens_median:.0f}", display=False)
glue("eda_max_new_tokens", wanted_new_tokens, display=False)
glue("eda_config_max_new_tokens", configured_new_tokens, display=False)

# %% [markdown]
# **Pixel budget and image tokens.** The budget in use is {glue:text}`eda_current_max_pixels`
# pixels; the data calls for {glue:text}`eda_recommended_max_pixels`, which costs a median of
# {glue:text}`eda_tokens_median` image tokens per image. A larger budget buys nothing for the small
# tables and costs memory on every step; a smaller one shrinks them below two tokens across.
# Chapter 2 shows how the budget becomes tokens.
#
# **The prompt.** Because images can hold several tables, the prompt asks for every one:

# %%
config.data.prompt

# %% [markdown]
# **Multi-box answers.** The answer for the record with the most boxes shows what the model must
# write: one group per table, in the record's order. It is printed over several lines here; the
# real answer is a single line.

# %%
most_boxes = splits["train"][int(num_boxes.idxmax())]
answer = data.format_answer(most_boxes["objects"])
print(
    answer.replace("<|object_ref_end|>", "<|object_ref_end|>\n  ").replace(
        "<|box_end|>", "<|box_end|>\n"
    )
)

# %% [markdown]
# Generating it takes {glue:text}`eda_max_new_tokens` new tokens with the margin above; the
# configured `callbacks.max_new_tokens` is {glue:text}`eda_config_max_new_tokens`. If the
# configured number is the smaller of the two, raise it: otherwise the answers of images with the
# most tables are cut off before their last box closes.

# %% [markdown]
# ## Summary
#
# - `load_configured_splits` gave checked train and eval splits in the Hub schema; `clean_split`
#   counts what it drops or mends.
# - A box is `box_hub` in the data, `box_xyxy` for drawing and `box_qwen` in the model's answers.
# - Image sizes, box counts, coverage, shapes, positions and categories are a few lines each with
#   `dataset_stats` and `viz`.
# - The data, not habit, sets the pixel budget, the prompt, the box order and the generation length.
#
# ## Exercises
#
# ```{exercise} A constant guess
# :label: ex-01-constant-guess
# Using `box_stats`, build the "average box" (the mean of each corner) and compute its IoU with
# every ground-truth box with `vlmlib.metrics.compute_iou` (both in the same convention). What mean
# IoU does a model that always answers this box get? Any fine-tuned model must beat it.
# ```
#
# ```{solution-start} ex-01-constant-guess
# :class: dropdown
# ```
#
# ```python
# from vlmlib import metrics
# corners = ["x_min", "y_min", "x_max", "y_max"]
# average_box = box_stats[corners].mean().tolist()
# ious = [metrics.compute_iou(average_box, row) for row in box_stats[corners].values.tolist()]
# sum(ious) / len(ious)
# ```
#
# Fractions of the image work as well as pixels here, as long as both boxes use the same
# convention, x first. The number is the baseline to quote next to any IoU in chapter 6.
#
# ```{solution-end}
# ```
#
# ```{exercise} A coarser budget
# :label: ex-01-budget
# Call `recommend_training_settings` again with `target_box_side_px=28` (one image token across
# instead of two). How do the recommended budget and the image tokens per image change, and what
# could that cost the small categories?
# ```
#
# ```{solution-start} ex-01-budget
# :class: dropdown
# ```
#
# Halving the side halves the scale, so the required area drops to about a quarter (the budget
# then bottoms out at `min_pixels` or at the photo's own size), and the image tokens with it. The
# small categories lose most: a table one token across is one vector for the model to find it by.
#
# ```{solution-end}
# ```
#
# ```{exercise} Lab 1
# :label: ex-01-lab
# Open `labs/lab_01_data.ipynb` in JupyterLab. You will write the box conversions, one image's box
# statistics and the training answer yourself, each with a self-check; see {doc}`../book/labs`.
# ```
#
# ```{solution} ex-01-lab
# :class: dropdown
# The solved lab is `solutions/lab_01_data.ipynb`.
# ```
#
# ## References
#
# The dataset is {cite}`openfoodfacts2024nutrition`; the [0, 1000) grounding grid is Qwen2-VL's
# {cite}`wang2024qwen2vl`. The full list is in {doc}`../book/references`.
