"""Tests of the repository itself: pins agree, notebooks are paired, stripped
and in sync, the book's toc resolves.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_FOLDERS = ("chapters", "labs", "solutions")


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)==([^\s#]+)\s*", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def _notebooks() -> list[Path]:
    return sorted(path for folder in NOTEBOOK_FOLDERS for path in (ROOT / folder).glob("*.ipynb"))


def test_environment_yml_pins_equal_requirements_txt():
    requirements = _pins((ROOT / "requirements.txt").read_text().splitlines())
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(
        item["pip"] for item in environment["dependencies"] if isinstance(item, dict)
    )
    assert _pins(pip_section) == requirements
    assert "python=3.11" in environment["dependencies"]


def test_requirements_agree_with_constraints():
    requirements = _pins((ROOT / "requirements.txt").read_text().splitlines())
    constraints = _pins((ROOT / "constraints.txt").read_text().splitlines())
    disagreements = {
        name: (version, constraints.get(name))
        for name, version in requirements.items()
        if constraints.get(name) != version
    }
    assert not disagreements


@pytest.mark.parametrize("notebook", _notebooks(), ids=lambda path: str(path.relative_to(ROOT)))
def test_notebook_is_committed_without_outputs(notebook: Path):
    cells = json.loads(notebook.read_text())["cells"]
    with_outputs = [
        index
        for index, cell in enumerate(cells)
        if cell["cell_type"] == "code" and (cell["outputs"] or cell["execution_count"])
    ]
    assert not with_outputs, (
        f"{notebook.name}: cells {with_outputs} have outputs; run: jupyter nbconvert "
        f"--clear-output --inplace {notebook}"
    )


@pytest.mark.parametrize("notebook", _notebooks(), ids=lambda path: str(path.relative_to(ROOT)))
def test_notebook_pair_is_in_sync(notebook: Path):
    script = notebook.with_suffix(".py")
    assert script.exists(), f"{notebook} has no paired {script.name}"

    def cells(path: Path) -> list[tuple[str, str]]:
        return [(cell.cell_type, cell.source.strip()) for cell in jupytext.read(path).cells]

    assert cells(notebook) == cells(script), (
        f"{notebook.name} and {script.name} differ: run jupytext --sync {script}"
    )


@pytest.mark.parametrize("folder", NOTEBOOK_FOLDERS)
def test_every_notebook_script_has_its_ipynb(folder: str):
    scripts = [path for path in (ROOT / folder).glob("*.py") if not path.name.startswith("_")]
    assert all(path.with_suffix(".ipynb").exists() for path in scripts)


def _toc_files(entries: list[dict]) -> list[str]:
    files = []
    for entry in entries:
        if "file" in entry:
            files.append(entry["file"])
        for key in ("chapters", "sections", "parts"):
            files += _toc_files(entry.get(key, []))
    return files


def test_every_toc_entry_exists_and_chapters_are_read_as_ipynb():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + _toc_files(toc.get("parts", []))
    for name in files:
        candidates = [ROOT / f"{name}{suffix}" for suffix in (".md", ".ipynb")]
        assert any(path.exists() for path in candidates), (
            f"_toc.yml names {name}, which does not exist"
        )
        if name.startswith("chapters/"):
            assert (ROOT / f"{name}.ipynb").exists()


def test_book_config_does_not_make_sphinx_read_py_twins():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "nb_custom_formats" not in config.get("sphinx", {}).get("config", {})
    assert config["execute"]["execute_notebooks"] in {"cache", "force"}


@pytest.mark.parametrize(
    "chapter", sorted((ROOT / "chapters").glob("*.py")), ids=lambda path: path.name
)
def test_chapter_prose_types_no_measured_decimal_numbers(chapter: Path):
    """Results (printed with 3 digits, e.g. 0.734) are glued into the prose,
    never typed: tiny and full give different ones.
    """
    notebook = jupytext.read(chapter)
    offenders = []
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        prose = re.sub(
            r"```.*?```", "", cell.source, flags=re.DOTALL
        )  # code blocks hold commands, not results
        prose = re.sub(r"`[^`]*`", "", prose)  # inline code (config values, ids)
        prose = re.sub(
            r"\{cite\}[^\s]*|\{glue:[a-z]+\}[^\s]*|\{doc\}[^\s]*|\{numref\}[^\s]*", "", prose
        )
        offenders += re.findall(
            r"(?<![\w.])\d+\.\d{3,}(?![\w.])", prose
        )  # 0.734: the course prints results with 3 digits
    assert not offenders, (
        f"{chapter.name} types measured-looking numbers in its prose: {offenders}; glue "
        "them instead"
    )


def _workflow_steps(name: str) -> list[dict]:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


@pytest.mark.parametrize("workflow", ["book-gpu.yml", "ci-cpu.yml"])
def test_workflow_caches_the_execution_cache_with_its_fingerprint(workflow: str):
    """book/_ext/cache_guard.py clears a cache that comes without its
    fingerprint file, so both must be cached.
    """
    cache_steps = [
        step
        for step in _workflow_steps(workflow)
        if step.get("uses", "").startswith("actions/cache")
    ]
    execution_caches = [
        step["with"]["path"] for step in cache_steps if ".jupyter_cache" in step["with"]["path"]
    ]
    assert execution_caches, f"{workflow} caches no _build/.jupyter_cache"
    for path in execution_caches:
        assert "_build/.jupyter_cache.vlmlib-fingerprint" in path.split(), f"{workflow}: {path!r}"


def test_book_gpu_workflow_keeps_its_caches_outside_the_work_tree_and_saves_them_on_failure():
    """A self-hosted runner's checkout deletes ignored files (.venv, .cache)
    each run: ~7 GB re-downloaded.
    """
    steps = _workflow_steps("book-gpu.yml")
    exported = "\n".join(
        step.get("run", "") for step in steps if "GITHUB_ENV" in step.get("run", "")
    )
    for variable in ("VLM_VENV_DIR", "HF_HOME", "VLM_CACHE_DIR"):
        assert f'echo "{variable}=$state/' in exported, (
            f"{variable} is not kept in the runner's folder"
        )
    assert 'state="$RUNNER_TOOL_CACHE/' in exported
    saves = [step for step in steps if step.get("uses", "").startswith("actions/cache/save")]
    assert saves and all(step.get("if", "").startswith("always()") for step in saves)
    assert not any(
        step.get("uses", "").startswith("actions/cache@") for step in steps
    )  # saves on success only


def test_ci_setup_with_vlm_venv_dir_links_venv_to_it_and_keeps_the_install(tmp_path: Path):
    """`.ci/setup` with VLM_VENV_DIR: `.venv` becomes a link to that folder,
    whose install stamp spares a reinstall.
    """
    import hashlib
    import os
    import shutil
    import subprocess
    import sys

    course = tmp_path / "course"
    (course / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "setup", course / ".ci" / "setup")
    for name in ("requirements.txt", "constraints.txt", "pyproject.toml"):
        shutil.copy(ROOT / name, course / name)
    kept = tmp_path / "runner" / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(kept)], check=True)
    pins = b"".join(
        (course / name).read_bytes()
        for name in ("requirements.txt", "constraints.txt", "pyproject.toml")
    )
    (kept / ".vlmlib-installed").write_text(
        hashlib.sha256(pins).hexdigest() + "\n"
    )  # as an earlier run left it
    environment = {**os.environ, "PYTHON": sys.executable, "VLM_VENV_DIR": str(kept)}
    for _ in range(2):  # the second run finds the link already there
        result = subprocess.run(
            ["bash", ".ci/setup"], cwd=course, env=environment, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert "installed the environment" not in result.stdout  # nothing reinstalled
    assert (course / ".venv").is_symlink() and (course / ".venv").resolve() == kept.resolve()
