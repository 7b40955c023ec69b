"""Sphinx extension: clear the notebook execution cache when vlmlib, the pins or the profile change.

Why: myst-nb's cache hashes a notebook's code cells only. A chapter whose cells did not change but
whose library (vlmlib), pinned environment or VLM_PROFILE did would otherwise show stale outputs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)


def _fingerprint(root: Path) -> str:
    digest = hashlib.sha256(os.environ.get("VLM_PROFILE", "tiny").encode())
    files = sorted((root / "vlmlib").rglob("*.py")) + sorted((root / "vlmlib").rglob("*.yaml"))
    for path in files + [root / "requirements.txt"]:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _clear_stale_cache(app, config) -> None:
    root = Path(app.confdir)
    cache = Path(config.nb_execution_cache_path or root / "_build" / ".jupyter_cache")
    if not cache.is_absolute():
        cache = root / cache
    stamp = cache.parent / ".jupyter_cache.vlmlib-fingerprint"
    fingerprint = _fingerprint(root)
    app.vlmlib_changed = stamp.exists() and stamp.read_text() != fingerprint
    if app.vlmlib_changed or (cache.exists() and not stamp.exists()):
        logger.info(
            "vlmlib, the pins or VLM_PROFILE changed: clearing the execution cache %s", cache
        )
        shutil.rmtree(cache, ignore_errors=True)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)


def _mark_notebooks_outdated(app, env, added, changed, removed) -> list[str]:
    """Make Sphinx re-read (and so re-execute) every notebook page after a library change."""
    if not getattr(app, "vlmlib_changed", False):
        return []
    return [name for name in env.found_docs if str(env.doc2path(name)).endswith(".ipynb")]


def setup(app):
    app.connect("config-inited", _clear_stale_cache, priority=100)
    app.connect("env-get-outdated", _mark_notebooks_outdated)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
