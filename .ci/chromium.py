"""Start headless Chromium under selenium, for the browser tests and the rendered book's check.

Why: the student's path (JupyterLab, the labs, the explorer widget) and the built pages can only be
checked as a reader sees them in a real browser. Debian's `chromium` and `chromium-driver` packages
are what `.ci/run` installs; GitHub's Ubuntu runners ship Google Chrome and its driver instead.
Used by: tests/test_browser_student_path.py, tests/test_check_book_browser.py and
.ci/check_book_browser.py.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ChromiumMissing", "ChromiumPaths", "find_chromium", "start_chromium"]

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW_SIZE = "1400,1000"  # wide enough for JupyterLab's side bar, the notebook and its widgets


class ChromiumMissing(RuntimeError):
    """Chromium, its driver or selenium is not installed; the message says what to install."""


@dataclass(frozen=True)
class ChromiumPaths:
    browser: Path
    driver: Path


def find_chromium() -> ChromiumPaths:
    """Return where Chromium (or Chrome) and chromedriver are.

    Raises:
        ChromiumMissing: one of the two, or selenium, is missing; the message says what to install.
    """
    try:
        import selenium  # noqa: F401  (only checked here; start_chromium imports what it uses)
    except ImportError as error:
        raise ChromiumMissing(
            "selenium is not installed; run `bash .ci/setup` (it is in requirements.txt)"
        ) from error
    browser = next((shutil.which(name) for name in BROWSER_NAMES if shutil.which(name)), None)
    # GitHub's runners keep chromedriver in the folder $CHROMEWEBDRIVER names.
    driver_folders = [os.environ.get("PATH"), os.environ.get("CHROMEWEBDRIVER")]
    driver_path = os.pathsep.join(folder for folder in driver_folders if folder)
    driver = shutil.which("chromedriver", path=driver_path)
    missing = [
        what
        for what, found in [
            ("a browser (" + ", ".join(BROWSER_NAMES) + ")", browser),
            ("chromedriver", driver),
        ]
        if not found
    ]
    if missing:
        raise ChromiumMissing(
            f"{' and '.join(missing)} not found on PATH; install them with "
            "`apt-get install chromium chromium-driver` (.ci/run does it in CI)"
        )
    return ChromiumPaths(Path(browser), Path(driver))


def start_chromium(paths: ChromiumPaths, block_external_hosts: bool = False):
    """Return a headless Chromium `selenium.webdriver.Chrome` that records the console's messages.

    Args:
        paths: from `find_chromium`.
        block_external_hosts: resolve every host but 127.0.0.1 to nothing, so a page's requests to a
            CDN fail the same way offline and online (the book check reports them; it does not
            test the CDN).
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(paths.browser)
    for argument in [
        "--headless=new",
        f"--window-size={WINDOW_SIZE}",
        "--disable-gpu",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
    ]:  # a container's 64 MB /dev/shm is too small
        options.add_argument(argument)
    if block_external_hosts:
        options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=str(paths.driver)))
