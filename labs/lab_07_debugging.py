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
# # Lab 7: debugging a collator
#
# This lab goes with chapters 3 and 4. Below is a collator that runs without an error, trains, and
# gives a falling loss, yet teaches the model something slightly wrong. Its masking code follows a
# pattern that public Qwen2-VL fine-tuning scripts share. You will find the bug from the token-role
# table, write the tools that make it visible, then fix it:
#
# 1. **7.1** list the tokens a batch row trains on (warm-up);
# 2. **7.2** compare a batch's labels with the answer the model must write, position by position;
# 3. **7.3** fix the collator, so that its labels equal `CollatorV3`'s on real batches.
#
# **How it works.** Each exercise is a code cell with a `TODO` and a `raise NotImplementedError`.
# Replace those two lines with your code, run the cell, then run the check cell below it. The check
# prints how many cases passed; if one fails, it shows the input, the expected and the actual
# result, and a hint. "not attempted yet" means the `raise NotImplementedError` is still there.
# No model is loaded: the processor and three training records are all this lab needs.

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
# The processor, and three training records with one, two and three tables, so that the answers
# have different lengths and the batch needs padding (as in chapter 3).

# %%
import pandas as pd
import torch

from vlmlib import checks, collators, data, models
from vlmlib.config import load_config
from vlmlib.tokens import IM_END_TOKEN, IM_START_TOKEN

config = load_config()
processor = models.load_processor(config)
train = data.load_configured_splits(config)["train"]
first_with = {}
for index, objects in enumerate(train["objects"]):
    first_with.setdefault(len(objects["bbox"]), index)
records = [train[first_with[count]] for count in sorted(first_with)[:3]]
[len(record["objects"]["bbox"]) for record in records]  # boxes per record

# %% [markdown]
# ## The collator to debug
#
# `AnswerSpanCollator` keeps V2's batch and finds each answer by searching the processed ids for the
# marker `<|im_start|>assistant`, then keeps the labels of a slice after it. Searching the processed
# ids is the right idea: it avoids chapter 3's prompt-length trap. The slice is where it goes wrong.
# Read `find_answer_spans` and `__call__`, but do not fix anything yet.


# %%
class AnswerSpanCollator(collators.CollatorV2):
    """Trains on each assistant answer, found by searching the ids for `<|im_start|>assistant`."""

    def __init__(
        self,
        processor,
        prompt: str = data.DEFAULT_PROMPT,
        system_message: str = data.DEFAULT_SYSTEM_MESSAGE,
        padding_side: str = "right",
    ):
        super().__init__(processor, prompt, system_message, padding_side)
        tokenizer = processor.tokenizer
        self.marker_ids = tokenizer.encode(IM_START_TOKEN + "assistant", add_special_tokens=False)
        self.im_end_id = tokenizer.convert_tokens_to_ids(IM_END_TOKEN)

    def find_answer_spans(self, row_ids: list[int]) -> list[tuple[int, int]]:
        """Return (first, stop) of each answer in one row; labels keep row_ids[first:stop]."""
        spans = []
        for start in range(len(row_ids) - len(self.marker_ids) + 1):
            if row_ids[start : start + len(self.marker_ids)] == self.marker_ids:
                end = row_ids.index(self.im_end_id, start)  # the <|im_end|> that closes this turn
                spans.append((start + 2, end))  # skip the marker's two tokens
        return spans

    def __call__(self, records):
        batch = self.encode(records)
        labels = torch.full_like(batch["input_ids"], collators.IGNORE_INDEX)
        for row, row_ids in enumerate(batch["input_ids"].tolist()):
            for first, stop in self.find_answer_spans(row_ids):
                labels[row, first:stop] = batch["input_ids"][row, first:stop]
        batch["labels"] = labels
        return batch


batch = AnswerSpanCollator(processor)(records)
v3_batch = collators.CollatorV3(processor)(records)
num_trained = {
    name: int((labelled["labels"] != -100).sum())
    for name, labelled in {"AnswerSpanCollator": batch, "CollatorV3": v3_batch}.items()
}
print(f"labels {tuple(batch['labels'].shape)}; trained positions {num_trained}")

# %% [markdown]
# ## The token-role table
#
# `collators.find_token_roles` gives every position a role: padding, vision, or the turn it belongs
# to. Counting the trained positions by role is the first thing to look at (chapter 3's table):

# %%
roles = collators.find_token_roles(batch["input_ids"], batch["attention_mask"], processor.tokenizer)


def count_trained_by_role(labels: torch.Tensor) -> pd.Series:
    """Count the positions with a label (not -100), by role, over the batch."""
    trained = [
        role
        for row_roles, row_labels in zip(roles, labels.tolist())
        for role, label in zip(row_roles, row_labels)
        if label != collators.IGNORE_INDEX
    ]
    return pd.Series(trained, dtype=str).value_counts()


pd.DataFrame(
    {
        "AnswerSpanCollator": count_trained_by_role(batch["labels"]),
        "CollatorV3": count_trained_by_role(v3_batch["labels"]),
    }
).reindex(collators.TOKEN_ROLES).fillna(0).astype(int)

