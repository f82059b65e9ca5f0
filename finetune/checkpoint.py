"""Training checkpoints: the LoRA weights plus everything needed to continue bit-for-bit
(optimizer and scheduler state, RNG states, step, loss history).

Layout: ``OUTPUT/checkpoints/step-000050/{adapter_model.safetensors, adapter_config.json,
trainer_state.pt, rng_state_RANK.pt}``. A checkpoint is written to a hidden temporary dir and
renamed into place, so a crash mid-save never leaves a checkpoint that looks complete.
"""

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.pt"


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / CHECKPOINTS_DIR / f"step-{step:06d}"


def latest_checkpoint(output_dir: Path) -> Path | None:
    candidates = sorted((output_dir / CHECKPOINTS_DIR).glob("step-*/" + STATE_FILE))
    return candidates[-1].parent if candidates else None


def save_checkpoint(
    accelerator,
    model,
    optimizer,
    scheduler,
    output_dir: Path,
    step: int,
    state: dict[str, Any],
    keep: int,
) -> Path:
    """Save on every process (RNG state is per process); the main process owns shared files."""
    target = checkpoint_dir(output_dir, step)
    staging = target.with_name(f".{target.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), staging / f"rng_state_{accelerator.process_index}.pt")
    state_dict = accelerator.get_state_dict(model)  # every process: FSDP/ZeRO-3 shards gathered
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(staging, state_dict=state_dict)
        trainer_state = {
            **state,
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        }
        torch.save(trainer_state, staging / STATE_FILE)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        for old in sorted((output_dir / CHECKPOINTS_DIR).glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return target


def load_checkpoint(accelerator, model, optimizer, scheduler, path: Path) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and this process's RNG; return the trainer state."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(path / "adapter_model.safetensors"))
    set_peft_model_state_dict(accelerator.unwrap_model(model), weights)
    state = load_data(path / STATE_FILE)
    optimizer.load_state_dict(state.pop("optimizer"))
    scheduler.load_state_dict(state.pop("scheduler"))
    rng_file = path / f"rng_state_{accelerator.process_index}.pt"
    if rng_file.exists():
        set_rng_state(load_data(rng_file))
    return state


def load_data(path: Path) -> Any:
    """A checkpoint file holds data only (tensors, numbers, lists): unpickling any other object
    from a file on disk would run whatever code the file names, so torch refuses it here."""
    return torch.load(path, weights_only=True)


def rng_state() -> dict[str, Any]:
    algorithm, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),
        # numpy's keys as a tensor: a weights-only load accepts tensors, not numpy arrays
        "numpy": [
            algorithm,
            torch.from_numpy(keys.astype(np.int64)),
            pos,
            has_gauss,
            cached_gaussian,
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    algorithm, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state(
        (algorithm, keys.numpy().astype(np.uint32), pos, has_gauss, cached_gaussian)
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
