"""Tests of `.ci/setup`'s choice of interpreter: the newest of Python 3.11 to 3.13 that runs."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PINNED_FILES = ("requirements.txt", "constraints.txt", "pyproject.toml")


def _course_with_an_installed_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of .ci/setup and the pins, and a kept venv whose stamp spares the install."""
    course = tmp_path / "course"
    (course / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "setup", course / ".ci" / "setup")
    for name in PINNED_FILES:
        shutil.copy(ROOT / name, course / name)
    kept = tmp_path / "kept-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(kept)], check=True)
    pins = b"".join((course / name).read_bytes() for name in PINNED_FILES)
    (kept / ".vlmlib-installed").write_text(hashlib.sha256(pins).hexdigest() + "\n")
    return course, kept


def _fake_interpreter(folder: Path, name: str, log: Path, runs: bool) -> None:
    """An executable `name` that logs its call, then runs this Python or fails like a pyenv shim."""
    folder.mkdir(exist_ok=True)
    fails = f'echo "pyenv: {name}: command not found" >&2; exit 127'
    body = f'exec "{sys.executable}" "$@"' if runs else fails
    (folder / name).write_text(f'#!/usr/bin/env bash\necho {name} >> "{log}"\n{body}\n')
    (folder / name).chmod(0o755)


def _run_setup(course: Path, environment: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", ".ci/setup"], cwd=course, env=environment, capture_output=True, text=True
    )


@pytest.mark.skipif(
    not (3, 11) <= sys.version_info[:2] <= (3, 13), reason="the fake interpreters run this Python"
)
def test_ci_setup_takes_the_newest_supported_python_that_runs(tmp_path: Path):
    course, kept = _course_with_an_installed_venv(tmp_path)
    fakes, log = tmp_path / "bin", tmp_path / "calls.log"
    _fake_interpreter(fakes, "python3.13", log, runs=False)  # a pyenv shim of a version not active
    _fake_interpreter(fakes, "python3.12", log, runs=True)
    _fake_interpreter(fakes, "python3.11", log, runs=True)
    environment = {key: value for key, value in os.environ.items() if key != "PYTHON"}
    environment.update(PATH=f"{fakes}:{os.environ['PATH']}", VLM_VENV_DIR=str(kept))
    result = _run_setup(course, environment)
    assert result.returncode == 0, result.stderr
    # python3.13 tried and skipped, python3.12 found, then checked once more; python3.11 never asked
    assert log.read_text().split() == ["python3.13", "python3.12", "python3.12"]


def test_ci_setup_names_the_supported_versions_when_python_is_too_old(tmp_path: Path):
    course, kept = _course_with_an_installed_venv(tmp_path)
    old = tmp_path / "python3.10"
    old.write_text(
        "#!/usr/bin/env bash\n"
        "[ \"$1\" = --version ] && { echo 'Python 3.10.13'; exit 0; }\n"
        "exit 1\n"
    )  # as a Python 3.10 answers the check: not supported
    old.chmod(0o755)
    environment = {**os.environ, "PYTHON": str(old), "VLM_VENV_DIR": str(kept)}
    result = _run_setup(course, environment)
    assert result.returncode == 1
    assert "need Python 3.11, 3.12 or 3.13; " in result.stderr and "Python 3.10.13" in result.stderr
    assert "PYTHON=/path/to/python3.13" in result.stderr
