"""Flags made from config dataclass fields: names, types, defaults and help from the field."""

import argparse
from dataclasses import dataclass

import pytest

from llmloop.config_flags import add_field_flag, add_field_flags


@dataclass(frozen=True)
class Example:
    base_url: str
    """Server root."""
    max_tokens: int | None = None
    """Output tokens per request."""
    temperature: float = 0.7
    """Sampling temperature (100% greedy at 0)."""
    fresh: bool = False
    """Start over."""
    safety: bool = True
    """Apply the safety layer."""
    stop: tuple[str, ...] = ()
    """Stop strings."""


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_field_flags(parser, Example, "base_url", "max_tokens", "temperature", "fresh")
    add_field_flag(parser, Example, "safety", help="Turn the safety layer off.")
    return parser


def test_defaults_types_and_required_come_from_the_field():
    args = parser().parse_args(["--base-url", "http://h"])
    assert vars(args) == {
        "base_url": "http://h",
        "max_tokens": None,
        "temperature": 0.7,
        "fresh": False,
        "safety": True,
    }
    with pytest.raises(SystemExit):
        parser().parse_args([])


def test_values_and_bool_flags():
    args = parser().parse_args(
        ["--base-url", "u", "--max-tokens", "5", "--temperature", "0", "--fresh", "--no-safety"]
    )
    assert (args.max_tokens, args.temperature, args.fresh, args.safety) == (5, 0.0, True, False)


def test_help_is_the_docstring_with_the_default(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--temperature TEMPERATURE Sampling temperature (100% greedy at 0). (default: 0.7)" in (
        help_text
    )
    assert "--max-tokens MAX_TOKENS Output tokens per request." in help_text
    assert "--no-safety Turn the safety layer off." in help_text


def test_a_field_without_a_scalar_type_needs_a_hand_written_flag():
    with pytest.raises(TypeError, match=r"Example\.stop"):
        add_field_flag(argparse.ArgumentParser(), Example, "stop")
