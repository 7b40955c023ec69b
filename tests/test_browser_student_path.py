"""The student's path in a real browser: JupyterLab opens lab 1, its solution and chapter 1.

JupyterLab is started here on 127.0.0.1 with a token, over copies of labs/, solutions/ and chapters/
in a temporary folder (the committed notebooks keep no outputs), and driven in headless Chromium
through its Run menu, as a student would. The page's text is the evidence. Screenshots land in
outputs/browser/: lab 1 before and after "Run All Cells", its solution after, and chapter 1's record
explorer before and after its slider moves.

Needs Chromium and chromedriver (`.ci/run` installs them): without them the browser tests are
skipped with the reason, except where the environment variable CI is set, where they fail.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from vlmlib.config import load_config
from vlmlib.tiny import ensure_tiny_assets, get_cache_dir

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / ".ci"))
import chromium  # noqa: E402  (.ci/chromium.py, shared with the book's browser check)

SCREENSHOT_DIR = ROOT / "outputs" / "browser"
NOTEBOOK_FOLDERS = ("labs", "solutions", "chapters")
SERVER_START_TIMEOUT_S = 90
RUN_TIMEOUT_S = 300  # the longest wait for one "Run"; lab 1 takes about 20 s on two busy cores
# Read at import, before conftest's tiny_config fixture points VLM_CACHE_DIR at a smaller dataset.
USER_CACHE_DIR = str(get_cache_dir())
# What a fresh user answers once: no news pop-up over the notebook, no update check (no network).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": (
        '{"fetchNews": "false", "checkForUpdates": false}'
    )
}
# Every code cell of the open notebook: its prompt ("[3]:", "[*]:", "[ ]:") and its outputs' text.
# Once attached, cells stay in the page while scrolled away (JupyterLab's default windowing mode,
# contentVisibility), so textContent sees them all. Sources are read from the file instead: the
# editor puts in the page only the lines it has shown.
READ_CELLS_JS = """
return Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell')).map(cell => ({
  prompt: (cell.querySelector('.jp-InputPrompt')?.textContent ?? '').trim(),
  output: Array.from(cell.querySelectorAll('.jp-OutputArea-output'))
    .map(output => output.textContent).join('\\n'),
}));
"""
# True once the notebook has loaded (spinner gone), shows all arguments[0] code cells (JupyterLab
# attaches a long notebook's cells in batches) and the status bar ends "| Idle".
NOTEBOOK_READY_JS = """
const panel = document.querySelector('.jp-NotebookPanel');
const statuses = Array.from(document.querySelectorAll('.jp-StatusBar-TextItem'))
  .map(item => item.textContent);
return panel !== null && panel.querySelector('.jp-Spinner') === null
    && panel.querySelectorAll('.jp-CodeCell').length === arguments[0]
    && statuses.some(text => /[|] Idle$/.test(text) && !text.startsWith('No Kernel'));
"""
# True once the first arguments[0] code cells show a number and the kernel is idle again.
RAN_JS = (
    READ_CELLS_JS.replace("return ", "const cells = ", 1)
    + """
const ran = cells.slice(0, arguments[0]).every(cell => /^\\[\\d+\\]:$/.test(cell.prompt));
const idle = document.querySelector('.jp-Notebook-ExecutionIndicator[data-status="idle"]') !== null;
return ran && idle && !cells.some(cell => cell.prompt === '[*]:');
"""
)
# The explorer's picture in code cell arguments[0], once loaded and unlike arguments[1] (or null).
EXPLORER_IMAGE_JS = """
const cell = document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell')[arguments[0]];
const image = cell.querySelector('.jupyter-widgets img, .widget-output img');
const readout = cell.querySelector('.widget-readout');
const isNew = image && image.complete && image.naturalWidth > 0
    && image.getAttribute('src') !== arguments[1];
return isNew ? {src: image.getAttribute('src'), readout: readout?.textContent.trim() ?? ''} : null;
"""


def require_chromium() -> chromium.ChromiumPaths:
    """Return Chromium's paths; where missing, skip the test with the reason (fail it under CI)."""
    try:
        return chromium.find_chromium()
    except chromium.ChromiumMissing as error:
        if os.environ.get("CI"):
            pytest.fail(f"{error}. CI is set: the browser tests must run, so this fails.")
        pytest.skip(str(error))


