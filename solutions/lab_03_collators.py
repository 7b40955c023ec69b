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

# %% [markdown] tags=["solution"]
# > **This is the solved lab**, the single source of `labs/lab_03_collators.ipynb`: `vlmlib make-labs`
# > replaces each `BEGIN SOLUTION` ... `END SOLUTION` region with a TODO and drops the cells tagged
# > `solution` (like this one).

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
    # BEGIN SOLUTION: which two kinds of position get -100? Leave input_ids itself unchanged
    labels = input_ids.clone()
    labels[attention_mask == 0] = collators.IGNORE_INDEX
    labels[torch.isin(input_ids, torch.tensor(vision_token_ids))] = collators.IGNORE_INDEX
    return labels
    # END SOLUTION


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
    # BEGIN SOLUTION: where does each answer start and end in the ids? When is it cut off?
    is_answer = [False] * len(input_ids)
    header = list(assistant_header_ids)
    position = 0
    while position < len(input_ids):
        opens_answer = (
            input_ids[position] == im_start_id
            and input_ids[position + 1 : position + 1 + len(header)] == header
        )
        if not opens_answer:
            position += 1
            continue
        position += 1 + len(
            header
        )  # skip <|im_start|> and the header: they are not part of the answer
        while position < len(input_ids) and input_ids[position] != im_end_id:
            is_answer[position] = True
            position += 1
        if position == len(input_ids):
            raise ValueError("an assistant answer has no closing <|im_end|>: it was cut off")
        is_answer[position] = True  # the closing <|im_end|>
        position += 1
    return is_answer
    # END SOLUTION


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
    # BEGIN SOLUTION: one step above at a time; print each tensor for a two-row batch
    is_real = attention_mask == 1
    is_start = (input_ids == im_start_id) & is_real
    is_end = (input_ids == im_end_id) & is_real
    opens_answer = is_start.clone()
    for offset, token_id in enumerate(assistant_header_ids, start=1):
        following = torch.full_like(input_ids, -1)  # input_ids moved `offset` places to the left
        following[:, :-offset] = input_ids[:, offset:]
        opens_answer &= following == token_id
    positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
    turn_number = is_start.cumsum(dim=1)  # 0 before the first turn, then 1, 2, ...
    turn_start = torch.where(is_start, positions, torch.zeros_like(positions)).cummax(dim=1).values
    in_assistant_turn = opens_answer.gather(1, turn_start) & (turn_number > 0)
    ends_before = (
        is_end.cumsum(dim=1) - is_end.long()
    )  # <|im_end|> tokens strictly before each position
    not_after_end = ends_before < turn_number  # up to and including the turn's own <|im_end|>
    mask = (
        in_assistant_turn
        & not_after_end
        & (positions > turn_start + len(assistant_header_ids))
        & is_real
    )
    if ((is_end & mask).sum(dim=1) < opens_answer.sum(dim=1)).any():
        raise ValueError("an assistant answer has no closing <|im_end|>: it was cut off")
    return mask
    # END SOLUTION


# %%
checks.check_build_answer_mask(build_answer_mask, processor, records)

# %% [markdown]
# **Question.** A common shortcut masks the prompt by tokenizing the prompt text alone and setting
# its first `n` labels to -100. Why does that leave part of the prompt in the loss with Qwen2-VL, and
# why do the masks you wrote not have that problem?

# %% [markdown] tags=["solution"]
# **Answer.** The tokenizer alone sees the image as one `<|image_pad|>`, but the processor expands
# it into one token per 28x28 block of pixels, so the real prompt is longer than `n` and its tail
# stays in the loss (chapter 3, "The prompt-length trap"). The masks above search the *processed*
# `input_ids`, the very ids the model sees, for the assistant header, so the image's size does not matter.

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
