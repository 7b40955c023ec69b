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
# # 2. Model understanding: from pixels and text to tokens, and back

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
The outputs on this page were produced with the **tiny** profile. The model is a tiny Qwen2-VL
that `vlmlib make-tiny` pretrained to box every object on a label, logos included, but never
asked for nutrition tables. The full profile runs this page on a GPU; its time and memory there
are estimated on {doc}`the course's cost page <../book/costs>`.
```
""",
)
show_profile_note(
    "full",
    """
```{note}
The outputs on this page were produced with the **full** profile. The model is
Qwen2-VL-2B-Instruct as published, before any fine-tuning. Its GPU time is an estimate, not a
measurement: about 2 minutes on an NVIDIA L4 and 2 on an A100, the longest cell about 1 minute on
the L4, on a card of 8 GB or more. The arithmetic is on
{doc}`the course's cost page <../book/costs>`.
```
""",
)

# %% [markdown]
# **Learning objectives**
#
# - Name Qwen2-VL's three parts (vision tower, patch merger, language model) and count their parameters.
# - Trace an image through the processor: pixel budget, resize, patches, merged patches, `<|image_pad|>` tokens.
# - Read the chat template of a training example, find its special tokens by name, and explain the
#   three position ids (M-RoPE) each token gets.
# - Explain how a box answer is tokenised, digit by digit, on Qwen2-VL's grid of 0 to 999.
# - Run the model before any fine-tuning, parse its answers, and say why an answer fails to parse.
#
# Chapter 1 measured the data and chose a pixel budget and an answer format. This chapter opens the
# model those choices are for: how an image and a prompt become one sequence of tokens, what the
# answer looks like as tokens, and what the model says before we train it.

# %% [markdown]
# ## Setup

# %%
import logging
import sys

import pandas as pd
import transformers
from myst_nb import glue
from PIL import Image

from vlmlib import (
    boxes,
    collators,
    data,
    dataset_stats,
    inference,
    models,
    parsing,
    positions,
    tokens,
    viz,
)
from vlmlib.config import load_config

# Library warnings go to stdout, as plain lines on the page; progress bars are noise there.
logging.basicConfig(
    level=logging.WARNING, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s"
)
transformers.utils.logging.disable_progress_bar()

config = load_config()
*earlier, last = config.tiny.mrope_section  # tiny's M-RoPE split: (time, height, width)
glue("model_tiny_mrope", f"{', '.join(map(str, earlier))} and {last}", display=False)
glue("model_tiny_num_frequencies", sum(config.tiny.mrope_section), display=False)
glue("model_tiny_rope_theta", f"{config.tiny.rope_theta:g}", display=False)
config.profile

# %% [markdown]
# ## Loading the model
#
# `load_model_and_processor` returns the model and its processor under either profile. Under
# `full` it is Qwen2-VL-2B-Instruct {cite}`wang2024qwen2vl` in 4-bit (QLoRA's nf4
# {cite}`dettmers2023qlora`) on a GPU; under `tiny` it is the same architecture at tiny widths,
# with the real tokenizer, pretrained for a few minutes on synthetic labels.

# %%
model, processor = models.load_model_and_processor(config)
type(model).__name__, type(processor).__name__

# %% tags=["remove-input"] mystnb={"markdown_format": "myst"}
show_profile_note(
    "tiny",
    """
```{note}
Under `tiny` the model is the course's stand-in for Qwen2-VL-2B-Instruct. Its *structure* is
Qwen2-VL's at smaller sizes: the same modules in the same order, the same processor, token
counts, chat template and tokenisation of answers. Two settings of its position encoding differ
on purpose: M-RoPE gives time, height and width {glue:text}`model_tiny_mrope` of each head's
{glue:text}`model_tiny_num_frequencies` rotary frequencies (Qwen2-VL-2B: 16, 24 and 24 of 64),
and its rotary base is {glue:text}`model_tiny_rope_theta` (Qwen2-VL-2B: 1,000,000), so that a
small model on small images can tell neighbouring rows apart ({doc}`../book/tiny_model`). Its
*answers* are those of a model of about 21 million parameters that `vlmlib make-tiny`
pretrained to box every object on a label, the logo included ({doc}`../book/tiny_model`): the
right format, rough boxes, and often one box too many. The prose says what to expect from `full`.
```
""",
)

# %% [markdown]
# ## The architecture
#
# Qwen2-VL is three modules in a row {cite}`wang2024qwen2vl`:
#
# 1. the **vision tower**, a vision transformer that cuts the image into 14x14 pixel {term}`patches <patch>`
#    and turns each into a vector;
# 2. the **patch merger**, a small MLP that joins each 2x2 block of neighbouring patch vectors into
#    one vector the size of the language model's embeddings: one {term}`image token`;
# 3. the **language model**, a Qwen2 decoder that reads the image tokens in place of the
#    `<|image_pad|>` placeholders in the text, and writes the answer.
#
# {numref}`fig-02-architecture`, further down once we have a record and its tokens, follows one
# token of a real image through all three.
#
# The modules two levels deep, with their parameters (`print(model)` shows every layer).
# `count_module_parameters` counts a 4-bit weight matrix at its real size: bitsandbytes stores
# two 4-bit weights in each byte, so under `full` the tensor's own `numel()` is half the count.

# %%
pd.Series(
    {
        name.removeprefix("model."): f"{models.count_module_parameters(module):,}"
        for name, module in model.named_modules()
        if 0 < name.count(".") <= 2 and "rotary" not in name
    },
    name="parameters",
).to_frame()

# %% [markdown]
# `count_parameters` adds them up per part, counting a shared tensor once: the output layer
# (`lm_head`) shares its matrix with the token embeddings, as in Qwen2-VL-2B.

# %%
counts = models.count_parameters(model)
parts = {
    "vision tower": counts.vision_tower,
    "patch merger": counts.patch_merger,
    "language model": counts.language_model,
    "lm_head (not shared)": counts.lm_head,
}
pd.DataFrame(
    {
        "parameters": {part: f"{count:,}" for part, count in parts.items()},
        "share": {part: f"{count / counts.total:.1%}" for part, count in parts.items()},
    }
)

# %% tags=["hide-input"]
embedding_count = model.get_input_embeddings().weight.numel()
glue("model_total", f"{counts.total:,}", display=False)
glue("model_embedding_share", f"{embedding_count / counts.total:.0%}", display=False)
glue("model_vocab", f"{model.config.text_config.vocab_size:,}", display=False)

# %% [markdown]
# This model has {glue:text}`model_total` parameters, and {glue:text}`model_embedding_share` of
# them are the token embeddings: one row per entry of the {glue:text}`model_vocab`-token vocabulary.
# In Qwen2-VL-2B (`full`), the proportions are different: the vision tower and merger hold about
# 0.67 billion parameters and the language model about 1.5 billion {cite}`wang2024qwen2vl`. LoRA
# {cite}`hu2021lora` (chapter 5) trains small adapters on the language model and leaves all of
# these frozen.

# %% [markdown]
# ## From pixels to image tokens
#
# An image costs as many tokens as its merged patches, so its size decides the sequence length. The
# processor first resizes it so that
#
# - both sides are multiples of 28 px (2 patches of 14 px, because 2x2 patches merge), and
# - its area lies within the {term}`pixel budget`, `min_pixels` to `max_pixels`, keeping its shape.
#
# `compute_image_token_budget` does that arithmetic with transformers' own `smart_resize`:
#
# ```{literalinclude} ../vlmlib/dataset_stats.py
# :pyobject: compute_image_token_budget
# ```

