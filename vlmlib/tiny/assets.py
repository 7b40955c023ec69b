"""Build the offline tiny profile: a real-vocabulary Qwen2-VL processor, a tiny
random model, synthetic data.

Why: the course must run on a laptop with no network. The tiny profile keeps everything a learner
touches real (the Qwen2 byte-level BPE vocabulary, Qwen2-VL's special tokens at their real ids, its
chat template and image processor, the `Qwen2VLForConditionalGeneration` architecture) and shrinks
only the sizes, so collators, training and evaluation run the full profile's code unchanged.
Explained in: book/setup, "The tiny profile".

Everything is built once and cached under `VLM_CACHE_DIR` (default `~/.cache/vlmlib`), in folders
named by a hash of the settings that shape them, so a changed setting builds a new copy.
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
from pathlib import Path

import torch
from tokenizers import AddedToken, normalizers
from transformers import (
    GenerationConfig,
    Qwen2Tokenizer,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)
from transformers.convert_slow_tokenizer import TikTokenConverter

from vlmlib.config import Config
from vlmlib.outputs import write_folder_atomically
from vlmlib.sources import CACHE_DIR_ENV_VAR, get_cache_dir, tiny_dataset_dir, tiny_model_dir
from vlmlib.tiny.pretraining import PretrainingLog, PretrainingSettings, pretrain
from vlmlib.tiny.synthetic import generate_pretraining_records, generate_synthetic_dataset
from vlmlib.tokens import END_OF_TEXT_TOKEN, IM_END_TOKEN, QWEN2_VL_SPECIAL_TOKEN_IDS

__all__ = [
    "CACHE_DIR_ENV_VAR",
    "QWEN2_PRETOKENIZER_PATTERN",
    "QWEN2_VL_CHAT_TEMPLATE",
    "TINY_VOCAB_SIZE",
    "build_qwen2_tokenizer",
    "build_tiny_model",
    "build_tiny_processor",
    "ensure_tiny_assets",
    "pretrain_tiny_model",
    "get_cache_dir",
    "tiny_dataset_dir",
    "tiny_model_dir",
]

logger = logging.getLogger(__name__)

# Qwen2's pre-tokenizer: like GPT-4's, except `\p{N}` matches ONE digit, so "560" is three tokens.
# (Qwen2 tokenizer.json, pre_tokenizer.pretokenizers[0].pattern.Regex)
QWEN2_PRETOKENIZER_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2-VL-2B-Instruct's chat template (chat_template.json), unchanged.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for "
    "message in messages %}{% if loop.first and message['role'] != 'system' "
    "%}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ "
    "message['role'] }}\n{% if message['content'] is string %}{{ message['content'] "
    "}}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == "
    "'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = "
    "image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif "
    "%}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' "
    "in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id "
    "%}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% "
    "elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif "
    "%}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_VOCAB_SIZE = 151936  # Qwen2-VL's embedding rows: 151,657 used ids, padded to a multiple of 128


def _find_tiktoken_file() -> Path:
    """Find `qwen.tiktoken` inside the installed `dashscope` wheel, without importing dashscope."""
    try:
        files = importlib.metadata.distribution("dashscope").files or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "the tiny profile needs the 'dashscope' package for qwen.tiktoken: pip "
            "install dashscope"
        ) from None
    for file in files:
        if file.name == "qwen.tiktoken":
            return Path(file.locate())
    raise FileNotFoundError(
        "the installed dashscope wheel has no qwen.tiktoken; reinstall the pinned version"
    )


def build_qwen2_tokenizer() -> Qwen2Tokenizer:
    """Rebuild Qwen2's tokenizer from the BPE ranks in `qwen.tiktoken`, with
    Qwen2-VL's special tokens.

    Why: the real vocabulary makes token counts, digit-by-digit box answers and special-token ids
    exactly those of Qwen2-VL-2B-Instruct, with no download.
    Explained in: chapter 02, "How a box answer is tokenised".

    Returns:
        A fast tokenizer: 151,643 byte-level BPE tokens, then the special tokens at 151643..151656,
        eos `<|im_end|>`, pad `<|endoftext|>`, and the Qwen2-VL chat template.
    """
    backend = TikTokenConverter(
        vocab_file=str(_find_tiktoken_file()), pattern=QWEN2_PRETOKENIZER_PATTERN
    ).converted()
    backend.normalizer = normalizers.NFC()  # Qwen2 normalises to NFC before splitting
    ordered = sorted(QWEN2_VL_SPECIAL_TOKEN_IDS.items(), key=lambda item: item[1])
    backend.add_special_tokens(
        [AddedToken(token, normalized=False, special=True) for token, _ in ordered]
    )
    for token, expected_id in ordered:
        if (
            backend.token_to_id(token) != expected_id
        ):  # the BPE file must hold exactly 151,643 ranks
            raise RuntimeError(
                f"{token} got id {backend.token_to_id(token)}, expected {expected_id}"
            )
    tokenizer = Qwen2Tokenizer(
        tokenizer_object=backend,
        eos_token=IM_END_TOKEN,
        pad_token=END_OF_TEXT_TOKEN,
        unk_token=None,
        bos_token=None,
        errors="replace",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = QWEN2_VL_CHAT_TEMPLATE
    return tokenizer


def build_tiny_processor(config: Config) -> Qwen2VLProcessor:
    """Return a `Qwen2VLProcessor`: the real tokenizer and template, and the config's pixel budget.

    Why: the processor decides how many `<|image_pad|>` tokens an image becomes;
    a small budget keeps CPU steps short.
    """
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": config.model.min_pixels, "longest_edge": config.model.max_pixels}
    )
    video_processor = Qwen2VLVideoProcessor()
    return Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=build_qwen2_tokenizer(),
        video_processor=video_processor,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )


def build_tiny_model(config: Config) -> Qwen2VLForConditionalGeneration:
    """Return a randomly initialised `Qwen2VLForConditionalGeneration` at the
    tiny sizes in `config.tiny`.

    Why: the real architecture (vision tower, patch merger, M-RoPE language
    model) at a size a CPU trains in minutes.
    Explained in: chapter 02, "The architecture".
    """
    tiny = config.tiny
    head_dim = tiny.hidden_size // tiny.num_attention_heads
    if (
        sum(tiny.mrope_section) * 2 != head_dim
    ):  # M-RoPE splits half the head dim into (time, height, width)
        raise ValueError(
            f"tiny.mrope_section {tiny.mrope_section} must sum to head_dim/2 = {head_dim // 2}"
        )
    model_config = Qwen2VLConfig(
        text_config={
            "vocab_size": TINY_VOCAB_SIZE,
            "hidden_size": tiny.hidden_size,
            "intermediate_size": tiny.intermediate_size,
            "num_hidden_layers": tiny.num_hidden_layers,
            "num_attention_heads": tiny.num_attention_heads,
            "num_key_value_heads": tiny.num_key_value_heads,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": tiny.rope_theta,
                "mrope_section": list(tiny.mrope_section),
            },
            "bos_token_id": QWEN2_VL_SPECIAL_TOKEN_IDS[END_OF_TEXT_TOKEN],
            "eos_token_id": QWEN2_VL_SPECIAL_TOKEN_IDS[IM_END_TOKEN],
            "pad_token_id": QWEN2_VL_SPECIAL_TOKEN_IDS[END_OF_TEXT_TOKEN],
        },
        vision_config={
            "depth": tiny.vision_depth,
            "embed_dim": tiny.vision_embed_dim,
            "hidden_size": tiny.hidden_size,
            "num_heads": tiny.vision_num_heads,
            "mlp_ratio": 4,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=QWEN2_VL_SPECIAL_TOKEN_IDS["<|image_pad|>"],
        video_token_id=QWEN2_VL_SPECIAL_TOKEN_IDS["<|video_pad|>"],
        vision_start_token_id=QWEN2_VL_SPECIAL_TOKEN_IDS["<|vision_start|>"],
        vision_end_token_id=QWEN2_VL_SPECIAL_TOKEN_IDS["<|vision_end|>"],
        tie_word_embeddings=True,  # as in Qwen2-VL-2B: the LM head shares the embedding matrix
    )
    torch.manual_seed(tiny.seed)
    model = Qwen2VLForConditionalGeneration(model_config)
    model.generation_config = GenerationConfig(
        eos_token_id=[
            QWEN2_VL_SPECIAL_TOKEN_IDS[IM_END_TOKEN],
            QWEN2_VL_SPECIAL_TOKEN_IDS[END_OF_TEXT_TOKEN],
        ],
        pad_token_id=QWEN2_VL_SPECIAL_TOKEN_IDS[END_OF_TEXT_TOKEN],
        do_sample=False,
    )
    return model


def pretrain_tiny_model(
    model: Qwen2VLForConditionalGeneration, processor: Qwen2VLProcessor, config: Config
) -> PretrainingLog:
    """Pretrain the random tiny `model` in place, as `config.tiny` says
    (`vlmlib.tiny.pretraining`), and return the log.

    Why: the offline stand-in for Qwen2-VL's pretraining; its images are drawn
    like the dataset's (not the dataset's own: another random stream), and its
    answers box the logo as well as the tables.
    Explained in: book/tiny_model.md.
    """

    tiny, data = config.tiny, config.data
    logger.info(
        "pretraining the tiny model: %d steps on %d images",
        tiny.pretrain_steps,
        tiny.pretrain_num_images,
    )
    records = generate_pretraining_records(
        tiny.pretrain_num_images,
        seed=tiny.seed,
        min_side_px=data.synthetic_min_side_px,
        max_side_px=data.synthetic_max_side_px,
        is_square=data.synthetic_square,
    )
    settings = PretrainingSettings(
        num_steps=tiny.pretrain_steps,
        batch_size=tiny.pretrain_batch_size,
        learning_rate=tiny.pretrain_learning_rate,
        seed=tiny.seed,
        prompt=tiny.pretrain_prompt,
    )
    return pretrain(model, processor, records, settings, data.system_message)


def _write_cache_folder(target: Path, write) -> Path:
    """Write a cache folder atomically (`vlmlib.outputs.write_folder_atomically`), so an interrupted
    build leaves no half cache; if another process finished the same folder first, keep theirs."""
    try:
        write_folder_atomically(target, write)
    except OSError:
        if not target.exists():
            raise
    return target


def ensure_tiny_assets(config: Config, rebuild: bool = False) -> tuple[Path, Path]:
    """Build (or find in the cache) the tiny model + processor and the synthetic dataset.

    Why: chapters, labs, tests and the CLI all call this first; only the first
    call pays for the build.
    Returns:
        (model folder, dataset folder): `from_pretrained` reads the first,
        `vlmlib.data.load_split` the second.
    """
    model_dir, dataset_dir = tiny_model_dir(config), tiny_dataset_dir(config)
    for folder in (model_dir, dataset_dir):
        if rebuild and folder.exists():
            shutil.rmtree(folder)
    if not model_dir.exists():
        logger.info("building the tiny model and processor in %s", model_dir)

        def write_model(staging: Path) -> None:
            model, processor = build_tiny_model(config), build_tiny_processor(config)
            if config.tiny.pretrain_steps:
                pretrain_tiny_model(model, processor, config)
            model.save_pretrained(staging)
            processor.save_pretrained(staging)

        _write_cache_folder(model_dir, write_model)
    if not dataset_dir.exists():
        logger.info("generating the synthetic dataset in %s", dataset_dir)
        data = config.data
        dataset_dict = generate_synthetic_dataset(
            num_train=data.synthetic_num_train,
            num_val=data.synthetic_num_val,
            seed=data.synthetic_seed,
            min_side_px=data.synthetic_min_side_px,
            max_side_px=data.synthetic_max_side_px,
            is_square=data.synthetic_square,
        )
        _write_cache_folder(dataset_dir, lambda staging: dataset_dict.save_to_disk(str(staging)))
    return model_dir, dataset_dir
