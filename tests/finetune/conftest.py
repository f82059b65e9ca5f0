"""Fixtures for the finetune tests: small data files, the default model's tokenizer, and a home
whose registry is private to the tests that train (the default model is shared, not copied)."""

import json
from pathlib import Path

import pytest


def write_jsonl(path: Path, rows: list) -> Path:
    with open(path, "w") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def chat(question: str, answer: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


@pytest.fixture
def chat_file(tmp_path: Path) -> Path:
    rows = [
        chat(f"What is the code word {i}?", f"The code word {i} is Zimbor{i}.") for i in range(12)
    ]
    return write_jsonl(tmp_path / "train.jsonl", rows)


@pytest.fixture(scope="session")
def tokenizer(default_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir)


@pytest.fixture(scope="module")
def train_home(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A private LLMLOOP_HOME for a test module, with the shared default model linked in."""
    home = tmp_path_factory.mktemp("home")
    (home / "models").mkdir()
    (home / "models" / default_model_dir.name).symlink_to(default_model_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMLOOP_HOME", str(home))
        yield home
