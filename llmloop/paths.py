"""Where llmloop keeps its files: everything lives under ``$LLMLOOP_HOME`` (default ``~/.llmloop``)."""

import os
from pathlib import Path


def llmloop_home() -> Path:
    return Path(os.environ.get("LLMLOOP_HOME", "~/.llmloop")).expanduser()


def models_dir() -> Path:
    return llmloop_home() / "models"


def adapters_dir() -> Path:
    return llmloop_home() / "adapters"


def indexes_dir() -> Path:
    return llmloop_home() / "indexes"


def runs_dir() -> Path:
    return llmloop_home() / "runs"


def default_db_url() -> str:
    return f"sqlite:///{llmloop_home() / 'llmloop.db'}"


DB_FLAG_HELP = (
    "The log database the servers use, as `llmloop serve --db` (default: $LLMLOOP_DB, else "
    "sqlite:///$LLMLOOP_HOME/llmloop.db; a URL with a password belongs in $LLMLOOP_DB, which "
    "`ps` does not show)."
)
"""The ``--db`` flag of every command that reads or writes the log database."""


def db_url(flag: str | None = None) -> str:
    """The log database a command uses: its ``--db`` flag, else ``$LLMLOOP_DB``, else SQLite in
    ``$LLMLOOP_HOME`` (what ``llmloop serve`` uses with neither)."""
    return flag or os.environ.get("LLMLOOP_DB") or default_db_url()
