"""Merge and quantize a real (tiny) adapter: the merged dir computes what base + adapter compute,
and both quantized formats are written, loadable and close to bf16 in perplexity."""

import json
import math

import pytest
import torch
from safetensors import safe_open

from llmloop import registry
from llmloop.finetune.config import SFTConfig
from llmloop.finetune.merge import merge
from llmloop.finetune.quantize import quantize
from llmloop.finetune.sft import sft
from tests.finetune.conftest import chat, write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def artifact(train_home, tmp_path_factory):
    work = tmp_path_factory.mktemp("mq")
    rows = [chat(f"Name fruit number {i}.", f"Fruit {i} is a Plumbery{i}.") for i in range(10)]
    data = write_jsonl(work / "d.jsonl", rows)
    settings = {
        "data": str(data),
        "output": str(work / "fruit"),
        "max_steps": 2,
        "batch_size": 2,
        "learning_rate": 5e-3,
        "eval_fraction": 0.2,
        "save_steps": 0,
    }
    return sft(SFTConfig.from_flat(settings))


def test_merged_model_matches_base_plus_adapter(artifact):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged_dir = merge(artifact)
    assert (merged_dir / "config.json").exists() and (merged_dir / "tokenizer.json").exists()
    ids = torch.tensor([[1, 504, 3458, 314, 260, 2365, 30]])
    base = AutoModelForCausalLM.from_pretrained(
        json.loads((artifact / "adapter_config.json").read_text())["base_model_name_or_path"]
    )
    with torch.no_grad():
        expected = PeftModel.from_pretrained(base, artifact)(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)(ids).logits
    # the merged weights are stored in bf16, hence the tolerance
    assert (merged.argmax(-1) == expected.argmax(-1)).float().mean() > 0.8
    assert registry.resolve("fruit-merged").kind == "merged"


def test_quantize_writes_nf4_and_int8_with_a_perplexity_report(artifact):
    report = quantize(artifact, ["nf4", "int8"])
    assert report == json.loads((artifact / "quantized" / "report.json").read_text())
    reference = report["bf16"]["perplexity"]
    assert math.isfinite(reference)
    for fmt in ("nf4", "int8"):
        assert report[fmt]["size_mb"] < report["bf16"]["size_mb"]
        assert math.isfinite(report[fmt]["perplexity"])
        assert registry.resolve(f"fruit-{fmt}").kind == "quantized"
    assert abs(report["int8"]["perplexity_delta"]) < 0.1 * reference

    nf4_config = json.loads((artifact / "quantized/nf4/config.json").read_text())
    assert nf4_config["quantization_config"]["quant_method"] == "bitsandbytes"
    assert nf4_config["quantization_config"]["bnb_4bit_quant_type"] == "nf4"

    int8_dir = artifact / "quantized/int8"
    int8_config = json.loads((int8_dir / "config.json").read_text())["quantization_config"]
    assert int8_config["quant_method"] == "compressed-tensors"
    assert int8_config["format"] == "int-quantized"
    with safe_open(str(int8_dir / "model.safetensors"), "pt") as f:
        name = "model.layers.0.self_attn.q_proj"
        assert f.get_tensor(f"{name}.weight").dtype == torch.int8
        assert f.get_tensor(f"{name}.weight_scale").shape[1] == 1
