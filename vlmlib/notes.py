"""Notes that hold under one profile only: shown under that profile, and nowhere else.

Why: a sentence about the tiny profile ("the tiny model also boxes the logo") is false under
`full`, where the same page shows Qwen2-VL-2B on real photos. A Markdown cell shows under both
profiles, so such a note lives in a code cell instead: the cell calls `show_profile_note` with the
profile it is about and the note's Markdown, written out by a person, and the note appears only
when that profile produced the page, on the built page and in JupyterLab alike.
Explained in: chapter 00, "Setup".

A chapter's note cell looks like this (its tags hide the code on the page; its metadata makes
myst-nb read the note as MyST, so that directives and roles work):

    # %% tags=["remove-input"] mystnb={"markdown_format": "myst"}
    notes.show_profile_note("tiny", '''
    ```{note}
    Under `tiny` ...
    ```
    ''')
"""

from __future__ import annotations

import textwrap
import typing
from typing import TYPE_CHECKING

from vlmlib.config import Profile, get_profile

if TYPE_CHECKING:  # IPython comes with Jupyter; the command line runs without it
    from IPython.display import Markdown

__all__ = ["NOTE_CELL_METADATA", "NOTE_CELL_TAGS", "build_profile_note", "show_profile_note"]

NOTE_CELL_TAGS = ["remove-input"]  # the page shows the note, not the call
NOTE_CELL_METADATA = {"markdown_format": "myst"}  # under `mystnb`: a note may hold {doc}, {cite}


def build_profile_note(
    profile: Profile, markdown_text: str, active_profile: Profile | None = None
) -> Markdown | None:
    """Return the note as Markdown when `profile` is the active one, else None.

    Why: the testable half of `show_profile_note`; nothing is displayed here.

    Args:
        profile: the profile the note is about, "tiny" or "full".
        markdown_text: the note, as a person wrote it (usually one admonition); the indentation
            common to its lines and the blank lines around it are removed.
        active_profile: the profile that produced the page; `VLM_PROFILE` (tiny if unset) by
            default.
    Returns:
        `IPython.display.Markdown` of the note, or None under the other profile.
    Raises:
        ValueError: `profile` is not a profile, or the note is empty.
    """
    profiles = typing.get_args(Profile)
    if profile not in profiles:
        raise ValueError(
            f"show_profile_note got profile {profile!r}; choose one of {list(profiles)}"
        )
    text = textwrap.dedent(markdown_text).strip()
    if not text:
        raise ValueError(
            f"show_profile_note got an empty note for profile {profile!r}; "
            "write the note's Markdown, or delete the cell"
        )
    if (active_profile or get_profile()) != profile:
        return None
    from IPython.display import Markdown

    return Markdown(text)


def show_profile_note(profile: Profile, markdown_text: str) -> None:
    """Display the note when the page runs under `profile`; display nothing otherwise.

    Why: notes that only hold for one profile must not appear under the other.
    Explained in: chapter 00, "Setup".

    Args:
        profile: the profile the note is about, "tiny" or "full".
        markdown_text: the note's Markdown, written by a person, not assembled from conditions.
    Raises:
        ValueError: `profile` is not a profile, or the note is empty.
    """
    note = build_profile_note(profile, markdown_text)
    if note is not None:
        from IPython.display import display

        display(note)
