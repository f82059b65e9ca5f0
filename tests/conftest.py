"""Session-wide test set-up: one LLMLOOP_HOME for the run, so the default model is converted once.

``LLMLOOP_TEST_HOME`` overrides where that home lives (default: ``.llmloop-test-home`` in the
repo, git-ignored). Tests that write to the registry or the log use ``isolated_home``.
"""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    home = os.environ.get("LLMLOOP_TEST_HOME", str(REPO_ROOT / ".llmloop-test-home"))
    os.environ["LLMLOOP_HOME"] = home
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach a model hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The default model, converted from the shipped GGUF on first use."""
    from llmloop.models import resolve_model

    return resolve_model()


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty LLMLOOP_HOME for tests that write to the registry or the log."""
    monkeypatch.setenv("LLMLOOP_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
