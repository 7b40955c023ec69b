"""Tests for .ci/check_book_browser.py: on a small made-up site it finds each kind of problem.

The site has one page with nothing wrong and one with one problem of each kind, so every test here
can fail: a check that stopped looking would miss the problem, one that looked wrongly would flag
the good page. Needs Chromium (skipped without it, failed under CI, as in
test_browser_student_path.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / ".ci"))
from test_browser_student_path import require_chromium  # noqa: E402

import check_book_browser  # noqa: E402  (.ci/check_book_browser.py)

NO_FAVICON = '<link rel="icon" href="data:,">'  # else Chromium asks the server for /favicon.ico
GOOD_PAGE = f"""<html><head>{NO_FAVICON}</head><body>
<h1 id="top">Good</h1>
<figure><img src="_images/square.png" alt="A red square"></figure>
<a href="other/target.html#there">an anchor that exists</a> <a href="#top">this page's top</a>
<a href="https://example.org/">another site, not followed</a>
</body></html>"""
BAD_PAGE = f"""<html><head>{NO_FAVICON}</head><body>
<img src="_images/missing.png" alt="A picture that is not there">
<img src="_images/square.png" alt="../_images/square.png">
<img src="_images/square.png">
<a href="nowhere.html">a missing page</a> <a href="other/target.html#not-there">a missing anchor</a>
<script>console.error("something went wrong")</script>
</body></html>"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    html_dir = tmp_path_factory.mktemp("build") / "html"
    (html_dir / "_images").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(html_dir / "_images" / "square.png")
    (html_dir / "good.html").write_text(GOOD_PAGE)
    (html_dir / "bad.html").write_text(BAD_PAGE)
    (html_dir / "other").mkdir()
    (html_dir / "other" / "target.html").write_text(
        f'<html><head>{NO_FAVICON}</head><body><p id="there">x</p></body></html>'
    )
    (html_dir / "_static").mkdir()
    # an asset folder, not a page: its problems are not the book's
    (html_dir / "_static" / "theme.html").write_text("<html><img src='none.png'></html>")
    return html_dir


@pytest.fixture(scope="module")
def problems(site: Path) -> list[str]:
    require_chromium()
    return check_book_browser.check_book_in_browser(site)


@pytest.mark.slow
def test_check_book_browser_finds_nothing_on_a_good_page(problems: list[str]):
    assert [problem for problem in problems if not problem.startswith("bad.html")] == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "expected",
    [
        "bad.html: console error: ",
        "bad.html: broken image _images/missing.png",
        "bad.html: image without alt text _images/square.png (alt='../_images/square.png')",
        "bad.html: image without alt text _images/square.png (alt=None)",
        "bad.html: link to a missing page nowhere.html",
        "bad.html: link to a missing anchor other/target.html#not-there",
    ],
    ids=[
        "console-error",
        "broken-image",
        "path-as-alt",
        "no-alt",
        "missing-page",
        "missing-anchor",
    ],
)
def test_check_book_browser_reports_each_problem_of_a_bad_page(problems: list[str], expected: str):
    assert any(problem.startswith(expected) for problem in problems), "\n".join(problems)


@pytest.mark.slow
def test_check_book_browser_skips_asset_folders(problems: list[str]):
    assert not any(problem.startswith("_static/") for problem in problems)


@pytest.mark.parametrize(
    ("ci", "status"), [("", 0), ("true", 1)], ids=["notes-outside-ci", "fails-under-ci"]
)
def test_check_book_browser_without_chromium_fails_only_under_ci(
    monkeypatch, tmp_path, capsys, ci, status
):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", ci)
    assert check_book_browser.main(tmp_path) == status
    assert "chromedriver" in capsys.readouterr().out


def test_a_resource_on_another_host_cut_by_the_check_is_listed_not_counted():
    checker = check_book_browser

    cdn = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"
    local = "http://127.0.0.1:8000/_static/missing.js"
    reading = checker.PageReading(
        [
            f"{cdn} - Failed to load resource: net::ERR_NAME_NOT_RESOLVED",
            f"{local} - Failed to load resource: the server responded with a status of 404",
        ],
        set(),
        [],
        [],
    )
    readings = {"page.html": reading}
    problems = checker.find_page_problems(
        "page.html", reading, readings, "http://127.0.0.1:8000/", Path(".")
    )
    assert problems == [
        f"page.html: console error: {local} - Failed to load resource: "
        "the server responded with a status of 404"
    ]
    assert checker.list_unchecked_external_loads(readings) == [cdn]
