"""Chapter 5's training cells build exactly what `vlmlib.training.train` builds.

Why: chapter 5 writes its run in plain Hugging Face calls (`BitsAndBytesConfig`, `LoraConfig`,
`SFTConfig`, `SFTTrainer`) so that students see and can change the wiring, while `vlmlib train`
runs `training.train`. These tests run the chapter's cells tagged `training-recipe` (without the
lines that train and save) and compare each object with vlmlib's, so that neither side can change
a setting alone.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import Qwen2VLForConditionalGeneration

from vlmlib import models, training
from vlmlib.callbacks import IoUEvalCallback, build_callbacks
from vlmlib.config import Config, load_config, with_overrides

CHAPTER = Path(__file__).resolve().parents[1] / "chapters" / "05_training.py"
RECIPE_TAG = 'tags=["training-recipe"]'
NOT_RUN = {"trainer.train", "training.save_run"}  # the lines that train and save
CONFIG_NAMES = {
    "compute_dtype",
    "quantization_config",
    "targets",
    "lora_config",
    "recipe",
    "on_cpu",
    "run_dir",
    "sft_config",
}  # statements that build settings, not objects


def _recipe_cells(source: str) -> list[str]:
    """Return the code of the cells whose header carries the `training-recipe` tag, in order."""
    cells = re.split(r"^(# %%.*)$", source, flags=re.MULTILINE)
    return [body for header, body in zip(cells[1::2], cells[2::2]) if RECIPE_TAG in header]


def _call_name(node: ast.stmt) -> str:
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        return ast.unparse(node.value.func)
    return ""


def _recipe_statements(
    source: str, names: set[str] | None = None, num_cells: int | None = None
) -> ast.Module:
    """Return the recipe cells' statements, minus training and saving; only `names` if given."""
    cells = _recipe_cells(source)[:num_cells]
    statements = [
        node for cell in cells for node in ast.parse(cell).body if _call_name(node) not in NOT_RUN
    ]
    if names is not None:
        statements = [
            node
            for node in statements
            if isinstance(node, (ast.Import, ast.ImportFrom))
            or isinstance(node, ast.Assign)
            and _targets(node) <= names
        ]
    return ast.Module(statements, type_ignores=[])


def _targets(node: ast.Assign) -> set[str]:
    return {
        name.id
        for target in node.targets
        for name in ast.walk(target)
        if isinstance(name, ast.Name)
    }


def _run_recipe(
    source: str,
    namespace: dict[str, Any],
    names: set[str] | None = None,
    num_cells: int | None = None,
) -> dict:
    namespace = {"Path": Path, "torch": torch, "models": models, "training": training, **namespace}
    exec(compile(_recipe_statements(source, names, num_cells), str(CHAPTER), "exec"), namespace)
    return namespace


def _settings(config_object) -> dict[str, Any]:
    """Return a PEFT or transformers config as a dict, without what PEFT fills in when applied."""
    settings = config_object.to_dict()
    settings.pop("base_model_name_or_path", None)
    return settings


def _chapter_settings(source: str, config: Config) -> dict[str, dict[str, Any]]:
    built = _run_recipe(source, {"config": config}, CONFIG_NAMES)
    return {
        "SFTConfig": built["sft_config"].to_dict(),
        "LoraConfig": _settings(built["lora_config"]),
    }


def _vlmlib_settings(config: Config) -> dict[str, dict[str, Any]]:
    return {
        "SFTConfig": training.build_sft_config(config).to_dict(),
        "LoraConfig": _settings(models.build_lora_config(config)),
    }


def _configs(tmp_path: Path) -> dict[str, Config]:
    output = f"training.output_dir={tmp_path / 'run'}"
    changed = [
        "lora.r=4",
        "lora.alpha=8",
        "lora.target_modules=[q_proj,v_proj]",
        "training.learning_rate=1e-5",
        "training.eval_steps=3",
        "training.gradient_checkpointing=true",
        "training.max_grad_norm=0.5",
    ]
    return {
        "tiny": load_config("assistant_only", profile="tiny", overrides=[output]),
        "full": load_config("assistant_only", profile="full", overrides=[output, "gpu.device=cpu"]),
        "tiny, changed": load_config(
            "assistant_only", profile="tiny", overrides=[output, *changed]
        ),
    }


@pytest.mark.parametrize("name", ["tiny", "full", "tiny, changed"])
def test_chapter_5_wiring_builds_the_sft_and_lora_configs_of_vlmlib(name, tmp_path):
    config = _configs(tmp_path)[name]
    assert _chapter_settings(CHAPTER.read_text(), config) == _vlmlib_settings(config)


