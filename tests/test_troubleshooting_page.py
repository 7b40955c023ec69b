"""book/troubleshooting.md quotes messages the course really prints: each quote
is found in vlmlib's source.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "troubleshooting.md"


def _quoted_messages() -> list[str]:
    """Return the backticked texts of each table row's first column."""
    quotes = []
    for line in PAGE.read_text().splitlines():
        if line.startswith("| `"):
            first_column = line.split("|")[1]
            quotes += re.findall(r"`([^`]+)`", first_column)
    return quotes


def _pattern(quote: str) -> re.Pattern[str]:
    """Match the quote in source code: "..." skips text, and any word may be an
    f-string placeholder.
    """

    def piece(part: str) -> str:
        tokens = re.split(r"(\w[\w.]*)", part)  # a name such as vlmlib_config.yaml is one token
        return "".join(
            rf"(?:{re.escape(token)}|\{{[^{{}}]*\}})"
            if re.fullmatch(r"\w[\w.]*", token)
            else re.escape(token)
            for token in tokens
        )

    return re.compile(r".*?".join(piece(part) for part in quote.split("...")))


def test_every_quoted_message_is_one_the_course_prints():
    source = "\n".join(path.read_text() for path in sorted((ROOT / "vlmlib").rglob("*.py")))
    source = re.sub(r"\"\s*\n\s*f?\"", "", source)  # join strings split over lines, "a "\n  "b"
    quotes = _quoted_messages()
    assert len(quotes) >= 20
    missing = [quote for quote in quotes if not _pattern(quote).search(source)]
    assert missing == [], f"quoted on {PAGE.name} but printed nowhere in vlmlib: {missing}"


def test_the_pattern_allows_placeholders_but_not_other_words():
    assert _pattern("is smaller than 28 px").search('f"is smaller than {MIN_IMAGE_SIDE_PX} px"')
    assert not _pattern("is larger than 28 px").search('f"is smaller than {MIN_IMAGE_SIDE_PX} px"')
