"""Tests for the labs: solutions pass their checks, untouched labs report "not
attempted", labs/ is generated.

The notebooks run in a real Jupyter kernel (nbclient), offline, on the current profile.
They share the chapters' model/data cache (`VLM_CACHE_DIR`, else `~/.cache/vlmlib`), so the
tiny model's pretraining (minutes) is paid once per machine, not once per test session.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from vlmlib.config import load_config
from vlmlib.labs import LabError, generate_lab_files, make_labs, strip_solution_regions
from vlmlib.tiny import ensure_tiny_assets, get_cache_dir

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("lab_*.ipynb"))
LAB_NAMES = [path.name for path in SOLUTIONS]
CHECK_CELL = re.compile(r"^checks\.check_\w+\(")
MIN_EXERCISES_PER_LAB = 3
# Read at import, before conftest's tiny_config fixture points VLM_CACHE_DIR at
# its own smaller dataset.
USER_CACHE_DIR = str(get_cache_dir())


def _execute(path: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    return notebook


def _check_outputs(notebook: nbformat.NotebookNode) -> list[str]:
    """Return the printed verdict of every check cell, in order."""
    return [
        "".join(output.get("text", "") for output in cell.outputs if output.output_type == "stream")
        for cell in notebook.cells
        if cell.cell_type == "code" and CHECK_CELL.match(cell.source)
    ]


def _selected_lab_names(session: pytest.Session) -> list[str]:
    """Return the lab names the selected tests of this module take as `name` (all when none do)."""
    names = set()
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if item.module.__name__ == __name__ and callspec is not None and "name" in callspec.params:
            names.add(callspec.params["name"])
    return [name for name in LAB_NAMES if name in names] or LAB_NAMES


@pytest.fixture(scope="module")
def executed_notebooks(request: pytest.FixtureRequest) -> dict[str, nbformat.NotebookNode]:
    """The selected solutions and labs, executed once (two at a time), keyed by
    'solutions/NAME' and 'labs/NAME'. Only the labs the selected tests name are run, so
    `-k 07` executes lab 7 alone.
    """
    names = _selected_lab_names(request.session)
    paths = [ROOT / "solutions" / name for name in names]
    paths += [ROOT / "labs" / name for name in names]
    with pytest.MonkeyPatch.context() as patch:  # the kernels inherit this environment
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("VLM_CACHE_DIR", USER_CACHE_DIR)
        # Two kernels run at once: each gets half the cores, or their torch threads spin against
        # each other (labs 4 and 5 train; lab 5's runs took 5 min instead of 30 s on 2 cores).
        patch.setenv("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))
        config = load_config()
        if (
            config.profile == "tiny"
        ):  # build (and pretrain) here, outside the notebooks' 300 s cell timeout
            ensure_tiny_assets(config)
        executed = [_execute(paths[0])]
        with ThreadPoolExecutor(max_workers=2) as pool:
            executed += list(pool.map(_execute, paths[1:]))
    return {f"{path.parent.name}/{path.name}": notebook for path, notebook in zip(paths, executed)}


def test_there_are_labs_to_test():
    assert LAB_NAMES, "no solutions/lab_*.ipynb found"


@pytest.mark.slow
@pytest.mark.parametrize("name", LAB_NAMES)
def test_solution_notebook_passes_every_check(executed_notebooks, name: str):
    verdicts = _check_outputs(executed_notebooks[f"solutions/{name}"])
    assert len(verdicts) >= MIN_EXERCISES_PER_LAB, f"{name} has {len(verdicts)} check cells"
    failing = [
        verdict
        for verdict in verdicts
        if not re.match(r"check \w+: all \d+ cases passed\.", verdict)
    ]
    assert not failing, "\n".join(failing)


@pytest.mark.slow
@pytest.mark.parametrize("name", LAB_NAMES)
def test_untouched_lab_runs_to_the_end_and_reports_every_check_not_attempted(
    executed_notebooks, name: str
):
    verdicts = _check_outputs(executed_notebooks[f"labs/{name}"])
    assert len(verdicts) >= MIN_EXERCISES_PER_LAB
    assert all("not attempted yet" in verdict for verdict in verdicts), "\n".join(verdicts)


def test_make_labs_check_passes_on_the_committed_labs():
    result = subprocess.run(
        [sys.executable, "-m", "vlmlib", "make-labs", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_make_labs_check_fails_when_a_solution_changed(tmp_path: Path):
    solutions, labs = tmp_path / "solutions", tmp_path / "labs"
    solutions.mkdir()
    for path in (ROOT / "solutions").glob("lab_*.py"):
        (solutions / path.name).write_text(path.read_text())
    make_labs(solutions, labs)
    first = next(solutions.glob("lab_*.py"))
    first.write_text(first.read_text() + "\n# %%\n1 + 1\n")
    report = make_labs(solutions, labs, is_check=True)
    assert not report.is_in_sync
    assert set(report.differing) == {labs / first.name, labs / first.with_suffix(".ipynb").name}


def test_make_labs_check_reports_a_lab_without_solution(tmp_path: Path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "labs").mkdir()
    (tmp_path / "labs" / "lab_09_orphan.py").write_text("# %%\n")
    report = make_labs(tmp_path / "solutions", tmp_path / "labs", is_check=True)
    assert report.extra == [tmp_path / "labs" / "lab_09_orphan.py"]


def test_generated_lab_keeps_every_line_outside_solution_regions():
    for solution in (ROOT / "solutions").glob("lab_*.py"):
        lab_lines = set(generate_lab_files(solution)[solution.name].splitlines())
        in_region, in_solution_cell = False, False
        for line in solution.read_text().splitlines():
            in_region = in_region or "# BEGIN SOLUTION:" in line
            if line.startswith("# %%"):
                in_solution_cell = 'tags=["solution"]' in line
            if not in_region and not in_solution_cell:
                assert line in lab_lines, f"{solution.name}: {line!r} is missing from the lab"
            in_region = in_region and "# END SOLUTION" not in line


def test_strip_solution_regions_writes_todo_and_raise_at_the_region_indentation():
    source = (
        'def convert(box):\n    """Doc."""\n    # BEGIN SOLUTION: put x first\n    '
        "return box[1], box[0]\n    # END SOLUTION\n"
    )
    stripped = strip_solution_regions(source, "1.2")
    assert stripped == (
        'def convert(box):\n    """Doc."""\n    # TODO (exercise 1.2): put x first\n'
        '    raise NotImplementedError("Exercise 1.2: write convert")\n'
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def f():\n    # BEGIN SOLUTION: do it\n    return 1\n", "needs a '# END SOLUTION'"),
        ("def f():\n    return 1\n    # END SOLUTION\n", "without a '# BEGIN SOLUTION'"),
        (
            "def f():\n    # BEGIN SOLUTION:\n    return 1\n    # END SOLUTION\n",
            "write the TODO text",
        ),
        ("# BEGIN SOLUTION: do it\nx = 1\n# END SOLUTION\n", "inside a function"),
        ("def f():\n    # BEGIN SOLUTION: do it\n    # END SOLUTION\n", "region is empty"),
    ],
    ids=["unclosed", "end-without-begin", "no-todo-text", "outside-a-function", "empty"],
)
def test_strip_solution_regions_error_names_the_problem(source: str, message: str):
    with pytest.raises(LabError, match=re.escape(message)):
        strip_solution_regions(source, "1.1", where="solutions/lab_01_x.py, cell 3")
