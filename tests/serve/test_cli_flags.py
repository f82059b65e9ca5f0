"""``llmloop serve``'s flags are its config dataclasses' fields: one default, one help text."""

import dataclasses
import json

import pytest

from llmloop.serve.cli import FIELDS_WITHOUT_FLAG, build_configs, build_parser
from llmloop.serve.config import ConfigError, EngineConfig, ServerConfig


@pytest.mark.parametrize("cls", [EngineConfig, ServerConfig])
def test_every_field_has_a_flag_with_the_dataclass_default(cls):
    actions = {action.dest: action for action in build_parser()._actions}
    for field in dataclasses.fields(cls):
        if field.name in FIELDS_WITHOUT_FLAG:  # set by a hand-written flag, or not by one
            continue
        assert field.name in actions, f"{cls.__name__}.{field.name} has no flag"
        assert actions[field.name].default == field.default, field.name
        assert actions[field.name].help, field.name


def test_no_flags_give_the_dataclass_defaults(tmp_path):
    server, engine = build_configs(build_parser().parse_args(["--model", str(tmp_path)]))
    assert server == ServerConfig()
    assert engine == EngineConfig(model_dir=tmp_path, served_model_name=str(tmp_path))
    assert engine.dtype == "auto"


def test_the_flags_users_have_keep_their_names_and_meaning(tmp_path):
    adapter = tmp_path / "support"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    argv = [
        "--model", str(tmp_path), "--served-model-name", "base",
        "--api-key", "k1", "--api-key", "k2", "k3", "--adapter", f"support={adapter}",
        "--no-store", "--no-safety", "--safety", "policy.yaml", "--db", "sqlite:///x.db",
        "--drain-timeout", "5", "-tp", "2", "-pp", "3", "-dp", "4", "--no-enforce-eager",
        "--dtype", "float32", "--max-num-seqs", "8", "--max-cpu-loras", "6", "--port", "9000",
        "--distributed-executor-backend", "mp",
    ]  # fmt: skip
    server, engine = build_configs(build_parser().parse_args(argv))
    assert server.api_keys == ("k1", "k2", "k3")
    assert server.adapters == (("support", str(adapter.resolve())),)
    assert (server.store_requests, server.safety, server.safety_policy) == (
        False,
        False,
        "policy.yaml",
    )
    assert (server.db_url, server.drain_timeout_s, server.port) == ("sqlite:///x.db", 5.0, 9000)
    assert engine.served_model_name == "base"
    assert (engine.tensor_parallel_size, engine.pipeline_parallel_size) == (2, 3)
    assert engine.data_parallel_size == 4
    assert engine.enforce_eager is False
    assert engine.enable_lora is True  # implied by --adapter
    assert (engine.dtype, engine.max_num_seqs, engine.max_cpu_loras) == ("float32", 8, 6)
    assert engine.distributed_executor_backend == "mp"


def test_a_bad_value_names_its_flag(tmp_path):
    with pytest.raises(ConfigError, match="--max-num-seqs"):
        build_configs(build_parser().parse_args(["--model", str(tmp_path), "--max-num-seqs", "0"]))