@dataclass(frozen=True)
class LabServer:
    url: str  # http://127.0.0.1:PORT
    token: str
    root: Path  # the temporary folder it serves


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_serving(server: LabServer, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"JupyterLab exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{server.url}/api/status?token={server.token}", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(
        f"JupyterLab did not answer within {SERVER_START_TIMEOUT_S} s:\n"
        f"{log_path.read_text()[-3000:]}"
    )


def _copy_course(base: Path) -> Path:
    """Copy the notebooks and JupyterLab's settings under `base`; return the folder to serve."""
    root = base / "course"
    for folder in NOTEBOOK_FOLDERS:
        shutil.copytree(
            ROOT / folder,
            root / folder,
            ignore=shutil.ignore_patterns("outputs", "__pycache__", ".ipynb_*"),
        )
    for name, text in LAB_SETTINGS.items():
        (base / "settings" / name).parent.mkdir(parents=True, exist_ok=True)
        (base / "settings" / name).write_text(text)
    return root


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """JupyterLab over copies of the notebooks; its settings and state stay in tmp_path."""
    require_chromium()  # no server to start when there is no browser to drive it
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("VLM_CACHE_DIR", USER_CACHE_DIR)
        config = load_config()
        if config.profile == "tiny":  # built here (minutes, once per machine), not in a Run All
            ensure_tiny_assets(config)
    base = tmp_path_factory.mktemp("jupyterlab")
    url = f"http://127.0.0.1:{_free_port()}"
    server = LabServer(url, secrets.token_hex(16), _copy_course(base))
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VLM_CACHE_DIR": USER_CACHE_DIR,
        "VLM_PROFILE": config.profile,
        # the user's own Jupyter configuration and runtime files stay out of it
        "JUPYTER_CONFIG_DIR": str(base / "config"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
    }
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",  # CI is root
        "--ip=127.0.0.1",
        f"--port={server.url.rsplit(':', 1)[1]}",
        f"--IdentityProvider.token={server.token}",
        f"--ServerApp.root_dir={server.root}",
        f"--LabApp.user_settings_dir={base / 'settings'}",
        f"--LabApp.workspaces_dir={base / 'workspaces'}",
    ]
    log_path = base / "jupyterlab.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until_serving(server, process, log_path)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def browser(lab_server: LabServer) -> Iterator[WebDriver]:
    driver = chromium.start_chromium(require_chromium())
    try:
        yield driver
    finally:
        driver.quit()


def _screenshot(browser: WebDriver, name: str) -> None:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT_DIR / f"{name}.png"))


