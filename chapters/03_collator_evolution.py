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
# # 3. Collators: deciding what the model learns
#
# ```{note}
# The outputs on this page were produced with the **{glue:text}`collators_profile`** profile.
# Nothing here trains a model, so the token counts are the same kind under both profiles; only the
# image sizes (and so the number of image tokens) differ.
# ```
#
# **Learning objectives**
#
# - Explain what a data collator does in a vision-language fine-tuning loop, and which tensor decides what is learned.
# - Compare three collators (V1, V2, V3) by the exact tokens each one trains on.
# - Find the answer's span on the *processed* token ids, and explain why measuring the prompt with the tokenizer alone goes wrong.
# - Check a collator against TRL's own completion-only collator.
#
# Chapter 2 showed how an image and a prompt become one sequence of tokens. Fine-tuning turns a batch
# of such sequences into a loss, and the collator decides, token by token, which positions count.
# Get it wrong and the model spends its training on predicting padding, image placeholders or the
# prompt it was given, and learns the boxes slowly or not at all.

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
from collections import Counter

import pandas as pd
import torch
from myst_nb import glue
from qwen_vl_utils import process_vision_info

import vlmlib
from vlmlib import collators, data, models, tokens, viz
from vlmlib.config import load_config

vlmlib.quiet_progress_bars()
config = load_config()
processor = models.load_processor(config)
splits = data.load_configured_splits(config)
glue("collators_profile", config.profile, display=False)

# %% [markdown]
# We take three training records with one, two and three tables, so that the answers (and the
# sequences) have different lengths and the batch needs padding.

# %%
train = splits["train"]
first_with = {}
for index, objects in enumerate(train["objects"]):
    first_with.setdefault(len(objects["bbox"]), index)
records = [train[first_with[count]] for count in sorted(first_with)[:3]]
pd.DataFrame(
    {
        "image_id": [r["image_id"] for r in records],
        "size (px)": [f"{r['width']}x{r['height']}" for r in records],
        "boxes": [len(r["objects"]["bbox"]) for r in records],
    }
)

# %% [markdown]
# ## What a collator returns
#
# A collator takes a list of dataset records and returns one batch. Ours build each record's chat
# (chapter 2), let the processor expand every image into its `<|image_pad|>` tokens, pad the
# sequences to one length, and add `labels`: a copy of `input_ids` in which every position that should
# not be learned is set to -100, the value PyTorch's cross-entropy skips.

# %%
batch = collators.CollatorV1(processor)(records)
pd.DataFrame(
    {
        "shape": [tuple(value.shape) for value in batch.values()],
        "dtype": [str(value.dtype) for value in batch.values()],
    },
    index=list(batch),
)

# %% [markdown]
# `pixel_values` holds one row of 1,176 numbers (3 channels x 2 frames x 14 x 14 pixels) per image
# patch, for all images together; `image_grid_thw` says how many patches each image has. `labels`
# has the shape of `input_ids`: that one tensor is what fine-tuning teaches.

# %% [markdown]
# ## V1: copy the input
#
# The simplest collator sets `labels = input_ids`:

# %% [markdown]
# ```{literalinclude} ../vlmlib/collators.py
# :pyobject: CollatorV1.__call__
# ```

# %% [markdown]
# To see what that means we give every position a role: padding, vision (the image's tokens), or the
# turn it belongs to (system, user, assistant), with `collators.find_token_roles`.

# %%
roles = collators.find_token_roles(batch["input_ids"], batch["attention_mask"], processor.tokenizer)


def count_trained_by_role(batch: dict[str, torch.Tensor]) -> Counter:
    """Count the positions with a label (not -100), by role, in the batch."""
    return Counter(
        role
        for row_roles, row_labels in zip(roles, batch["labels"].tolist())
        for role, label in zip(row_roles, row_labels)
        if label != collators.IGNORE_INDEX
    )


all_positions = Counter(role for row_roles in roles for role in row_roles)
trained = {"V1": count_trained_by_role(batch)}
pd.DataFrame({"positions": all_positions, "V1 trains on": trained["V1"]}).reindex(
    collators.TOKEN_ROLES
).fillna(0).astype(int)

# %% [markdown]
# V1 trains on every position: the model is asked to predict padding, every `<|image_pad|>`
# placeholder and the fixed system and user text, not only the answer.

# %% [markdown]
# ## V2: mask padding and the image
#
# V2 sets the padding and the three vision tokens (`<|vision_start|>`, `<|image_pad|>`,
# `<|vision_end|>`) to -100: predicting the next placeholder is meaningless, because the model never
# has to write an image. The Hugging Face cookbook's Qwen2-VL recipe does the same (its collator
# lists the three token ids by number). TRL's own collator, `DataCollatorForVisionLanguageModeling`
# {cite}`vonwerra2022trl`, which `SFTTrainer` uses for image data, does less: in the pinned TRL
# 1.16 it sets only padding to -100, plus the prompt when `completion_only_loss` is on (data split
# into prompt and completion) or every token outside the assistant's turns when
# `assistant_only_loss` is on. On a plain conversation it leaves the vision tokens in the labels;
# {ref}`sec-03-trl` counts them.

