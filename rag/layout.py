"""Where an index lives on disk, and how a new version replaces the old one atomically.

``$LLMLOOP_HOME/indexes/NAME/`` holds one directory per version (``v-<ns since epoch>-<random>``,
so names sort by creation time) and a ``CURRENT`` file naming the live one. A writer fills a fresh
version directory, then replaces ``CURRENT`` with ``os.replace`` (atomic on POSIX), then deletes
older versions. A crash at any point leaves ``CURRENT`` naming a complete version, so the previous
index stays usable. Two writers on one index at once are not supported: the last to publish wins.
"""

import os
import re
import shutil
import time
import uuid
from pathlib import Path

from llmloop.paths import indexes_dir
from llmloop.rag.errors import IndexConfigError, IndexNotFoundError

CURRENT_FILE = "CURRENT"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def list_indexes() -> list[str]:
    """Names of the indexes that exist (have a live version), sorted."""
    root = indexes_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if _live_version(p) is not None)


def index_root(name: str) -> Path:
    """``$LLMLOOP_HOME/indexes/NAME``, after checking that NAME is a plain directory name."""
    if not _NAME_PATTERN.match(name):
        raise IndexConfigError(
            f"index name {name!r} is not allowed: use letters, digits, '.', '_' or '-' "
            "(at most 100 characters, not starting with '.' or '-')"
        )
    return indexes_dir() / name


def live_version_dir(name: str) -> Path:
    """The directory of the version ``CURRENT`` names; IndexNotFoundError if there is none."""
    version = _live_version(index_root(name))
    if version is None:
        existing = list_indexes()
        raise IndexNotFoundError(
            f"no index named {name!r} (existing: {', '.join(existing) or 'none'}); "
            f"build it with `llmloop rag index PATH... --name {name}`"
        )
    return version


def find_live_version_dir(name: str) -> Path | None:
    """Like live_version_dir, but None when the index does not exist yet."""
    return _live_version(index_root(name))


def new_version_dir(name: str) -> Path:
    """A fresh, empty version directory for a writer to fill before ``publish``."""
    root = index_root(name)
    root.mkdir(parents=True, exist_ok=True)
    version = root / f"v-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
    version.mkdir()
    return version


def publish(version_dir: Path) -> None:
    """Make ``version_dir`` the live version, then remove the versions it replaced."""
    root = version_dir.parent
    pointer = root / f".{CURRENT_FILE}.{uuid.uuid4().hex[:8]}"
    pointer.write_text(version_dir.name)
    os.replace(pointer, root / CURRENT_FILE)
    for old in root.glob("v-*"):
        if old.name < version_dir.name:  # later ones belong to a writer still at work
            shutil.rmtree(old, ignore_errors=True)


def discard(version_dir: Path) -> None:
    """Remove a version that was never published (the writer failed)."""
    shutil.rmtree(version_dir, ignore_errors=True)


def _live_version(root: Path) -> Path | None:
    pointer = root / CURRENT_FILE
    if not pointer.is_file():
        return None
    version = root / pointer.read_text().strip()
    return version if version.is_dir() else None
