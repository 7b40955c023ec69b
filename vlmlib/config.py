"""Typed configuration: one frozen dataclass per part, loaded from YAML, checked on load.

Why: a typo in a hyperparameter should stop the run with a message, not train for an hour with a
default. Every value a chapter or the CLI uses comes from here, so a YAML file is the whole recipe.
Explained in: chapter 05, "The training recipe".

A config is built in layers, each overriding the one before:
1. the dataclass defaults below;
2. the profile's named config, `tiny.yaml` or `full.yaml` (the profile is the file's `profile:` key,
   else the `VLM_PROFILE` environment variable, else `tiny`);
3. each named config or YAML file given, in order (e.g. `assistant_only`, then `lightweight`);
4. `key=value` overrides (`training.learning_rate=1e-4`), values parsed as YAML.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "CONFIG_DIR",
    "PROFILE_ENV_VAR",
    "RUN_CONFIG_FILE",
    "CallbacksConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "GPUConfig",
    "LoRAConfig",
    "ModelConfig",
    "TinyModelConfig",
    "TrainingConfig",
    "config_to_dict",
    "get_profile",
    "list_named_configs",
    "load_config",
    "with_overrides",
]

CONFIG_DIR = Path(__file__).parent / "configs"
RUN_CONFIG_FILE = (
    "vlmlib_config.yaml"  # the resolved config a training run saves beside its adapter
)
PROFILE_ENV_VAR = "VLM_PROFILE"
Profile = Literal["tiny", "full"]


class ConfigError(ValueError):
    """A config file or override is wrong: unknown key, bad type or value. The message names it."""


@dataclass(frozen=True)
class ModelConfig:
    """Which model to load and how. Explained in: chapter 02, "Loading the model"."""

    name: str = (
        "Qwen/Qwen2-VL-2B-Instruct"  # Hub id (full profile); the tiny profile builds its own
    )
    load_in_4bit: bool = False  # QLoRA: nf4 weights, double quantisation, bf16 compute (CUDA only)
    # "auto": bf16, or fp16 on a GPU without bf16 (a T4);
    # vlmlib.models.resolve_compute_dtype decides
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    min_pixels: int = (
        64 * 28 * 28
    )  # pixel budget: images are resized to hold between min and max pixels
    max_pixels: int = 640 * 28 * 28  # each 28x28 block becomes one <|image_pad|> token


@dataclass(frozen=True)
class TinyModelConfig:
    """Sizes of the offline tiny Qwen2-VL (real architecture, tiny widths).
    Explained in: book/setup.
    """

    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 512
    # M-RoPE: how the 16 rotary frequencies of a head (head_dim / 2) are shared by
    # (time, height, width). Photos have no time axis, and a base of 10 (not Qwen's
    # 1e6) makes the frequencies turn fast enough to tell 10 rows apart. Both choices
    # are what made the tiny model learn to localise: see book/tiny_model.md.
    mrope_section: list[int] = field(default_factory=lambda: [0, 8, 8])
    rope_theta: float = 10.0
    vision_embed_dim: int = 64
    vision_depth: int = 2
    vision_num_heads: int = 4
    seed: int = 0
    # Pretraining (`vlmlib.tiny.pretraining`): make-tiny trains the random model
    # to ground tables and logos.
    pretrain_steps: int = 0  # 0 = keep the random weights (tests do); the tiny profile sets it
    pretrain_num_images: int = 2000
    pretrain_batch_size: int = 8
    pretrain_learning_rate: float = 1e-3
    # The pretraining question asks for every object; the course's prompt asks for
    # nutrition tables only. Both are 14 tokens long, so the answer starts at the same
    # distance from the image: the tiny model reads a table's row from that distance, and
    # a question two tokens shorter costs it half its zero-shot IoU (book/tiny_model.md).
    pretrain_prompt: str = "Find every object in this picture and give the bounding box of each."


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how a record becomes a chat. Explained in: chapter 01."""

    dataset_id: str = "openfoodfacts/nutrition-table-detection"
    local_path: str | None = (
        # a save_to_disk folder or Hub-layout parquet files; None = the Hub (or the tiny cache)
        None
    )
    train_split: str = "train"
    eval_split: str = "val"
    num_train: int | None = None  # None = the whole split
    num_eval: int | None = None
    bad_record_policy: Literal["drop", "raise"] = "drop"
    system_message: str = "You are a helpful assistant."
    prompt: str = "Find every nutrition table in this product photo and give its bounding box."
    synthetic_num_train: int = 256  # tiny profile only: size of the generated dataset
    synthetic_num_val: int = 64
    synthetic_seed: int = 0
    synthetic_min_side_px: int = 112
    synthetic_max_side_px: int = 224
    synthetic_square: bool = (
        False  # square photos: with a fixed pixel budget, every image is the same token grid
    )


@dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adapters (PEFT). Explained in: chapter 05, "Choosing LoRA"."""

    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )
    train_vision: bool = False  # also adapt the vision tower's attention (qkv) and MLP (fc1, fc2)


@dataclass(frozen=True)
class TrainingConfig:
    """SFTTrainer settings and the masking strategy. Explained in: chapters 03 to 05."""

    output_dir: str = "outputs/run"
    collator: Literal["v1", "v2", "v3"] = "v3"
    mask_strategy: Literal["assistant_only", "all_tokens"] = "assistant_only"
    num_train_epochs: float = 1.0
    max_steps: int = -1  # -1 = run num_train_epochs
    per_device_train_batch_size: int = 4
    per_device_eval_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = True
    logging_steps: int = 10
    save_steps: int = 100
    # Validation loss on the eval split (`eval_loss` in the log) every N steps; None =
    # none (the tiny profile, whose IoU callback watches the held-out images instead)
    eval_steps: int | None = None
    save_total_limit: int | None = 2
    seed: int = 42
    dataloader_num_workers: int = (
        0  # processes that build batches while the GPU trains; 0 = in the main process
    )
    report_to: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CallbacksConfig:
    """Which training callbacks run, and how often.

    Explained in: chapter 05, "Watching training".
    """

    grad_norm: bool = True
    iou_eval: bool = True
    iou_eval_every_steps: int = 50
    iou_eval_num_samples: int = 16
    console_log: bool = True
    max_new_tokens: int = 64


@dataclass(frozen=True)
class GPUConfig:
    """Device placement. Explained in: book/setup, "Laptop or GPU"."""

    device: Literal["auto", "cuda", "cpu"] = "auto"  # auto = CUDA when available
    device_map: str | None = (
        None  # e.g. "auto" to spread one model over several GPUs (not data parallel)
    )


@dataclass(frozen=True)
class Config:
    """The whole recipe. `profile` says which model and data load; everything
    after loading is shared.
    """

    profile: Profile = "tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    gpu: GPUConfig = field(default_factory=GPUConfig)


def get_profile() -> Profile:
    """Return the profile named by `VLM_PROFILE` ("tiny" when unset).

    Raises:
        ConfigError: the variable holds anything but "tiny" or "full".
    """
    profile = os.environ.get(PROFILE_ENV_VAR, "tiny").strip() or "tiny"
    if profile not in typing.get_args(Profile):
        raise ConfigError(
            f"{PROFILE_ENV_VAR}={profile!r} is not a profile; choose one of "
            f"{list(typing.get_args(Profile))}"
        )
    return profile  # type: ignore[return-value]


def list_named_configs() -> list[str]:
    """Return the names of the configs shipped with vlmlib (`vlmlib/configs/*.yaml`)."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))


def config_to_dict(config: Config) -> dict[str, Any]:
    """Return the config as nested plain dicts and lists, ready for YAML or JSON."""
    return dataclasses.asdict(config)


