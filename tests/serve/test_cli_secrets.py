"""Secrets stay off the command line (where ``ps`` shows them): keys and the database URL also come
from the environment or from a file."""

import pytest

from llmloop.serve.cli import build_configs, build_parser
from llmloop.serve.config import ConfigError


def configs(tmp_path, *argv: str):
    return build_configs(build_parser().parse_args(["--model", str(tmp_path), *argv]))[0]


def test_the_database_url_comes_from_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLMLOOP_DB", "postgresql://u:secret@db/llmloop")
    assert configs(tmp_path).db_url == "postgresql://u:secret@db/llmloop"
    assert configs(tmp_path, "--db", "sqlite:///x.db").db_url == "sqlite:///x.db"  # flag wins


def test_the_database_url_comes_from_a_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLMLOOP_DB", "sqlite:///from-env.db")
    path = tmp_path / "db-url"
    path.write_text("postgresql://u:secret@db/llmloop\n")
    assert configs(tmp_path, "--db-file", str(path)).db_url == "postgresql://u:secret@db/llmloop"


def test_keys_come_from_flags_the_environment_and_a_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLMLOOP_API_KEY", "sk-env")
    path = tmp_path / "keys"
    path.write_text("sk-file-1\n\n  sk-file-2  \n")
    config = configs(tmp_path, "--api-key", "sk-flag", "--api-key-file", str(path))
    assert config.api_keys == ("sk-flag", "sk-file-1", "sk-file-2", "sk-env")


def test_an_unreadable_or_empty_file_names_its_flag(tmp_path) -> None:
    with pytest.raises(ConfigError, match="--db-file"):
        configs(tmp_path, "--db-file", str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="--api-key-file"):
        configs(tmp_path, "--api-key-file", str(tmp_path / "empty"))


def test_help_says_where_secrets_can_come_from() -> None:
    text = " ".join(build_parser().format_help().split())
    for words in ("$LLMLOOP_DB", "--db-file", "$LLMLOOP_API_KEY", "--api-key-file"):
        assert words in text, words