# %%
min_pixels, max_pixels = models.get_pixel_budget(processor)
full_config = load_config(profile="full")  # its numbers only; no download
full_budget = (full_config.model.min_pixels, full_config.model.max_pixels)
glue("model_min_pixels", f"{min_pixels:,}", display=False)
glue("model_max_pixels", f"{max_pixels:,}", display=False)
glue("model_full_max_pixels", f"{full_budget[1]:,}", display=False)
min_pixels, max_pixels

# %% [markdown]
# Here are a few image sizes through this processor, step by step. The row "<|image_pad|>
# (processor)" is what the real processor produced, the number of `<|image_pad|>` tokens in its
# `input_ids` for a blank image of that size, which must equal the arithmetic just above it. The last
# row redoes the arithmetic with the `full` profile's budget.

# %%
image_pad_id = processor.tokenizer.convert_tokens_to_ids(tokens.IMAGE_PAD_TOKEN)


def count_image_pads(size_px: tuple[int, int]) -> int:
    """Return how many <|image_pad|> the processor writes for a blank image."""
    inputs = processor(
        text=[tokens.IMAGE_PAD_TOKEN], images=[Image.new("RGB", size_px)], return_tensors="pt"
    )
    return int((inputs["input_ids"] == image_pad_id).sum())


# %%
splits = data.load_configured_splits(config)
record = splits["train"][0]
sizes = {
    "this record": record["image"].size,
    "thumbnail": (100, 100),
    "webcam": (640, 480),
    "scan": (1200, 1600),
    "phone photo": (3024, 4032),
}
budgets = {
    name: dataset_stats.compute_image_token_budget(*size, min_pixels, max_pixels)
    for name, size in sizes.items()
}