# %% [markdown]
# ```{literalinclude} ../vlmlib/collators.py
# :pyobject: CollatorV2.mask_padding_and_vision
# ```

# %%
trained["V2"] = count_trained_by_role(collators.CollatorV2(processor)(records))
pd.DataFrame(
    {
        "positions": all_positions,
        **{f"{name} trains on": counts for name, counts in trained.items()},
    }
).reindex(collators.TOKEN_ROLES).fillna(0).astype(int)

# %% [markdown]
# V2 no longer trains on padding or the image, but the system and user text, identical in every
# example, still reach the loss.

# %% [markdown]
# ## The prompt-length trap
#
# The obvious way to mask the prompt is to measure it: tokenize the prompt alone, take its length
# `n`, and set the first `n` labels to -100. Several public Qwen2-VL repositories do exactly this. The
# catch is that the tokenizer alone sees the image as *one* `<|image_pad|>`, while the processor
# expands it into one token per 28 x 28 block of pixels.

# %%
record = records[0]
min_pixels, max_pixels = models.get_pixel_budget(processor)
prompt_only = data.build_conversation(
    record, include_answer=False, min_pixels=min_pixels, max_pixels=max_pixels
)
prompt_text = processor.apply_chat_template(prompt_only, tokenize=False, add_generation_prompt=True)
naive_length = len(
    processor.tokenizer(prompt_text)["input_ids"]
)  # the image is one <|image_pad|> here
images, _ = process_vision_info(prompt_only)
true_length = processor(text=[prompt_text], images=images, return_tensors="pt")["input_ids"].shape[
    1
]  # expanded
glue("naive_prompt_length", naive_length, display=False)
glue("true_prompt_length", true_length, display=False)
glue("leaked_prompt_tokens", true_length - naive_length, display=False)
pd.Series(
    {
        "prompt length, tokenizer alone": naive_length,
        "prompt length, processed ids": true_length,
        "prompt tokens left in the loss": true_length - naive_length,
    }
)

# %% [markdown]
# Measured with the tokenizer, the prompt looks {glue:text}`naive_prompt_length` tokens long; in the
# processed batch it is {glue:text}`true_prompt_length`. A mask built from the first number would end
# {glue:text}`leaked_prompt_tokens` positions too early, and those prompt tokens would stay in the
# loss without any error or warning. The fix is to find the answer in the ids the model actually sees.

# %% [markdown]
# ## V3: learn from the answer only
#
# V3 finds each assistant turn in the processed `input_ids`: it starts after the header
# `<|im_start|>assistant\n` and ends with the turn's `<|im_end|>`, which *is* trained, because the
# model must learn to stop. The search is vectorised over the batch and works for either padding side.

# %% [markdown]
# ```{literalinclude} ../vlmlib/collators.py
# :pyobject: find_answer_mask
# ```

# %%
v3_batch = collators.CollatorV3(processor)(records)
trained["V3"] = count_trained_by_role(v3_batch)
[
    processor.tokenizer.decode(row_ids[row_labels != collators.IGNORE_INDEX])
    for row_ids, row_labels in zip(v3_batch["input_ids"], v3_batch["labels"])
]

# %% [markdown]
# Decoding the trained positions gives back exactly each target answer and its `<|im_end|>`, and
# nothing else: the tests (`tests/test_collators.py`) check this token for token, on both padding sides.

# %% [markdown]
# ## What each version trains on
#
# The same batch through all three collators: every input tensor is identical, only `labels` differ.

# %%
counts = (
    pd.DataFrame({name: trained[name] for name in trained})
    .reindex(collators.TOKEN_ROLES)
    .fillna(0)
    .astype(int)
)
counts.loc["total"] = counts.sum()
glue("v1_trained", int(counts.loc["total", "V1"]), display=False)
glue("v3_trained", int(counts.loc["total", "V3"]), display=False)
counts

# %% mystnb={"figure": {"caption": "Which positions of one example each collator trains on. The top strip gives each position's role; below, coloured positions reach the loss and grey ones are -100.", "name": "fig-03-token-mask"}, "image": {"alt": "Four horizontal strips over the positions of example 0. The top strip colours each position by role: system in green, user in light blue, a long pink run of vision tokens, the assistant's answer in orange, and black padding at the end. Below, the V1 strip repeats every colour, so it trains on all positions; the V2 strip greys out the padding and the vision run; the V3 strip is grey everywhere except the short orange stretch of the answer."}}
batches = {
    "V1": batch,
    "V2": collators.CollatorV2(processor)(records),
    "V3": v3_batch,
}
viz.plot_token_mask(
    roles[0],
    {
        name: (value["labels"][0] != collators.IGNORE_INDEX).tolist()
        for name, value in batches.items()
    },
    title=f"Example 0 ({records[0]['image_id']}, one box)",
)

