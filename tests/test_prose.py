"""Prose is written by a person, not assembled by code: a static check of chapters and solutions.

Why (issue 20): a sentence glued from if/else branches and f-strings reads like a form letter,
says whatever the branch taken says, and cannot be reviewed in the source as the reader sees it.
Numbers are glued into sentences a person wrote; a note that holds under one profile is a literal
shown by `vlmlib.notes.show_profile_note`. This file fails on:

- a `glue(...)` whose value is sentence-sized: a string, f-string or concatenation of more than
  `MAX_GLUED_WORDS` words, directly or through a name assigned in the same cell;
- an if/else expression choosing between strings inside `glue`, `Markdown` or `print` in a hidden
  cell (`hide-input`, `remove-input`, `remove-cell`), where the reader sees the sentence but
  not the condition that chose it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "chapters").glob("*.py"), *(ROOT / "solutions").glob("lab_*.py")])
MAX_GLUED_WORDS = 5  # "a tiny Qwen2-VL on the CPU" (6) is prose; "0.734 of 64 images" is a value
HIDDEN_TAGS = {"hide-input", "remove-input", "remove-cell"}
PROSE_CALLS = {"glue", "Markdown", "print"}


def _call_name(call: ast.Call) -> str:
    function = call.func
    if isinstance(function, ast.Name):
        return function.id
    return function.attr if isinstance(function, ast.Attribute) else ""


def _count_words(node: ast.AST) -> int:
    """Return the words of a string expression: literal words, plus one per `{...}` field."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return len(node.value.split())
    if isinstance(node, ast.JoinedStr):
        return sum(
            1 if isinstance(part, ast.FormattedValue) else _count_words(part)
            for part in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _count_words(node.left) + _count_words(node.right)
    if isinstance(node, ast.IfExp):
        return max(_count_words(node.body), _count_words(node.orelse))
    if isinstance(node, ast.Call) and _call_name(node) == "Markdown" and node.args:
        return _count_words(node.args[0])
    return 0


def _is_string_choice(node: ast.AST) -> bool:
    """True for `"..." if condition else "..."` with a string (or f-string) on either side."""
    strings = (ast.Constant, ast.JoinedStr)
    return isinstance(node, ast.IfExp) and any(
        isinstance(side, strings)
        and not (isinstance(side, ast.Constant) and not isinstance(side.value, str))
        for side in (node.body, node.orelse)
    )


def _sentence_names(tree: ast.AST) -> dict[str, int]:
    """Return {name: words} for names a cell sets (or extends with +=) to a sentence-long string."""
    names: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AugAssign):
            targets, value = [node.target], node.value
        else:
            continue
        words = _count_words(value)
        for target in targets:
            if isinstance(target, ast.Name) and words > MAX_GLUED_WORDS:
                names[target.id] = max(words, names.get(target.id, 0))
    return names


def find_assembled_prose(source: str, is_hidden: bool) -> list[str]:
    """Return one line per piece of assembled prose in a code cell's source (empty if none).

    Args:
        source: the cell's Python source.
        is_hidden: the cell's input is hidden on the page (hide-input, remove-input, remove-cell).
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics; the course's cells have none
        return []
    sentence_names = _sentence_names(tree)
    problems = []
    for call in (node for node in ast.walk(tree) if isinstance(node, ast.Call)):
        name = _call_name(call)
        if name == "glue" and len(call.args) >= 2:
            value = call.args[1]
            words = _count_words(value)
            if isinstance(value, ast.Name):
                words = sentence_names.get(value.id, 0)
            if (
                isinstance(value, ast.Call)
                and _call_name(value) == "Markdown"
                and value.args
                and isinstance(value.args[0], ast.Name)
            ):
                words = sentence_names.get(value.args[0].id, 0)
            if words > MAX_GLUED_WORDS:
                problems.append(f"line {call.lineno}: glue of a {words}-word sentence")
        if is_hidden and name in PROSE_CALLS:
            choices = [
                node
                for argument in [*call.args, *(k.value for k in call.keywords)]
                for node in ast.walk(argument)
                if _is_string_choice(node)
            ]
            if choices:
                problems.append(f"line {call.lineno}: {name}(...) picks its words with if/else")
    return problems


@pytest.mark.parametrize("script", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_code_cells_glue_no_sentence_and_assemble_no_prose_from_if_else(script: Path):
    notebook = jupytext.read(script)
    offenders = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        is_hidden = bool(HIDDEN_TAGS & set(cell.metadata.get("tags", [])))
        offenders += [
            f"cell {index}, {problem}" for problem in find_assembled_prose(cell.source, is_hidden)
        ]
    assert not offenders, (
        f"{script.name} assembles prose in code: {offenders}. Write the sentence in a Markdown "
        "cell and glue only the numbers; a note for one profile goes through "
        "vlmlib.notes.show_profile_note"
    )


@pytest.mark.parametrize(
    ("source", "is_hidden", "expected"),
    [
        ('glue("a", "a tiny Qwen2-VL and synthetic data on the CPU", display=False)', False, 1),
        ('glue("a", f"{x:.3f} against {y:.3f} nats per token, so {z} wins")', False, 1),
        (
            's = f"`{a}` is lower ({b:.3f}) than the other run here"\nglue("k", Markdown(s))',
            False,
            1,
        ),
        ('glue("a", "raised" if up else "lowered", display=False)', True, 1),
        ('print("all identical" if same else f"{n} differ")', True, 1),
        ('glue("iou", f"{report.mean_iou:.3f}", display=False)', True, 0),
        ('glue("share", f"{share:.0%}", display=False)', False, 0),
        ('print(f"mean IoU {iou:.3f} over {n} images, {m} parse failures")', True, 0),
        ('print("all identical" if same else f"{n} differ")', False, 0),
    ],
    ids=[
        "sentence-string",
        "sentence-f-string",
        "sentence-through-a-name",
        "if-else-in-glue",
        "if-else-in-hidden-print",
        "number",
        "percentage",
        "hidden-print-without-choice",
        "visible-print-with-choice",
    ],
)
def test_find_assembled_prose_flags_sentences_and_choices_only(source, is_hidden, expected):
    assert len(find_assembled_prose(source, is_hidden)) == expected