def describe_steps(budget: dataset_stats.ImageTokenBudget) -> dict[str, str]:
    """Return the processor's steps for one image, as table cells."""
    size = (budget.width_px, budget.height_px)
    full = dataset_stats.compute_image_token_budget(*size, *full_budget)
    return {
        "size (px)": f"{budget.width_px}x{budget.height_px}",
        "pixels": f"{budget.width_px * budget.height_px:,}",
        "resized (px)": f"{budget.resized_width_px}x{budget.resized_height_px}",
        "14 px patches": f"{budget.num_patches:,}",
        "image tokens": f"{budget.num_image_tokens:,}",
        "<|image_pad|> (processor)": f"{count_image_pads(size):,}",
        "image tokens under full": f"{full.num_image_tokens:,}",
    }


pd.DataFrame({name: describe_steps(budget) for name, budget in budgets.items()})

# %% tags=["hide-input"]
phone_under_full = dataset_stats.compute_image_token_budget(*sizes["phone photo"], *full_budget)
glue("model_phone_tokens", budgets["phone photo"].num_image_tokens, display=False)
glue("model_phone_tokens_full", phone_under_full.num_image_tokens, display=False)
glue("model_thumbnail_tokens", budgets["thumbnail"].num_image_tokens, display=False)

# %% [markdown]
# Under this budget ({glue:text}`model_min_pixels` to {glue:text}`model_max_pixels` pixels) a phone
# photo becomes {glue:text}`model_phone_tokens` image tokens and a thumbnail is enlarged to
# {glue:text}`model_thumbnail_tokens`; the arithmetic and the processor agree in every column. The
# `full` budget (up to {glue:text}`model_full_max_pixels` pixels) turns the same photo into
# {glue:text}`model_phone_tokens_full` tokens. The grid below shows the record at the size the model
# sees it: thin lines between patches, thick lines around each image token.

# %% mystnb={"figure": {"caption": "A record at the processor's size: 14 px patches (thin lines) and the 28 px image tokens they merge into (thick lines).", "name": "fig-02-patches"}, "image": {"alt": "The record's product label at the size the processor resizes it to, overlaid with thin white lines every 14 pixels marking the patches and thick white lines every 28 pixels marking the image tokens; the title gives the resized size and the counts of patches and image tokens."}}
record_budget = budgets["this record"]
viz.plot_patch_grid(
    record["image"], record_budget.resized_width_px, record_budget.resized_height_px
)

# %% [markdown]
# ## The chat template and its special tokens
#
# Training and inference both talk to the model as a chat: a system message, the user's image and
# prompt, and the assistant's answer. `build_conversation` writes one record as that chat, and the
# processor's {term}`chat template` turns it into text with special tokens:

# %%
conversation = data.build_conversation(
    record, prompt=config.data.prompt, system_message=config.data.system_message
)
chat_text = processor.apply_chat_template(conversation, tokenize=False)
print(chat_text)

# %% [markdown]
# The image is a single `<|image_pad|>` in the text. The processor expands it into one pad per image
# token, and the model swaps each pad for the matching merged-patch vector:

# %%
inputs = processor(text=[chat_text], images=[record["image"]], return_tensors="pt")
input_ids = inputs["input_ids"][0].tolist()
{
    "tokens in the sequence": len(input_ids),
    "image_grid_thw": inputs["image_grid_thw"][0].tolist(),
    "<|image_pad|> tokens": input_ids.count(image_pad_id),
}

