"""Tests for benchmarks/estimate_costs.py: its counts against the real model, PEFT and the collator.

The estimate is arithmetic; these tests check that each number it starts from (parameters, adapter
size, bytes kept per token, tokens per example) is what the course's own code produces.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from peft import get_peft_model
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a folder of the repository, not a package
    sys.path.insert(0, str(ROOT))

from benchmarks import estimate_costs as costs  # noqa: E402
from benchmarks.workload import build_photo_records, load_qwen2_vl_2b_config  # noqa: E402
from vlmlib.collators import IGNORE_INDEX, CollatorV3  # noqa: E402
from vlmlib.config import load_config  # noqa: E402
from vlmlib.models import build_lora_config  # noqa: E402
from vlmlib.tiny import build_tiny_processor  # noqa: E402
from vlmlib.tokens import IMAGE_PAD_TOKEN  # noqa: E402

SIZES = costs.read_model_sizes()


@pytest.fixture(scope="module")
def full_config():
    return load_config(profile="full")


def _build_meta_model() -> Qwen2VLForConditionalGeneration:
    with torch.device("meta"):  # shapes only, no memory
        return Qwen2VLForConditionalGeneration(load_qwen2_vl_2b_config())


def test_estimate_parameters_add_up_to_the_published_2b_count(full_config):
    estimate = costs.estimate_costs(full_config, SIZES, batch_size=1)
    total = (
        estimate.lm_linear_parameters
        + estimate.vision_linear_parameters
        + estimate.unquantised_parameters
    )
    assert total == 2_208_985_600  # "2.21B" on the model card; test_benchmarks.py counts it too


def test_estimate_quantises_exactly_the_linear_layers_except_the_tied_head(full_config):
    # bitsandbytes, through transformers, turns every nn.Linear into a 4-bit one except the output
    # head (tied to the 16-bit embedding); tests/test_full_rehearsal.py checks that on a real load.
    linear_weights = sum(
        module.weight.numel()
        for name, module in _build_meta_model().named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")
    )
    estimate = costs.estimate_costs(full_config, SIZES, batch_size=1)
    assert estimate.lm_linear_parameters + estimate.vision_linear_parameters == linear_weights


def test_count_lora_parameters_matches_peft_on_the_2b_model(full_config):
    peft_model = get_peft_model(_build_meta_model(), build_lora_config(full_config))
    trainable = sum(
        parameter.numel() for parameter in peft_model.parameters() if parameter.requires_grad
    )
    lora = full_config.lora
    expected = costs.count_lora_parameters(SIZES, lora.r, lora.target_modules)
    assert expected == trainable


def _saved_bytes(layer: torch.nn.Module, rotary: torch.nn.Module, num_tokens: int) -> int:
    """Return the bytes of distinct storages autograd keeps from one forward of `layer`."""
    hidden = torch.randn(1, num_tokens, SIZES.hidden, requires_grad=True)
    positions = torch.arange(num_tokens).view(1, 1, -1).expand(3, 1, -1)  # M-RoPE: (3, batch, seq)
    storages: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    position_embeddings = rotary(hidden, positions)
    with (
        torch.autocast("cpu", dtype=torch.bfloat16),
        torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor),
    ):
        layer(
            hidden,
            attention_mask=None,
            position_ids=positions,
            position_embeddings=position_embeddings,
        )
    return sum(storages.values())


def test_activation_bytes_per_token_match_what_one_real_width_layer_saves(full_config):
    raw = json.loads(costs.CONFIG_FILE.read_text())
    raw["text_config"].update(num_hidden_layers=1, vocab_size=1024)  # one layer of the real width
    raw["vision_config"]["depth"] = 1
    model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(**raw)).float()  # PEFT's float32 cast
    model.requires_grad_(False)
    model = get_peft_model(model, build_lora_config(full_config)).train()
    language_model = model.get_base_model().model.language_model
    layer, rotary = language_model.layers[0], language_model.rotary_emb
    # The bytes that grow with the sequence; the fixed part is the layer's bf16 weight copies,
    # which the 4-bit layers of QLoRA do not make.
    per_token = (_saved_bytes(layer, rotary, 96) - _saved_bytes(layer, rotary, 32)) / 64
    expected = costs.activation_bytes_per_token_per_layer(SIZES, full_config.lora.r)
    assert per_token == pytest.approx(expected, rel=0.02)


def test_tokens_per_example_match_collator_v3_at_the_full_budget(full_config):
    record = build_photo_records(640, 1, seed=0)[0]
    record["image"] = record["image"].resize((costs.PHOTO_WIDTH_PX, costs.PHOTO_HEIGHT_PX))
    record["width"], record["height"] = costs.PHOTO_WIDTH_PX, costs.PHOTO_HEIGHT_PX
    processor = build_tiny_processor(full_config)  # the real vocabulary, template and budget
    batch = CollatorV3(processor)([record])
    image_pad_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_PAD_TOKEN)
    num_image_tokens = int((batch["input_ids"][0] == image_pad_id).sum())
    num_labelled = int((batch["labels"][0] != IGNORE_INDEX).sum())
    estimate = costs.estimate_costs(full_config, SIZES, batch_size=1)
    assert num_image_tokens == estimate.image_tokens
    assert batch["input_ids"].shape[1] - num_image_tokens - num_labelled == costs.PROMPT_TOKENS
    assert costs.ANSWER_TOKENS - 3 <= num_labelled <= costs.ANSWER_TOKENS  # digits vary per box


def test_checkpointing_trades_a_third_more_compute_for_activation_memory(full_config):
    with_checkpoints = costs.estimate_costs(full_config, SIZES, batch_size=4)
    without = costs.estimate_costs(full_config, SIZES, batch_size=4, is_checkpointing=False)
    frozen = "language model, 4-bit linear layers"
    assert with_checkpoints.flops[frozen] / without.flops[frozen] == pytest.approx(6 / 4)
    assert without.vision_flops == with_checkpoints.vision_flops  # the frozen tower is not redone
    activations = with_checkpoints.checkpoint_gb + with_checkpoints.layer_recompute_gb
    assert without.layer_recompute_gb > 5 * activations


def test_main_prints_the_compute_and_memory_tables(capsys):
    assert costs.main(["--batch-size", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Estimate, not a measurement: batch 2")
    assert "| one example |" in printed and "| peak, allocated by tensors |" in printed


def test_grid_has_a_row_per_benchmark_row_and_v1_needs_more_memory(capsys):
    assert costs.main(["--grid"]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[2:]]
    assert len(rows) == 2 * 2 * 3  # collators x budgets x batch sizes, as gpu_train_step measures
    peak = {(row[0].strip("| "), row[1], row[2]): float(row[5].strip(" |")) for row in rows}
    assert peak[("V1", "4", "640")] > peak[("V3", "4", "640")] + 3  # every position's logits