# %% [markdown]
# {numref}`fig-03-token-mask` shows the evolution: V1 trains on all
# {glue:text}`v1_trained` positions of the batch, V3 on the {glue:text}`v3_trained` that the model
# will actually have to write.

# %% [markdown]
# (sec-03-trl)=
# ## Checking against TRL
#
# TRL's `DataCollatorForVisionLanguageModeling`, given the same data split into a prompt and a
# completion, masks everything but the completion. On the same records it trains on the same tokens
# as V3, plus one: the newline the chat template writes after `<|im_end|>`. Generation stops at
# `<|im_end|>`, so the model never writes that newline, and V3 leaves it out.

# %%
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

examples = []
for record in records:
    conversation = data.build_conversation(record, min_pixels=min_pixels, max_pixels=max_pixels)
    images, _ = process_vision_info(conversation)
    conversation[1]["content"][0] = {"type": "image"}  # TRL fills this placeholder from "images"
    examples.append(
        {
            "prompt": conversation[:2],
            "completion": conversation[2:],
            "images": images,
        }
    )
trl_batch = DataCollatorForVisionLanguageModeling(processor=processor, completion_only_loss=True)(
    examples
)
[
    processor.tokenizer.decode(row_ids[row_labels != collators.IGNORE_INDEX])[-24:]
    for row_ids, row_labels in zip(trl_batch["input_ids"], trl_batch["labels"])
]

# %% [markdown]
# Each TRL answer ends `<|im_end|>\n`; V3's ends `<|im_end|>`. Everything before is identical (the
# test suite checks the token lists).
#
# Without `completion_only_loss`, TRL's collator takes a whole conversation and masks only the
# padding. Here are the same records as plain conversations, through TRL's collator and through V2,
# counting the vision tokens each leaves in the labels:

# %%
vision_token_ids = torch.tensor(
    processor.tokenizer.convert_tokens_to_ids(list(tokens.VISION_TOKENS))
)
conversations = []  # fresh ones: TRL's collator fills the placeholders of `examples` in place
for record in records:
    conversation = data.build_conversation(record, min_pixels=min_pixels, max_pixels=max_pixels)
    images, _ = process_vision_info(conversation)
    conversation[1]["content"][0] = {"type": "image"}
    conversations.append({"messages": conversation, "images": images})
trl_conversation_batch = DataCollatorForVisionLanguageModeling(processor=processor)(conversations)
v2_batch = collators.CollatorV2(processor)(records)
pd.Series(
    {
        "vision tokens in input_ids": int(
            torch.isin(v2_batch["input_ids"], vision_token_ids).sum()
        ),
        "... in TRL's labels": int(
            torch.isin(trl_conversation_batch["labels"], vision_token_ids).sum()
        ),
        "... in V2's labels": int(torch.isin(v2_batch["labels"], vision_token_ids).sum()),
    }
)

# %% [markdown]
# TRL trains on every vision token of a conversation: the model is asked to predict each
# `<|image_pad|>` from the ones before it. V2, like the cookbook, trains on none of them.

# %% [markdown]
# ## Checks that fail loudly
#
# A collator sits deep inside a training loop, where a silent mistake costs hours. V3 refuses input
# it cannot turn into a correct example and says which example and why: a record without an image,
# a record without boxes, an empty batch, an example longer than `max_length`, or an answer cut off
# before its `<|im_end|>`.

# %%
broken = [dict(record) for record in records]
broken[1]["image"] = None
try:
    collators.CollatorV3(processor)(broken)
except ValueError as error:
    print(f"ValueError: {error}")

