"""Sphinx extension: write each script of a page once.

Why: Sphinx 7.4 writes an inline script added by an extension at `builder-inited`
twice on every page (fixed upstream in sphinx-doc/sphinx#13402, Sphinx 8.2, which
Jupyter Book 1 cannot use). The copy of sphinx-thebe's `const THEBE_JS_URL = ...`
then fails with "Identifier 'THEBE_JS_URL' has already been declared" in every
reader's console. This drops exact repeats and keeps the first of each.
"""

from __future__ import annotations


def _drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    seen: set[tuple] = set()
    unique = []
    for script in context.get("script_files", []):
        # The copy has filename '' where the original has None, so compare what
        # the page loads or runs.
        key = (
            getattr(script, "filename", script) or "",
            tuple(sorted(getattr(script, "attributes", {}).items())),
        )
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app) -> dict:
    app.connect("html-page-context", _drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
