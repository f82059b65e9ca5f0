"""The artifact dir of one fine-tune run, and its entry in the registry.

``adapter_model.safetensors adapter_config.json`` (PEFT, written by the trainer) ·
``training_config.yaml`` (every knob, seed, base model + its hash) · ``data_manifest.json`` ·
``metrics.json`` · ``README.md`` (model card) · ``requirements.txt`` (pinned versions);
``merged/`` and ``quantized/`` are added later by ``llmloop finetune merge|quantize``.
"""

import json
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from llmloop import registry
from llmloop.finetune.errors import ArtifactError
from llmloop.finetune.plots import LOSS_PLOT, write_loss_plot
from llmloop.models import model_hash

ARTIFACT_FILES = (
    "adapter_model.safetensors",
    "adapter_config.json",
    "training_config.yaml",
    "data_manifest.json",
    "metrics.json",
    "README.md",
    "requirements.txt",
    "loss.png",
)
PINNED_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "trl",
    "safetensors",
    "tokenizers",
    "bitsandbytes",
    "llmloop",
)


def write_artifact(
    output_dir: Path,
    config,
    method: str,
    base_dir: Path,
    manifest: dict[str, Any],
    metrics: dict[str, Any],
    resolved: dict[str, str] | None = None,
) -> registry.Artifact:
    """Write everything but the adapter weights, then register the dir as an ``adapter``.

    ``resolved``: the settings computed from the model and data (``defaults``), with why."""
    training_config = {
        "method": method,
        **config.to_dict(),
        "resolved_defaults": resolved or {},
        "base_model": {
            "name": config.model.base,
            "path": str(base_dir),
            "sha256": model_hash(base_dir),
        },
        "seed": config.train.seed,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (output_dir / "training_config.yaml").write_text(
        yaml.safe_dump(training_config, sort_keys=False)
    )
    (output_dir / "data_manifest.json").write_text(json.dumps(manifest, indent=2))
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (output_dir / "requirements.txt").write_text(pinned_requirements())
    plot = write_loss_plot(output_dir, metrics)
    (output_dir / "README.md").write_text(
        model_card(config, method, training_config, manifest, metrics, has_plot=plot is not None)
    )
    headline = {k: v for k, v in metrics.items() if isinstance(v, int | float) and v is not None}
    headline = {k: headline[k] for k in ("train_loss", "eval_loss", "train_steps") if k in headline}
    return registry.register(
        config.output.artifact_name, output_dir, "adapter", base=config.model.base, metrics=headline
    )


def resolve_artifact(name_or_dir: str) -> Path:
    """An artifact dir from a path or a registry name (newest version)."""
    path = Path(name_or_dir).expanduser()
    if not path.is_dir():
        entry = registry.resolve(name_or_dir)
        if entry is None:
            raise ArtifactError(
                f"{name_or_dir!r} is neither an artifact dir nor a registered name; "
                "see `llmloop models list`"
            )
        path = Path(entry.path)
    missing = [
        f for f in ("adapter_config.json", "training_config.yaml") if not (path / f).exists()
    ]
    if missing:
        raise ArtifactError(
            f"{path} is not a fine-tune artifact dir (missing {', '.join(missing)})"
        )
    return path.resolve()


def read_training_config(artifact_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((artifact_dir / "training_config.yaml").read_text())


def pinned_requirements() -> str:
    lines = [f"# python {platform.python_version()}"]
    for name in PINNED_PACKAGES:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return "\n".join(lines) + "\n"


def model_card(
    config, method: str, training_config: dict, manifest: dict, metrics: dict, has_plot: bool
) -> str:
    base = training_config["base_model"]
    resolved = training_config.get("resolved_defaults") or {}
    resolved_lines = "".join(f"\n  - {name} = {why}" for name, why in resolved.items())
    plot = f"\n![loss curve]({LOSS_PLOT})\n" if has_plot else ""
    files = manifest.get("files", [])
    data_lines = "\n".join(
        f"- `{f['path']}` (sha256 `{f['sha256'][:16]}…`, {f['rows_used']} rows)" for f in files
    )
    replay = manifest.get("replay")
    if replay:
        data_lines += (
            f"\n- replay: {replay['rows']} of the base model's own answers to general prompts "
            f"(`{Path(replay['prompts']).name}`), trained on alongside to keep what it could do "
            f"(loss: {replay['loss']})"
        )
    eval_loss = metrics.get("eval_loss")
    return f"""---
base_model: {base["name"]}
library_name: peft
tags: [llmloop, {method}, {config.model.method}]
---
# {config.output.artifact_name}

A {config.model.method.upper()} adapter ({method.upper()}) for `{base["name"]}`
(base sha256 `{base["sha256"][:16]}…`), trained with `llmloop finetune {method}`.

## Training
- LoRA: r={config.lora.r}, lora_alpha={config.lora.lora_alpha}, dropout={config.lora.lora_dropout},
  target_modules={config.lora.target_modules}
- steps: {metrics.get("train_steps")}, batch size {config.train.batch_size} x
  {config.train.gradient_accumulation_steps} accumulation, learning rate {config.train.learning_rate}
  ({config.train.lr_scheduler_type}, {config.train.warmup_steps} warmup steps), seed {config.train.seed}
- computed from the base model and the data (not set by hand):{resolved_lines or " none"}
- every setting: `training_config.yaml`; versions: `requirements.txt`

## Data
{data_lines}
- train rows: {manifest.get("train_rows")}, held-out rows: {manifest.get("eval_rows")}

## Results
- train loss: {metrics.get("train_loss_first")} (first step) → {metrics.get("train_loss")} (last step)
- eval loss: {eval_loss if eval_loss is not None else "n/a (no held-out split)"}
{plot}
## Use
```
llmloop serve --adapter {config.output.artifact_name}=<this dir>
llmloop finetune merge {config.output.artifact_name}      # merged HF dir under merged/
llmloop finetune quantize {config.output.artifact_name}   # quantized weights under quantized/
```
"""