# %% [markdown]
# `image_grid_thw` is the image's grid of 14 px patches as (frames, rows, columns); a still image
# is one frame. {numref}`fig-02-architecture` draws the whole path with these numbers: the
# vision tower sees the patches, the merger joins each 2x2 block into one token (drawn here in
# its block's mean colour), and the language model reads those tokens, row by row, where the
# pads were. The outlined block is one token followed from start to end.

# %%
patch_size_px = processor.image_processor.patch_size
merge_size = processor.image_processor.merge_size
glue("model_patch_px", patch_size_px, display=False)
glue("model_merge_size", merge_size, display=False)
patch_size_px, merge_size


# %% mystnb={"figure": {"caption": "From pixels to the language model: patches, the 2x2 merge, and the image's run of <|image_pad|> tokens in the sequence.", "name": "fig-02-architecture"}, "image": {"alt": "Three panels. Top left: the record's image at the processor's size, cut into a grid of 14-pixel patches, one 2x2 block outlined in orange-red. Top right: the same image as a coarser grid of merged image tokens, each cell in its block's mean colour, the matching cell outlined and joined to the block by an arrow. Bottom: the language model's input around the image: a few text tokens, <|vision_start|>, a long ribbon of coloured cells, one per <|image_pad|>, with an arrow to the followed token's cell, then <|vision_end|> and the start of the prompt."}}
def decode_each(token_ids: list[int]) -> list[str]:
    """Return the text of each token on its own."""
    return [processor.tokenizer.decode([token_id]) for token_id in token_ids]


viz.plot_model_architecture(
    record["image"],
    inputs["image_grid_thw"][0].tolist(),
    patch_size_px,
    merge_size,
    decode_each(input_ids),
)

# %% [markdown]
# The vision tower works on {glue:text}`model_patch_px` px patches, and the merger joins
# {glue:text}`model_merge_size` x {glue:text}`model_merge_size` of them, so each `<|image_pad|>`
# stands for a square of 28 x 28 pixels. The ribbon reads the token grid row by row: its first
# cells are the image's top row.

# %% mystnb={"figure": {"caption": "The training example as the model reads it, one cell per token, special tokens coloured (the run of image pads is drawn as one cell).", "name": "fig-02-token-strip"}, "image": {"alt": "The chat text of one training example drawn as rows of small cells, one per token: grey cells for ordinary text, pink for chat markup such as <|im_start|> and <|im_end|>, blue for the vision tokens, where the whole run of image pads is a single cell marked with its count, and orange for the grounding tokens around the box coordinates."}}
viz.plot_token_strip(decode_each(input_ids), title="One training example, token by token")

# %% [markdown]
# {numref}`fig-02-token-strip` shows the whole sequence: chat markup around each turn, the image's
# run of pads between `<|vision_start|>` and `<|vision_end|>`, and the answer's grounding tokens.
# Each special token is one token with a fixed id. The course looks them up by name, never by a
# bare number copied from somewhere; the ids below come from the tokenizer and match the pinned
# ones in `vlmlib.tokens`:

# %%
pd.DataFrame(
    [
        {
            "token": token,
            "id (tokenizer)": processor.tokenizer.convert_tokens_to_ids(token),
            "id (vlmlib.tokens)": pinned_id,
            "in this example": input_ids.count(pinned_id),
        }
        for token, pinned_id in tokens.QWEN2_VL_SPECIAL_TOKEN_IDS.items()
    ]
).set_index("token")

# %% [markdown]
# ## M-RoPE: three position ids per token
#
# Attention by itself ignores order; Qwen2's language model adds it with rotary position
# embeddings (RoPE) {cite}`su2021roformer`, which rotate each query and key by an angle that grows
# with the token's position. In a text-only model the position is the token's index. Qwen2-VL's
# {term}`M-RoPE` {cite}`wang2024qwen2vl` splits each head's rotary frequencies into three groups,
# for time, height and width, and gives every token three position ids, one per group:
#
# - a **text token** gets the same number three times, so for text M-RoPE is plain RoPE;
# - an **image token** gets the image's starting position on the time axis, and its row and its
#   column (each added to that start) on the height and width axes. Two tokens in the same column
#   of the image share a width id, however far apart they sit in the sequence.
#
# The model computes these ids inside `forward` and never returns them.
# `get_model_mrope_position_ids` asks the model's own `get_rope_index` for them, here on a batch of
# two examples as chapter 3's collator builds it, padding included. The result has one row per
# axis, then the batch and the sequence: shape (3, batch, length).

