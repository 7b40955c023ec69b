"""The first cell of every chapter and lab: make a notebook run where the course is not installed.

Why: "Open in Colab" (or any bare Jupyter) gives a notebook without `vlmlib`, its pinned libraries,
a profile or the tiny profile's assets. The cell (`SETUP_CELL_SOURCE`, the same in every notebook)
installs `vlmlib` when it is missing and calls `set_up_notebook`, which installs what else is
missing (never the host's own torch), picks the profile and says why in one line. Where the course
runs from its clone (the README's setup: `pip install -e .`), the cell does nothing visible.
This module prints that one line, like `cli` and `checks`: it is for the person at the notebook.
Explained in: book/setup.md, "Colab and other bare Jupyter servers".

| profile chosen | when                                                                     |
| -------------- | ------------------------------------------------------------------------ |
| `VLM_PROFILE`  | whenever the variable is set                                             |
| `full`         | a CUDA GPU is visible and the Hugging Face Hub answers                   |
| `tiny`         | otherwise; its model and data are built once if not cached (`make-tiny`) |
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vlmlib.config import PROFILE_ENV_VAR, ConfigError

__all__ = [
    "COURSE_REPOSITORY_URL",
    "INSTALL_SOURCE_ENV_VAR",
    "SETUP_CELL_SOURCE",
    "SETUP_CELL_TAGS",
    "ProfileChoice",
    "choose_profile",
    "describe_choice",
    "set_up_notebook",
    "write_setup_cell",
]

logger = logging.getLogger(__name__)

# The same as `repository.url` in _config.yml (a test keeps them equal); change both in a fork.
COURSE_REPOSITORY_URL = "https://github.com/vlm-course/qwen2vl-nutrition-tables"
INSTALL_SOURCE_ENV_VAR = "VLM_INSTALL_SOURCE"
HOST_PACKAGES = ("torch", "torchvision")  # a host's own build (Colab's CUDA torch) is kept as it is
TINY_BUILD_NOTE = "about 8 min on 2 CPU cores"  # `vlmlib make-tiny` on the CI machine

# Written into every chapters/*.py and solutions/lab_*.py by `write_setup_cell`, right after the
# title cell; `remove-cell` keeps it off the book's pages (it runs there, and does nothing visible).
SETUP_CELL_TAGS = ["remove-cell"]
SETUP_CELL_SOURCE = f"""\
# Setup for Colab or a bare Jupyter: installs the course where it is missing and picks a profile.
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("vlmlib") is None:
    repository = "git+{COURSE_REPOSITORY_URL}"
    source = os.environ.get("{INSTALL_SOURCE_ENV_VAR}", repository)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", source], check=True)
    importlib.invalidate_caches()

from vlmlib.notebook_setup import set_up_notebook

set_up_notebook()"""


@dataclass(frozen=True)
class ProfileChoice:
    """The profile a notebook runs under, and the reason, in words, for the one-line message."""

    profile: str
    reason: str


def choose_profile(
    environ: Mapping[str, str], has_cuda_gpu: bool, is_hub_reachable: bool
) -> ProfileChoice:
    """Return `VLM_PROFILE` if set, else `full` with a CUDA GPU and the Hub, else `tiny`.

    Why: `full` needs Qwen2-VL-2B from the Hub and a GPU to train it in minutes; anywhere else the
    tiny stand-in runs the same code on the CPU.
    Explained in: book/setup.md, "Colab and other bare Jupyter servers".

    Raises:
        ConfigError: `VLM_PROFILE` holds anything but "tiny" or "full".
    """
    chosen = environ.get(PROFILE_ENV_VAR, "").strip()
    if chosen:
        if chosen not in ("tiny", "full"):
            raise ConfigError(
                f"{PROFILE_ENV_VAR}={chosen!r} is not a profile; choose one of ['tiny', 'full']"
            )
        return ProfileChoice(chosen, f"{PROFILE_ENV_VAR} is set")
    if has_cuda_gpu and is_hub_reachable:
        return ProfileChoice("full", "a CUDA GPU is visible and the Hugging Face Hub answers")
    if not has_cuda_gpu:
        return ProfileChoice("tiny", "no CUDA GPU is visible")
    return ProfileChoice("tiny", "the Hugging Face Hub does not answer")


def describe_choice(
    choice: ProfileChoice, is_building_tiny_assets: bool = False, needs_restart: bool = False
) -> str:
    """Return the cell's one line: the profile, why, and what happens next."""
    other = "tiny" if choice.profile == "full" else "full"
    line = (
        f"vlmlib {_version()}: profile {choice.profile} ({choice.reason}; "
        f"set {PROFILE_ENV_VAR}={other} to change)"
    )
    if needs_restart:
        return line + (
            "; libraries this kernel had loaded were upgraded: "
            "restart the kernel and run this cell again"
        )
    if is_building_tiny_assets:
        return line + f"; building the tiny model and data once ({TINY_BUILD_NOTE}) ..."
    return line


