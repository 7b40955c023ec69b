"""Check saved folders before loading them: a run's files, and which checkpoint a resume can use.

Why: a missing adapter otherwise reads "Repo id must be a string" and a
truncated one "invalid header length", and only after the 2B base model has
loaded; a checkpoint half written when the process was killed stops a resume
with "Can't find a valid checkpoint". These checks read file headers only.
Explained in: chapter 06, "Loading the fine-tuned model"; chapter 05, "Resuming".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from vlmlib.config import RUN_CONFIG_FILE

__all__ = [
    "CHECKPOINT_FILES",
    "RUN_FOLDER_CONTENTS",
    "IncompleteCheckpoint",
    "check_run_folder",
    "find_checkpoint_problem",
    "find_resumable_checkpoint",
]

RUN_FOLDER_CONTENTS = (
    f"a complete run folder holds {RUN_CONFIG_FILE}; the adapter (adapter_config.json + "
    "adapter_model.safetensors) or a merged model (config.json + model*.safetensors); "
    "and the processor files (tokenizer_config.json, tokenizer.json, "
    "processor_config.json or preprocessor_config.json)"
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
    """Raise naming the file when a .safetensors file is truncated or corrupt
    (its header and size disagree).
    """
    if path.suffix != ".safetensors":
        return
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except SafetensorError as error:
        raise ValueError(
            f"{path} is truncated or corrupt ({error}); {RUN_FOLDER_CONTENTS}"
        ) from None


def check_run_folder(run_dir: Path) -> None:
    """Raise naming the file when a run folder misses a file `load_run` needs or holds a broken one.

    Why: without it a missing adapter reads "Repo id must be a string" and a truncated one "invalid
    header length", and only after the base model has loaded; these checks read headers only.
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
        _check_weights_file(
            _find_first(run_dir, ("adapter_model.safetensors", "adapter_model.bin"))
        )
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
        raise FileNotFoundError(
            f"{run_dir} holds neither adapter_config.json nor config.json: no model was "
            f"saved there; {RUN_FOLDER_CONTENTS}"
        )


# What the Trainer writes into checkpoint-N, in order; trainer_state.json comes
# last, so a checkpoint killed during its save lacks it (or holds half of it). A
# checkpoint whose rotation was killed lacks earlier files.
CHECKPOINT_FILES = (
    "adapter_model.safetensors",
    "optimizer.pt",
    "scheduler.pt",
    "trainer_state.json",
)


@dataclass(frozen=True)
class IncompleteCheckpoint:
    """A checkpoint folder a resume cannot use, and why (e.g. "no trainer_state.json")."""

    path: Path
    reason: str


def find_checkpoint_problem(checkpoint_dir: Path) -> str | None:
    """Return why a checkpoint folder cannot be resumed from, or None when every
    file it needs is whole.
    """
    for name in CHECKPOINT_FILES:
        if not (checkpoint_dir / name).is_file():
            return f"no {name}"
    try:
        _read_json_file(checkpoint_dir / "trainer_state.json")
        _check_weights_file(checkpoint_dir / "adapter_model.safetensors")
    except ValueError as error:
        return str(error).split(";")[0]
    return None


def _step_of(checkpoint_dir: Path) -> int:
    """Return N for a folder named checkpoint-N, or -1 for any other name."""
    suffix = checkpoint_dir.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")
    return int(suffix) if suffix.isdigit() else -1


def find_resumable_checkpoint(output_dir: Path | str) -> tuple[Path, list[IncompleteCheckpoint]]:
    """Return the newest complete checkpoint in a run folder, and the newer
    incomplete ones it skipped.

    Why: a process killed while saving leaves the newest checkpoint half written; the Trainer's own
    search picks it anyway and stops. Resuming from the one before loses only `save_steps` steps.
    Explained in: chapter 05, "Resuming".

    Raises:
        FileNotFoundError: the folder holds no complete checkpoint (the message
            names each one and why).
    """
    output_dir = Path(output_dir)
    checkpoints = sorted(
        (
            path
            for path in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
            if path.is_dir() and _step_of(path) >= 0
        ),
        key=_step_of,
        reverse=True,
    )
    skipped = []
    for checkpoint_dir in checkpoints:
        problem = find_checkpoint_problem(checkpoint_dir)
        if problem is None:
            return checkpoint_dir, skipped
        skipped.append(IncompleteCheckpoint(checkpoint_dir, problem))
    found = "; ".join(f"{item.path.name}: {item.reason}" for item in skipped) or "none at all"
    raise FileNotFoundError(
        f"{output_dir} holds no complete checkpoint to resume from ({found}); "
        f"train without --resume to start again"
    )
