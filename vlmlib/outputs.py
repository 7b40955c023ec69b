"""Output folders that never lose a user's work.

Why: a command that writes a model must not delete or replace anything it did not create, unless the
user says so (`--overwrite`), and must never write its output inside its input.
A kill halfway through a save must leave the old result or the new one, never
half of each: folders are written beside their target and renamed into place.
Explained in: README, "From the command line".
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["check_output_folder", "describe_contents", "write_folder_atomically"]


def describe_contents(folder: Path, num_shown: int = 3) -> str:
    """Return "N entries: a, b, c, ..." for a folder, to name what a refusal protects."""
    names = sorted(path.name for path in folder.iterdir())
    shown = ", ".join(names[:num_shown]) + (", ..." if len(names) > num_shown else "")
    return f"{len(names)} entr{'y' if len(names) == 1 else 'ies'}: {shown}"


def check_output_folder(
    output_dir: Path | str,
    inputs: Sequence[Path | str] = (),
    overwrite: bool = False,
    what: str = "output",
    how_to_continue: str = "",
) -> None:
    """Refuse an output folder that would lose work; call it before loading anything.

    Args:
        output_dir: where the command will write.
        inputs: folders the command reads; the output may be neither one of them nor inside one.
        overwrite: the user said `--overwrite`: a non-empty folder may be replaced.
        what: the option that named the folder, for the message (e.g. "--output").
        how_to_continue: another way out to offer, e.g. "pass --resume to continue it, ".
    Raises:
        ValueError: the output is a file, or is (or is inside) an input folder.
        FileExistsError: the folder holds something and `overwrite` is False; the message names it.
    """
    output = Path(output_dir).resolve()
    for input_dir in map(lambda path: Path(path).resolve(), inputs):
        if output == input_dir or input_dir in output.parents:
            raise ValueError(
                f"{what} {output_dir} is inside the input {input_dir}; write it somewhere else, "
                "so the input stays as it was"
            )
    if output.exists() and not output.is_dir():
        raise ValueError(f"{what} {output_dir} is a file, not a folder; choose a folder")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{what} {output_dir} already holds {describe_contents(output)}; "
            f"{how_to_continue}pass --overwrite to replace it, or choose another folder"
        )


def write_folder_atomically(
    target: Path | str, write: Callable[[Path], None], overwrite: bool = False
) -> Path:
    """Write a folder beside `target`, then rename it into place, so a kill
    leaves no half-written result.

    Args:
        write: called with an empty staging folder (a sibling of `target`) to fill.
        overwrite: replace an existing `target`; without it an existing target is an error.
    Raises:
        FileExistsError: `target` exists and `overwrite` is False (nothing is written).
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass --overwrite to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        write(staging)
        if target.exists():  # overwrite: move the old one aside, rename, then delete the old one
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            target.rename(retired / target.name)
            staging.rename(target)
            shutil.rmtree(retired)
        else:
            staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
