"""Check the built book in headless Chromium, as a reader's browser shows it.

Every HTML page of _build/html is served on 127.0.0.1 and loaded; a page fails when it logs a
console error (a failed request, a script error), shows a broken image (naturalWidth 0), links to a
page or an anchor of the site that does not exist, or has an image without alt text (none, blank,
or the file's own path, which is what myst-nb writes when a cell sets no `mystnb: image: alt`).
Requests to other hosts are cut (they would fail offline anyway), so the check says the same thing
with and without a network: the failed loads this causes (MathJax from its CDN, on pages with
formulas) are listed once as not checked, not counted as problems; external links are not
followed. Called by .ci/check_book.py; on its own: `python .ci/check_book_browser.py _build`.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import chromium

__all__ = ["check_book_in_browser", "find_page_problems", "main"]

SKIPPED_FOLDERS = ("_static", "_sources", "_images", "_downloads", "reports")  # assets, not pages
PAGE_TIMEOUT_S = 60
# Loads every image (lazy ones too), waits until each has loaded or failed, then reads the page.
READ_PAGE_JS = """
const done = arguments[arguments.length - 1];
const images = Array.from(document.images);
images.forEach(image => { image.loading = 'eager'; });
Promise.all(images.map(image => image.decode().catch(() => null))).then(() => done({
  ids: Array.from(document.querySelectorAll('[id], a[name]'))
    .map(element => element.id || element.name),
  links: Array.from(document.querySelectorAll('a[href]')).map(link => link.href),
  images: images.map(image => ({src: image.getAttribute('src'), alt: image.getAttribute('alt'),
                                loaded: image.complete && image.naturalWidth > 0})),
}));
"""
_PATH_LIKE_ALT = re.compile(r"\S+\.(png|jpe?g|gif|svg|webp)", re.IGNORECASE)


@dataclass
class PageReading:
    """What one page showed: its console errors, element ids, links (absolute URLs) and images."""

    console_errors: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    links: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002  (the base class's name)
        """Log nothing: a missing file shows up as the page's console error instead."""


@contextmanager
def serve(html_dir: Path) -> Iterator[str]:
    """Serve `html_dir` on 127.0.0.1 (a free port) in a thread; yield its base URL (ends in '/')."""
    handler = functools.partial(_QuietHandler, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def list_pages(html_dir: Path) -> list[str]:
    """Return every page's path relative to `html_dir` (POSIX), sorted."""
    pages = []
    for path in sorted(html_dir.rglob("*.html")):
        relative = path.relative_to(html_dir)
        if relative.parts[0] not in SKIPPED_FOLDERS:
            pages.append(relative.as_posix())
    return pages


def read_page(driver, url: str) -> PageReading:
    """Load `url` and return what it showed; the console log is read (and emptied) afterwards."""
    driver.get(url)
    found = driver.execute_async_script(READ_PAGE_JS)
    errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    return PageReading(errors, set(found["ids"]), found["links"], found["images"])


# The check's own cut of other hosts shows as this console error; the resource itself is not tested.
_BLOCKED_EXTERNAL_LOAD = re.compile(
    r"(?P<url>https?://(?!127\.0\.0\.1[:/])\S+)"
    r" - Failed to load resource: net::ERR_NAME_NOT_RESOLVED"
)


def list_unchecked_external_loads(readings: dict[str, PageReading]) -> list[str]:
    """Return the other hosts' resources the pages asked for (cut by the check, so not tested)."""
    urls = {
        match["url"]
        for reading in readings.values()
        for message in reading.console_errors
        if (match := _BLOCKED_EXTERNAL_LOAD.match(message))
    }
    return sorted(urls)


def _has_alt_text(alt: str | None) -> bool:
    return bool(alt and alt.strip()) and not _PATH_LIKE_ALT.fullmatch(alt.strip())


def find_page_problems(
    page: str, reading: PageReading, readings: dict[str, PageReading], base_url: str, html_dir: Path
) -> list[str]:
    """Return one line per problem of `page`, given every page's reading (for links' anchors)."""
    problems = [
        f"{page}: console error: {message}"
        for message in reading.console_errors
        if not _BLOCKED_EXTERNAL_LOAD.match(message)
    ]
    for image in reading.images:
        if not image["loaded"]:
            problems.append(f"{page}: broken image {image['src']}")
        if not _has_alt_text(image["alt"]):
            problems.append(f"{page}: image without alt text {image['src']} (alt={image['alt']!r})")
    for link in sorted(set(reading.links)):
        if not link.startswith(base_url):
            continue  # another site (or mailto:); not followed
        target, _, anchor = link.removeprefix(base_url).partition("#")
        target = urllib.parse.unquote(target.split("?")[0])
        target = target + "index.html" if target.endswith("/") or not target else target
        if not (html_dir / target).is_file():
            problems.append(f"{page}: link to a missing page {target}")
        elif (
            anchor
            and target in readings
            and urllib.parse.unquote(anchor) not in readings[target].ids
        ):
            problems.append(f"{page}: link to a missing anchor {target}#{anchor}")
    return problems


def check_book_in_browser(html_dir: Path) -> list[str]:
    """Load every page of `html_dir` in headless Chromium; return one line per problem found.

    Raises:
        chromium.ChromiumMissing: Chromium, chromedriver or selenium is not installed.
    """
    paths = chromium.find_chromium()
    pages = list_pages(html_dir)
    with serve(html_dir) as base_url:
        driver = chromium.start_chromium(paths, block_external_hosts=True)
        try:
            driver.set_script_timeout(PAGE_TIMEOUT_S)
            driver.set_page_load_timeout(PAGE_TIMEOUT_S)
            readings = {page: read_page(driver, base_url + page) for page in pages}
        finally:
            driver.quit()
    problems = []
    for page, reading in readings.items():
        problems += find_page_problems(page, reading, readings, base_url, html_dir)
    print(f"check_book: loaded {len(pages)} pages in Chromium")
    for url in list_unchecked_external_loads(readings):
        print(f"check_book: not checked (another host, cut offline): {url}")
    return problems


def main(build_dir: Path) -> int:
    """Print the problems; return 1 if any. Without Chromium: 0 and a note, 1 where CI is set."""
    try:
        problems = check_book_in_browser(build_dir / "html")
    except chromium.ChromiumMissing as error:
        is_ci = bool(os.environ.get("CI"))
        print(f"check_book: browser checks {'FAILED' if is_ci else 'skipped'}: {error}")
        return 1 if is_ci else 0
    for problem in problems:
        print(f"check_book: {problem}")
    print(f"check_book: browser checks {'FAILED' if problems else 'ok'} ({len(problems)} problems)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "_build")))
