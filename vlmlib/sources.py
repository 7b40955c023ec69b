"""Where the model, the processor and each split come from: one answer per config, decided here.

Why: the loaders (`vlmlib.models`, `vlmlib.data`) should load from what they are given and know
nothing of profiles. This module turns a config into places to load from, once:

| profile | model and processor                        | data (unless `data.local_path` is set) |
| ------- | ------------------------------------------ | -------------------------------------- |
| `full`  | `model.name`: a Hub id or a local folder   | the Hub's `data.dataset_id`            |
| `tiny`  | the cache folder `vlmlib make-tiny` builds | the cache's synthetic dataset          |

It only computes places; it builds nothing. The tiny profile's assets are built by `vlmlib.tiny`
(`vlmlib make-tiny`, or `ensure_tiny_assets`) into exactly these folders.
Explained in: book/setup, "The tiny profile".
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from vlmlib.config import Config

__all__ = [
    "CACHE_DIR_ENV_VAR",
    "Sources",
    "get_cache_dir",
    "resolve_sources",
    "tiny_dataset_dir",
    "tiny_model_dir",
]

CACHE_DIR_ENV_VAR = "VLM_CACHE_DIR"


@dataclass(frozen=True)
class Sources:
    """Where one config's model, processor and data come from.

    `model` is a Hub id or a folder (`from_pretrained` reads both; the processor's
    files sit beside the weights). `dataset_path` is a local folder (`save_to_disk`
    or the Hub's parquet layout), or None for the Hub dataset `dataset_id`.
    """

    model: str
    dataset_id: str
    dataset_path: Path | None
    is_tiny: bool

    def check_model_is_built(self) -> None:
        """Raise a clear error when the tiny model's cache folder is missing.

        Raises:
            FileNotFoundError: the tiny profile's model has not been built yet;
                names the command that builds it.
        """
        if self.is_tiny and not Path(self.model).is_dir():
            raise FileNotFoundError(
                f"the tiny model is not built yet (expected in {self.model}); run "
                "`vlmlib make-tiny` once (about 8 minutes on 2 CPU cores), or `bash "
                ".ci/build-book`, which runs it"
            )


def get_cache_dir() -> Path:
    """Return the folder for built assets: `$VLM_CACHE_DIR`, else `~/.cache/vlmlib`."""
    return Path(os.environ.get(CACHE_DIR_ENV_VAR, Path.home() / ".cache" / "vlmlib")).expanduser()


def _fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def tiny_model_dir(config: Config) -> Path:
    """Return the cache folder of the tiny model and processor for these settings.

    Why: a folder per fingerprint of every setting that shapes the model, so a
    changed setting builds a new copy instead of silently reusing an old one.
    """
    tiny = asdict(config.tiny)
    pretraining_prompt = tiny.pop("pretrain_prompt")
    settings = {
        "tiny": tiny,
        "min_pixels": config.model.min_pixels,
        "max_pixels": config.model.max_pixels,
        "box_grid": "floor",
    }  # pretraining labels follow boxes.convert_hub_box_to_qwen
    if (
        config.tiny.pretrain_steps
    ):  # the pretraining data follows the dataset's shape, the system message, the question
        settings.update(
            square=config.data.synthetic_square,
            sides=[config.data.synthetic_min_side_px, config.data.synthetic_max_side_px],
            system_message=config.data.system_message,
            pretraining_prompt=pretraining_prompt,
        )
    return get_cache_dir() / f"tiny-model-{_fingerprint(settings)}"


def tiny_dataset_dir(config: Config) -> Path:
    """Return the cache folder of the synthetic dataset for these settings."""
    data = config.data
    settings = {
        key: getattr(data, key)
        for key in (
            "synthetic_num_train",
            "synthetic_num_val",
            "synthetic_seed",
            "synthetic_min_side_px",
            "synthetic_max_side_px",
            "synthetic_square",
        )
    }
    return get_cache_dir() / f"tiny-dataset-{_fingerprint(settings)}"


def resolve_sources(config: Config) -> Sources:
    """Return where this config's model, processor and splits come from (see the module's table).

    Why: the one place that reads the profile; everything downstream loads what it is given.
    """
    is_tiny = config.profile == "tiny"
    local_path = Path(config.data.local_path).expanduser() if config.data.local_path else None
    if is_tiny:
        return Sources(
            model=str(tiny_model_dir(config)),
            dataset_id=config.data.dataset_id,
            dataset_path=local_path or tiny_dataset_dir(config),
            is_tiny=True,
        )
    return Sources(
        model=config.model.name,
        dataset_id=config.data.dataset_id,
        dataset_path=local_path,
        is_tiny=False,
    )