# %%
collated = collators.CollatorV3(processor)([splits["train"][index] for index in range(2)])
position_ids = positions.get_model_mrope_position_ids(model, collated)
position_ids.shape

# %% [markdown]
# Here is example 0 where its image begins: the token at each index of the sequence, and its
# three ids.

# %%
example_ids = collated["input_ids"][0]
is_image = example_ids == image_pad_id
first_pad = int(is_image.nonzero()[0])
last_pad = int(is_image.nonzero()[-1])


def show_positions(indices: range) -> pd.DataFrame:
    """Return each token of example 0 at `indices` with its three M-RoPE position ids."""
    rows = {"token": decode_each(example_ids[list(indices)].tolist())}
    for axis, ids in zip(positions.MROPE_AXES, position_ids[:, 0, list(indices)].tolist()):
        rows[f"{axis} id"] = ids
    return pd.DataFrame(rows, index=list(indices)).T


show_positions(range(first_pad - 3, first_pad + 12))

# %% [markdown]
# Before the image, the three ids equal the index. From the first `<|image_pad|>` on, the temporal
# id stays put while the width id counts columns; at the end of a row the width id starts again
# and the height id moves up by one. And where the image ends:

# %%
show_positions(range(last_pad - 2, last_pad + 5))

# %% tags=["hide-input"]
image_grid = collated["image_grid_thw"][0].tolist()  # (frames, rows, columns) of patches
image_rows, image_columns = image_grid[1] // merge_size, image_grid[2] // merge_size
glue("model_mrope_first_index", first_pad, display=False)
glue("model_mrope_last_index", last_pad, display=False)
glue("model_mrope_num_pads", int(is_image.sum()), display=False)
glue("model_mrope_rows", image_rows, display=False)
glue("model_mrope_columns", image_columns, display=False)
glue("model_mrope_resume_index", last_pad + 1, display=False)
glue("model_mrope_resume_position", int(position_ids[0, 0, last_pad + 1]), display=False)
last_index = int(collated["attention_mask"][0].sum()) - 1  # right padding: the last real token
glue("model_mrope_last_token_index", last_index, display=False)
glue("model_mrope_last_token_position", int(position_ids[0, 0, last_index]), display=False)

# %% mystnb={"figure": {"caption": "M-RoPE's position ids around the image of example 0. Left: the temporal, height and width id of each token against its index, with plain RoPE's id (the index) for comparison. Right: the image's tokens in place, with their height and width ids on the axes.", "name": "fig-02-mrope"}, "image": {"alt": "Left: a line chart of position id against index in the sequence. Before a grey band marking the image tokens, the three ids rise together along the diagonal. Inside the band the temporal id is flat, the height id climbs in steps, one per row of tokens, and the width id is a sawtooth that restarts at every row. After the band, where an arrow marks the index and position at which the text resumes, all three ids meet again and rise one per token, far below the diagonal line of plain RoPE. Right: a square heat map of the image's tokens, coloured by their order in the sequence from the top row to the bottom row, with height ids on the vertical axis and width ids on the horizontal axis."}}
viz.plot_mrope_positions(position_ids[:, 0], is_image.tolist())

# %% [markdown]
# The image's {glue:text}`model_mrope_num_pads` tokens fill indices
# {glue:text}`model_mrope_first_index` to {glue:text}`model_mrope_last_index`, yet their height ids
# take only {glue:text}`model_mrope_rows` values and their width ids {glue:text}`model_mrope_columns`,
# all counted from {glue:text}`model_mrope_first_index` ({numref}`fig-02-mrope`). The first text
# token after the image sits at index {glue:text}`model_mrope_resume_index` but gets position
# {glue:text}`model_mrope_resume_position`: the image's start plus its longer side, in tokens.
#
# Why that number? The next token must come after every image token on all three axes, and the
# largest id the image used is its start plus its longer side minus one. So on the height and
# width axes the text steps just past the image's last row or column, while on the temporal axis,
# which stayed at the image's start throughout, the id jumps by the whole side at once. Continuing
# from the index instead would spend one position per image token: the position ids would grow
# with the image's *area* rather than its side, and every token after a large photo would sit
# hundreds of positions further on. The Qwen2-VL authors give this smaller range of ids as what
# lets the model run on longer sequences than it was trained on {cite}`wang2024qwen2vl`.
#
# The price is bookkeeping: example 0's last real token is at index
# {glue:text}`model_mrope_last_token_index` with position
# {glue:text}`model_mrope_last_token_position`. When the model generates, each new token's position
# is its index minus that gap, which transformers keeps (as a negative number) in `rope_deltas`;
# padding gets position 0 and is never attended to. The ids are the same under both profiles for
# the same image; the tiny model only shares its rotary frequencies out among the three axes
# differently from Qwen2-VL-2B ({doc}`../book/tiny_model`).

