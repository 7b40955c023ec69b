"""Tests for vlmlib.notebook_setup: the first cell of every notebook, the profile it picks, and the
install it does where the course is missing (Colab, a bare Jupyter)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import jupytext
import pytest
import yaml

import vlmlib
from vlmlib import notebook_setup
from vlmlib.config import ConfigError
from vlmlib.notebook_setup import (
    SETUP_CELL_SOURCE,
    SETUP_CELL_TAGS,
    ProfileChoice,
    choose_profile,
    describe_choice,
    set_up_notebook,
    write_setup_cell,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_SCRIPTS = sorted(
    [
        *(ROOT / "chapters").glob("[0-9]*.py"),
        *(ROOT / "solutions").glob("lab_*.py"),
        *(ROOT / "labs").glob("lab_*.py"),
    ]
)


@pytest.mark.parametrize("script", NOTEBOOK_SCRIPTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_notebook_has_the_setup_cell_right_after_its_title(script: Path):
    cells = jupytext.read(script).cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# "), "title first"
    assert cells[1].cell_type == "code" and cells[1].source == SETUP_CELL_SOURCE, (
        f"{script.name}: cell 2 is not vlmlib.notebook_setup.SETUP_CELL_SOURCE; "
        f"run: python -m vlmlib.notebook_setup {script.relative_to(ROOT)} (then jupytext --sync)"
    )
    assert cells[1].metadata.get("tags") == SETUP_CELL_TAGS
    assert sum(cell.source == SETUP_CELL_SOURCE for cell in cells) == 1


def test_setup_cell_installs_from_the_repository_of_the_book_config():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert notebook_setup.COURSE_REPOSITORY_URL == config["repository"]["url"]
    assert f"git+{config['repository']['url']}" in SETUP_CELL_SOURCE


@pytest.mark.parametrize(
    ("environ", "has_cuda_gpu", "is_hub_reachable", "expected"),
    [
        (
            {},
            True,
            True,
            ProfileChoice("full", "a CUDA GPU is visible and the Hugging Face Hub answers"),
        ),
        ({}, False, True, ProfileChoice("tiny", "no CUDA GPU is visible")),
        ({}, False, False, ProfileChoice("tiny", "no CUDA GPU is visible")),
        ({}, True, False, ProfileChoice("tiny", "the Hugging Face Hub does not answer")),
        ({"VLM_PROFILE": "tiny"}, True, True, ProfileChoice("tiny", "VLM_PROFILE is set")),
        ({"VLM_PROFILE": "full"}, False, False, ProfileChoice("full", "VLM_PROFILE is set")),
        ({"VLM_PROFILE": " "}, False, False, ProfileChoice("tiny", "no CUDA GPU is visible")),
    ],
    ids=[
        "gpu-and-hub",
        "hub-only",
        "neither",
        "gpu-only",
        "set-tiny-on-a-gpu",
        "set-full-on-a-cpu",
        "set-blank",
    ],
)
def test_choose_profile_picks_full_only_with_a_gpu_and_the_hub_unless_vlm_profile_says(
    environ: dict[str, str], has_cuda_gpu: bool, is_hub_reachable: bool, expected: ProfileChoice
):
    assert choose_profile(environ, has_cuda_gpu, is_hub_reachable) == expected


def test_choose_profile_error_names_the_valid_profiles_for_an_unknown_one():
    with pytest.raises(ConfigError, match=r"VLM_PROFILE='fast'.*\['tiny', 'full'\]"):
        choose_profile({"VLM_PROFILE": "fast"}, True, True)


def test_describe_choice_is_one_line_that_says_the_profile_the_reason_and_the_build():
    choice = ProfileChoice("tiny", "no CUDA GPU is visible")
    line = describe_choice(choice, is_building_tiny_assets=True)
    assert "\n" not in line
    assert line.startswith(f"vlmlib {vlmlib.__version__}: profile tiny (no CUDA GPU is visible; ")
    assert "VLM_PROFILE=full" in line and "building the tiny model and data once" in line


def test_set_up_notebook_prints_nothing_and_sets_no_profile_in_the_course_clone(
    capsys, monkeypatch
):
    monkeypatch.delenv("VLM_PROFILE", raising=False)
    set_up_notebook()
    assert capsys.readouterr() == ("", "")
    assert "VLM_PROFILE" not in os.environ


def test_set_up_notebook_builds_the_tiny_assets_when_they_are_missing(capsys, monkeypatch):
    built = []
    monkeypatch.delenv("VLM_PROFILE", raising=False)  # and restores what set_up_notebook sets
    monkeypatch.setattr(notebook_setup, "_is_run_from_clone", lambda: False)
    monkeypatch.setattr(notebook_setup, "_install_missing_requirements", lambda extra=None: False)
    monkeypatch.setattr(notebook_setup, "_has_cuda_gpu", lambda: False)
    monkeypatch.setattr(notebook_setup, "_are_tiny_assets_built", lambda: False)
    monkeypatch.setattr(
        notebook_setup.subprocess,
        "run",
        lambda command, **kwargs: (
            built.append(command[1:]) or subprocess.CompletedProcess(command, 0, "", "")
        ),
    )
    set_up_notebook()
    output = capsys.readouterr().out
    assert output.count("\n") == 1 and "profile tiny (no CUDA GPU is visible" in output
    assert "building the tiny model and data once" in output
    assert built == [["-m", "vlmlib", "make-tiny"]] and os.environ["VLM_PROFILE"] == "tiny"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [(None, ["transformers>=5.23,<5.25"]), ("gpu", ["bitsandbytes>=0.50,<0.51"])],
    ids=["base", "gpu"],
)
def test_install_missing_requirements_keeps_the_host_torch(
    monkeypatch, extra: str | None, expected: list[str]
):
    import importlib.metadata

    calls = []

    def fake_pip(command, **kwargs):
        constraints = Path(command[command.index("-c") + 1]).read_text()
        calls.append((command, constraints))
        return subprocess.CompletedProcess(command, 0, "", "")

    requires = [
        "torch>=2.9,<2.15",
        "transformers>=5.23,<5.25",
        'bitsandbytes>=0.50,<0.51; extra == "gpu"',
    ]  # as importlib.metadata gives them
    monkeypatch.setattr(importlib.metadata, "requires", lambda name: requires)
    monkeypatch.setattr(notebook_setup.subprocess, "run", fake_pip)
    assert notebook_setup._install_missing_requirements(extra) is False  # no version changed
    ((command, constraints),) = calls
    assert command[command.index("-c") + 2 :] == expected  # never torch: the host's stays
    assert constraints.splitlines() == [
        f"{name}=={importlib.metadata.version(name)}" for name in ("torch", "torchvision")
    ]


def test_write_setup_cell_inserts_after_the_title_then_replaces_an_older_version(tmp_path: Path):
    script = tmp_path / "lab.py"
    script.write_text("# %% [markdown]\n# # Title\n\n# %%\nx = 1\n")
    assert write_setup_cell(script) is True
    assert write_setup_cell(script) is False  # already up to date
    older = script.read_text().replace("set_up_notebook()", "set_up_notebook()  # an older version")
    script.write_text(older)
    assert write_setup_cell(script) is True
    cells = jupytext.read(script).cells
    assert [cell.source for cell in cells] == ["# Title", SETUP_CELL_SOURCE, "x = 1"]


def _course_libraries_without_vlmlib(folder: Path) -> Path:
    """Link every entry of this environment's site-packages into folder, except vlmlib's own."""
    folder.mkdir()
    site_packages = Path(sysconfig.get_paths()["purelib"])
    for entry in site_packages.iterdir():
        is_vlmlib = entry.name.startswith(("vlmlib", "__editable__")) or entry.suffix == ".pth"
        if not is_vlmlib:
            (folder / entry.name).symlink_to(entry)
    return folder


def _pack_checkout_as_wheel(folder: Path) -> Path:
    """Zip this checkout's vlmlib/ into a wheel, with metadata from its pyproject.toml.

    Why not `pip wheel`: building needs setuptools with bdist_wheel, or an index to fetch it from;
    the venv of Python 3.11 has setuptools 65 without it, and CI runs offline.
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requires = [*project["dependencies"]] + [
        f'{requirement}; extra == "{extra}"'
        for extra, requirements in project["optional-dependencies"].items()
        for requirement in requirements
    ]
    metadata = "".join(
        [
            f"Metadata-Version: 2.1\nName: vlmlib\nVersion: {project['version']}\n",
            f"Requires-Python: {project['requires-python']}\n",
            *(f"Requires-Dist: {requirement}\n" for requirement in requires),
        ]
    )
    info = f"vlmlib-{project['version']}.dist-info"
    files = {
        path.relative_to(ROOT).as_posix(): path.read_bytes()
        for path in sorted((ROOT / "vlmlib").rglob("*"))
        if path.is_file() and path.suffix in {".py", ".yaml"}
    }
    files[f"{info}/METADATA"] = metadata.encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"]).encode()
    folder.mkdir()
    wheel = folder / f"vlmlib-{project['version']}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return wheel


