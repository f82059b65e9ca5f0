"""``llmloop finetune merge``: fold a LoRA adapter into its base, giving a plain HF model dir
(bf16 safetensors + tokenizer) that vLLM, transformers or the quantizer load without PEFT."""

import shutil
import tempfile
from pathlib import Path

import torch
from tqdm.auto import tqdm

from llmloop import registry
from llmloop.finetune.artifact import read_training_config
from llmloop.finetune.errors import ArtifactError
from llmloop.models import resolve_model

MERGED_DIR = "merged"


def merge(artifact_dir: Path, output_dir: Path | None = None) -> Path:
    """Write ``artifact_dir/merged`` (or ``output_dir``) and register it as ``NAME-merged``."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = (output_dir or artifact_dir / MERGED_DIR).resolve()
    progress = tqdm(total=4, desc="merge", unit="stage")
    progress.set_postfix_str("checking the base model")
    base_dir = base_model_dir(artifact_dir)
    progress.update(1)
    progress.set_postfix_str("loading base + adapter")
    # Merge in fp32 so W + BA is rounded to bf16 once, not twice.
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, artifact_dir)
    progress.update(1)
    progress.set_postfix_str("merging")
    model = model.merge_and_unload().to(torch.bfloat16)
    model.config.use_cache = True
    tokenizer = AutoTokenizer.from_pretrained(artifact_dir)
    progress.update(1)

    progress.set_postfix_str("saving")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as tmp:
        staging = Path(tmp) / "model"
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    progress.update(1)
    progress.close()
    name = artifact_name(artifact_dir)
    registry.register(f"{name}-merged", target, "merged", base=name)
    return target


def ensure_merged(artifact_dir: Path) -> Path:
    merged = artifact_dir / MERGED_DIR
    return merged if (merged / "config.json").exists() else merge(artifact_dir)


def base_model_dir(artifact_dir: Path) -> Path:
    """The base the adapter was trained on, checked against the hash recorded at training time."""
    from llmloop.models import model_hash

    base = read_training_config(artifact_dir)["base_model"]
    path = Path(base["path"])
    base_dir = path if (path / "config.json").exists() else resolve_model(base["name"])
    if model_hash(base_dir) != base["sha256"]:
        raise ArtifactError(
            f"the base model at {base_dir} is not the one {artifact_dir} was trained on "
            f"(sha256 differs from {base['sha256'][:16]}…); restore that base model"
        )
    return base_dir


def artifact_name(artifact_dir: Path) -> str:
    output = read_training_config(artifact_dir).get("output", {})
    return output.get("name") or artifact_dir.name