# %% [markdown]
# ## How a box answer is tokenised
#
# The answer the model learns is text. Qwen2's tokenizer splits numbers into single digits, so every
# coordinate is one to four tokens, written one after the other:

# %% mystnb={"figure": {"caption": "The record's answer, token by token: each digit is its own token.", "name": "fig-02-answer-tokens"}, "image": {"alt": "The record's target answer drawn as a row of cells, one per token: orange grounding tokens for the object reference and the box, grey cells for the label text, and one grey cell per digit of each coordinate, with the brackets and commas in cells of their own or merged into short punctuation tokens."}}
answer = data.format_answer(record["objects"])
answer_ids = processor.tokenizer(answer, add_special_tokens=False)["input_ids"]
viz.plot_token_strip(
    decode_each(answer_ids), title="A box answer, token by token", max_row_chars=60
)

# %% tags=["hide-input"]
glue("model_answer_tokens", len(answer_ids), display=False)

# %% [markdown]
# This one-box answer is {glue:text}`model_answer_tokens` tokens ({numref}`fig-02-answer-tokens`).
# Punctuation may merge (`),(` is a single token), digits never do. The coordinates sit on Qwen2-VL's
# grid of 0 to 999 (thousandths, truncated), relative to the image, whatever its size in pixels:
# the model never needs to know how large the photo was, and a grid step is 0.1% of a side. Writing digit by digit has a
# consequence for training: a wrong first digit moves a corner by a tenth of the image, a wrong last
# digit by a thousandth, yet the loss counts both as one wrong token. The grid and the digits are
# the same in both profiles, because the tokenizer is the same.

# %% [markdown]
# ## Zero-shot answers
#
# Before training, what does the model answer? `generate_answers` builds the prompt (everything up
# to the assistant's turn), generates greedily, and decodes with the special tokens kept so that
# the parser can see the answer's structure.

# %%
eval_records = [splits["eval"][index] for index in range(4)]
answers = inference.generate_answers(
    model, processor, eval_records, max_new_tokens=config.callbacks.max_new_tokens
)
parsed = [parsing.parse_box_answer(answer) for answer in answers]
pd.DataFrame(
    {
        "why no box": [result.failure_reason or "" for result in parsed],
        "boxes (box_qwen)": [[box.box_qwen for box in result.boxes] for result in parsed],
        "answer begins": [answer[:24] for answer in answers],
    },
    index=[record["image_id"] for record in eval_records],
)

# %% mystnb={"figure": {"caption": "Zero-shot answers: ground truth (solid blue) and any box parsed from the answer (dashed orange).", "name": "fig-02-zero-shot"}, "image": {"alt": "Four evaluation images side by side, each titled with the number of boxes parsed from the model's answer. The true nutrition table is outlined in solid blue and each box the model gave before any fine-tuning in dashed orange."}}
drawn = []
for eval_record, result in zip(eval_records, parsed):
    image = eval_record["image"]
    truth_xyxy = [
        boxes.convert_hub_box_to_xyxy(box_hub, *image.size)
        for box_hub in eval_record["objects"]["bbox"]
    ]
    predicted_xyxy = [
        boxes.convert_qwen_box_to_xyxy(box.box_qwen, *image.size) for box in result.boxes
    ]
    drawn.append(viz.draw_boxes(image, truth_xyxy, predicted_xyxy))
titles = [f"{len(result.boxes)} box(es) parsed" for result in parsed]
viz.plot_image_grid(drawn, titles=titles, num_columns=4, figure_size=(8, 3))

