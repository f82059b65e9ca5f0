"""A few real LoRA steps on the default model (CPU): the loss falls, every trainable parameter
moves, the base does not, the artifact is complete and registered, and resume is exact."""

import itertools
import json
import math
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from llmloop import registry
from llmloop.finetune import checkpoint
from llmloop.finetune.artifact import ARTIFACT_FILES
from llmloop.finetune.config import SFTConfig
from llmloop.finetune.data import load_sft_data
from llmloop.finetune.defaults import resolve_sft_config
from llmloop.finetune.errors import ConfigError, NaNLossError
from llmloop.finetune.modeling import add_lora, load_base
from llmloop.finetune.sft import sft, train
from tests.finetune.conftest import chat, write_jsonl

pytestmark = pytest.mark.slow
STEPS = 4
REPLAY_ROWS = 8


def settings(data, output, **overrides):
    return {
        "data": str(data),
        "output": str(output),
        "max_steps": STEPS,
        "batch_size": 4,
        "save_steps": 2,
        "eval_fraction": 0.2,
        "replay_rows": 0,
        "seed": 7,
        **overrides,
    }


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    rows = [chat(f"What is code word {i}?", f"Code word {i} is Zimbor{i}.") for i in range(10)]
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", rows)


@pytest.fixture(scope="module")
def run_dir(train_home, data_file, tmp_path_factory):
    output = tmp_path_factory.mktemp("runs") / "code-words"
    return sft(SFTConfig.from_flat(settings(data_file, output, replay_rows=REPLAY_ROWS)))


def test_training_moves_every_lora_weight_and_no_base_weight(train_home, data_file, tmp_path):
    from accelerate import Accelerator

    config = SFTConfig.from_flat(settings(data_file, tmp_path / "out", max_steps=3, save_steps=0))
    accelerator = Accelerator(mixed_precision="no")
    model, tokenizer, _ = load_base(config.model, "no", accelerator.device)
    config, _ = resolve_sft_config(config, model.num_parameters(), num_rows=10)
    model = add_lora(model, config.lora, config.train.seed)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = load_sft_data(config.data, tokenizer, config.train.seed)

    result = train(accelerator, model, data, config, tokenizer.pad_token_id)

    losses = [e["loss"] for e in result.log_history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    after = dict(model.named_parameters())
    trainable = [n for n, p in after.items() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(not torch.equal(before[n], after[n]) for n in trainable)
    assert all(torch.equal(before[n], p) for n, p in after.items() if not p.requires_grad)


def test_artifact_dir_is_complete_and_registered(run_dir, train_home):
    for name in ARTIFACT_FILES:
        assert (run_dir / name).is_file(), name
    config = yaml.safe_load((run_dir / "training_config.yaml").read_text())
    assert config["seed"] == 7 and config["train"]["max_steps"] == STEPS
    # what was not given is computed, written, and explained
    assert config["train"]["learning_rate"] == 1.5e-3 and config["lora"]["r"] == 16
    assert set(config["resolved_defaults"]) == {"r", "lora_alpha", "learning_rate", "warmup_steps"}
    assert "eval_fraction" not in config["resolved_defaults"]  # given: 0.2
    assert (run_dir / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert "![loss curve](loss.png)" in (run_dir / "README.md").read_text()
    assert len(config["base_model"]["sha256"]) == 64
    manifest = json.loads((run_dir / "data_manifest.json").read_text())
    assert manifest["train_rows"] == 8 and manifest["eval_rows"] == 2
    # the base's own finished answers to the shipped prompts, trained on beside the 8 rows
    replay = manifest["replay"]
    assert replay["rows_asked"] == REPLAY_ROWS and 0 < replay["rows"] <= REPLAY_ROWS
    assert replay["prompts"].endswith("replay_prompts.jsonl") and replay["trained_tokens"] > 0
    assert replay["loss"] == "kl"  # toward the base's distribution, the default
    assert (
        f"- replay: {replay['rows']} of the base model's own" in (run_dir / "README.md").read_text()
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["log_history"]) == STEPS and math.isfinite(metrics["eval_loss"])
    assert metrics["train_loss"] < metrics["train_loss_first"]
    adapter = json.loads((run_dir / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and adapter["lora_alpha"] == 32 and adapter["peft_type"] == "LORA"
    assert "torch==" in (run_dir / "requirements.txt").read_text()
    entry = registry.resolve("code-words")
    assert entry.kind == "adapter" and entry.path == str(run_dir)
    assert entry.base == "smollm2-135m-instruct" and "eval_loss" in entry.metrics


def test_resume_gives_the_same_loss_curve(run_dir, data_file, tmp_path):
    resumed = tmp_path / "resumed"
    (resumed / checkpoint.CHECKPOINTS_DIR).mkdir(parents=True)
    halfway = checkpoint.checkpoint_dir(run_dir, STEPS // 2)
    shutil.copytree(halfway, checkpoint.checkpoint_dir(resumed, STEPS // 2))

    # the same flags as the run it continues, replay rows included (regenerated, greedy)
    sft(SFTConfig.from_flat(settings(data_file, resumed, resume=True, replay_rows=REPLAY_ROWS)))

    curve = [e["loss"] for e in json.loads((run_dir / "metrics.json").read_text())["log_history"]]
    again = [e["loss"] for e in json.loads((resumed / "metrics.json").read_text())["log_history"]]
    assert again == pytest.approx(curve, rel=1e-5)
    final, resumed_final = (load_file(d / "adapter_model.safetensors") for d in (run_dir, resumed))
    for name, weight in final.items():
        torch.testing.assert_close(resumed_final[name], weight, rtol=1e-5, atol=1e-6)


def test_output_dir_with_a_run_needs_resume(run_dir, data_file):
    with pytest.raises(ConfigError, match="--resume"):
        sft(SFTConfig.from_flat(settings(data_file, run_dir)))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    train_home, data_file, tmp_path, monkeypatch
):

    def add_lora_that_diverges_at_step_3(model, config, seed):
        model = add_lora(model, config, seed)
        calls = itertools.count(1)

        def poison(module, args, output):
            if next(calls) >= 3:  # one forward per step: batch_size x accumulation = 1 micro-batch
                output["loss"] = output["loss"] * float("nan")
            return output

        model.register_forward_hook(poison)
        return model

    import llmloop.finetune.sft

    monkeypatch.setattr(llmloop.finetune.sft, "add_lora", add_lora_that_diverges_at_step_3)
    output = tmp_path / "nan"
    with pytest.raises(NaNLossError, match=r"at step 3.*last good checkpoint"):
        sft(SFTConfig.from_flat(settings(data_file, output, batch_size=2, save_steps=1)))
    last = checkpoint.latest_checkpoint(output)
    assert last == checkpoint.checkpoint_dir(output, 2)
    weights = load_file(last / "adapter_model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_qlora_trains_lora_on_a_4bit_base(train_home, data_file, tmp_path):
    pytest.importorskip("bitsandbytes")
    output = sft(
        SFTConfig.from_flat(settings(data_file, tmp_path / "q", method="qlora", max_steps=2))
    )
    metrics = json.loads((output / "metrics.json").read_text())
    assert len(metrics["log_history"]) == 2 and math.isfinite(metrics["train_loss"])
    assert (
        yaml.safe_load((output / "training_config.yaml").read_text())["model"]["method"] == "qlora"
    )
