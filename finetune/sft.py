"""Supervised fine-tuning with LoRA/QLoRA, run by Accelerate: ``setup → train → evaluate → save``.

The same code runs on this CPU and under ``accelerate launch`` on several GPUs (data parallel):
each optimizer step takes ``batch_size x gradient_accumulation_steps x num_processes`` examples
in a seeded order that depends only on (seed, epoch), so ``--resume`` replays exactly the steps an
uninterrupted run would have taken.
"""

import contextlib
import math
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from llmloop.finetune import checkpoint
from llmloop.finetune.artifact import write_artifact
from llmloop.finetune.config import SFTConfig
from llmloop.finetune.data import Example, SFTData, collate, read_sft_examples, split_sft_data
from llmloop.finetune.defaults import held_out_warning, print_resolved, resolve_sft_config
from llmloop.finetune.errors import ConfigError, DataError, NaNLossError
from llmloop.finetune.modeling import add_lora, load_base, resolve_mixed_precision
from llmloop.finetune.replay import anchored_loss, read_prompts, replay_examples, replay_manifest
from llmloop.finetune.tracking import check_trackers, start_trackers, tracker_settings


@dataclass
class TrainResult:
    log_history: list[dict[str, Any]] = field(default_factory=list)
    """One entry per optimizer step: step, epoch, loss, learning_rate, tokens."""
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    num_steps: int = 0
    num_tokens: int = 0
    """Tokens (pad tokens excluded) run through the model in this process's training steps."""
    runtime_s: float = 0.0


def sft(config: SFTConfig) -> Path:
    """Run one fine-tune and write its artifact dir; returns the dir."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    output_dir = config.output.output_dir
    check_output_dir(output_dir, config.output.resume)
    check_data_file(config.data.data)
    replay_prompts = read_prompts(config.data.replay_prompts)  # a bad file fails before loading
    check_trackers(config.train.trackers)
    mixed_precision = resolve_mixed_precision(config.train.mixed_precision)
    accelerator = Accelerator(
        mixed_precision=mixed_precision, **tracker_settings(config, output_dir)
    )
    set_seed(config.train.seed)
    model, tokenizer, base_dir = load_base(config.model, mixed_precision, accelerator.device)
    examples, manifest = read_sft_examples(config.data, tokenizer)
    warning = held_out_warning(len(examples), config.data.eval_fraction)
    config, resolved = resolve_sft_config(
        config, model.num_parameters(), len(examples), accelerator.num_processes
    )
    if accelerator.is_main_process:
        print_resolved(config, resolved)
        if warning:
            print(warning, file=sys.stderr)
    replay = make_replay(model, tokenizer, config, *replay_prompts)
    model = add_lora(model, config.lora, config.train.seed)
    if config.train.neftune_noise_alpha:
        from transformers.integrations.neftune import activate_neftune

        activate_neftune(model, config.train.neftune_noise_alpha)
    data = split_sft_data(examples, manifest, config.data.eval_fraction, config.train.seed)
    if replay is not None:
        data.train += replay[0]
        data.manifest["replay"] = replay[1]
    start_trackers(accelerator, config)

    result = train(accelerator, model, data, config, tokenizer.pad_token_id)
    eval_loss = evaluate(accelerator, model, data, config, tokenizer.pad_token_id)
    metrics = summarize(result, eval_loss, accelerator)
    # on every process: under FSDP or ZeRO-3 each holds a shard, gathered here for the save
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(output_dir, state_dict=state_dict)
        tokenizer.save_pretrained(output_dir)
        write_artifact(output_dir, config, "sft", base_dir, data.manifest, metrics, resolved)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return output_dir


def make_replay(
    model, tokenizer, config: SFTConfig, path: Path, prompts: list[str]
) -> tuple[list[Example], dict] | None:
    """The base model's answers to the replay prompts as examples, and their manifest entry."""
    if not config.data.replay_rows:
        return None
    examples = replay_examples(
        model,
        tokenizer,
        prompts,
        config.data.replay_rows,
        config.train.seed,
        config.data.max_seq_length,
        anchor=config.data.replay_loss == "kl",
    )
    asked = min(config.data.replay_rows, len(prompts))
    return examples, replay_manifest(path, asked, examples, config.data.replay_loss)


def check_output_dir(output_dir: Path, resume: bool) -> None:
    has_run = (output_dir / checkpoint.CHECKPOINTS_DIR).exists() or (
        output_dir / "adapter_model.safetensors"
    ).exists()
    if resume and checkpoint.latest_checkpoint(output_dir) is None:
        raise ConfigError(
            f"--resume: {output_dir} holds no checkpoint; drop --resume to start anew"
        )
    if has_run and not resume:
        raise ConfigError(
            f"--output {output_dir} already holds a run; pass --resume to continue it "
            "or choose another --output"
        )


