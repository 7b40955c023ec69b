"""Tests for vlmlib.models: loading per profile, LoRA placement, parameter counts."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from qwen_vl_utils import smart_resize

from vlmlib.config import Config, with_overrides
from vlmlib.models import (
    apply_lora,
    build_lora_config,
    count_parameters,
    get_device_map,
    get_pixel_budget,
    load_model,
    load_processor,
    load_run,
    resolve_compute_dtype,
    resolve_device,
)


def _adapted_module_names(model: torch.nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if hasattr(module, "lora_A")]


def test_load_model_puts_tiny_model_on_cpu_in_float32(tiny_model):
    parameter = next(tiny_model.parameters())
    assert parameter.device.type == "cpu" and parameter.dtype == torch.float32


def test_resolve_device_refuses_cuda_when_none_is_visible(tiny_config: Config):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        resolve_device(with_overrides(tiny_config, ["gpu.device=cuda"]))


def test_apply_lora_adapts_only_language_model_layers_by_default(tiny_config: Config, tiny_assets):
    model = apply_lora(load_model(tiny_config), tiny_config)
    names = _adapted_module_names(model)
    num_layers = tiny_config.tiny.num_hidden_layers
    assert len(names) == num_layers * len(tiny_config.lora.target_modules)
    assert all("language_model" in name for name in names)


def test_apply_lora_adapts_vision_blocks_when_train_vision_is_set(tiny_config: Config, tiny_assets):
    config = with_overrides(tiny_config, ["lora.train_vision=true"])
    names = _adapted_module_names(apply_lora(load_model(config), config))
    vision_names = [name for name in names if "visual.blocks" in name]
    assert len(vision_names) == config.tiny.vision_depth * 4  # qkv, proj, fc1, fc2 per block
    assert not any("merger" in name for name in names)


def test_apply_lora_trains_only_the_adapters(tiny_config: Config, tiny_assets):
    model = apply_lora(load_model(tiny_config), tiny_config)
    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    counts = count_parameters(model)
    assert 0 < counts.trainable < counts.total


def test_build_lora_config_uses_rank_alpha_and_dropout_from_config(tiny_config: Config):
    config = with_overrides(tiny_config, ["lora.r=4", "lora.alpha=8", "lora.dropout=0.0"])
    lora_config = build_lora_config(config)
    assert (lora_config.r, lora_config.lora_alpha, lora_config.lora_dropout) == (4, 8, 0.0)


def test_count_parameters_parts_add_up_to_all_unique_parameters(tiny_model):
    counts = count_parameters(tiny_model)
    unique_total = sum(
        parameter.numel() for parameter in {id(p): p for p in tiny_model.parameters()}.values()
    )
    assert counts.total == unique_total
    assert counts.lm_head == 0  # tied to the input embeddings, as in Qwen2-VL-2B
    assert counts.vision_tower > 0 and counts.patch_merger > 0 and counts.language_model > 0


def test_count_module_parameters_agrees_with_count_parameters_on_the_tiny_model(tiny_model):
    from vlmlib.models import count_module_parameters

    counts = count_parameters(tiny_model)
    assert count_module_parameters(tiny_model) == counts.total
    assert (
        count_module_parameters(tiny_model.model.visual)
        == counts.vision_tower + counts.patch_merger
    )


def test_count_module_parameters_counts_packed_4bit_weights_at_full_size():
    import bitsandbytes

    from vlmlib.models import count_module_parameters

    # bitsandbytes quantises on .to(device), on the CPU too; 64 wide, as its CPU kernels need.
    layer = bitsandbytes.nn.Linear4bit(
        64, 32, bias=False, quant_type="nf4", compute_dtype=torch.float32
    ).to("cpu")
    assert layer.weight.numel() == 32 * 64 // 2  # two 4-bit weights per uint8 element
    assert count_module_parameters(layer) == 32 * 64 == count_parameters(layer).total


# --- the full profile's loading path, rehearsed on CPU ("the full profile works for real") ---

# The Hub repo Qwen/Qwen2-VL-2B-Instruct ships this preprocessor_config.json,
# legacy pixel keys and all.
HUB_PREPROCESSOR_CONFIG = {
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
FULL_BUDGET = ["model.min_pixels=200704", "model.max_pixels=501760"]  # full.yaml's budget


@pytest.fixture(scope="module")
def hub_style_processor_dir(tmp_path_factory, tiny_processor) -> Path:
    """A folder with the processor files as the Hub repo has them: tokenizer,
    chat template, legacy preprocessor.
    """
    folder = tmp_path_factory.mktemp("hub-style-processor")
    tiny_processor.tokenizer.save_pretrained(folder)
    (folder / "chat_template.json").write_text(
        json.dumps({"chat_template": tiny_processor.chat_template})
    )
    (folder / "preprocessor_config.json").write_text(json.dumps(HUB_PREPROCESSOR_CONFIG))
    return folder


def _num_image_tokens(processor, width_px: int, height_px: int) -> int:
    inputs = processor.image_processor(
        images=[Image.new("RGB", (width_px, height_px))], return_tensors="pt"
    )
    return int(inputs["image_grid_thw"].prod()) // 4  # each 2x2 block of 14-px patches is one token


def test_load_processor_keeps_the_config_budget_over_the_hub_legacy_keys(
    tiny_config, hub_style_processor_dir
):
    config = with_overrides(tiny_config, FULL_BUDGET)
    processor = load_processor(config, hub_style_processor_dir)
    assert get_pixel_budget(processor) == (200704, 501760)
    height, width = smart_resize(1944, 2592, factor=28, min_pixels=200704, max_pixels=501760)
    assert (
        _num_image_tokens(processor, 2592, 1944) == (height // 28) * (width // 28) <= 640
    )  # not ~6,400


def test_saved_processor_reloads_with_the_budget_it_was_saved_with(
    tiny_config, hub_style_processor_dir, tmp_path
):
    config = with_overrides(tiny_config, FULL_BUDGET)
    load_processor(config, hub_style_processor_dir).save_pretrained(tmp_path)
    assert get_pixel_budget(load_processor(config, tmp_path)) == (200704, 501760)


def test_get_device_map_puts_each_process_on_its_local_rank(tiny_config, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert get_device_map(with_overrides(tiny_config, ["gpu.device=cuda"])) == {"": 1}
    monkeypatch.delenv("LOCAL_RANK")
    assert get_device_map(with_overrides(tiny_config, ["gpu.device=cuda"])) == {"": 0}


@pytest.mark.parametrize(
    "has_bf16, expected", [(True, torch.bfloat16), (False, torch.float16)], ids=["bf16-card", "t4"]
)
def test_auto_dtype_falls_back_to_fp16_on_a_card_without_bf16(
    tiny_config, monkeypatch, has_bf16, expected
):
    from vlmlib.training import _mixed_precision_flags

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: has_bf16)
    config = with_overrides(tiny_config, ["model.dtype=auto", "gpu.device=cuda"])
    assert resolve_compute_dtype(config) == expected
    assert _mixed_precision_flags(config) == {"bf16": has_bf16, "fp16": not has_bf16}


def test_load_model_loads_4bit_nf4_on_cpu_through_bitsandbytes(tiny_config, tiny_assets):
    model = load_model(
        with_overrides(tiny_config, ["model.load_in_4bit=true", "model.dtype=bfloat16"])
    )
    assert model.is_loaded_in_4bit
    assert type(model.model.language_model.layers[0].mlp.up_proj.weight).__name__ == "Params4bit"


def test_apply_lora_on_a_4bit_model_warns_nothing(tiny_config, tiny_assets):
    config = with_overrides(
        tiny_config,
        ["model.load_in_4bit=true", "model.dtype=bfloat16", "training.gradient_checkpointing=true"],
    )
    model = load_model(config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_lora(model, config)
    assert [str(warning.message) for warning in caught] == []


def test_apply_lora_keeps_the_adapters_in_float32_on_a_4bit_bf16_model(tiny_config, tiny_assets):
    """Chapter 05, "QLoRA on the full profile": the base is 4-bit with bf16 compute, the adapters
    (and so their gradients and AdamW's state) stay float32."""
    config = with_overrides(tiny_config, ["model.load_in_4bit=true", "model.dtype=bfloat16"])
    model = apply_lora(load_model(config), config)
    adapters = {
        name: parameter.dtype
        for name, parameter in model.named_parameters()
        if parameter.requires_grad
    }
    assert adapters and all("lora_" in name for name in adapters)
    assert set(adapters.values()) == {torch.float32}
    base_layer = model.get_base_model().model.language_model.layers[0]
    assert base_layer.mlp.up_proj.weight.dtype == torch.uint8  # the 4-bit base, packed


def test_4bit_model_on_cpu_still_trains_after_a_no_grad_eval_forward(
    tiny_config, tiny_assets, tiny_processor, tiny_splits
):
    from vlmlib.collators import CollatorV3

    config = with_overrides(tiny_config, ["model.load_in_4bit=true", "model.dtype=bfloat16"])
    model = apply_lora(load_model(config), config)
    batch = CollatorV3(tiny_processor)([tiny_splits["train"][index] for index in range(2)])
    model.eval()
    with torch.no_grad():  # what a zero-shot answer or the IoU callback's first score does
        model(**{key: value for key, value in batch.items() if key != "labels"})
    model.train()
    model(**batch).loss.backward()  # bitsandbytes' CPU repack would crash here, or pass no gradient
    lora_b_grads = [
        parameter.grad for name, parameter in model.named_parameters() if "lora_B" in name
    ]
    assert lora_b_grads and all(grad is not None and grad.abs().sum() > 0 for grad in lora_b_grads)


# --- issue 21: a broken run folder is named before any model loads ---


@pytest.fixture
def merged_style_run_dir(tiny_config: Config, tiny_assets, tmp_path: Path) -> Path:
    """A complete run folder holding a full model (as `vlmlib merge-lora`
    writes): the tiny model and its config.
    """
    import shutil

    import yaml

    from vlmlib.config import RUN_CONFIG_FILE, config_to_dict

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_assets[0], run_dir)
    (run_dir / RUN_CONFIG_FILE).write_text(
        yaml.safe_dump(config_to_dict(tiny_config), sort_keys=False)
    )
    return run_dir


