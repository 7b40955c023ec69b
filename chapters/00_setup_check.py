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
# # Check your setup
#
# ```{note}
# The outputs on this page were produced with the **{glue:text}`setup_profile`** profile.
# ```
#
# This short page proves that your machine can run the course: it imports `vlmlib`, loads the
# configuration for your profile, builds (or finds in the cache) the model and processor, loads one
# training record and draws its nutrition-table box. If every cell below ran, the chapters will too.
#
# **Learning objectives**
#
# - Load the course configuration for a profile with `vlmlib.config.load_config`.
# - Build or load the model and processor the chapters use.
# - Draw a record's ground-truth box on its image.

# %% [markdown]
# ## Setup
#
# One cell for imports and the configuration. `load_config()` reads `VLM_PROFILE` (`tiny` unless you set it).

# %%
from myst_nb import glue

from vlmlib import data, models, viz
from vlmlib.config import load_config

config = load_config()
glue("setup_profile", config.profile, display=False)
config.profile

# %% [markdown]
# ## The model and the processor
#
# `load_model_and_processor` gives the same two objects under both profiles. Under `tiny`, the first
# call builds them (a few seconds) and caches them on disk; under `full`, it downloads Qwen2-VL-2B-Instruct.

# %%
model, processor = models.load_model_and_processor(config)
counts = models.count_parameters(model)
print(f"parameters: {counts.total:,} in all")
print(f"  vision tower   {counts.vision_tower:>13,}")
print(f"  patch merger   {counts.patch_merger:>13,}")
print(f"  language model {counts.language_model:>13,}")

# %% [markdown]
# Both profiles share the tokenizer's vocabulary and special tokens, so a box answer is split into the
# same tokens: one token per digit.

# %%
answer = "<|box_start|>(120,340),(560,910)<|box_end|>"
processor.tokenizer.tokenize(answer)

# %% [markdown]
# ## One record, with its box
#
# `load_configured_splits` returns the train and eval splits, checked for bad records. Under `tiny`
# they are the synthetic copy in the Hub's schema, generated into the cache on first use.

# %%
splits = data.load_configured_splits(config)
record = splits["train"][0]
{key: record[key] for key in ("image_id", "width", "height", "objects")}

# %% [markdown]
# The blue box is the ground truth, drawn from `objects.bbox` ([y_min, x_min, y_max, x_max], 0-1).

# %%
viz.plot_records_with_boxes([splits["train"][index] for index in range(3)], num_columns=3)

# %% [markdown]
# ## Summary
#
# - `load_config()` picked the profile and its settings.
# - The model and processor loaded, and the tokenizer splits box coordinates digit by digit.
# - A record loaded in the Hub schema, and its box was drawn where the table is.