# %% tags=["hide-input"]
glue("model_num_parsed", sum(not result.is_parse_failure for result in parsed), display=False)
glue("model_num_answers", len(parsed), display=False)

# %% [markdown]
# {glue:text}`model_num_parsed` of {glue:text}`model_num_answers` answers held a usable box.
# Qwen2-VL-2B-Instruct was pretrained on grounding data in this very format, so it often answers
# with a box already, but not reliably: it may box the whole label, describe the table in words,
# or use a label of its own. Measuring how often, and how well, is chapter 6's job; making it
# reliable is what fine-tuning is for.

# %% tags=["remove-input"] mystnb={"markdown_format": "myst"}
show_profile_note(
    "tiny",
    """
```{note}
Under `tiny` most answers are expected to parse: the pretrained tiny model answers in the
grounding format, and boxes the logo as well as the tables, since its pretraining asked for every
object.
```
""",
)
show_profile_note(
    "tiny",
    """
```{admonition} What the real model does
:class: tip
The answers above come from the tiny stand-in. For the real photos, the published zero-shot
figures are for the 7B sibling: on this dataset's 123 validation images, Qwen2-VL-7B-Instruct
scores a mean IoU of 0.590 and an F1 at IoU 0.5 of 0.654 before any fine-tuning
{cite}`abdullah2025qwen2vlnutrition`. No such figure is published for Qwen2-VL-2B; the full
profile runs this page on it.
```
""",
)

# %% [markdown]
# ## Why answers fail to parse
#
# `parse_box_answer` never raises: it returns the boxes it could read and, when there are none, the
# reason, in a `ParsedAnswer`:
#
# ```{literalinclude} ../vlmlib/parsing.py
# :pyobject: ParsedAnswer
# ```
#
# Typical answers, good and bad, and what the parser makes of them:

# %%
label = "<|object_ref_start|>nutrition-table<|object_ref_end|>"
typical_answers = {
    "the trained format": label + "<|box_start|>(120,340),(560,910)<|box_end|>",
    "special tokens stripped": "nutrition-table(120,340),(560,910)",
    "a description in words": "The nutrition table is on the back.",
    "cut off by max_new_tokens": label + "<|box_start|>(120,340),(56",
    "pixel coordinates": "<|box_start|>(1200,340),(2560,910)<|box_end|>",
    "corners swapped": "<|box_start|>(560,910),(120,340)<|box_end|>",
    "nothing at all": "",
}
typical_parsed = {case: parsing.parse_box_answer(text) for case, text in typical_answers.items()}
pd.DataFrame(
    {
        "boxes": {
            case: [box.box_qwen for box in result.boxes] for case, result in typical_parsed.items()
        },
        "failure reason": {
            case: (result.failure_reason or "").split(":")[0]
            for case, result in typical_parsed.items()
        },
    }
)

# %% [markdown]
# The failures fall into four kinds, each with its own fix:
#
# - **no box found**: the model answered in words. Fine-tuning on the grounding format fixes it.
# - **truncated box**: generation stopped mid-answer. Raise `max_new_tokens` (chapter 1 measured
#   the longest answer).
# - **all boxes rejected**: coordinates off the grid of 0 to 999 (often pixels) or corners in the wrong
#   order. The model has the format but not the grid; training on the grid fixes it.
# - **empty answer**: the model ended its turn at once.
#
# In the zero-shot table above, the "why no box" column names one of these reasons for each
# answer that failed, and is empty for the {glue:text}`model_num_parsed` of
# {glue:text}`model_num_answers` that parsed. A parsed answer is not yet a right one: in
# {numref}`fig-02-zero-shot`, look for dashed boxes on something other than the table, and for one
# box too many or too few. Chapter 6 counts both, the failure reasons and the misplaced boxes, over
# the whole evaluation split, before and after fine-tuning.

