"""Check the built book as a reader would see it: every page exists, every chapter was executed,
and no chapter shows an error or a stray warning (stderr) output; then, in headless Chromium
(.ci/check_book_browser.py), no page has a console error, a broken image, a dead internal link or an
image without alt text. Usage: python .ci/check_book.py _build"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

import check_book_browser  # beside this file, which Python puts on sys.path


def toc_files(entries: list[dict]) -> list[str]:
    files = []
    for entry in entries:
        files += [entry["file"]] if "file" in entry else []
        for key in ("chapters", "sections", "parts"):
            files += toc_files(entry.get(key, []))
    return files


def main(build_dir: Path) -> int:
    toc = yaml.safe_load(Path("_toc.yml").read_text())
    problems = []
    for name in [toc["root"]] + toc_files(toc.get("parts", [])):
        page = build_dir / "html" / f"{name}.html"
        if not page.exists():
            problems.append(f"{page}: missing (the page was dropped from the build)")
            continue
        html = page.read_text()
        if name.startswith("chapters/"):
            if "cell_output" not in html:
                problems.append(f"{page}: no cell outputs (the chapter was not executed)")
            if "Traceback (most recent call last)" in html or "output traceback" in html:
                problems.append(f"{page}: shows an error output")
            if "&lt;Figure size" in html:
                problems.append(
                    f"{page}: a figure printed as text instead of an image (inline "
                    "backend not active?)"
                )
            if "output stderr" in html:
                problems.append(
                    f"{page}: shows stderr output (a warning or log line leaked into the page)"
                )
    for problem in problems:
        print(f"check_book: {problem}")
    print(f"check_book: {'FAILED' if problems else 'ok'} ({len(problems)} problems)")
    return max(1 if problems else 0, check_book_browser.main(build_dir))


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "_build")))
