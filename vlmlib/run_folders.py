"""Check a saved run folder before loading it: every file `load_run` needs is there and readable.

Why: a missing adapter otherwise reads "Repo id must be a string" and a truncated one "invalid header
length", and only after the 2B base model has loaded. These checks read file headers only.
Explained in: chapter 06, "Loading the fine-tuned model".
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open

from vlmlib.config import RUN_CONFIG_FILE

__all__ = ["RUN_FOLDER_CONTENTS", "check_run_folder"]

RUN_FOLDER_CONTENTS = (
    f"a complete run folder holds {RUN_CONFIG_FILE}; the adapter (adapter_config.json + "
    "adapter_model.safetensors) or a merged model (config.json + model*.safetensors); and the processor "
    "files (tokenizer_config.json, tokenizer.json, processor_config.json or preprocessor_config.json)"
)


def _find_first(run_dir: Path, names: tuple[str, ...]) -> Path:
    """Return the first of `names` present in the run folder, or raise naming them all."""
    for name in names:
        if (run_dir / name).is_file():
            return run_dir / name
    raise FileNotFoundError(f"{run_dir} has no {' or '.join(names)}; {RUN_FOLDER_CONTENTS}")


def _read_json_file(path: Path) -> dict:
    """Return a JSON file's content, or raise naming the file and where it stops parsing."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); {RUN_FOLDER_CONTENTS}") from None


def _check_weights_file(path: Path) -> None:
    """Raise naming the file when a .safetensors file is truncated or corrupt (its header and size disagree)."""
    if path.suffix != ".safetensors":
        return
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except SafetensorError as error:
        raise ValueError(f"{path} is truncated or corrupt ({error}); {RUN_FOLDER_CONTENTS}") from None


def check_run_folder(run_dir: Path) -> None:
    """Raise naming the file when a run folder misses a file `load_run` needs or holds a broken one.

    Why: without it a missing adapter reads "Repo id must be a string" and a truncated one "invalid header
    length", and only after the base model has loaded; these checks read headers only.
    Explained in: chapter 06, "Loading the fine-tuned model".

    Raises:
        FileNotFoundError: a needed file is missing (the message says what a complete folder holds).
        ValueError: a JSON file does not parse, or a .safetensors file is truncated or corrupt.
    """
    _read_json_file(_find_first(run_dir, ("tokenizer_config.json",)))
    _read_json_file(_find_first(run_dir, ("tokenizer.json",)))
    _read_json_file(_find_first(run_dir, ("processor_config.json", "preprocessor_config.json")))
    if (run_dir / "adapter_config.json").exists():
        _read_json_file(run_dir / "adapter_config.json")
        _check_weights_file(_find_first(run_dir, ("adapter_model.safetensors", "adapter_model.bin")))
    elif (run_dir / "config.json").exists():
        _read_json_file(run_dir / "config.json")
        if (run_dir / "model.safetensors.index.json").exists():
            index = _read_json_file(run_dir / "model.safetensors.index.json")
            shards = sorted(set(index.get("weight_map", {}).values()))
            for shard in shards:
                _check_weights_file(_find_first(run_dir, (shard,)))
        else:
            _check_weights_file(_find_first(run_dir, ("model.safetensors", "pytorch_model.bin")))
    else:
        raise FileNotFoundError(f"{run_dir} holds neither adapter_config.json nor config.json: no model was "
                                f"saved there; {RUN_FOLDER_CONTENTS}")
