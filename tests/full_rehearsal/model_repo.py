"""A local stand-in for the Hub model repo `Qwen/Qwen2-VL-2B-Instruct`, small enough for 2 cores.

Why: the `full` profile loads that repo's files; the rehearsal must load files of the same kinds,
names and formats, so that a difference between the Hub's files and the tiny profile's (which
`save_pretrained` writes today) shows up here and not on a rented GPU.

What is the Hub's and what is shrunk:

- the architecture is the real `Qwen2VLForConditionalGeneration`, with two layers and width 128
  (the Hub's: 28 layers, width 1536). Every Linear is at least 64 wide: bitsandbytes' CPU 4-bit
  kernels crash on narrower layers in a no-grad forward.
- the weights are random, in bf16 as the Hub stores them, in two safetensors shards with an index,
  under the Hub's (transformers 4) parameter names: `model.layers.*`, `visual.*`, and no
  `lm_head.weight` (tied to the embeddings). transformers 5 renames them while loading.
- `config.json` has the Hub's flat transformers-4 shape (text settings at the top level,
  `rope_scaling` with `type: mrope`, `torch_dtype`), not the nested one transformers 5 writes.
- `preprocessor_config.json` is the Hub's file, key for key: its `min_pixels`/`max_pixels` are the
  model's own range (4 to 16,384 tokens per image), not the course's budget.
- `generation_config.json` turns sampling on with a repetition penalty, as the Hub's does.
- the tokenizer is the real Qwen2 vocabulary with Qwen2-VL's special tokens (`vlmlib.tiny`),
  written as `tokenizer.json`, `vocab.json`, `merges.txt` and a transformers-4
  `tokenizer_config.json`, with the chat template in `chat_template.json`.

The folder holds exactly the files of the Hub repo (less README, LICENSE and .gitattributes).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

from vlmlib.tiny import QWEN2_VL_CHAT_TEMPLATE, TINY_VOCAB_SIZE, build_qwen2_tokenizer
from vlmlib.tokens import END_OF_TEXT_TOKEN, IM_END_TOKEN, QWEN2_VL_SPECIAL_TOKEN_IDS

__all__ = [
    "HUB_GENERATION_CONFIG",
    "HUB_MODEL_FILES",
    "HUB_PREPROCESSOR_CONFIG",
    "STANDIN_SIZES",
    "build_model_repo",
]

# The files of huggingface.co/Qwen/Qwen2-VL-2B-Instruct (less README.md, LICENSE, .gitattributes).
HUB_MODEL_FILES: tuple[str, ...] = (
    "chat_template.json",
    "config.json",
    "generation_config.json",
    "merges.txt",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
)
# The Hub repo's preprocessor_config.json, exactly: transformers 4's keys, the model's pixel range.
HUB_PREPROCESSOR_CONFIG: dict = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2VLProcessor",
}
# The Hub repo's generation_config.json: sampling on, nearly greedy (top_k 1), a repetition penalty.
HUB_GENERATION_CONFIG: dict = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "do_sample": True,
    "eos_token_id": [151645, 151643],
    "repetition_penalty": 1.05,
    "temperature": 0.1,
    "top_k": 1,
    "top_p": 0.001,
    "transformers_version": "4.45.0.dev0",
}
# The stand-in's sizes; the Hub's in comments. head_dim is 64 (Hub: 128), so M-RoPE's section (time,
# height, width), which must sum to head_dim / 2, is the Hub's [16, 24, 24] halved.
STANDIN_SIZES: dict = {
    "hidden_size": 128,  # 1536
    "intermediate_size": 256,  # 8960
    "num_hidden_layers": 2,  # 28
    "num_attention_heads": 2,  # 12
    "num_key_value_heads": 1,  # 2
    "mrope_section": [8, 12, 12],  # [16, 24, 24]
    "vision_depth": 2,  # 32
    "vision_embed_dim": 64,  # 1280
    "vision_num_heads": 2,  # 16
}


def _build_hub_config() -> dict:
    """Return config.json in the Hub's transformers-4 shape: text settings flat, vision nested."""
    sizes = STANDIN_SIZES
    return {
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "attention_dropout": 0.0,
        "bos_token_id": QWEN2_VL_SPECIAL_TOKEN_IDS[END_OF_TEXT_TOKEN],
        "eos_token_id": QWEN2_VL_SPECIAL_TOKEN_IDS[IM_END_TOKEN],
        "vision_start_token_id": QWEN2_VL_SPECIAL_TOKEN_IDS["<|vision_start|>"],
        "vision_end_token_id": QWEN2_VL_SPECIAL_TOKEN_IDS["<|vision_end|>"],
        "vision_token_id": QWEN2_VL_SPECIAL_TOKEN_IDS["<|vision_pad|>"],
        "image_token_id": QWEN2_VL_SPECIAL_TOKEN_IDS["<|image_pad|>"],
        "video_token_id": QWEN2_VL_SPECIAL_TOKEN_IDS["<|video_pad|>"],
        "hidden_act": "silu",
        "hidden_size": sizes["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": sizes["intermediate_size"],
        "max_position_embeddings": 32768,
        "max_window_layers": 28,
        "model_type": "qwen2_vl",
        "num_attention_heads": sizes["num_attention_heads"],
        "num_hidden_layers": sizes["num_hidden_layers"],
        "num_key_value_heads": sizes["num_key_value_heads"],
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 32768,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.41.2",
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": {
            "depth": sizes["vision_depth"],
            "embed_dim": sizes["vision_embed_dim"],
            "mlp_ratio": 4,
            "num_heads": sizes["vision_num_heads"],
            "in_chans": 3,
            "hidden_size": sizes["hidden_size"],
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "temporal_patch_size": 2,
        },
        "rope_scaling": {"type": "mrope", "mrope_section": list(sizes["mrope_section"])},
        "vocab_size": TINY_VOCAB_SIZE,
    }