def _wait(browser: WebDriver, condition_js: str, what: str, *arguments: Any) -> Any:
    """Return the first truthy value of `condition_js` (a script's body), polled every 0.5 s."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        value = browser.execute_script(condition_js, *arguments)
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(
        f"waited {RUN_TIMEOUT_S} s for {what}; the page shows: "
        f"{browser.execute_script(READ_CELLS_JS)!r:.2000}"
    )


def open_notebook(browser: WebDriver, server: LabServer, path: str) -> list[str]:
    """Open `path` in a fresh workspace; once shown with an idle kernel, return its code cells."""
    notebook = json.loads((server.root / path).read_text())
    sources = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    workspace = path.replace("/", "-").removesuffix(".ipynb")  # a fresh one restores no other tab
    browser.get(f"{server.url}/lab/workspaces/{workspace}/tree/{path}?token={server.token}")
    _wait(
        browser,
        NOTEBOOK_READY_JS,
        f"{path} to show its {len(sources)} code cells, kernel idle",
        len(sources),
    )
    return sources


def click_run_menu(browser: WebDriver, command: str) -> None:
    """Click the Run menu, then its item for `command` ('runmenu:run-all' is "Run All Cells")."""
    from selenium.webdriver.common.by import By

    menus = browser.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel")
    next(menu for menu in menus if menu.text == "Run").click()
    browser.find_element(By.CSS_SELECTOR, f'.lm-Menu-item[data-command="{command}"]').click()


def wait_until_run(
    browser: WebDriver, sources: list[str], num_cells: int | None = None
) -> list[dict]:
    """Wait until the first `num_cells` code cells (all if None) have run and the kernel is idle.

    Returns:
        every code cell as {"source", "prompt", "output"}.
    """
    _wait(
        browser,
        RAN_JS,
        "the cells to run and the kernel to go idle",
        len(sources) if num_cells is None else num_cells,
    )
    return [
        {"source": source, **cell}
        for source, cell in zip(sources, browser.execute_script(READ_CELLS_JS))
    ]


def scroll_to_cell(browser: WebDriver, index: int) -> None:
    browser.execute_script(
        "document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell')"
        "[arguments[0]].scrollIntoView({block: 'start'});",
        index,
    )
    time.sleep(0.5)  # let the scroll settle before a screenshot


def _check_cells(cells: list[dict]) -> list[dict]:
    return [cell for cell in cells if cell["source"].startswith("checks.check_")]


def _checked_function(cell: dict) -> str:
    return cell["source"].removeprefix("checks.check_").split("(")[0]


def _error_outputs(cells: list[dict]) -> list[str]:
    return [cell["output"][:500] for cell in cells if "Traceback" in cell["output"]]


def test_find_chromium_names_what_to_install_when_nothing_is_on_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CHROMEWEBDRIVER", raising=False)
    with pytest.raises(chromium.ChromiumMissing, match="apt-get install chromium chromium-driver"):
        chromium.find_chromium()


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [("", pytest.skip.Exception), ("true", pytest.fail.Exception)],
    ids=["skips-outside-ci", "fails-under-ci"],
)
def test_require_chromium_skips_outside_ci_and_fails_under_ci(monkeypatch, tmp_path, ci, outcome):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="chromedriver"):
        require_chromium()


@pytest.mark.slow
def test_untouched_lab_run_all_reports_every_check_not_attempted_with_a_hint(browser, lab_server):
    sources = open_notebook(browser, lab_server, "labs/lab_01_data.ipynb")
    _screenshot(browser, "lab_01_before_run_all")
    assert not any(cell["output"] for cell in browser.execute_script(READ_CELLS_JS))
    click_run_menu(browser, "runmenu:run-all")
    cells = wait_until_run(browser, sources)
    checks = _check_cells(cells)
    scroll_to_cell(browser, cells.index(checks[0]) - 1)  # exercise 1.1 and its check's verdict
    _screenshot(browser, "lab_01_after_run_all")
    assert len(checks) >= 3, f"lab 1 shows {len(checks)} check cells"
    for cell in checks:
        verdict = f"check {_checked_function(cell)}: not attempted yet"
        assert verdict in cell["output"], cell["output"]
        assert "Replace the TODO" in cell["output"], cell["output"]  # the hint: what to do next
    assert not _error_outputs(cells)


@pytest.mark.slow
def test_solution_lab_run_all_passes_every_check(browser, lab_server):
    sources = open_notebook(browser, lab_server, "solutions/lab_01_data.ipynb")
    click_run_menu(browser, "runmenu:run-all")
    cells = wait_until_run(browser, sources)
    checks = _check_cells(cells)
    scroll_to_cell(browser, cells.index(checks[0]) - 1)
    _screenshot(browser, "solution_01_after_run_all")
    assert len(checks) >= 3, f"the solution shows {len(checks)} check cells"
    for cell in checks:
        verdict = f"check {_checked_function(cell)}: all "
        assert verdict in cell["output"] and "cases passed." in cell["output"], cell["output"]
    assert not _error_outputs(cells)


@pytest.mark.slow
def test_chapter_1_record_explorer_slider_changes_the_picture(browser, lab_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    sources = open_notebook(browser, lab_server, "chapters/01_dataset_eda.ipynb")
    explorer = next(
        index for index, source in enumerate(sources) if "build_record_explorer" in source
    )
    code_cells = browser.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-CodeCell")
    explorer_cell = code_cells[explorer]
    scroll_to_cell(browser, explorer)
    explorer_cell.find_element(By.CSS_SELECTOR, ".jp-InputPrompt").click()  # select the cell
    # Only the cells the explorer needs; the chapter's later cells load the processor.
    click_run_menu(browser, "notebook:run-all-above")
    wait_until_run(browser, sources, explorer)
    click_run_menu(browser, "notebook:run-cell")
    wait_until_run(browser, sources, explorer + 1)
    before = _wait(browser, EXPLORER_IMAGE_JS, "the explorer to show a picture", explorer, None)
    scroll_to_cell(browser, explorer)
    _screenshot(browser, "chapter_01_explorer_record_0")

    handle = explorer_cell.find_element(By.CSS_SELECTOR, ".noUi-handle")
    handle.click()
    handle.send_keys(Keys.ARROW_RIGHT)  # the slider's keyboard step: record 0 -> record 1
    after = _wait(
        browser,
        EXPLORER_IMAGE_JS,
        "the picture to change after the slider moved",
        explorer,
        before["src"],
    )
    _screenshot(browser, "chapter_01_explorer_record_1")
    assert (before["readout"], after["readout"]) == ("0", "1")
