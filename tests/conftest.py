"""Session-wide test set-up: one LLMLOOP_HOME for the run, so the default model is converted once.

``LLMLOOP_TEST_HOME`` overrides where that home lives (default: ``.llmloop-test-home`` in the
repo, git-ignored). Tests that write to the registry or the log use ``isolated_home``.
"""

import os
from pathlib import Path

import pytest

from tests.postgres import postgres  # noqa: F401  (the fixture: one PostgreSQL per session)

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


@pytest.fixture(scope="session")
def test_lora_dir(default_model_dir: Path) -> Path:
    """A random PEFT LoRA adapter on the default model (loaded by the shared server as
    ``test-lora``), in the artifact store: a server loads adapters at run time from there only."""
    from llmloop.paths import adapters_dir
    from tests.servers import make_random_lora

    return make_random_lora(default_model_dir, adapters_dir() / "test-lora")


@pytest.fixture(scope="session")
def llmloop_server(
    default_model_dir: Path, test_lora_dir: Path, tmp_path_factory: pytest.TempPathFactory
):
    """One real ``llmloop serve`` (vLLM engine, default model) for the whole test session.

    It has API key ``.api_key``, the adapter ``test-lora`` loaded at start, LoRA enabled for
    ``/v1/load_lora_adapter`` (max rank 64), and ``.client`` (an ``openai.OpenAI`` on ``/v1``)."""
    from tests.servers import start_server

    server = start_server(
        [
            "--adapter",
            f"test-lora={test_lora_dir}",
            "--max-num-seqs",
            "32",
            "--max-model-len",
            "4096",
        ],
        tmp_path_factory.mktemp("server") / "serve.log",
    )
    yield server
    server.stop()


# fixture -> the marker every test using it gets, whether or not it says so
MARKER_OF_FIXTURE = {
    "llmloop_server": "engine",
    "postgres": "postgres",
    "real_embedder": "embedder",
}
HEAVY_MARKERS = ("engine", "slow", "postgres", "browser", "embedder")
"""What the fast lane (``make test-fast``) leaves out; see the markers in pyproject.toml."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in MARKER_OF_FIXTURE:
                item.add_marker(MARKER_OF_FIXTURE[fixture])


@pytest.fixture(autouse=True)
def fast_lane_never_loads_the_embedder(request: pytest.FixtureRequest, monkeypatch) -> None:
    """A test outside the heavy markers that loads MiniLM (or the harm classifier's
    multilingual e5) fails, naming the marker it lacks, so the fast lane stays fast as tests
    are added."""
    if any(request.node.get_closest_marker(m) for m in HEAVY_MARKERS):
        return
    from llmloop import models

    package_dir = models._package_dir

    def guarded(module: str) -> Path:
        if module in (models._EMBEDDER_PACKAGE, models.MULTILINGUAL_ENCODER_PACKAGE):
            raise AssertionError("this test loads the embedder: mark it @pytest.mark.embedder")
        return package_dir(module)

    monkeypatch.setattr(models, "_package_dir", guarded)
