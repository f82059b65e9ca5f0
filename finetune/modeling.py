"""Load a base model (full precision or 4-bit nf4) and put a fresh LoRA adapter on it."""

from pathlib import Path

import torch

from llmloop.finetune.config import LoraConfig, ModelConfig
from llmloop.finetune.errors import ConfigError
from llmloop.models import resolve_model


def resolve_mixed_precision(setting: str) -> str:
    """Accelerate's mixed_precision for ``--mixed-precision``: auto is bf16 on a GPU that has it."""
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def load_base(config: ModelConfig, mixed_precision: str, device: torch.device):
    """``(model, tokenizer, base_dir)``; weights in fp32 unless mixed precision is on."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = resolve_model(config.base)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision]
    if config.method == "qlora":
        model = AutoModelForCausalLM.from_pretrained(
            base_dir,
            quantization_config=nf4_config(compute_dtype=dtype),
            dtype=dtype,
            device_map={"": device},
        )
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    model.config.use_cache = False  # training never reuses the KV cache
    return model, tokenizer, base_dir


def nf4_config(compute_dtype: torch.dtype = torch.float32):
    """bitsandbytes 4-bit NormalFloat with double quantization (the QLoRA paper's setting)."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise ConfigError("--method qlora needs bitsandbytes: pip install bitsandbytes") from e
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def add_lora(model, config: LoraConfig, seed: int):
    """Wrap ``model`` with a seeded, freshly initialised LoRA adapter (only it is trainable)."""
    from peft import get_peft_model

    torch.manual_seed(seed)
    try:
        return get_peft_model(model, peft_lora_config(config))
    except ValueError as e:
        raise ConfigError(f"--target-modules {config.target_modules!r}: {e}") from e


def peft_lora_config(config: LoraConfig):
    """PEFT's ``LoraConfig`` for a causal LM: the one place our LoRA knobs become PEFT's."""
    from peft import LoraConfig as PeftLoraConfig

    target_modules = (
        "all-linear"
        if config.target_modules == "all-linear"
        else [m.strip() for m in config.target_modules.split(",") if m.strip()]
    )
    return PeftLoraConfig(
        r=config.r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
    )


def base_name(base_dir: Path, requested: str) -> str:
    """How the artifact names its base: the model name when one was given, else the dir path."""
    return requested if not Path(requested).expanduser().is_dir() else str(base_dir)
