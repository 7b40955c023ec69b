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
# # Lab 4: what each strategy trains on, and what to expect
#
# This lab goes with chapter 4, "Masking comparison". Before training anything, you will measure
# what the two masking strategies, `all_tokens` and `assistant_only`, put into the loss, and use the
# numbers to predict the chapter's result:
#
# 1. **4.1** the share of the trained tokens in each role (system, user, assistant, ...);
# 2. **4.2** how much an answer token weighs in the `all_tokens` loss, compared with `assistant_only`;
# 3. **4.3** each role's share of the loss itself, from the model's logits;
#
# then you write down your prediction, to compare with chapter 4 afterwards.
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
# Three training records go through `CollatorV3` once per strategy. The two batches have the same
# `input_ids`; only their `labels` differ. `collators.find_token_roles` gives every position its role.

# %%
import pandas as pd
import torch
import torch.nn.functional as F

import vlmlib
from vlmlib import checks, collators, data, models
from vlmlib.config import load_config

vlmlib.quiet_progress_bars()
config = load_config()
processor = models.load_processor(config)
records = [data.load_configured_splits(config)["train"][index] for index in range(3)]
batches = {
    strategy: collators.CollatorV3(processor, mask_strategy=strategy)(records)
    for strategy in ("all_tokens", "assistant_only")
}
roles = collators.find_token_roles(
    batches["all_tokens"]["input_ids"], batches["all_tokens"]["attention_mask"], processor.tokenizer
)
print(
    f"profile {config.profile}: {len(records)} records, {len(roles[0])} positions per row; "
    f"roles: {collators.TOKEN_ROLES}"
)

# %% [markdown]
# ## Exercise 4.1: the share of the trained tokens in each role
#
# Write `trained_fraction_by_role(roles, labels)`: for each role of `collators.TOKEN_ROLES`, the
# fraction of the batch's trained positions (label not -100) that have that role. Return a dict with
# every role as a key (0.0 for a role with no trained position); the values add up to 1. `roles` is
# what `find_token_roles` returns (one list of strings per row); `labels` is (batch, seq_len).
# Chapter 3, "What each version trains on", counts the same thing.


# %% tags=["exercise"]
def trained_fraction_by_role(roles: list[list[str]], labels: torch.Tensor) -> dict[str, float]:
    """Return each role's share of the batch's trained positions (label != -100), by TOKEN_ROLES."""
    # TODO (exercise 4.1): which positions count as trained, and what should the shares add up to?
    raise NotImplementedError("Exercise 4.1: write trained_fraction_by_role")


# %%
checks.check_trained_fraction_by_role(trained_fraction_by_role, processor, records)

# %% [markdown]
# Once your check passes, add a cell and compare the two strategies on the setup's batches:
# `pd.DataFrame({name: trained_fraction_by_role(roles, batch["labels"]) for name, batch in batches.items()})`.

# %% [markdown]
# ## Exercise 4.2: how much an answer token weighs
#
# The training loss is a mean: the sum of the token losses divided by the number of tokens in the
# loss, counted over the whole batch. Under `assistant_only` that number is the answer tokens alone;
# under `all_tokens` it also counts the prompt. So one answer token's loss (and its gradient) is
# multiplied by
#
# $$w = \frac{\text{answer tokens in the loss}}{\text{all tokens in the loss under all\_tokens}}$$
#
# compared with `assistant_only`. Write `answer_loss_weight(labels_all_tokens, labels_assistant_only)`,
# returning `w` for a batch as a float. A token is in the loss when its label is not -100, and it is
# not the first position of its row: position 0 has nothing before it, so it is never predicted.


# %% tags=["exercise"]
def answer_loss_weight(
    labels_all_tokens: torch.Tensor, labels_assistant_only: torch.Tensor
) -> float:
    """Return one answer token's weight in the all_tokens loss relative to assistant_only."""
    # TODO (exercise 4.2): how many tokens share each loss's mean? (the first position predicts nothing)
    raise NotImplementedError("Exercise 4.2: write answer_loss_weight")


# %%
checks.check_answer_loss_weight(answer_loss_weight, processor, records)

# %% [markdown]
# ## Exercise 4.3: each role's share of the loss
#
# Token counts treat every token as equally hard. They are not: a trained model predicts the fixed
# system prompt almost perfectly and the box coordinates much less well, so the loss is spread
# differently from the tokens. Here are the model's logits on the setup's batch (the same for both
# strategies, since the inputs are the same):

# %%
model = models.load_model(config).eval()
inputs = {
    key: value.to(model.device) for key, value in batches["all_tokens"].items() if key != "labels"
}
with torch.no_grad():
    logits = (
        model(**inputs).logits.float().cpu()
    )  # (batch, seq_len, vocab): the scores for the NEXT token
tuple(logits.shape)

# %% [markdown]
# Write `loss_share_by_role(logits, labels, roles)`: the cross-entropy of each trained token, summed
# per role and divided by the total, as a dict over `collators.TOKEN_ROLES`. Mind the shift: the
# logits at position `t` predict the token at position `t + 1`, so they are scored against
# `labels[:, t + 1]`, and that loss belongs to the role of position `t + 1`.
# `F.cross_entropy(..., reduction="none", ignore_index=-100)` gives one loss per token; it wants the
# vocabulary as the second dimension (`logits.transpose(1, 2)`).


# %% tags=["exercise"]
def loss_share_by_role(
    logits: torch.Tensor, labels: torch.Tensor, roles: list[list[str]]
) -> dict[str, float]:
    """Return each role's share of the summed next-token loss over the trained positions."""
    # TODO (exercise 4.3): which logits predict which label, and which role owns each token's loss?
    raise NotImplementedError("Exercise 4.3: write loss_share_by_role")


# %%
checks.check_loss_share_by_role(loss_share_by_role)

# %% [markdown]
# Once your check passes, add a cell and run it on the real logits, for both strategies:
# `pd.DataFrame({name: loss_share_by_role(logits, batch["labels"], roles) for name, batch in batches.items()})`.

# %% [markdown]
# ## Your prediction
#
# Chapter 4 trains the same model twice, for the same steps with the same learning rate, once with
# each strategy. Using your numbers from 4.1 to 4.3, write down your answers **before** you read the
# chapter's results:
#
# 1. Which run will end with the lower *training* loss? Does that mean it has learned the task better?
# 2. Which run will predict the answers of held-out images better (lower loss on the answer tokens)? Why?
# 3. Someone proposes to divide the `all_tokens` learning rate by `w`, "to give the answer tokens
#    back their step size". Would that work with SGD? With AdamW, the optimizer chapter 4 trains
#    with? What does change how much the answer counts in each step?
#
# *Write your answers in this cell.*

# %% [markdown]
# ## What you built
#
# - The share of the trained tokens per role under each strategy, from `find_token_roles`.
# - The weight of an answer token in the `all_tokens` loss: one mean over the batch's tokens.
# - Each role's share of the loss from the logits, with the next-token shift.
# - A written prediction of chapter 4, to check against its numbers.
