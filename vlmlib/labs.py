"""Generate the exercise notebooks in `labs/` from the solved ones in `solutions/`.

Why: a lab and its solution must never drift apart, so the solution is the only source and the lab
is made from it: every solution region becomes a TODO and a `raise NotImplementedError`, every cell
tagged `solution` is dropped, and every other byte is kept.
Explained in: book/labs, "How labs are made".

A solution region, inside a function in a code cell tagged `exercise`:

    # BEGIN SOLUTION: put x first, then scale each value to the grid of 0-999 (truncate)
    ...the answer...
    # END SOLUTION

becomes, at the same indentation (N is the lab's number, M counts the `exercise` cells from 1):

    # TODO (exercise N.M): put x first, then scale each value to the grid of 0-999 (truncate)
    raise NotImplementedError("Exercise N.M: write convert_hub_box_to_qwen")

`solutions/lab_NN_name.py` (py:percent, paired with its `.ipynb`) gives `labs/lab_NN_name.py` and
`labs/lab_NN_name.ipynb`. Run `vlmlib make-labs` after editing a solution;
`vlmlib make-labs --check` fails when `labs/` differs from what it would write.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import jupytext
from nbformat import NotebookNode

__all__ = [
    "LabError",
    "LabsReport",
    "generate_lab_files",
    "generate_lab_notebook",
    "make_labs",
    "strip_solution_regions",
]

EXERCISE_TAG = "exercise"
SOLUTION_TAG = "solution"
_BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION:[ \t]*(?P<todo>.*?)[ \t]*$")
_END = re.compile(r"^[ \t]*# END SOLUTION[ \t]*$")
_DEF = re.compile(r"^(?P<indent>[ \t]*)(?:async[ \t]+)?def[ \t]+(?P<name>\w+)")
_LAB_NAME = re.compile(r"^lab_(?P<number>\d+)_\w+$")


class LabError(ValueError):
    """A solution notebook breaks the marker rules; the message names the file,
    the cell and the line.
    """


def _enclosing_function(lines: list[str], line_index: int, indent: str) -> str | None:
    """Return the name of the innermost `def` above `line_index` that is
    indented less than `indent`.
    """
    for line in reversed(lines[:line_index]):
        match = _DEF.match(line)
        if match and len(match.group("indent")) < len(indent):
            return match.group("name")
    return None


def strip_solution_regions(source: str, exercise: str, where: str = "cell") -> str:
    """Replace every solution region of one code cell's source with a TODO and
    `raise NotImplementedError`.

    Args:
        source: the cell's code.
        exercise: the exercise number for the messages, e.g. "1.2".
        where: names the cell in error messages, e.g. "solutions/lab_01_data.py, cell 7".
    Raises:
        LabError: a marker without its partner, a nested or empty region, a region with no
            TODO text, or a region outside a function (the lab would then stop at that cell).
    """
    lines = source.split("\n")
    output: list[str] = []
    index = 0
    while index < len(lines):
        begin = _BEGIN.match(lines[index])
        if not begin:
            if _END.match(lines[index]):
                raise LabError(
                    f"{where}, line {index + 1}: '# END SOLUTION' without a '# BEGIN "
                    "SOLUTION' above it"
                )
            output.append(lines[index])
            index += 1
            continue
        indent, todo = begin.group("indent"), begin.group("todo")
        if not todo:
            raise LabError(
                f"{where}, line {index + 1}: write the TODO text after '# BEGIN SOLUTION:'"
            )
        end = next(
            (
                position
                for position in range(index + 1, len(lines))
                if _END.match(lines[position]) or _BEGIN.match(lines[position])
            ),
            None,
        )
        if end is None or _BEGIN.match(lines[end]):
            raise LabError(
                f"{where}, line {index + 1}: '# BEGIN SOLUTION' needs a '# END SOLUTION' "
                "before the next region"
            )
        if end == index + 1:
            raise LabError(f"{where}, line {index + 1}: the solution region is empty")
        function_name = _enclosing_function(lines, index, indent)
        if function_name is None:
            raise LabError(
                f"{where}, line {index + 1}: put the solution region inside a function, "
                "so that the unsolved lab still runs to the end"
            )
        output.append(f"{indent}# TODO (exercise {exercise}): {todo}")
        output.append(
            f'{indent}raise NotImplementedError("Exercise {exercise}: write {function_name}")'
        )
        index = end + 1
    return "\n".join(output)


def generate_lab_notebook(
    solution: NotebookNode, lab_number: int, where: str = "solution"
) -> NotebookNode:
    """Return the lab made from a solved notebook: `solution` cells dropped,
    regions of `exercise` cells stripped.

    Raises:
        LabError: a region outside an `exercise` cell, an `exercise` cell
            without a region, or a marker error.
    """
    lab = copy.deepcopy(solution)
    cells, exercise_count = [], 0
    for index, cell in enumerate(lab.cells):
        tags = cell.metadata.get("tags", [])
        if SOLUTION_TAG in tags:
            continue
        cell_where = f"{where}, cell {index + 1}"
        has_region = any(_BEGIN.match(line) for line in cell.source.split("\n"))
        if EXERCISE_TAG in tags:
            exercise_count += 1
            if cell.cell_type != "code" or not has_region:
                raise LabError(
                    f"{cell_where} is tagged '{EXERCISE_TAG}' but is not a code cell "
                    "with a solution region"
                )
            cell.source = strip_solution_regions(
                cell.source, f"{lab_number}.{exercise_count}", cell_where
            )
        elif has_region:
            raise LabError(f"{cell_where} has a solution region but is not tagged '{EXERCISE_TAG}'")
        cells.append(cell)
    lab.cells = cells
    return lab


def generate_lab_files(solution_path: Path) -> dict[str, str]:
    """Return {file name: text} of the lab pair (`.py` and `.ipynb`) made from one solution `.py`.

    Cell ids are derived from the lab's name and the cell's position, so the
    output is the same every run.
    """
    match = _LAB_NAME.match(solution_path.stem)
    if not match:
        raise LabError(
            f"{solution_path}: a solution must be named lab_NN_name.py (e.g. lab_01_data.py)"
        )
    lab = generate_lab_notebook(
        jupytext.read(solution_path), int(match.group("number")), where=str(solution_path)
    )
    for index, cell in enumerate(lab.cells):
        cell["id"] = hashlib.sha1(f"{solution_path.stem}:{index}".encode()).hexdigest()[:8]
    return {
        solution_path.with_suffix(".py").name: jupytext.writes(lab, fmt="py:percent"),
        solution_path.with_suffix(".ipynb").name: jupytext.writes(lab, fmt="ipynb"),
    }


@dataclass
class LabsReport:
    """What `make_labs` wrote or, in check mode, found different."""

    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    differing: list[Path] = field(default_factory=list)  # check mode: would be (re)written
    extra: list[Path] = field(default_factory=list)  # lab files with no solution behind them

    @property
    def is_in_sync(self) -> bool:
        return not self.differing and not self.extra


def make_labs(solutions_dir: Path, labs_dir: Path, is_check: bool = False) -> LabsReport:
    """Write `labs/` from `solutions/`, or (check mode) report what differs without writing.

    Why: CI runs the check so that a solution edited without regenerating its lab fails the build.
    Explained in: book/labs, "How labs are made".

    Args:
        solutions_dir: folder of `lab_NN_name.py` solutions (their `.ipynb` twins are not read).
        labs_dir: folder to write the lab pairs into.
        is_check: compare only; nothing is written.
    Raises:
        LabError: a solution breaks the marker rules; FileNotFoundError: `solutions_dir` is missing.
    """
    if not solutions_dir.is_dir():
        raise FileNotFoundError(f"solutions folder {solutions_dir} does not exist")
    report, expected_names = LabsReport(), set()
    for solution_path in sorted(solutions_dir.glob("lab_*.py")):
        for name, text in generate_lab_files(solution_path).items():
            expected_names.add(name)
            target = labs_dir / name
            if target.exists() and target.read_text() == text:
                report.unchanged.append(target)
            elif is_check:
                report.differing.append(target)
            else:
                labs_dir.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
                report.written.append(target)
    if labs_dir.is_dir():
        report.extra = sorted(
            path
            for path in labs_dir.glob("lab_*")
            if path.suffix in {".py", ".ipynb"} and path.name not in expected_names
        )
    return report