@pytest.mark.slow
def test_setup_cell_installs_vlmlib_where_it_is_missing_and_says_what_it_chose(tmp_path: Path):
    """The Colab path, offline: a fresh venv without vlmlib runs the cell and gets the course.

    The venv reuses this environment's libraries through a .pth file that names a folder of links to
    them, vlmlib excluded (a folder named in a .pth gets no .pth processing of its own, so the
    editable install is not seen either): nothing is downloaded, and the host's torch stays as it
    is, as on Colab. The install source is a wheel of this checkout's vlmlib/, so nothing in the
    checkout is written to, and pip needs no index (PIP_NO_INDEX: offline, as CI is).
    """
    wheel = _pack_checkout_as_wheel(tmp_path / "wheels")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    venv_site = subprocess.run(
        [python, "-c", purelib], check=True, capture_output=True, text=True
    ).stdout.strip()
    libraries = _course_libraries_without_vlmlib(tmp_path / "libraries")
    (Path(venv_site) / "course-libraries.pth").write_text(f"{libraries}\n")
    environ = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environ.update(
        VLM_INSTALL_SOURCE=str(wheel), VLM_PROFILE="full", HF_HUB_OFFLINE="1", PIP_NO_INDEX="1"
    )

    def run_python(code: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [python, "-c", code],
            cwd=tmp_path,
            env=environ,
            capture_output=True,
            text=True,
            timeout=300,
        )

    assert run_python("import vlmlib").returncode != 0  # the venv starts without vlmlib
    cell = run_python(SETUP_CELL_SOURCE)
    assert cell.returncode == 0, cell.stderr
    expected = (
        f"vlmlib {vlmlib.__version__}: profile full "
        "(VLM_PROFILE is set; set VLM_PROFILE=tiny to change)\n"
    )
    assert cell.stdout == expected  # one line, and nothing else
    where = run_python("import vlmlib; print(vlmlib.__file__)").stdout.strip()
    assert Path(where).is_relative_to(Path(venv_site))  # installed by the cell, not the checkout


def test_book_offers_colab_and_no_binder_launch_button():
    """Colab runs a notebook through its setup cell; Binder would build a 7 GB CUDA environment."""
    buttons = yaml.safe_load((ROOT / "_config.yml").read_text())["launch_buttons"]
    assert buttons["colab_url"] == "https://colab.research.google.com"
    assert not buttons["binderhub_url"]