# %% [markdown]
# ## Summary
#
# - Qwen2-VL is a vision tower, a patch merger and a language model; `count_parameters` counts each.
# - The pixel budget fixes the resized size, hence the patches and the `<|image_pad|>` count: one
#   image token per 28x28 pixels, as the processor itself confirms.
# - The chat template wraps system message, image, prompt and answer in special tokens, found by name.
# - M-RoPE gives every token three position ids: an image token's row and column, a text token's
#   position three times; the text after an image resumes at its start plus its longer side.
# - A box answer is one token per digit on a grid of 0 to 999 that does not depend on the image size.
# - Zero-shot answers are parsed without ever raising, and each failure has a named reason.
#
# ## Exercises
#
# ```{exercise} The price of a budget
# :label: ex-02-budget
# With `compute_image_token_budget`, find the image tokens of a 3024x4032 photo for `max_pixels` of
# 256, 640 and 1280 blocks of 28x28 pixels. How does the count grow with `max_pixels`? Attention
# compares every token with every other, so does the training step's time grow with the square of
# the count? Count the floating-point operations (FLOPs) of Qwen2-VL-2B's language model per token
# and per layer: width 1,536, 12 query heads and 2 key/value heads of 128 dimensions, an MLP of
# width 8,960.
# ```
#
# ```{solution-start} ex-02-budget
# :class: dropdown
# ```
#
# ```python
# [dataset_stats.compute_image_token_budget(3024, 4032, 256 * 784, blocks * 784).num_image_tokens
#  for blocks in (256, 640, 1280)]  # [234, 609, 1230]
# ```
#
# The count grows about in proportion to `max_pixels` (a bit less, because sides round down to 28
# px). The step's time grows about as fast, not with the square. A matrix product costs 2 FLOPs per
# multiply-add; per token and per layer of the language model (width $d$ = 1,536, sequence length
# $L$):
#
# - the **linear layers** cost the same whatever $L$: the query and output projections are
#   $d \times d$, the key and value projections $d \times 256$, the MLP's three matrices
#   $d \times 8960$, so $2 \times 46.8$ M $\approx$ 93.6 MFLOPs;
# - **attention itself**, the scores $QK^\top$ and the weighted sum of the values, costs
#   $2dL$ FLOPs each, $4dL$ together: 1.5 MFLOPs at $L$ = 250, 8.0 MFLOPs at $L$ = 1,300.
#
# ```python
# width, linear_flops = 1536, 2 * (2 * 1536**2 + 2 * 1536 * 256 + 3 * 1536 * 8960)
# {length: 4 * width * length / (4 * width * length + linear_flops) for length in (250, 1300)}
# ```
#
# So attention is 2% to 8% of the language model's work at these lengths (and causal masking
# halves it again); the linear layers, whose cost grows linearly with $L$, are the rest. The square
# shows more in the vision tower, which sees four 14-pixel patches per image token (936 to 4,920
# patches here) at width 1,280: its linear layers cost 39.3 MFLOPs per patch and block, its
# attention $4 \times 1280 \times P$, from 11% of its work at 936 patches to 39% at 4,920. But the
# tower is frozen and runs forward only, while the language model also runs backward. The step
# therefore grows about in proportion to the image tokens, a little faster at the largest budget.
# {doc}`../book/costs` builds its time estimates from the same kind of arithmetic.
#
# ```{solution-end}
# ```
#
# ```{exercise} Too few new tokens
# :label: ex-02-truncation
# Generate the zero-shot answers again with `max_new_tokens=8`, and parse them. Under `full`, which
# failure reason do you expect most, and why is it not "no box found"?
# ```
#
# ```{solution-start} ex-02-truncation
# :class: dropdown
# ```
#
# Eight tokens cannot hold a whole box (the label alone takes several), so an answer that starts in
# the grounding format stops inside it: "truncated box". The parser tells that apart from an answer
# without any box, which is why its reasons are worth counting.
#
# ```{solution-end}
# ```
#
# ```{exercise} Lab 2
# :label: ex-02-lab
# Open `labs/lab_02_model.ipynb` in JupyterLab: count image tokens from the processor's grid and
# from the pixel budget, write a parser for box answers, and classify why an answer fails to
# parse, each with a self-check ({doc}`../book/labs`).
# ```
#
# ```{solution} ex-02-lab
# :class: dropdown
# The solved lab is `solutions/lab_02_model.ipynb`.
# ```
#
# ## References
#
# Qwen2-VL's architecture, dynamic resolution and grounding format are described in
# {cite}`wang2024qwen2vl`; LoRA and QLoRA in {cite}`hu2021lora` and {cite}`dettmers2023qlora`.
