from pathlib import Path

import pytest

from llmloop.safety.errors import PolicyError
from llmloop.safety.harm import CATEGORIES
from llmloop.safety.pii import PII_TYPES
from llmloop.safety.policy import load_policy


def test_defaults_are_safe() -> None:
    policy = load_policy(None)
    for direction in (policy.input, policy.output):
        assert set(direction.pii) == set(PII_TYPES)
        assert set(direction.pii.values()) == {"redact"}
        assert set(direction.harm) == set(CATEGORIES)
        assert set(direction.harm.values()) == {"block"}
    assert policy.operator == "placeholder"


def test_file_overrides_per_direction_and_type(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "operator: mask\n"
        "input:\n  pii: {default: allow, SECRET: block}\n  harm: {sexual_content: allow}\n"
        "output:\n  harm: {default: allow, sexual_minors: block}\n"
    )
    policy = load_policy(path)
    assert policy.operator == "mask"
    assert policy.input.pii["EMAIL"] == "allow"
    assert policy.input.pii["SECRET"] == "block"
    assert policy.input.harm["sexual_content"] == "allow"
    assert policy.input.harm["hate"] == "block"
    assert policy.output.pii["EMAIL"] == "redact"
    assert policy.output.harm["hate"] == "allow"
    assert policy.output.harm["sexual_minors"] == "block"


@pytest.mark.parametrize(
    ("yaml_text", "names"),
    [
        ("input:\n  pii: {EMAIL: shred}\n", "input.pii.EMAIL"),
        ("input:\n  pii: {E_MAIL: redact}\n", "'E_MAIL'"),
        ("output:\n  harm: {hate: redact}\n", "output.harm.hate"),
        ("inputs: {}\n", "'inputs'"),
        ("operator: blur\n", "operator"),
        ("input: [1, 2]\n", "input"),
        ("input: {pii: {EMAIL: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_policy_names_the_key(tmp_path: Path, yaml_text: str, names: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml_text)
    with pytest.raises(PolicyError, match=names.replace(".", r"\.").replace("[", r"\[")):
        load_policy(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "nope.yaml")