def _build_model(hub_config: dict) -> Qwen2VLForConditionalGeneration:
    """Return the random model the Hub config describes, in bf16 (the Hub's storage dtype)."""
    # transformers reads the Hub's shape here as it will when the rehearsal loads the repo
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.json").write_text(json.dumps(hub_config))
        config = Qwen2VLConfig.from_pretrained(folder)
    torch.manual_seed(0)
    return Qwen2VLForConditionalGeneration(config).to(torch.bfloat16)


def _to_hub_name(name: str) -> str:
    """Map a transformers-5 parameter name to the Hub checkpoint's transformers-4 name."""
    if name.startswith("model.visual."):
        return name.removeprefix("model.")
    if name.startswith("model.language_model."):
        return "model." + name.removeprefix("model.language_model.")
    return name


def _save_hub_shards(model: Qwen2VLForConditionalGeneration, folder: Path) -> None:
    """Write the weights as the Hub does: two shards, an index, transformers-4 names, no lm_head."""
    tensors = {
        _to_hub_name(name): tensor.contiguous()
        for name, tensor in model.state_dict().items()
        if name != "lm_head.weight"  # tie_word_embeddings: the Hub checkpoint stores it once
    }
    names = list(tensors)
    halves = (names[: len(names) // 2], names[len(names) // 2 :])
    weight_map = {}
    for index, shard_names in enumerate(halves, start=1):
        shard = f"model-{index:05d}-of-00002.safetensors"
        save_file(
            {name: tensors[name] for name in shard_names},
            str(folder / shard),
            metadata={"format": "pt"},
        )
        weight_map.update({name: shard for name in shard_names})
    total_size = sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _write_tokenizer_files(folder: Path) -> None:
    """Write tokenizer.json, vocab.json, merges.txt and a transformers-4 tokenizer_config.json."""
    tokenizer = build_qwen2_tokenizer()
    with tempfile.TemporaryDirectory() as staging:
        tokenizer.save_pretrained(staging)
        tokenizer_json = json.loads((Path(staging) / "tokenizer.json").read_text())
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False))
    bpe = tokenizer_json["model"]
    (folder / "vocab.json").write_text(json.dumps(bpe["vocab"], ensure_ascii=False))
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in bpe["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = sorted(QWEN2_VL_SPECIAL_TOKEN_IDS.items(), key=lambda item: item[1])
    added_tokens_decoder = {
        str(token_id): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for token, token_id in special
    }
    tokenizer_config = {
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder,
        "additional_special_tokens": [token for token, _ in special if token != END_OF_TEXT_TOKEN],
        "bos_token": None,
        "chat_template": QWEN2_VL_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END_TOKEN,
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": END_OF_TEXT_TOKEN,
        "padding_side": "left",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (folder / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config, indent=2, ensure_ascii=False)
    )


def build_model_repo(folder: Path) -> Path:
    """Write the stand-in for `Qwen/Qwen2-VL-2B-Instruct` into `folder` (created) and return it.

    Why: `model.name=<folder>` then loads through exactly the code path of the Hub id.
    Explained in: tests/full_rehearsal/__init__.py.

    Returns:
        `folder`, holding exactly `HUB_MODEL_FILES`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True)
    hub_config = _build_hub_config()
    (folder / "config.json").write_text(json.dumps(hub_config, indent=2))
    _save_hub_shards(_build_model(hub_config), folder)
    (folder / "generation_config.json").write_text(json.dumps(HUB_GENERATION_CONFIG, indent=2))
    _write_tokenizer_files(folder)
    chat_template = {"chat_template": QWEN2_VL_CHAT_TEMPLATE}
    (folder / "chat_template.json").write_text(json.dumps(chat_template, indent=2))
    (folder / "preprocessor_config.json").write_text(json.dumps(HUB_PREPROCESSOR_CONFIG, indent=2))
    written = sorted(path.name for path in folder.iterdir())
    if written != sorted(HUB_MODEL_FILES):
        raise RuntimeError(
            f"the stand-in repo holds {written}, not the Hub repo's files {sorted(HUB_MODEL_FILES)}"
        )
    return folder
