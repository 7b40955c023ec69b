"""Tests for vlmlib.merging: the merged model computes as base + adapter, within its dtype's
rounding, and reloads as the model that was checked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from peft.tuners.lora import LoraLayer, LoraModel
from safetensors.torch import load_file, save_file

from vlmlib.config import RUN_CONFIG_FILE, with_overrides
from vlmlib.inference import generate_answers
from vlmlib.merging import _answer_logits, merge_lora, merge_tolerance
from vlmlib.models import load_model, load_run
from vlmlib.training import train


@pytest.fixture(scope="module")
def run_with_strong_adapter(tiny_config, tiny_splits, tmp_path_factory):
    """A saved run whose adapter visibly changes the model: LoRA B starts at
    zero, so it is set at random.
    """
    config = with_overrides(
        tiny_config,
        ["training.max_steps=1", "callbacks.iou_eval=false", "callbacks.console_log=false"],
    )
    run = train(config, output_dir=tmp_path_factory.mktemp("run"), splits=tiny_splits)
    model = run.trainer.model
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    model.save_pretrained(run.output_dir)
    return run.output_dir


def _copy_run(run_dir: Path, destination: Path, model_settings: dict) -> Path:
    """Copy a run folder and change its saved config's `model` section (as another run's may)."""
    shutil.copytree(run_dir, destination)
    saved = yaml.safe_load((destination / RUN_CONFIG_FILE).read_text())
    saved["model"].update(model_settings)
    (destination / RUN_CONFIG_FILE).write_text(yaml.safe_dump(saved, sort_keys=False))
    return destination


@pytest.fixture(scope="module")
def bf16_run(run_with_strong_adapter, tmp_path_factory):
    """The run in bfloat16 (a real bf16 merge on CPU), adapter at a trained size (B std 0.05)."""
    destination = tmp_path_factory.mktemp("bf16") / "run"
    run_dir = _copy_run(run_with_strong_adapter, destination, {"dtype": "bfloat16"})
    weights = load_file(run_dir / "adapter_model.safetensors")
    save_file(
        {name: value * 0.1 if "lora_B" in name else value for name, value in weights.items()},
        run_dir / "adapter_model.safetensors",
    )
    return run_dir


def test_merge_lora_merged_model_gives_identical_answers(run_with_strong_adapter, tmp_path):
    report = merge_lora(
        run_with_strong_adapter, tmp_path / "merged", num_check_records=4, max_new_tokens=12
    )
    assert report.num_checked == 4 and report.is_equivalent and not report.mismatches
    assert report.dtype == "float32" and report.max_logit_difference <= report.tolerance
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        path.name for path in (tmp_path / "merged").iterdir()
    }


def test_merge_lora_check_is_not_vacuous_the_adapter_changes_answers(
    run_with_strong_adapter, tiny_config, tiny_processor, tiny_splits
):
    records = [tiny_splits["eval"][index] for index in range(4)]
    adapted, _, _ = load_run(run_with_strong_adapter)
    base_answers = generate_answers(
        load_model(tiny_config), tiny_processor, records, max_new_tokens=12
    )
    adapted_answers = generate_answers(adapted, tiny_processor, records, max_new_tokens=12)
    assert base_answers != adapted_answers


def test_merged_model_loads_as_a_full_model_and_answers_the_same(
    run_with_strong_adapter, tmp_path, tiny_processor, tiny_splits
):
    merge_lora(run_with_strong_adapter, tmp_path / "merged", num_check_records=2, max_new_tokens=8)
    merged, _, _ = load_run(tmp_path / "merged")
    adapted, _, _ = load_run(run_with_strong_adapter)
    records = [tiny_splits["eval"][index] for index in range(2)]
    assert generate_answers(merged, tiny_processor, records, max_new_tokens=8) == generate_answers(
        adapted, tiny_processor, records, max_new_tokens=8
    )


def test_merged_qlora_run_reloads_unquantised_with_the_logits_the_check_verified(
    run_with_strong_adapter, tmp_path, tiny_processor, tiny_splits
):
    """A QLoRA run's config says load_in_4bit: true; copied, load_run(merged) would quantise."""
    qlora_run = _copy_run(run_with_strong_adapter, tmp_path / "qlora_run", {"load_in_4bit": True})
    report = merge_lora(qlora_run, tmp_path / "merged", num_check_records=2, max_new_tokens=8)
    merged, _, merged_config = load_run(tmp_path / "merged")
    assert merged_config.model.load_in_4bit is False
    assert merged_config.model.dtype == report.dtype == "float32"
    assert not getattr(merged, "is_loaded_in_4bit", False)
    adapted, _, config = load_run(qlora_run, overrides=["model.load_in_4bit=false"])
    records = [tiny_splits["eval"][index] for index in range(2)]
    answers = generate_answers(adapted, tiny_processor, records, max_new_tokens=8)
    differences = [
        float(
            (
                _answer_logits(adapted, tiny_processor, record, answer, config)
                - _answer_logits(merged, tiny_processor, record, answer, config)
            )
            .abs()
            .max()
        )
        for record, answer in zip(records, answers)
    ]
    assert max(differences) == report.max_logit_difference  # the reloaded model is the checked one


@pytest.mark.parametrize(
    ("dtype", "difference", "is_within"),
    [
        (torch.bfloat16, 1e-2, True),
        (torch.float16, 1e-2, False),
        (torch.float32, 1e-2, False),
        (torch.float32, 5e-5, True),
    ],
    ids=["bf16-rounding-passes", "fp16-too-large", "float32-too-large", "float32-rounding-passes"],
)
def test_merge_tolerance_follows_the_dtype_of_the_merged_weights(dtype, difference, is_within):
    # 1e-2: what a correct bf16 merge of the 2B model showed (issue 18); logits of size 1, as tiny's
    assert (difference <= merge_tolerance(dtype, logit_scale=1.0)) is is_within


def test_merge_tolerance_grows_with_the_logit_scale():
    tolerance_at_1 = merge_tolerance(torch.bfloat16, logit_scale=1.0)
    assert merge_tolerance(torch.bfloat16, logit_scale=20.0) == pytest.approx(20 * tolerance_at_1)


def test_merge_lora_bf16_merge_passes_though_it_differs_by_more_than_1e_3(bf16_run, tmp_path):
    report = merge_lora(bf16_run, tmp_path / "merged", num_check_records=4, max_new_tokens=12)
    assert report.dtype == "bfloat16" and report.is_equivalent
    assert report.max_logit_difference > 1e-3  # the old fixed tolerance fails this correct merge


def test_merge_lora_check_fails_an_adapter_merged_at_the_wrong_scale(
    bf16_run, tmp_path, monkeypatch
):
    """A real fault: the update folded in at 1.5 times its weight (as a wrong alpha / r would)."""
    merge_and_unload = LoraModel.merge_and_unload  # what PeftModel.merge_and_unload calls

    def merge_at_wrong_scale(model, *args, **kwargs):
        for module in model.modules():
            if isinstance(module, LoraLayer):
                module.scaling = {name: 1.5 * value for name, value in module.scaling.items()}
        return merge_and_unload(model, *args, **kwargs)

    monkeypatch.setattr(LoraModel, "merge_and_unload", merge_at_wrong_scale)
    report = merge_lora(bf16_run, tmp_path / "merged", num_check_records=2, max_new_tokens=8)
    assert report.dtype == "bfloat16" and not report.is_equivalent


def test_merge_lora_refuses_a_folder_without_adapter(tmp_path):
    with pytest.raises(ValueError, match="no adapter_config.json"):
        merge_lora(tmp_path, tmp_path / "out")