# %% [markdown]
# ## Summary
#
# - A collator's `labels` tensor decides what fine-tuning teaches; -100 marks what is ignored.
# - V1 trains on everything, V2 drops padding and image tokens, V3 trains on the answer and its `<|im_end|>` only.
# - The answer must be found in the processed ids: the tokenizer alone counts the image as one token.
# - V3 agrees with TRL's completion-only collator, except for a newline the model never writes.
# - TRL's collator masks only padding on a plain conversation, vision tokens stay in its labels;
#   V2 and the cookbook mask them.
#
# ## Exercises
#
# ```{exercise}
# :label: ex-03-left-padding
# Build the V3 batch with `padding_side="left"` and check that the decoded answers are unchanged.
# Why does the mask still start in the right place?
# ```
#
# ```{solution} ex-03-left-padding
# :class: dropdown
# `find_answer_mask` locates each turn by its `<|im_start|>` token and counts `<|im_end|>` tokens
# from there, never by absolute position, and it ignores padded positions (`attention_mask == 0`).
# So `collators.CollatorV3(processor, padding_side="left")(records)` trains on the same tokens.
# ```
#
# ```{exercise} What V1 trains on that V3 does not
# :label: ex-03-v1-minus-v3
# For example 0 of the batch, find the positions V1 trains on and V3 does not, and count them by
# role (`roles[0]`, and the labels of `batch` and `v3_batch`). Some of them belong to the
# assistant's turn: which tokens are they, and why does V3 leave them out?
# ```
#
# ```{solution-start} ex-03-v1-minus-v3
# :class: dropdown
# ```
#
# ```python
# is_v1_only = ((batch["labels"][0] != collators.IGNORE_INDEX)
#               & (v3_batch["labels"][0] == collators.IGNORE_INDEX))
# Counter(role for role, only in zip(roles[0], is_v1_only.tolist()) if only)
# ```
#
# Every padding, vision, system and user position of the example, and four positions of the
# assistant's turn: the header `<|im_start|>`, `assistant`, `\n` that opens it, and the `\n` the
# chat template writes after `<|im_end|>`. At inference the header is part of the prompt
# (`add_generation_prompt=True` writes it), so the model never has to produce it, and the newline
# comes after generation has stopped. Summed over the batch, these are the differences between the
# V1 and V3 columns of the table in "What each version trains on".
#
# ```{solution-end}
# ```
#
# ```{exercise} An answer that never ends
# :label: ex-03-im-end
# Copy V3's labels and set every `<|im_end|>` in them to -100, then decode the trained positions
# as in "V3: learn from the answer only". A model fine-tuned on these labels still learns every
# box. What does it do at inference, where `generate` stops at `<|im_end|>`? Which of chapter 2's
# failure reasons would you expect to see more often?
# ```
#
# ```{solution-start} ex-03-im-end
# :class: dropdown
# ```
#
# ```python
# im_end_id = processor.tokenizer.convert_tokens_to_ids(tokens.IM_END_TOKEN)
# labels = v3_batch["labels"].clone()
# labels[labels == im_end_id] = collators.IGNORE_INDEX
# [processor.tokenizer.decode(row_ids[row_labels != collators.IGNORE_INDEX])[-30:]
#  for row_ids, row_labels in zip(v3_batch["input_ids"], labels)]
# ```
#
# Each answer loses one trained token, its last, so the loss curve looks normal. But nothing in
# fine-tuning now teaches the model to write `<|im_end|>` after the last `<|box_end|>`: whatever it
# knew about stopping comes from before, and training on answers that never end weakens it. A
# model that does not stop keeps writing (another label, another box, repeated text) until
# `max_new_tokens` cuts it off. Expect extra boxes, which lower precision in chapter 6, "truncated
# box" when the cut falls inside a box, and every answer costing the full `max_new_tokens` of
# generation time.
#
# ```{solution-end}
# ```
#
# ```{exercise} What padding teaches
# :label: ex-03-padding
# V1 keeps the padding in its labels, and the batch is padded on the right, after the shorter
# answers. From the counts in "V1: copy the input", what share of V1's trained positions in this
# batch are padding? What is the target at those positions? The `attention_mask` is 0 there: does
# that keep them out of the loss? Why would the same example give a different loss in a batch of
# longer or shorter examples?
# ```
#
# ```{solution-start} ex-03-padding
# :class: dropdown
# ```
#
# ```python
# trained["V1"]["padding"] / sum(trained["V1"].values())
# ```
#
# Every pad is `<|endoftext|>` (`processor.tokenizer.pad_token`), so at a pad the target is one
# more `<|endoftext|>`, and at the last real token of a short example it is the first pad. These
# targets are easy and teach nothing about boxes, yet each counts as much as a digit of the
# answer. The `attention_mask` only stops other positions from *attending to* the pads; the model
# still computes logits there, and the loss uses every position whose label is not -100. How many
# pads an example gets depends on the longest example in its batch, not on the example itself, so
# the mean loss moves with the company an example keeps, and a batch of equal lengths has none.
# Setting their labels to -100 (V2 and V3) takes them out of both the sum and the count that the
# loss is averaged over.
#
# ```{solution-end}
# ```
#
# ```{exercise}
# :label: ex-03-mask
# Lab 03 (`labs/lab_03_collators.ipynb`) asks you to write the assistant-span mask yourself and
# checks it against `find_answer_mask`.
# ```
#
# ## References
#
# Qwen2-VL and its grounding format: {cite}`wang2024qwen2vl`. TRL's collators and `SFTTrainer`:
# {cite}`vonwerra2022trl`. The full list is in {doc}`../book/references`.