def set_up_notebook() -> None:
    """Install what is missing, pick the profile, print one line; do nothing in the course's clone.

    Why: the notebook's first cell calls this, so a chapter opened in Colab runs top to bottom.
    Explained in: book/setup.md, "Colab and other bare Jupyter servers".

    The choice is left in `VLM_PROFILE`, where `load_config` reads it. Nothing is returned, so the
    cell shows nothing but the line.

    Raises:
        RuntimeError: pip could not install the missing libraries (the message ends with pip's).
    """
    if _is_run_from_clone():
        return
    needs_restart = _install_missing_requirements()
    is_profile_set = bool(os.environ.get(PROFILE_ENV_VAR, "").strip())
    has_cuda_gpu = not is_profile_set and _has_cuda_gpu()  # no need to look when the choice is made
    is_hub_reachable = has_cuda_gpu and _is_hub_reachable(os.environ)
    choice = choose_profile(os.environ, has_cuda_gpu, is_hub_reachable)
    os.environ[PROFILE_ENV_VAR] = choice.profile
    if choice.profile == "full":  # 4-bit loading needs bitsandbytes, which Colab does not ship
        needs_restart = _install_missing_requirements(extra="gpu") or needs_restart
    is_building = choice.profile == "tiny" and not needs_restart and not _are_tiny_assets_built()
    print(describe_choice(choice, is_building, needs_restart), flush=True)
    if is_building:
        _build_tiny_assets()


def write_setup_cell(script: Path) -> bool:
    """Put `SETUP_CELL_SOURCE` after the title cell of a py:percent notebook; True if it changed.

    Why: one source for the cell in every notebook; run `jupytext --sync` on the file afterwards.
    """
    text = script.read_text()
    lines = text.splitlines(keepends=True)
    markers = [index for index, line in enumerate(lines) if line.startswith("# %%")]
    if len(markers) < 2 or not lines[markers[0]].startswith("# %% [markdown]"):
        raise ValueError(f"{script}: expected a title markdown cell followed by more cells")
    start = end = markers[1]
    if lines[start + 1].startswith(SETUP_CELL_SOURCE.splitlines()[0][:20]):  # an earlier version
        end = markers[2] if len(markers) > 2 else len(lines)
    cell = f"{_cell_marker()}\n{SETUP_CELL_SOURCE}\n\n"
    new_text = "".join(lines[:start]) + cell + "".join(lines[end:])
    if new_text == text:
        return False
    script.write_text(new_text)
    return True


def _cell_marker() -> str:
    tags = ", ".join(f'"{tag}"' for tag in SETUP_CELL_TAGS)
    return f"# %% tags=[{tags}]"


def _version() -> str:
    from vlmlib import __version__

    return __version__


def _is_run_from_clone() -> bool:
    """True where vlmlib is imported from a clone of the course (the README's editable install)."""
    return (Path(__file__).resolve().parents[1] / "pyproject.toml").exists()


def _requirement_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0).lower().replace("_", "-")


def _installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _install_missing_requirements(extra: str | None = None) -> bool:
    """pip-install vlmlib's requirements that are missing or too old, keeping the host's torch.

    Args:
        extra: None for the base requirements, or an extra's name ("gpu": bitsandbytes) for its own.
    Returns:
        True when a library that this kernel had already imported was upgraded (restart needed).
    """
    requirements = []
    for requirement in importlib.metadata.requires("vlmlib") or []:
        specifier, _, marker = requirement.partition(";")
        is_wanted = f'extra == "{extra}"' in marker if extra else "extra ==" not in marker
        if is_wanted:
            requirements.append(specifier.strip())  # pip skips an `extra ==` marker it is given
    names = [_requirement_name(requirement) for requirement in requirements]
    before = {name: _installed_version(name) for name in names}
    host = {name: _installed_version(name) for name in HOST_PACKAGES if _installed_version(name)}
    wanted = [requirement for requirement, name in zip(requirements, names) if name not in host]
    with tempfile.TemporaryDirectory() as folder:
        constraints = Path(folder) / "host-constraints.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in host.items()))
        command = [sys.executable, "-m", "pip", "install", "--quiet", "-c", str(constraints)]
        result = subprocess.run(command + wanted, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        beside = host or "no torch"
        raise RuntimeError(
            f"pip could not install vlmlib's requirements beside {beside}; its last lines:\n{tail}"
        )
    importlib.invalidate_caches()
    changed = [
        name
        for name in names
        if before[name] is not None and _installed_version(name) != before[name]
    ]
    modules = importlib.metadata.packages_distributions()
    loaded = {
        _requirement_name(distribution)
        for module, distributions in modules.items()
        if module in sys.modules
        for distribution in distributions
    }
    return any(name in loaded for name in changed)


def _has_cuda_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _is_hub_reachable(environ: Mapping[str, str], timeout_s: float = 5.0) -> bool:
    """True when the full profile's model answers on the Hub (and HF_HUB_OFFLINE is not set)."""
    from vlmlib.config import load_config

    if environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    model_id = load_config(profile="full").model.name
    try:
        with urllib.request.urlopen(f"{endpoint}/api/models/{model_id}", timeout=timeout_s):
            return True
    except OSError as error:  # URLError, timeouts and refused connections are all OSErrors
        logger.info("the Hub at %s did not answer: %s", endpoint, error)
        return False


def _build_tiny_assets() -> None:
    """Run `vlmlib make-tiny` in a child process, quietly; its output only if it fails.

    Why a child process: the core of vlmlib never imports `vlmlib.tiny` (only `cli` does), and the
    kernel does not keep the pretraining's memory.
    """
    command = [sys.executable, "-m", "vlmlib", "make-tiny"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise RuntimeError(
            f"`vlmlib make-tiny` could not build the tiny profile; its last lines:\n{tail}"
        )


def _are_tiny_assets_built() -> bool:
    from vlmlib.config import load_config
    from vlmlib.sources import tiny_dataset_dir, tiny_model_dir

    config = load_config(profile="tiny")
    return tiny_model_dir(config).exists() and tiny_dataset_dir(config).exists()


if __name__ == "__main__":  # python -m vlmlib.notebook_setup chapters/*.py solutions/lab_*.py
    for path in sys.argv[1:]:
        print(f"{path}: {'written' if write_setup_cell(Path(path)) else 'already up to date'}")