# %% [markdown]
# The two collators train on the same number of assistant positions, and nothing else. The counts
# cannot show a mask that is shifted: the table has to go down to single positions. Here is the end
# of the first example, one row per position:

# %%
tokens = [processor.tokenizer.decode([token_id]) for token_id in batch["input_ids"][0].tolist()]
table = pd.DataFrame(
    {
        "token": tokens,
        "role": roles[0],
        "AnswerSpanCollator trains": (batch["labels"][0] != -100).tolist(),
        "CollatorV3 trains": (v3_batch["labels"][0] != -100).tolist(),
    }
)
table[table["role"] == "assistant"]

# %% [markdown]
# Look at the first and the last rows of the assistant turn. Which of them should the model learn
# to write, and which does each collator train on? Write down what you see before going on.

# %% [markdown]
# ## Exercise 7.1: the tokens a row trains on
#
# A table is good for one example; a function lets you look at every row of every batch. Write
# `list_trained_tokens(input_ids, labels, tokenizer)` for one row: the text of each trained
# position, in order. Decode one id at a time (`tokenizer.decode([token_id])`), so that a newline or
# a special token stays a visible item of the list. The check compares it with `vlmlib` on rows of
# V2, V3 and a hand-made shifted batch.


# %% tags=["exercise"]
def list_trained_tokens(input_ids: torch.Tensor, labels: torch.Tensor, tokenizer) -> list[str]:
    """Return the text of every position of one row whose label is not -100, in order."""
    # TODO (exercise 7.1): which label value tells the loss to skip a position (chapter 3, "V1")?
    raise NotImplementedError("Exercise 7.1: write list_trained_tokens")


# %%
checks.check_list_trained_tokens(list_trained_tokens, processor, records)

# %% [markdown]
# Try it on the buggy batch: `list_trained_tokens(batch["input_ids"][0], batch["labels"][0],
# processor.tokenizer)`, next to the answer the model should write,
# `data.format_answer(records[0]["objects"])`.

# %% [markdown]
# ## Exercise 7.2: every position that disagrees with the answer
#
# The answer the model must write is fixed by the text, not by any collator: the tokens after
# `<|im_start|>assistant\n`, up to and including the `<|im_end|>` that closes the turn.
# `vlmlib.collators.find_answer_mask` finds them in a processed batch (chapter 3, "V3: learn from
# the answer only"). Write `find_mislabelled_tokens(batch, tokenizer)`, which returns two lists of
# `(row, position, token text)`, in row-then-position order:
#
# - `"trained, not in the answer"`: positions with a label that are not answer tokens;
# - `"in the answer, not trained"`: answer positions whose label is -100.
#
# A correct collator gives two empty lists. The check runs your function on batches from V1, V2, V3
# and the hand-made shifted one.


# %% tags=["exercise"]
def find_mislabelled_tokens(
    batch: dict[str, torch.Tensor], tokenizer
) -> dict[str, list[tuple[int, int, str]]]:
    """Return the positions whose labels disagree with the answer mask, by kind of disagreement."""
    # TODO (exercise 7.2): which ids does find_answer_mask need, and how do two bool masks disagree?
    raise NotImplementedError("Exercise 7.2: write find_mislabelled_tokens")


# %%
checks.check_find_mislabelled_tokens(find_mislabelled_tokens, processor, records)

# %% [markdown]
# **Question.** Run `find_mislabelled_tokens(batch, processor.tokenizer)` on `AnswerSpanCollator`'s
# batch. Which tokens are wrong in every row? What will a model trained with these labels do
# differently when it answers, and why would the training loss never show it?

# %% [markdown]
# ## Exercise 7.3: fix the collator
#
# Write `FixedCollator.find_answer_spans`, so that the labels equal `CollatorV3`'s: the first answer
# token after the header, up to and including its `<|im_end|>`. Everything else is inherited from
# `AnswerSpanCollator`. First, the check on the collator as it was shipped, which fails:

# %%
verdict_as_shipped = checks.check_fixed_collator(AnswerSpanCollator, processor, records)


# %% tags=["exercise"]
class FixedCollator(AnswerSpanCollator):
    """AnswerSpanCollator whose spans skip the whole header and keep the closing <|im_end|>."""

    def find_answer_spans(self, row_ids: list[int]) -> list[tuple[int, int]]:
        """Return (first, stop) of each answer in one row; labels keep row_ids[first:stop]."""
        # TODO (exercise 7.3): how many tokens has the header (see the table)? Is a stop kept?
        raise NotImplementedError("Exercise 7.3: write find_answer_spans")


# %%
checks.check_fixed_collator(FixedCollator, processor, records)

# %% [markdown]
# The check compares your labels with `CollatorV3`'s on real batches, padded on either side. It is
# also the test that would have caught the bug before any training: `tests/test_collators.py` does
# the same for V3, token for token.

# %% [markdown]
# ## What you found
#
# - A masking bug raises no error, keeps the loss falling, and leaves the counts by role unchanged;
#   only a look at single positions shows it.
# - The token-role table, and the two functions you wrote, turn "the labels look fine" into a
#   list of the exact positions that are wrong.
# - A fix is proved by comparing labels with a trusted collator on real batches, both padding sides
#   included, not by the loss going down.
