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
# # Lab 3: the labels that decide what is learned
#
# This lab goes with chapter 3, "Collators". You will write the masks behind the collators' `labels`:
#
# 1. **3.1** V2's labels: padding and image tokens set to -100 (warm-up);
# 2. **3.2** the assistant's answer in one sequence, with a plain loop;
# 3. **3.3** the same for a whole padded batch at once, vectorised, for left and right padding.
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
# The processor and three training records are all this lab needs; no model is loaded.

# %%
import torch

from vlmlib import checks, collators, data, models
from vlmlib.config import load_config

config = load_config()
processor = models.load_processor(config)
records = [data.load_configured_splits(config)["train"][index] for index in range(3)]
batch = collators.CollatorV1(processor)(records)
print(
    f"profile {config.profile}: {len(records)} records, "
    f"input_ids of shape {tuple(batch['input_ids'].shape)}"
)

# %% [markdown]
# The checks try your function on short, made-up sequences first, so that a failing case is easy to
# read, then on real batches from this processor. The made-up sequences use these small ids (the
# real ones have six digits); your functions receive every id they need as an argument.

# %%
checks.TOY_TOKEN_IDS

# %% [markdown]
# ## Exercise 3.1: V2's labels
#
# `CollatorV1` copies `input_ids` into `labels`. `CollatorV2` then sets two kinds of position to
# -100 (`collators.IGNORE_INDEX`), the value the loss skips:
#
# - padding: every position where `attention_mask` is 0 (whatever token id the padding uses);
# - the image: `<|vision_start|>`, every `<|image_pad|>` and `<|vision_end|>`.
#
# Write `build_v2_labels(input_ids, attention_mask, vision_token_ids)`, returning a new int64 tensor
# of shape (batch, seq_len) and leaving `input_ids` unchanged. `torch.isin` tests membership in a list
# of ids. Chapter 3, "V2: mask padding and the image", shows the library's version.


# %% tags=["exercise"]
def build_v2_labels(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, vision_token_ids: list[int]
) -> torch.Tensor:
    """Return a copy of input_ids (batch, seq_len), -100 at padding and vision-token positions."""
    # TODO (exercise 3.1): which two kinds of position get -100? Leave input_ids itself unchanged
    raise NotImplementedError("Exercise 3.1: write build_v2_labels")


# %%
checks.check_build_v2_labels(build_v2_labels, processor, records)

# %% [markdown]
# ## Exercise 3.2: the answer in one sequence
#
# Every turn of Qwen2-VL's chat template reads `<|im_start|>ROLE\n ... <|im_end|>\n`. An assistant
# turn opens with the header `<|im_start|>assistant\n`; the answer is every token after the header,
# up to **and including** the turn's `<|im_end|>`: the model must learn to stop. Here is the end of
# a real example, token by token, from the end of the user's turn:

# %%
tokenizer = processor.tokenizer
im_start_id, im_end_id = (
    tokenizer.convert_tokens_to_ids("<|im_start|>"),
    tokenizer.convert_tokens_to_ids("<|im_end|>"),
)
assistant_header_ids = tokenizer.encode("assistant\n", add_special_tokens=False)
one_example = collators.CollatorV3(processor)(records[:1])["input_ids"][0].tolist()
last_turn_start = len(one_example) - 1 - one_example[::-1].index(im_start_id)
print(
    f"<|im_start|> = {im_start_id}, <|im_end|> = {im_end_id}, "
    f"header after <|im_start|> = {assistant_header_ids}"
)
[
    (token_id, tokenizer.decode([token_id])) for token_id in one_example[last_turn_start - 2 :]
]  # from the user turn's end

# %% [markdown]
# Write `find_answer_positions(input_ids, im_start_id, im_end_id, assistant_header_ids)` for **one**
# sequence without padding, given and returned as plain lists: a list of booleans, True on each answer
# token and on the `<|im_end|>` that closes it. Walk the ids with a loop. Mind that:
#
# - a conversation can hold several assistant turns;
# - the words "assistant" and a newline can appear in the user's text: a header counts only right
#   after `<|im_start|>`;
# - an answer whose `<|im_end|>` is missing was cut off (by truncation): raise `ValueError`, because
#   training on half an answer teaches the model to stop early.


# %% tags=["exercise"]
def find_answer_positions(
    input_ids: list[int], im_start_id: int, im_end_id: int, assistant_header_ids: list[int]
) -> list[bool]:
    """Return one bool per position: True on the answer's tokens and its closing <|im_end|>."""
    # TODO (exercise 3.2): where does each answer start and end in the ids? When is it cut off?
    raise NotImplementedError("Exercise 3.2: write find_answer_positions")


# %%
checks.check_find_answer_positions(find_answer_positions, processor, records)

# %% [markdown]
# ## Exercise 3.3: a whole batch at once
#
# A collator runs on every batch of every epoch, so a Python loop over positions costs real time. Write
# `build_answer_mask(input_ids, attention_mask, im_start_id, im_end_id, assistant_header_ids)`, the
# same mask for a padded (batch, seq_len) batch, returned as a bool tensor, with tensor operations
# only (a loop over the few header ids is fine). It must give the same answer with padding on the
# right or on the left, and raise `ValueError` when an answer has no `<|im_end|>`. One way:
#
# 1. keep only real tokens (`attention_mask == 1`) when looking for `<|im_start|>` and `<|im_end|>`;
# 2. mark the `<|im_start|>` tokens followed by the header (compare shifted copies of `input_ids`);
# 3. number the turns along each row with `cumsum`, and find where each position's turn starts with
#    `cummax` over the positions of the `<|im_start|>` tokens;
# 4. keep the positions of assistant turns that come after the header and no later than the turn's
#    own `<|im_end|>` (count the `<|im_end|>` tokens before each position, again with `cumsum`).
#
# `collators.find_answer_mask` is the library's version; try on your own before you read it.


# %% tags=["exercise"]
def build_answer_mask(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    im_start_id: int,
    im_end_id: int,
    assistant_header_ids: list[int],
) -> torch.Tensor:
    """Return a (batch, seq_len) bool mask: True on answer tokens and their closing <|im_end|>."""
    # TODO (exercise 3.3): one step above at a time; print each tensor for a two-row batch
    raise NotImplementedError("Exercise 3.3: write build_answer_mask")


# %%
checks.check_build_answer_mask(build_answer_mask, processor, records)

# %% [markdown]
# **Question.** A common shortcut masks the prompt by tokenizing the prompt text alone and setting
# its first `n` labels to -100. Why does that leave part of the prompt in the loss with Qwen2-VL, and
# why do the masks you wrote not have that problem?

# %% [markdown]
# ## The library's answer
#
# `CollatorV3` builds its labels with `collators.find_answer_mask`. Decoding the positions it trains
# on, here with left padding, gives back each record's answer and its `<|im_end|>`, and nothing else.

# %%
left_padded = collators.CollatorV3(processor, padding_side="left")(records)
[
    tokenizer.decode(row_ids[row_labels != collators.IGNORE_INDEX])
    for row_ids, row_labels in zip(left_padded["input_ids"], left_padded["labels"])
]

# %% [markdown]
# ## What you built
#
# - V2's labels: padding found by `attention_mask`, image tokens by their ids.
# - The assistant-span mask, first as a readable loop, then vectorised over a padded batch.
# - A collator check that refuses a cut-off answer instead of training on it.