def load_config(
    *sources: str | Path, overrides: typing.Sequence[str] = (), profile: Profile | None = None
) -> Config:
    """Build a `Config` from defaults, the profile's config, named configs or files, and overrides.

    Why: one call gives chapters, labs and the CLI the same checked recipe.
    Explained in: chapter 05, "The training recipe".

    Args:
        sources: named configs (`list_named_configs()`) or paths to YAML files, applied in order.
        overrides: "section.key=value" strings, the value parsed as YAML (`training.max_steps=20`).
        profile: force a profile; otherwise the last `profile:` key in
            `sources`, else `VLM_PROFILE`.
    Raises:
        ConfigError: unknown source, unreadable YAML, unknown key, wrong type or invalid choice;
            the message names the key, where it came from, and the valid choices.
    """
    layers = [(str(path), _read_yaml(path)) for path in map(_resolve_source, sources)]
    layers += [("--set " + item, _parse_override(item)) for item in overrides]
    chosen = (
        profile
        or next((data["profile"] for _, data in reversed(layers) if "profile" in data), None)
        or get_profile()
    )
    if chosen not in typing.get_args(Profile):
        raise ConfigError(f"profile {chosen!r} is not one of {list(typing.get_args(Profile))}")
    profile_path = CONFIG_DIR / f"{chosen}.yaml"
    values = config_to_dict(Config())
    for origin, data in [(str(profile_path), _read_yaml(profile_path))] + layers:
        _merge(values, data, Config, origin, prefix="")
    values["profile"] = chosen
    return _build(Config, values)


def _resolve_source(source: str | Path) -> Path:
    path = Path(source)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        return path
    if str(source) in list_named_configs():
        return CONFIG_DIR / f"{source}.yaml"
    raise ConfigError(
        f"unknown config {str(source)!r}: not a file, and not one of the named configs "
        f"{list_named_configs()}"
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, not a {type(data).__name__}")
    return data


def _parse_override(item: str) -> dict[str, Any]:
    key, separator, raw_value = item.partition("=")
    if not separator or not key.strip():
        raise ConfigError(
            f"override {item!r} must look like section.key=value, e.g. training.max_steps=20"
        )
    nested: dict[str, Any] = {}
    cursor = nested
    *parents, last = key.strip().split(".")
    for part in parents:
        cursor = cursor.setdefault(part, {})
    cursor[last] = yaml.safe_load(raw_value) if raw_value.strip() else ""
    return nested


def _merge(
    values: dict[str, Any], update: dict[str, Any], cls: type, origin: str, prefix: str
) -> None:
    """Check `update` against the dataclass `cls` and write it into `values`, in place."""
    hints = typing.get_type_hints(cls)
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in hints:
            close = difflib.get_close_matches(str(key), list(hints), n=1)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown key '{dotted}' in {origin}.{hint} Valid "
                f"keys{' in ' + repr(prefix[:-1]) if prefix else ''}: {sorted(hints)}"
            )
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise ConfigError(
                    f"'{dotted}' in {origin} must be a section (a mapping), got {value!r}"
                )
            _merge(values[key], value, hints[key], origin, prefix=f"{dotted}.")
        else:
            values[key] = _check_value(value, hints[key], dotted, origin)


def _check_value(value: Any, hint: Any, dotted: str, origin: str) -> Any:
    """Return `value` if it fits the type `hint` (ints widen to floats); raise
    ConfigError otherwise.
    """
    origin_type, args = typing.get_origin(hint), typing.get_args(hint)
    if origin_type in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _check_value(value, inner, dotted, origin)
    if origin_type is Literal:
        if value not in args:
            raise ConfigError(f"'{dotted}' in {origin} is {value!r}; choose one of {list(args)}")
        return value
    if origin_type is list:
        if not isinstance(value, list):
            raise ConfigError(f"'{dotted}' in {origin} must be a list, got {value!r}")
        return [
            _check_value(item, args[0], f"{dotted}[{index}]", origin)
            for index, item in enumerate(value)
        ]
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" (no dot) as a string; accept it as the number it obviously is
            return float(value)
        except ValueError:
            pass
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(
            f"'{dotted}' in {origin} must be {hint.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _build(cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {
        item.name: _build(hints[item.name], values[item.name])
        if dataclasses.is_dataclass(hints[item.name])
        else values[item.name]
        for item in fields(cls)
    }
    return cls(**kwargs)


def with_overrides(config: Config, overrides: typing.Sequence[str]) -> Config:
    """Return a copy of `config` with "section.key=value" overrides applied and checked."""
    values = config_to_dict(config)
    for item in overrides:
        _merge(values, _parse_override(item), Config, "--set " + item, prefix="")
    return _build(Config, values)
