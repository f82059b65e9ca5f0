"""``llmloop eval run``'s flags are RunConfig's fields: one default, one help text."""

import argparse
import dataclasses

from llmloop.evals.cli import FIELDS_WITHOUT_FLAG, _build_parser
from llmloop.evals.runner import RunConfig


def test_every_run_config_field_has_a_flag_with_the_dataclass_default():
    commands = next(
        a for a in _build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    run_parser = commands.choices["run"]
    actions = {action.dest: action for action in run_parser._actions}
    for field in dataclasses.fields(RunConfig):
        if field.name in FIELDS_WITHOUT_FLAG:
            continue
        action = actions[field.name]
        assert action.help, field.name
        if field.default is dataclasses.MISSING:
            assert action.required, field.name
        else:
            assert action.default == field.default, field.name


def test_parsed_defaults_build_the_default_config():
    args = _build_parser().parse_args(["run", "capitals", "--base-url", "http://h", "--model", "m"])
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(RunConfig)
        if f.name not in FIELDS_WITHOUT_FLAG
    }
    assert RunConfig(**values, out_dir="x") == RunConfig(
        base_url="http://h", model="m", out_dir="x"
    )