def check_data_file(data: str) -> None:
    """Fail before loading any model when --data is not there."""
    if not Path(data).expanduser().is_file():
        raise DataError(f"--data {data}: no such file")


def train(accelerator, model, data: SFTData, config: SFTConfig, pad_token_id: int) -> TrainResult:
    cfg = config.train
    plan = StepPlan.build(len(data.train), cfg, config.data.packing, accelerator.num_processes)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg, plan.total_steps)
    # The scheduler stays unprepared: Accelerate would step it once per process.
    model, optimizer = accelerator.prepare(model, optimizer)

    result, start_step = TrainResult(), 0
    last = checkpoint.latest_checkpoint(config.output.output_dir) if config.output.resume else None
    if last is not None:
        state = checkpoint.load_checkpoint(accelerator, model, optimizer, scheduler, last)
        start_step = state["step"]
        result.log_history, result.eval_history = state["log_history"], state["eval_history"]

    anchored = any(e.anchor for e in data.train)  # once, not in every step
    model.train()
    progress = tqdm(
        total=plan.total_steps,
        initial=start_step,
        desc="sft",
        unit="step",
        disable=not accelerator.is_local_main_process,
    )
    started = time.perf_counter()
    for step in range(start_step + 1, plan.total_steps + 1):
        loss, num_tokens = train_step(
            accelerator, model, optimizer, data, plan, step, pad_token_id, anchored
        )
        scheduler.step()
        result.num_tokens += num_tokens
        entry = {
            "step": step,
            "epoch": round(step / plan.steps_per_epoch, 4),
            "loss": loss,
            "learning_rate": scheduler.get_last_lr()[0],
        }
        result.log_history.append(entry)
        accelerator.log({"train/loss": loss, "train/learning_rate": entry["learning_rate"]}, step)
        progress.update(1)
        progress.set_postfix(loss=f"{loss:.4f}", lr=f"{entry['learning_rate']:.2e}")
        if cfg.eval_steps and step % cfg.eval_steps == 0 and step < plan.total_steps:
            eval_loss = evaluate(accelerator, model, data, config, pad_token_id)
            result.eval_history.append({"step": step, "eval_loss": eval_loss})
            accelerator.log({"eval/loss": eval_loss}, step)
            model.train()
        if (cfg.save_steps and step % cfg.save_steps == 0) or step == plan.total_steps:
            if not all(torch.isfinite(p).all() for p in trainable):
                raise nan_error(step, "LoRA weights", float("nan"))
            state = {"log_history": result.log_history, "eval_history": result.eval_history}
            checkpoint.save_checkpoint(
                accelerator,
                model,
                optimizer,
                scheduler,
                config.output.output_dir,
                step,
                state,
                keep=cfg.save_total_limit,
            )
    progress.close()
    result.num_steps = plan.total_steps - start_step
    result.runtime_s = time.perf_counter() - started
    return result