def test_load_run_loads_a_complete_merged_style_folder(merged_style_run_dir: Path):
    model, _, _ = load_run(merged_style_run_dir)
    assert model.config.model_type == "qwen2_vl"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


BROKEN_RUN_CASES = {  # how to break the folder, the error type, the file the message must name
    "missing-weights": (
        lambda run_dir: (run_dir / "model.safetensors").unlink(),
        FileNotFoundError,
        "model.safetensors",
    ),
    "truncated-weights": (
        lambda run_dir: _truncate(run_dir / "model.safetensors"),
        ValueError,
        "model.safetensors",
    ),
    "corrupt-config": (
        lambda run_dir: (run_dir / "config.json").write_text("{"),
        ValueError,
        "config.json",
    ),
    "missing-processor-config": (
        lambda run_dir: (run_dir / "processor_config.json").unlink(),
        FileNotFoundError,
        "processor_config.json or preprocessor_config.json",
    ),
    "truncated-tokenizer": (
        lambda run_dir: _truncate(run_dir / "tokenizer.json"),
        ValueError,
        "tokenizer.json",
    ),
}


@pytest.mark.parametrize("case_name", list(BROKEN_RUN_CASES), ids=list(BROKEN_RUN_CASES))
def test_load_run_names_a_missing_or_broken_file_before_loading_a_model(
    merged_style_run_dir: Path, monkeypatch, case_name: str
):
    import vlmlib.models

    break_folder, error_type, file_name = BROKEN_RUN_CASES[case_name]
    break_folder(merged_style_run_dir)
    for loader in ("load_model", "load_processor"):  # the check must come first, and cheaply
        monkeypatch.setattr(
            vlmlib.models, loader, lambda *args, **kwargs: pytest.fail("loaded before checking")
        )
    with pytest.raises(error_type) as error_info:
        load_run(merged_style_run_dir)
    assert file_name in str(error_info.value) and "a complete run folder holds" in str(
        error_info.value
    )


def test_min_image_side_is_one_qwen2_vl_token(tiny_processor):
    from vlmlib.data import MIN_IMAGE_SIDE_PX

    image_processor = tiny_processor.image_processor
    assert MIN_IMAGE_SIDE_PX == image_processor.patch_size * image_processor.merge_size == 28
