"""Tests for vlmlib.config: layering, named configs, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlmlib.config import (
    Config,
    ConfigError,
    get_profile,
    list_named_configs,
    load_config,
    with_overrides,
)


def test_list_named_configs_ships_the_six_designed_configs():
    assert {"tiny", "full", "all_tokens", "assistant_only", "lightweight", "aggressive"} <= set(
        list_named_configs()
    )


@pytest.mark.parametrize(
    "name", ["tiny", "full", "all_tokens", "assistant_only", "lightweight", "aggressive"]
)
def test_load_config_loads_every_named_config(name: str):
    assert isinstance(load_config(name), Config)


def test_get_profile_defaults_to_tiny_when_unset(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("VLM_PROFILE", raising=False)
    assert get_profile() == "tiny"
    assert load_config().profile == "tiny"


def test_load_config_follows_vlm_profile(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VLM_PROFILE", "full")
    config = load_config()
    assert config.profile == "full"
    assert config.model.name == "Qwen/Qwen2-VL-2B-Instruct"
    assert config.model.load_in_4bit is True


def test_get_profile_error_names_the_valid_profiles(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VLM_PROFILE", "huge")
    with pytest.raises(ConfigError, match=r"VLM_PROFILE='huge'.*\['tiny', 'full'\]"):
        get_profile()


def test_load_config_layers_named_configs_in_order():
    config = load_config("aggressive", "lightweight")  # lightweight comes last, so its rank wins
    assert config.lora.r == 8
    assert config.lora.train_vision is True  # set by aggressive, untouched by lightweight


def test_load_config_profile_key_in_a_file_selects_that_profile(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VLM_PROFILE", "tiny")
    assert load_config("full").profile == "full"


def test_load_config_overrides_parse_yaml_values():
    config = load_config(
        overrides=[
            "training.max_steps=7",
            "training.learning_rate=1e-4",
            "lora.target_modules=[q_proj]",
        ]
    )
    assert config.training.max_steps == 7
    assert config.training.learning_rate == pytest.approx(1e-4)
    assert config.lora.target_modules == ["q_proj"]


def test_load_config_reads_a_yaml_file_path(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("training:\n  seed: 3\n")
    assert load_config(path).training.seed == 3


def test_config_unknown_key_error_names_the_key_and_suggests_the_right_one(tmp_path: Path):
    path = tmp_path / "typo.yaml"
    path.write_text("training:\n  learning_rte: 0.1\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "training.learning_rte" in message and str(path) in message
    assert "Did you mean 'training.learning_rate'?" in message


def test_config_unknown_section_error_lists_valid_sections():
    with pytest.raises(ConfigError, match=r"unknown key 'trainin'.*Did you mean 'training'"):
        load_config(overrides=["trainin.seed=1"])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("training.max_steps=ten", r"'training.max_steps'.*must be int, got str"),
        ("training.gradient_checkpointing=3", r"must be bool"),
        ("training.max_steps=true", r"must be int, got bool"),
        ("training.collator=v9", r"'v9'; choose one of \['v1', 'v2', 'v3'\]"),
        ("training.mask_strategy=everything", r"choose one of \['assistant_only', 'all_tokens'\]"),
        ("lora.target_modules=q_proj", r"must be a list"),
        ("training=5", r"must be a section"),
    ],
    ids=[
        "int-from-text",
        "bool-from-int",
        "int-from-bool",
        "collator-choice",
        "mask-choice",
        "list",
        "section",
    ],
)
def test_config_wrong_type_error_names_the_key_and_expected_type(override: str, pattern: str):
    with pytest.raises(ConfigError, match=pattern):
        load_config(overrides=[override])


def test_config_unknown_named_config_lists_the_named_configs():
    with pytest.raises(ConfigError, match=r"unknown config 'tinyy'.*named configs"):
        load_config("tinyy")


def test_config_invalid_yaml_error_names_the_file(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml is not valid YAML"):
        load_config(path)


def test_config_override_without_equals_sign_is_an_error():
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(overrides=["training.max_steps"])


def test_with_overrides_returns_a_new_checked_config():
    config = load_config()
    changed = with_overrides(config, ["training.seed=9"])
    assert changed.training.seed == 9 and config.training.seed != 9
    with pytest.raises(ConfigError):
        with_overrides(config, ["training.sed=9"])


def test_config_is_frozen():
    config = load_config()
    with pytest.raises(AttributeError):
        config.training.seed = 1  # type: ignore[misc]


def test_config_eval_steps_is_off_by_default_and_the_tiny_profile_keeps_it_off():
    assert Config().training.eval_steps is None
    assert load_config(profile="tiny").training.eval_steps is None


@pytest.mark.parametrize(
    ("override", "expected"),
    [("training.eval_steps=25", 25), ("training.eval_steps=null", None)],
    ids=["every-25-steps", "off"],
)
def test_config_eval_steps_loads_from_an_override(override: str, expected: int | None):
    assert load_config(profile="full", overrides=[override]).training.eval_steps == expected


def test_full_profile_evaluates_clips_as_qlora_and_collates_in_workers():
    training = load_config(profile="full").training
    assert training.eval_steps == 50  # full.yaml: 8 validation losses over 3 epochs of 136 steps
    assert training.max_grad_norm == 0.3  # full.yaml: QLoRA's clipping (artidoro/qlora)
    assert training.dataloader_num_workers == 4  # full.yaml: collation beside GPU steps (costs.md)