def train_step(
    accelerator, model, optimizer, data, plan, step, pad_token_id, anchored: bool = False
) -> tuple[float, int]:
    """One optimizer step over this process's micro-batches; returns (mean loss, tokens).
    ``anchored``: some training rows are anchors (``Example.anchor``), so some steps need the
    base pass."""
    micro_batches = plan.micro_batches(step, accelerator.process_index)
    if anchored:
        base_pass = base_pass_needed(data.train, plan, step)
    else:
        base_pass = [False] * len(micro_batches)
    total_loss, num_tokens = torch.zeros((), device=accelerator.device), 0
    for i, indices in enumerate(micro_batches):
        examples = [data.train[j] for j in indices]
        batch = collate(examples, plan.packing, pad_token_id)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        num_tokens += sum(len(e.input_ids) for e in examples)  # pad excluded
        is_last = i == len(micro_batches) - 1
        with contextlib.nullcontext() if is_last else accelerator.no_sync(model):
            if base_pass[i]:
                batch.setdefault("anchor", torch.zeros_like(batch["labels"], dtype=torch.bool))
                loss = anchored_loss(model, base_logits(accelerator, model), batch)
            else:
                loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise nan_error(step, "loss", loss.item())
            accelerator.backward(loss / len(micro_batches))
        total_loss += loss.detach() / len(micro_batches)
    grad_norm = plan.clip(accelerator, model)
    if grad_norm is not None and not math.isfinite(grad_norm):
        raise nan_error(step, "gradient norm", grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return accelerator.reduce(total_loss, reduction="mean").item(), num_tokens


def base_pass_needed(train: list[Example], plan: "StepPlan", step: int) -> list[bool]:
    """Per micro-batch of ``step``: does the micro-batch at that place hold replay rows trained
    toward the base (``Example.anchor``) on any process? Then every process runs the base pass
    there: each forward of a DDP, FSDP or ZeRO-3 model is a collective call, and processes that
    make different numbers of them hang."""
    per_process = [plan.micro_batches(step, p) for p in range(plan.num_processes)]
    places = zip(*per_process, strict=True)
    return [any(train[j].anchor for micro in place for j in micro) for place in places]


def base_logits(accelerator, model):
    """The model's logits with its LoRA adapter disabled and in eval mode (no dropout, no
    NEFTune noise): the base model it started from, as it answers."""
    peft_model = accelerator.unwrap_model(model)

    def forward(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        was_training = peft_model.training
        peft_model.eval()
        try:
            with peft_model.disable_adapter():
                return model(**inputs).logits
        finally:
            peft_model.train(was_training)

    return forward


@torch.no_grad()
def evaluate(accelerator, model, data: SFTData, config: SFTConfig, pad_token_id: int):
    """Token-weighted mean loss on the held-out rows (every process sees all of them)."""
    if not data.eval:
        return None
    model.eval()
    loss_sum, num_targets = 0.0, 0
    size = config.train.batch_size
    for start in range(0, len(data.eval), size):
        batch = collate(data.eval[start : start + size], config.data.packing, pad_token_id)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        targets = int((batch["labels"][:, 1:] != -100).sum())
        loss_sum += model(**batch).loss.item() * targets
        num_targets += targets
    return loss_sum / max(num_targets, 1)


@dataclass(frozen=True)
class StepPlan:
    """Which examples each optimizer step trains on: a pure function of (seed, step)."""

    num_examples: int
    batch_size: int
    accumulation: int
    num_processes: int
    seed: int
    max_grad_norm: float
    packing: bool
    total_steps: int
    steps_per_epoch: int

    @classmethod
    def build(cls, num_examples: int, cfg, packing: bool, num_processes: int) -> "StepPlan":
        per_step = cfg.batch_size * cfg.gradient_accumulation_steps * num_processes
        steps_per_epoch = math.ceil(num_examples / per_step)
        return cls(
            num_examples=num_examples,
            batch_size=cfg.batch_size,
            accumulation=cfg.gradient_accumulation_steps,
            num_processes=num_processes,
            seed=cfg.seed,
            max_grad_norm=cfg.max_grad_norm,
            packing=packing,
            total_steps=cfg.max_steps or steps_per_epoch * cfg.epochs,
            steps_per_epoch=steps_per_epoch,
        )

    def micro_batches(self, step: int, process_index: int) -> list[list[int]]:
        """This process's micro-batches (lists of example indices) for optimizer step ``step``."""
        epoch, index = divmod(step - 1, self.steps_per_epoch)
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self.num_examples, generator=generator).tolist()
        per_step = self.batch_size * self.accumulation * self.num_processes
        # the last step of an epoch wraps around to the epoch's start, so every step is full
        chosen = [order[(index * per_step + k) % self.num_examples] for k in range(per_step)]
        micro = [chosen[k : k + self.batch_size] for k in range(0, per_step, self.batch_size)]
        return micro[process_index :: self.num_processes]

    def clip(self, accelerator, model) -> float | None:
        if not self.max_grad_norm:
            return None
        params = [p for p in model.parameters() if p.requires_grad]
        return float(accelerator.clip_grad_norm_(params, self.max_grad_norm))


def make_scheduler(optimizer, cfg, total_steps: int):
    from transformers import get_scheduler

    if cfg.warmup_steps >= total_steps:
        raise ConfigError(
            f"--warmup-steps {cfg.warmup_steps} is not below the {total_steps} training steps; "
            "lower --warmup-steps or raise --max-steps/--epochs"
        )
    return get_scheduler(
        cfg.lr_scheduler_type,
        optimizer,
        num_warmup_steps=cfg.warmup_steps,
        num_training_steps=total_steps,
    )


def summarize(result: TrainResult, eval_loss: float | None, accelerator) -> dict[str, Any]:
    losses = [e["loss"] for e in result.log_history]
    metrics: dict[str, Any] = {
        "train_loss": losses[-1] if losses else None,
        "train_loss_first": losses[0] if losses else None,
        "eval_loss": eval_loss,
        "train_steps": len(result.log_history),
        "train_runtime_s": round(result.runtime_s, 3),
        "train_tokens_per_s": round(result.num_tokens / result.runtime_s, 2)
        if result.runtime_s
        else None,
        "peak_memory_mb": peak_memory_mb(accelerator.device),
        "log_history": result.log_history,
        "eval_history": [*result.eval_history, {"step": len(losses), "eval_loss": eval_loss}],
    }
    return metrics


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated, or this process's peak resident set size on CPU (MiB)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def nan_error(step: int, what: str, value: float) -> NaNLossError:
    return NaNLossError(
        f"the {what} became {value} at step {step}; training stopped and the last good "
        "checkpoint is kept. Lower --learning-rate (or set --max-grad-norm), then rerun with --resume"
    )
