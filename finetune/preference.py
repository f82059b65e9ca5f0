"""``llmloop finetune dpo|kto``: preference tuning with TRL's DPOTrainer/KTOTrainer + a PEFT
LoRA adapter, written to the same artifact dir as SFT.

Data (TRL's formats, one JSON object per line): DPO ``{"prompt", "chosen", "rejected"}``,
KTO ``{"prompt", "completion", "label": true|false}``; strings or conversational message lists.
With a LoRA adapter the reference model is the base with the adapter switched off, so no second
copy of the model is loaded.
"""

import math
import sys
from pathlib import Path
from typing import Any

from llmloop.finetune.artifact import write_artifact
from llmloop.finetune.config import PreferenceRunConfig
from llmloop.finetune.data import data_manifest, read_jsonl, report_bad_rows
from llmloop.finetune.defaults import print_resolved, resolve_preference_config
from llmloop.finetune.errors import ConfigError, DataError
from llmloop.finetune.modeling import load_base, peft_lora_config, resolve_mixed_precision
from llmloop.finetune.sft import check_data_file, check_output_dir
from llmloop.finetune.tracking import check_trackers

REQUIRED_FIELDS = {
    "dpo": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
}


def train_preference(method: str, config: PreferenceRunConfig) -> Path:
    """Run DPO or KTO and write the artifact dir; returns the dir."""
    import torch

    output_dir = config.output.output_dir
    check_output_dir(output_dir, config.output.resume)
    check_data_file(config.data.data)
    check_trackers(config.train.trackers)
    if config.output.resume:
        raise ConfigError(f"--resume is not supported for {method} yet; rerun without it")
    mixed_precision = resolve_mixed_precision(config.train.mixed_precision)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer, base_dir = load_base(config.model, mixed_precision, device)
    rows, manifest = load_preference_rows(method, Path(config.data.data), config.data.bad_rows)
    config, resolved = resolve_preference_config(config, model.num_parameters(), len(rows))
    print_resolved(config, resolved)
    trainer = build_trainer(method, config, model, tokenizer, rows, mixed_precision)
    result = trainer.train()
    trainer.model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    history = [e for e in trainer.state.log_history if "loss" in e]
    metrics: dict[str, Any] = {
        "train_loss": history[-1]["loss"] if history else result.training_loss,
        "train_loss_first": history[0]["loss"] if history else None,
        "eval_loss": None,
        "train_steps": result.global_step,
        "train_runtime_s": round(result.metrics.get("train_runtime", math.nan), 3),
        "log_history": trainer.state.log_history,
    }
    write_artifact(output_dir, config, method, base_dir, manifest, metrics, resolved)
    return output_dir


def load_preference_rows(method: str, path: Path, bad_rows: str) -> tuple[list[dict], dict]:
    fields = REQUIRED_FIELDS[method]
    rows, bad = [], []
    for line_no, row in read_jsonl(path, bad):
        missing = [f for f in fields if f not in row]
        if missing:
            bad.append((line_no, f"missing {', '.join(missing)} (a {method} row needs {fields})"))
        elif method == "kto" and not isinstance(row["label"], bool):
            bad.append((line_no, '"label" must be true or false'))
        else:
            rows.append({f: row[f] for f in fields})
    report_bad_rows(path, bad, bad_rows)
    if not rows:
        raise DataError(f"{path}: no usable {method} rows; each needs {', '.join(fields)}")
    manifest = data_manifest(path, len(rows), bad) | {"train_rows": len(rows), "eval_rows": 0}
    return rows, manifest


def build_trainer(method, config: PreferenceRunConfig, model, tokenizer, rows, mixed_precision):
    import torch
    from datasets import Dataset

    if method == "dpo":
        from trl import DPOConfig as TrainerConfig
        from trl import DPOTrainer as Trainer
    else:
        from trl import KTOConfig as TrainerConfig
        from trl import KTOTrainer as Trainer

    cfg = config.train
    extra = {"loss_type": config.preference.loss_type} if config.preference.loss_type else {}
    args = TrainerConfig(
        output_dir=str(config.output.output_dir / "checkpoints"),
        beta=config.preference.beta,
        max_length=config.data.max_seq_length,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        max_steps=cfg.max_steps or -1,
        num_train_epochs=cfg.epochs,
        seed=cfg.seed,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        logging_steps=1,
        report_to=config.train.trackers,
        use_cpu=not torch.cuda.is_available(),
        bf16=mixed_precision == "bf16",
        fp16=mixed_precision == "fp16",
        disable_tqdm=not sys.stderr.isatty(),
        **extra,
    )
    # The adapter config goes to TRL, not a PeftModel: given a bare base model, TRL adds the adapter
    # after seeding with args.seed, and its reference model is that base with the adapter switched
    # off. A PeftModel would instead get a second, trainable-shaped "ref" adapter copied from ours.
    try:
        return Trainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_lora_config(config.lora),
        )
    except ValueError as e:
        if "target modules" not in str(e).lower():
            raise
        raise ConfigError(f"--target-modules {config.lora.target_modules!r}: {e}") from e
