"""Tests for vlmlib.tiny and vlmlib.tokens: the real Qwen2 vocabulary, the chat
template, the tiny model.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
import tiktoken
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from qwen_vl_utils import process_vision_info
from qwen_vl_utils.vision_process import smart_resize as qwen_vl_smart_resize
from transformers import Qwen2VLForConditionalGeneration, Qwen2VLProcessor
from transformers.models.qwen2_vl.image_processing_qwen2_vl import (
    smart_resize as transformers_smart_resize,
)

from vlmlib.config import Config
from vlmlib.data import build_conversation
from vlmlib.models import get_pixel_budget
from vlmlib.tiny.assets import (
    QWEN2_PRETOKENIZER_PATTERN,
    _find_tiktoken_file,
    build_qwen2_tokenizer,
    build_tiny_model,
)
from vlmlib.tokens import IMAGE_PAD_TOKEN, QWEN2_VL_SPECIAL_TOKEN_IDS


@pytest.fixture(scope="module")
def qwen2_tokenizer():
    return build_qwen2_tokenizer()


@pytest.fixture(scope="module")
def reference_encoding() -> tiktoken.Encoding:
    """tiktoken's own BPE over the same ranks and pattern: an independent
    implementation to compare with.
    """
    ranks = tiktoken.load.load_tiktoken_bpe(str(_find_tiktoken_file()))
    return tiktoken.Encoding(
        name="qwen2-reference",
        pat_str=QWEN2_PRETOKENIZER_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={},
    )


@pytest.mark.parametrize(
    ("token", "expected_id"), sorted(QWEN2_VL_SPECIAL_TOKEN_IDS.items()), ids=str
)
def test_tokenizer_special_token_ids_equal_qwen2_vl(qwen2_tokenizer, token: str, expected_id: int):
    assert qwen2_tokenizer.convert_tokens_to_ids(token) == expected_id
    assert qwen2_tokenizer.encode(token, add_special_tokens=False) == [expected_id]


def test_tokenizer_has_151643_ordinary_tokens_before_the_special_ones(qwen2_tokenizer):
    assert len(qwen2_tokenizer) == 151643 + len(QWEN2_VL_SPECIAL_TOKEN_IDS)


def test_tokenizer_matches_known_qwen2_ids(qwen2_tokenizer):
    # Ids from Qwen2's published tokenizer: "Hello" 9707, " world" 1879, "1" 16.
    assert qwen2_tokenizer.encode("Hello world", add_special_tokens=False) == [9707, 1879]
    assert qwen2_tokenizer.encode("1", add_special_tokens=False) == [16]


def test_tokenizer_splits_box_coordinates_one_digit_per_token(qwen2_tokenizer):
    tokens = qwen2_tokenizer.tokenize("(120,340),(560,910)")
    assert tokens == [
        "(",
        "1",
        "2",
        "0",
        ",",
        "3",
        "4",
        "0",
        "),(",
        "5",
        "6",
        "0",
        ",",
        "9",
        "1",
        "0",
        ")",
    ]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=60))
def test_tokenizer_agrees_with_tiktoken_and_round_trips(
    qwen2_tokenizer, reference_encoding, text: str
):
    assume("<|" not in text)  # special-token strings in text become special tokens, by design
    normalised = unicodedata.normalize("NFC", text)  # Qwen2 normalises to NFC before splitting
    ids = qwen2_tokenizer.encode(text, add_special_tokens=False)
    assert ids == reference_encoding.encode(normalised)
    assert qwen2_tokenizer.decode(ids) == normalised


def test_chat_template_renders_qwen2_vl_conversation(tiny_processor: Qwen2VLProcessor):
    record = {
        "image": Image.new("RGB", (64, 64)),
        "objects": {"bbox": [[0.1, 0.2, 0.5, 0.6]], "category_name": ["nutrition-table"]},
    }
    text = tiny_processor.apply_chat_template(
        build_conversation(record, prompt="Find it."), tokenize=False
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Find it.<|im_end|>\n"
        "<|im_start|>assistant\n<|object_ref_start|>nutrition-table<|object_ref_end|>"
        "<|box_start|>(200,100),(600,500)<|box_end|><|im_end|>\n"
    )


def test_chat_template_adds_generation_prompt(tiny_processor: Qwen2VLProcessor):
    record = {"image": Image.new("RGB", (64, 64)), "objects": {"bbox": [], "category_name": []}}
    conversation = build_conversation(record, include_answer=False)
    text = tiny_processor.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize(
    "size", [(112, 112), (224, 140), (97, 211), (640, 480)], ids=lambda size: f"{size[0]}x{size[1]}"
)
def test_image_pad_count_equals_grid_patches_over_merge_squared(
    tiny_processor: Qwen2VLProcessor, size: tuple[int, int]
):
    record = {"image": Image.new("RGB", size), "objects": {"bbox": [], "category_name": []}}
    min_pixels, max_pixels = get_pixel_budget(tiny_processor)
    conversation = build_conversation(
        record, include_answer=False, min_pixels=min_pixels, max_pixels=max_pixels
    )
    images, _ = process_vision_info(conversation)
    text = tiny_processor.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True
    )
    batch = tiny_processor(text=[text], images=images, return_tensors="pt")
    num_pads = int(
        (
            batch["input_ids"] == tiny_processor.tokenizer.convert_tokens_to_ids(IMAGE_PAD_TOKEN)
        ).sum()
    )
    merge = tiny_processor.image_processor.merge_size
    assert num_pads == int(batch["image_grid_thw"].prod()) // merge**2
    assert batch["pixel_values"].shape == (
        int(batch["image_grid_thw"].prod()),
        3 * 2 * 14 * 14,
    )  # (total_patches, 1176)
    height_px, width_px = (int(side) * 14 for side in batch["image_grid_thw"][0, 1:])
    # Two resizes: qwen-vl-utils' (in process_vision_info), then the processor's.
    # Each rounds the sides to multiples of 28 px inside the budget; with the tiny
    # profile's min = max, a non-square image can overshoot in the first and be
    # shrunk below the budget by the second. Only a square one meets it exactly.
    first = qwen_vl_smart_resize(
        size[1], size[0], factor=28, min_pixels=min_pixels, max_pixels=max_pixels
    )
    assert (height_px, width_px) == transformers_smart_resize(
        *first, factor=28, min_pixels=min_pixels, max_pixels=max_pixels
    )
    if size[0] == size[1]:
        assert height_px * width_px >= min_pixels


def test_tiny_model_reloads_from_cache_with_identical_weights(
    tiny_config: Config, tiny_assets: tuple[Path, Path]
):
    fresh = build_tiny_model(tiny_config)  # same seed as the cached build
    cached = Qwen2VLForConditionalGeneration.from_pretrained(tiny_assets[0])
    fresh_state, cached_state = fresh.state_dict(), cached.state_dict()
    assert fresh_state.keys() == cached_state.keys()
    assert all(torch.equal(fresh_state[name], cached_state[name]) for name in fresh_state)


def test_tiny_processor_reloads_from_cache_with_the_same_tokenizer_and_budget(
    tiny_processor: Qwen2VLProcessor, tiny_config: Config
):
    assert tiny_processor.tokenizer.encode("Hello world", add_special_tokens=False) == [9707, 1879]
    assert get_pixel_budget(tiny_processor) == (
        tiny_config.model.min_pixels,
        tiny_config.model.max_pixels,
    )


def test_tiny_model_forward_gives_finite_loss(tiny_model, tiny_processor, tiny_splits):
    record = tiny_splits["train"][0]
    min_pixels, max_pixels = get_pixel_budget(tiny_processor)
    conversation = build_conversation(record, min_pixels=min_pixels, max_pixels=max_pixels)
    images, _ = process_vision_info(conversation)
    batch = tiny_processor(
        text=[tiny_processor.apply_chat_template(conversation, tokenize=False)],
        images=images,
        return_tensors="pt",
    )
    with torch.no_grad():
        output = tiny_model(**batch, labels=batch["input_ids"])
    assert torch.isfinite(output.loss)
    assert output.logits.shape[-1] == 151936


def test_build_tiny_model_rejects_mrope_sections_that_do_not_fit_the_head(tiny_config: Config):
    from vlmlib.config import with_overrides

    with pytest.raises(ValueError, match="mrope_section"):
        build_tiny_model(with_overrides(tiny_config, ["tiny.mrope_section=[4,4,4]"]))
