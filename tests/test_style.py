"""The code's style: ruff's formatter and linter pass, and no code line is over 100 characters.

Why: a code line longer than 100 characters scrolls sideways on the book's pages, and a style kept
by hand drifts. ruff (pinned in requirements.txt, configured in pyproject.toml's `[tool.ruff]`)
formats and lints the library, the tests, the benchmarks and the CI scripts. Chapters, solutions
and labs are jupytext notebooks whose markdown cells are comment lines of prose, so for them this
checks only the length of the code lines.
"""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINE_LENGTH = 100  # the same as `line-length` in pyproject.toml's [tool.ruff]
NOTEBOOK_FOLDERS = ("chapters", "solutions", "labs")
# Tokens that are not code: a line holding only these is a comment (markdown) or blank line.
NOT_CODE = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENCODING,
    tokenize.ENDMARKER,
}


def _run_ruff(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run the environment's ruff from the repository root, so pyproject.toml's settings apply."""
    if importlib.util.find_spec("ruff") is None:
        message = "ruff is not installed; run: pip install -r requirements.txt -c constraints.txt"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run(
        [sys.executable, "-m", "ruff", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_ruff_format_finds_nothing_to_change() -> None:
    result = _run_ruff("format", "--check", "--diff", ".")
    assert result.returncode == 0, (
        "ruff format would change these files; run `ruff format .` from the repository root:\n"
        + result.stdout
        + result.stderr
    )


def test_ruff_check_finds_no_lint_errors() -> None:
    result = _run_ruff("check", "--output-format", "concise", ".")
    assert result.returncode == 0, (
        "ruff check found problems (`ruff check --fix .` fixes those marked [*]):\n"
        + result.stdout
        + result.stderr
    )


def find_long_code_lines(source: str, max_length: int = MAX_LINE_LENGTH) -> list[int]:
    """Return the numbers of the lines longer than max_length that hold code, not only a comment.

    Why: in a py:percent notebook a markdown cell is comment lines and a cell marker
    (`# %% mystnb={...}`) may carry long metadata; neither is code shown in a cell, but a code line
    (a trailing comment included) is.

    Args:
        source: the text of a Python file.
        max_length: the longest line allowed, in characters.
    Returns:
        1-based line numbers, in order.
    """
    code_rows: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in NOT_CODE:
            code_rows.update(range(token.start[0], token.end[0] + 1))
    lines = source.splitlines()
    return [row for row in sorted(code_rows) if len(lines[row - 1]) > max_length]


def test_find_long_code_lines_skips_comments_and_counts_strings() -> None:
    long_comment = "# " + "prose " * 30
    long_code = "x = " + " + ".join(["1"] * 40)
    long_string_line = "  " + "word " * 30
    source = f'{long_comment}\n{long_code}\ny = """\n{long_string_line}\n"""\nz = 1  # short\n'
    assert find_long_code_lines(source) == [2, 4]


@pytest.mark.parametrize("folder", NOTEBOOK_FOLDERS)
def test_notebook_code_lines_are_at_most_100_characters(folder: str) -> None:
    long_lines = [
        f"{path.relative_to(ROOT)}:{row}"
        for path in sorted((ROOT / folder).glob("*.py"))
        for row in find_long_code_lines(path.read_text())
    ]
    assert not long_lines, (
        f"{len(long_lines)} code lines in {folder}/ are longer than {MAX_LINE_LENGTH} characters "
        f"(they scroll sideways on the page); break them up, e.g. with `ruff format`: "
        + ", ".join(long_lines)
    )