@pytest.mark.parametrize(
    "edit",
    [
        ("logging_first_step=True", "logging_first_step=False"),
        ('bias="none"', 'bias="all"'),
        ("max_grad_norm=recipe.max_grad_norm", "max_grad_norm=1.0"),
    ],
    ids=["sft_setting", "lora_setting", "config_value"],
)
def test_chapter_5_wiring_check_notices_a_changed_setting(edit, tmp_path):
    source = CHAPTER.read_text()
    assert source.count(edit[0]) == 1  # the setting is where this test expects it
    config = _configs(tmp_path)["tiny, changed"]
    changed = _chapter_settings(source.replace(*edit), config)
    assert changed != _vlmlib_settings(config)


def _comparable(attributes: dict[str, Any]) -> dict[str, Any]:
    """Return attributes with tensors as lists, so that == compares them by value."""
    return {
        key: value.tolist() if isinstance(value, torch.Tensor) else value
        for key, value in attributes.items()
    }


def _capture_from_pretrained(monkeypatch) -> list[dict[str, Any]]:
    """Make `from_pretrained` record its arguments and return an empty module: nothing loads."""
    calls: list[dict[str, Any]] = []

    def record(source, **kwargs):
        calls.append({"source": str(source), **kwargs})
        return torch.nn.Module()

    monkeypatch.setattr(Qwen2VLForConditionalGeneration, "from_pretrained", record)
    return calls


def _loading(call: dict[str, Any]) -> dict[str, Any]:
    quantization_config = call.pop("quantization_config")
    return {**call, "quantization_config": quantization_config and quantization_config.to_dict()}


@pytest.mark.parametrize("load_in_4bit", [False, True], ids=["float32", "nf4"])
def test_chapter_5_wiring_loads_the_model_as_load_model_does(
    load_in_4bit, tiny_config, tiny_assets, monkeypatch
):
    config = with_overrides(tiny_config, [f"model.load_in_4bit={str(load_in_4bit).lower()}"])
    calls = _capture_from_pretrained(monkeypatch)
    models.load_model(config)
    _run_recipe(CHAPTER.read_text(), {"config": config}, num_cells=1)  # the model's cell
    vlmlib_call, chapter_call = map(_loading, calls)
    assert chapter_call == vlmlib_call
    assert (vlmlib_call["quantization_config"] is not None) == load_in_4bit


def test_chapter_5_wiring_builds_the_trainer_of_vlmlib(
    tiny_config, tiny_assets, tiny_processor, tiny_splits, tmp_path
):
    config = with_overrides(tiny_config, [f"training.output_dir={tmp_path / 'run'}"])
    chapter = _run_recipe(
        CHAPTER.read_text(), {"config": config, "processor": tiny_processor, "splits": tiny_splits}
    )
    heldout = [tiny_splits["eval"][index] for index in range(config.callbacks.iou_eval_num_samples)]
    callbacks = build_callbacks(config, tiny_processor, heldout)
    ours = training.build_trainer(
        config, models.load_model(config), tiny_processor, tiny_splits["train"], callbacks
    )
    theirs = chapter["trainer"]
    assert type(theirs) is type(ours)
    assert theirs.args.to_dict() == ours.args.to_dict()
    assert [type(callback) for callback in theirs.callback_handler.callbacks] == [
        type(callback) for callback in ours.callback_handler.callbacks
    ]
    assert type(theirs.data_collator) is type(ours.data_collator)
    assert _comparable(vars(theirs.data_collator)) == _comparable(vars(ours.data_collator))
    iou_callbacks = [
        callback
        for callback in theirs.callback_handler.callbacks
        if isinstance(callback, IoUEvalCallback)
    ]
    assert [callback.trainer for callback in iou_callbacks] == [theirs]  # attached, as train() does
    vlmlib_iou = next(callback for callback in callbacks if isinstance(callback, IoUEvalCallback))
    assert (
        len(iou_callbacks[0].records),
        iou_callbacks[0].every_steps,
        iou_callbacks[0].generation_options,
    ) == (len(vlmlib_iou.records), vlmlib_iou.every_steps, vlmlib_iou.generation_options)
    their_weights = {
        name: parameter
        for name, parameter in theirs.model.named_parameters()
        if parameter.requires_grad
    }
    our_weights = {
        name: parameter
        for name, parameter in ours.model.named_parameters()
        if parameter.requires_grad
    }
    assert their_weights.keys() == our_weights.keys()
    assert all(torch.equal(their_weights[name], our_weights[name]) for name in our_weights)


def test_chapter_5_lora_arithmetic_counts_what_peft_trains(tiny_config, tiny_assets):
    """r * (in + out) per adapted layer, as chapter 5 prices its LoRA configs, is PEFT's count."""
    model = models.load_model(tiny_config)
    pattern = models.build_lora_config(tiny_config).target_modules
    predicted = sum(
        tiny_config.lora.r * (module.in_features + module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and re.fullmatch(pattern, name)
    )
    adapted = models.apply_lora(model, tiny_config)
    assert models.count_parameters(adapted).trainable == predicted > 0
