"""Shared pytest fixtures. Fixture names say which helper's data they hold
(`synthetic_` for `vlmlib.tiny.synthetic`).
"""

from __future__ import annotations

from typing import Any

import datasets
import pytest

from vlmlib.tiny.synthetic import generate_synthetic_dataset


@pytest.fixture(scope="session")
def synthetic_dataset_dict() -> datasets.DatasetDict:
    """400 synthetic records (300 train, 100 val): enough to check rates, made
    once per test session (about 2 s).
    """
    return generate_synthetic_dataset(num_train=300, num_val=100, seed=0)


@pytest.fixture(scope="session")
def synthetic_small_dataset_dict() -> datasets.DatasetDict:
    """A few synthetic records (8 train, 4 val) for tests that write, reload or break records."""
    return generate_synthetic_dataset(num_train=8, num_val=4, seed=7)


@pytest.fixture
def synthetic_raw_records(
    synthetic_small_dataset_dict: datasets.DatasetDict,
) -> list[dict[str, Any]]:
    """The small train split as plain dicts with undecoded images ({'bytes',
    'path'}), safe to change in a test.
    """
    raw_split = synthetic_small_dataset_dict["train"].cast_column(
        "image", datasets.Image(decode=False)
    )
    return [dict(record) for record in raw_split]


# --- tiny profile fixtures (`tiny_`): the real processor and a random tiny
# model, built once per session ---

import os  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

from vlmlib.config import Config, load_config  # noqa: E402


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    """The tiny profile with a small synthetic dataset, cached in a folder of this test session."""
    previous = os.environ.get("VLM_CACHE_DIR")
    os.environ["VLM_CACHE_DIR"] = str(tmp_path_factory.mktemp("vlmlib-cache"))
    # No pretraining (tiny.pretrain_steps=0): tests need the real code path, not
    # a model that has learned; tests/test_pretraining.py covers the pretraining.
    yield load_config(
        profile="tiny",
        overrides=[
            "data.synthetic_num_train=24",
            "data.synthetic_num_val=8",
            "tiny.pretrain_steps=0",
        ],
    )
    if previous is None:
        os.environ.pop("VLM_CACHE_DIR")
    else:
        os.environ["VLM_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def tiny_assets(tiny_config: Config) -> tuple[Path, Path]:
    """(model folder, dataset folder) built by `ensure_tiny_assets` (about 5 s, once)."""
    from vlmlib.tiny import ensure_tiny_assets

    return ensure_tiny_assets(tiny_config)


@pytest.fixture(scope="session")
def tiny_processor(tiny_config: Config, tiny_assets: tuple[Path, Path]):
    """The tiny profile's Qwen2VLProcessor, loaded from the cache as the chapters load it."""
    from vlmlib.models import load_processor

    return load_processor(tiny_config)


@pytest.fixture(scope="session")
def tiny_model(tiny_config: Config, tiny_assets: tuple[Path, Path]):
    """The tiny random Qwen2-VL, loaded from the cache (treat as read-only)."""
    from vlmlib.models import load_model

    return load_model(tiny_config)


@pytest.fixture(scope="session")
def tiny_splits(tiny_config: Config, tiny_assets: tuple[Path, Path]) -> datasets.DatasetDict:
    """The tiny profile's train and eval splits, through `load_configured_splits`."""
    from vlmlib.data import load_configured_splits

    return load_configured_splits(tiny_config)


@pytest.fixture(scope="session")
def cli_run_dir(
    tiny_config: Config, tiny_assets: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """`vlmlib train` on the tiny profile, two steps, saved in a temporary
    folder (treat as read-only).
    """
    from vlmlib.cli import main

    output_dir = tmp_path_factory.mktemp("cli") / "run"
    code = main(
        [
            "train",
            "--config",
            "tiny",
            "--set",
            "data.synthetic_num_train=24",
            "--set",
            "data.synthetic_num_val=8",
            "--set",
            "tiny.pretrain_steps=0",
            "--set",
            "training.max_steps=2",
            "--set",
            "callbacks.iou_eval=false",
            "--output-dir",
            str(output_dir),
        ]
    )
    assert code == 0
    return output_dir
