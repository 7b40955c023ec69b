"""Tests for vlmlib.merging: a merged adapter answers exactly as base + adapter, and the check is not vacuous."""

from __future__ import annotations

import pytest
import torch

from vlmlib.config import with_overrides
from vlmlib.inference import generate_answers
from vlmlib.merging import merge_lora
from vlmlib.models import load_model, load_run
from vlmlib.training import train


@pytest.fixture(scope="module")
def run_with_strong_adapter(tiny_config, tiny_splits, tmp_path_factory):
    """A saved run whose adapter visibly changes the model: LoRA B starts at zero, so it is set at random."""
    config = with_overrides(tiny_config, ["training.max_steps=1", "callbacks.iou_eval=false", "callbacks.console_log=false"])
    run = train(config, output_dir=tmp_path_factory.mktemp("run"), splits=tiny_splits)
    model = run.trainer.model
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    model.save_pretrained(run.output_dir)
    return run.output_dir


def test_merge_lora_merged_model_gives_identical_answers(run_with_strong_adapter, tmp_path):
    report = merge_lora(run_with_strong_adapter, tmp_path / "merged", num_check_records=4, max_new_tokens=12)
    assert report.num_checked == 4 and report.is_equivalent and not report.mismatches
    assert report.max_logit_difference < 1e-3
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {path.name for path in (tmp_path / "merged").iterdir()}


def test_merge_lora_check_is_not_vacuous_the_adapter_changes_answers(run_with_strong_adapter, tiny_config, tiny_processor, tiny_splits):
    records = [tiny_splits["eval"][index] for index in range(4)]
    adapted, _, _ = load_run(run_with_strong_adapter)
    base_answers = generate_answers(load_model(tiny_config), tiny_processor, records, max_new_tokens=12)
    adapted_answers = generate_answers(adapted, tiny_processor, records, max_new_tokens=12)
    assert base_answers != adapted_answers


def test_merged_model_loads_as_a_full_model_and_answers_the_same(run_with_strong_adapter, tmp_path, tiny_processor, tiny_splits):
    merge_lora(run_with_strong_adapter, tmp_path / "merged", num_check_records=2, max_new_tokens=8)
    merged, _, _ = load_run(tmp_path / "merged")
    adapted, _, _ = load_run(run_with_strong_adapter)
    records = [tiny_splits["eval"][index] for index in range(2)]
    assert generate_answers(merged, tiny_processor, records, max_new_tokens=8) == generate_answers(adapted, tiny_processor, records, max_new_tokens=8)


def test_merge_lora_refuses_a_folder_without_adapter(tmp_path):
    with pytest.raises(ValueError, match="no adapter_config.json"):
        merge_lora(tmp_path, tmp_path / "out")
