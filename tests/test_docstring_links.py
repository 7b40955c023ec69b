"""Docstrings' back-links (Explained in: chapter 06, "From answers to figures") name real sections.

Why: a link to a chapter or section that does not exist sends a reader to the wrong page
(metrics.py once pointed to chapter 05 for what chapter 06 teaches).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Modules whose links are checked; the others are to be added as their links are fixed.
CHECKED_MODULES = ("callbacks", "collators", "metrics", "models", "optimizer_steps")
LINK = re.compile(r'chapter (\d\d), "([^"]+)"')


def _headings(number: str) -> set[str]:
    """Return chapter `number`'s headings, the title without its "3. " prefix as well."""
    source = next((ROOT / "chapters").glob(f"{number}_*.py")).read_text()
    headings = {heading.strip() for heading in re.findall(r"^# #+ (.+)$", source, flags=re.M)}
    return headings | {re.sub(r"^\d+\. ", "", heading) for heading in headings}


@pytest.mark.parametrize("module", CHECKED_MODULES)
def test_explained_in_links_name_an_existing_chapter_section(module: str):
    source = (ROOT / "vlmlib" / f"{module}.py").read_text()
    links = LINK.findall(source)
    assert links, f"vlmlib/{module}.py has no chapter link to check"
    broken = [
        f'chapter {number}, "{title}"' for number, title in links if title not in _headings(number)
    ]
    assert not broken, f"vlmlib/{module}.py links to sections that do not exist: {broken}"
