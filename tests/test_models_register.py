"""``llmloop models register``: an adapter trained elsewhere becomes the next version of a name."""

import json
from pathlib import Path

import pytest

from llmloop import registry
from llmloop.cli import main as llmloop
from llmloop.paths import adapters_dir


def make_adapter(path: Path, weights: bytes = b"w1", base: str | None = "base-model") -> Path:
    path.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": 8}
    if base is not None:
        config["base_model_name_or_path"] = base
    (path / "adapter_config.json").write_text(json.dumps(config))
    (path / "adapter_model.safetensors").write_bytes(weights)
    return path


def register(capsys: pytest.CaptureFixture, *args: str) -> str:
    assert llmloop(["models", "register", *args]) == 0
    return capsys.readouterr().out.split()[-1]


def test_register_copies_into_the_store_and_prints_the_version(
    isolated_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src = make_adapter(tmp_path / "lora")
    assert register(capsys, str(src), "--name", "support") == "support@1"
    artifact = registry.resolve("support", 1)
    assert artifact is not None and artifact.kind == "adapter" and artifact.base == "base-model"
    stored = Path(artifact.path)
    assert stored.parent == (adapters_dir() / "support").resolve()
    assert (stored / "adapter_model.safetensors").read_bytes() == b"w1"
    assert not list(stored.parent.glob(".incoming-*"))  # nothing half-copied left behind


def test_same_content_is_the_same_version_new_content_the_next(
    isolated_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    first = make_adapter(tmp_path / "a")
    again = make_adapter(tmp_path / "b")  # other place, same files
    changed = make_adapter(tmp_path / "c", weights=b"w2")
    assert register(capsys, str(first), "--name", "support") == "support@1"
    assert register(capsys, str(again), "--name", "support") == "support@1"
    assert register(capsys, str(changed), "--name", "support") == "support@2"


def test_base_flag_wins_and_is_needed_without_one_in_the_config(
    isolated_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src = make_adapter(tmp_path / "lora", base=None)
    assert llmloop(["models", "register", str(src), "--name", "x"]) == 1
    assert "pass --base" in capsys.readouterr().err
    assert register(capsys, str(src), "--name", "x", "--base", "other") == "x@1"
    artifact = registry.resolve("x")
    assert artifact is not None and artifact.base == "other"


@pytest.mark.parametrize(
    ("files", "name", "message"),
    [
        ({}, "x", "no adapter_config.json"),
        ({"adapter_config.json": "{}"}, "x", "no adapter weights"),
        ({"adapter_config.json": "{", "adapter_model.bin": "w"}, "x", "not valid JSON"),
        ({"adapter_config.json": "[]", "adapter_model.bin": "w"}, "x", "JSON object"),
        ({"adapter_config.json": "{}", "adapter_model.bin": "w"}, "a@1", "--name"),
        ({"adapter_config.json": "{}", "adapter_model.bin": "w"}, "../up", "--name"),
    ],
)
def test_what_is_not_an_adapter_is_refused(
    isolated_home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    files: dict,
    name: str,
    message: str,
) -> None:
    src = tmp_path / "dir"
    src.mkdir()
    for filename, text in files.items():
        (src / filename).write_text(text)
    assert llmloop(["models", "register", str(src), "--name", name, "--base", "b"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llmloop models: error:") and message in err
    assert registry.list_artifacts() == []


def test_list_shows_the_registered_adapter(
    isolated_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    register(capsys, str(make_adapter(tmp_path / "lora")), "--name", "support")
    assert llmloop(["models", "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["name"], r["version"], r["kind"]) for r in rows] == [("support", 1, "adapter")]


def test_symbolic_links_and_a_changed_base_are_refused(isolated_home, tmp_path):
    from llmloop.errors import LLMLoopError
    from llmloop.models_cli import register_adapter

    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    src = tmp_path / "lora"
    src.mkdir()
    (src / "adapter_config.json").write_text('{"base_model_name_or_path": "base"}')
    (src / "adapter_model.safetensors").write_bytes(b"weights")
    (src / "notes.txt").symlink_to(secret)
    with pytest.raises(LLMLoopError, match="symbolic links"):
        register_adapter(src, "a", None)
    (src / "notes.txt").unlink()
    register_adapter(src, "a", None)
    with pytest.raises(LLMLoopError, match="base never changes"):
        register_adapter(src, "a", "another-base")
