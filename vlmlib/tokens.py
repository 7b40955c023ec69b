"""Qwen2-VL's special tokens, by name.

Why: collators, parsers and tests must find image pads and answer spans by their string, never by
a bare id copied from a debugger session. The ids are pinned once, here, and checked by a test
against the tokenizer (`tests/test_tokens.py`).
Explained in: chapter 02, "The chat template and its special tokens".
"""

from __future__ import annotations

__all__ = [
    "BOX_END_TOKEN",
    "BOX_START_TOKEN",
    "END_OF_TEXT_TOKEN",
    "IMAGE_PAD_TOKEN",
    "IM_END_TOKEN",
    "IM_START_TOKEN",
    "OBJECT_REF_END_TOKEN",
    "OBJECT_REF_START_TOKEN",
    "QWEN2_VL_SPECIAL_TOKEN_IDS",
    "VISION_END_TOKEN",
    "VISION_START_TOKEN",
    "VISION_TOKENS",
]

END_OF_TEXT_TOKEN = "<|endoftext|>"
IM_START_TOKEN = "<|im_start|>"
IM_END_TOKEN = "<|im_end|>"
OBJECT_REF_START_TOKEN = "<|object_ref_start|>"
OBJECT_REF_END_TOKEN = "<|object_ref_end|>"
BOX_START_TOKEN = "<|box_start|>"
BOX_END_TOKEN = "<|box_end|>"
VISION_START_TOKEN = "<|vision_start|>"
VISION_END_TOKEN = "<|vision_end|>"
IMAGE_PAD_TOKEN = "<|image_pad|>"

# The ids Qwen2-VL-2B-Instruct's tokenizer gives these tokens (its tokenizer.json, "added_tokens").
# The 151,643 ordinary byte-level BPE tokens come first, so the special tokens start at 151643.
QWEN2_VL_SPECIAL_TOKEN_IDS: dict[str, int] = {
    END_OF_TEXT_TOKEN: 151643,
    IM_START_TOKEN: 151644,
    IM_END_TOKEN: 151645,
    OBJECT_REF_START_TOKEN: 151646,
    OBJECT_REF_END_TOKEN: 151647,
    BOX_START_TOKEN: 151648,
    BOX_END_TOKEN: 151649,
    "<|quad_start|>": 151650,
    "<|quad_end|>": 151651,
    VISION_START_TOKEN: 151652,
    VISION_END_TOKEN: 151653,
    "<|vision_pad|>": 151654,
    IMAGE_PAD_TOKEN: 151655,
    "<|video_pad|>": 151656,
}

# Tokens that stand for the picture rather than for text: no collator after V1 trains on them.
VISION_TOKENS: tuple[str, ...] = (VISION_START_TOKEN, VISION_END_TOKEN, IMAGE_PAD_TOKEN)
