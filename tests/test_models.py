"""Tests for vlmlib.models: loading per profile, LoRA placement, parameter counts."""

from __future__ import annotations

import pytest
import torch

from vlmlib.config import Config, with_overrides
from vlmlib.models import apply_lora, build_lora_config, count_parameters, load_model, resolve_device


def _adapted_module_names(model: torch.nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if hasattr(module, "lora_A")]


def test_load_model_puts_tiny_model_on_cpu_in_float32(tiny_model):
    parameter = next(tiny_model.parameters())
    assert parameter.device.type == "cpu" and parameter.dtype == torch.float32


def test_load_model_refuses_4bit_without_cuda(tiny_config: Config, tiny_assets):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so 4-bit is allowed")
    with pytest.raises(ValueError, match="load_in_4bit=true needs a CUDA GPU"):
        load_model(with_overrides(tiny_config, ["model.load_in_4bit=true"]))


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
    unique_total = sum(parameter.numel() for parameter in {id(p): p for p in tiny_model.parameters()}.values())
    assert counts.total == unique_total
    assert counts.lm_head == 0  # tied to the input embeddings, as in Qwen2-VL-2B
    assert counts.vision_tower > 0 and counts.patch_merger > 0 and counts.language_model > 0
