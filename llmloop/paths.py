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
