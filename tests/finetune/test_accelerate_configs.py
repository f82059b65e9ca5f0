"""finetune/recipes/accelerate/*.yaml load with Accelerate's own config classes (as ``accelerate
launch --config_file`` does) and hold the settings docs/scale-out.md documents. None of them is run
here: that needs GPUs (and deepspeed for the DeepSpeed ones)."""

from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

ACCELERATE_DIR = Path(__file__).resolve().parents[2] / "finetune" / "recipes" / "accelerate"
CONFIGS = ["fsdp.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml", "multi_node.yaml"]
FSDP_FOR_PEFT = {
    "fsdp_sharding_strategy": "FULL_SHARD",
    "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
    "fsdp_use_orig_params": True,  # PEFT freezes most parameters inside FSDP's flat shards
}


def load(name: str) -> ClusterConfig:
    config = load_config_from_file(str(ACCELERATE_DIR / name))
    assert isinstance(config, ClusterConfig)
    return config


def test_every_shipped_config_is_tested() -> None:
    assert sorted(p.name for p in ACCELERATE_DIR.glob("*.yaml")) == sorted(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_loads_as_an_accelerate_config(name: str) -> None:
    config = load(name)
    raw = yaml.safe_load((ACCELERATE_DIR / name).read_text())
    # from_yaml_file drops unknown keys only with a warning: every key must be one Accelerate reads
    assert set(raw) <= set(config.to_dict()), set(raw) - set(config.to_dict())
    assert config.mixed_precision == "bf16"
    assert not config.use_cpu
    assert config.num_processes == 8 * config.num_machines


@pytest.mark.parametrize("name", ["fsdp.yaml", "multi_node.yaml"])
def test_fsdp_full_shard_wraps_decoder_layers(name: str) -> None:
    config = load(name)
    assert config.distributed_type == "FSDP"
    assert FSDP_FOR_PEFT.items() <= config.fsdp_config.items()
    assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].endswith("DecoderLayer")


def test_wrapped_class_is_the_default_models_decoder_layer() -> None:
    from transformers.models.llama import modeling_llama

    layer_class = load("fsdp.yaml").fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
    assert hasattr(modeling_llama, layer_class)  # SmolLM2 is a Llama architecture


@pytest.mark.parametrize(
    ("name", "stage"), [("deepspeed_zero2.yaml", 2), ("deepspeed_zero3.yaml", 3)]
)
def test_deepspeed_stage(name: str, stage: int) -> None:
    config = load(name)
    assert config.distributed_type == "DEEPSPEED"
    assert config.deepspeed_config["zero_stage"] == stage
    # llmloop accumulates gradients itself; DeepSpeed's own count must stay 1
    assert config.deepspeed_config["gradient_accumulation_steps"] == 1


def test_multi_node_names_its_rendezvous() -> None:
    config = load("multi_node.yaml")
    assert config.num_machines == 2
    assert config.main_process_ip and config.main_process_port
