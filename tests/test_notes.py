"""Tests of vlmlib/notes.py and of its use in the chapters: tiny-only notes show under tiny."""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest

from vlmlib import notes

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.py"))
NOTE = """
    ```{note}
    Under `tiny` the answer often holds one box too many.
    ```
"""
# A sentence about the tiny profile that also says what its outputs look like ("often", "mostly",
# "the numbers on this page") holds under tiny only. Sentences about the mechanism ("under `tiny`
# they are a synthetic copy") hold under both profiles and may stay in Markdown cells.
TINY = re.compile(r"\btiny\b", re.IGNORECASE)
RESULT_WORDS = re.compile(
    r"\b(often|mostly|usually|typically|tends? to|is expected to|are expected"
    r" to|its numbers|the numbers on this page|on this page's numbers)\b",
    re.IGNORECASE,
)


def _sentences(markdown: str) -> list[str]:
    """Return the cell's sentences, each admonition counted as one (its title names the profile)."""
    blocks = re.findall(r"```\{(?:note|tip|caution|admonition)\}.*?```", markdown, flags=re.DOTALL)
    text = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)  # code blocks hold no prose
    sentences = re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text))
    return [re.sub(r"\s+", " ", block) for block in blocks] + sentences


def find_tiny_only_sentences(markdown: str) -> list[str]:
    """Return the sentences of a Markdown cell that describe the tiny profile's outputs."""
    return [
        sentence
        for sentence in _sentences(markdown)
        if TINY.search(sentence) and RESULT_WORDS.search(sentence)
    ]


def test_build_profile_note_returns_the_note_under_its_profile():
    note = notes.build_profile_note("tiny", NOTE, active_profile="tiny")
    assert note is not None
    assert note.data.startswith("```{note}\nUnder `tiny`")  # common indentation removed
    assert note.data.endswith("```")


def test_build_profile_note_returns_nothing_under_the_other_profile():
    assert notes.build_profile_note("tiny", NOTE, active_profile="full") is None
    assert notes.build_profile_note("full", NOTE, active_profile="tiny") is None


def test_build_profile_note_reads_the_profile_from_vlm_profile(monkeypatch):
    monkeypatch.setenv("VLM_PROFILE", "full")
    assert notes.build_profile_note("tiny", NOTE) is None
    assert notes.build_profile_note("full", NOTE) is not None


def test_show_profile_note_displays_under_tiny_and_nothing_under_full(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    monkeypatch.setenv("VLM_PROFILE", "full")
    notes.show_profile_note("tiny", NOTE)
    assert shown == []
    monkeypatch.setenv("VLM_PROFILE", "tiny")
    notes.show_profile_note("tiny", NOTE)
    assert len(shown) == 1 and "one box too many" in shown[0].data


@pytest.mark.parametrize(
    ("profile", "text"),
    [("small", NOTE), ("tiny", "  \n  ")],
    ids=["unknown-profile", "empty-note"],
)
def test_build_profile_note_rejects_unknown_profile_and_empty_note(profile, text):
    with pytest.raises(ValueError, match="show_profile_note got"):
        notes.build_profile_note(profile, text, active_profile="tiny")


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("Under `tiny` it often holds one box too many, around the logo.", 1),
        (
            "```{admonition} The tiny profile's data\n:class: tip\nSynthetic: the numbers on this "
            "page describe it.\n```",
            1,
        ),
        ("Under `tiny` they are a synthetic copy in the Hub's exact schema.", 0),
        ("The model often answers with a box.", 0),
    ],
    ids=["tiny-outputs", "tiny-numbers", "tiny-mechanism", "no-tiny"],
)
def test_find_tiny_only_sentences_flags_what_tiny_outputs_look_like(markdown, expected):
    assert len(find_tiny_only_sentences(markdown)) == expected


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.name)
def test_chapter_markdown_cells_hold_no_tiny_only_note(chapter: Path):
    notebook = jupytext.read(chapter)
    offenders = [
        sentence
        for cell in notebook.cells
        if cell.cell_type == "markdown"
        for sentence in find_tiny_only_sentences(cell.source)
    ]
    assert not offenders, (
        f"{chapter.name} says in Markdown what only the tiny profile shows: {offenders}. Move it "
        "into a code cell calling vlmlib.notes.show_profile_note('tiny', ...)"
    )


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.name)
def test_chapter_note_cells_hide_their_code_and_render_myst(chapter: Path):
    notebook = jupytext.read(chapter)
    cells = [
        cell
        for cell in notebook.cells
        if cell.cell_type == "code" and "show_profile_note(" in cell.source
    ]
    for cell in cells:
        assert cell.metadata.get("tags") == notes.NOTE_CELL_TAGS, cell.source[:80]
        assert cell.metadata.get("mystnb") == notes.NOTE_CELL_METADATA, cell.source[:80]
