"""Defaults that depend on what is known: the base model's size and the number of training rows.

A setting left unset (``None`` in its config field) is resolved here, once, before training; the
resolved config is what runs, what is printed at start and what ``training_config.yaml`` holds
(with the reason for each resolved value under ``resolved_defaults``). A setting given on the
command line or in a recipe is never changed.

- ``learning_rate = 2e-4 x sqrt(8e9 / num_params)``: 2e-4 is the LoRA rate unsloth, axolotl and
  TRL's docs recommend for 7-8B models; the 1/sqrt(params) scaling is Thinking Machines' rule
  (tinker_cookbook ``get_lr``: full fine-tuning LR proportional to 1/sqrt(param count), LoRA 10x
  that). It gives 1.5e-3 for the default 135M model; measured on invented-fact sets in
  docs/finetune.md ("Defaults"), where 2e-4 learned nothing in 50 steps.
- ``r``: 16 at every size (unsloth's and axolotl's 1B recipe value). On the 135M model rank 32
  recalled more facts on one seed of two and cost more general ability (docs/finetune.md); the
  rank is not scaled with the model until a measurement settles it.
  ``lora_alpha = 2 x r`` (unsloth's and the LoRA recipes' alpha = 2r).
- ``epochs`` (when neither ``--epochs`` nor ``--max-steps`` is given): enough passes for about
  ``TARGET_EXAMPLES`` rows seen, between ``MIN_EPOCHS`` and ``MAX_EPOCHS``: a small set of facts
  needs many passes (40 rows: 20, 400 rows: 10), a large set the recipes' 3.
- ``replay_rows``: under ``SMALL_DATA_ROWS`` rows, as many of the base model's own answers to
  general prompts as there are rows (at most ``MAX_REPLAY_ROWS``), trained on alongside so the
  adapter keeps what the base could do (``finetune/replay.py``); they add steps, not epochs.
  They train toward the base's whole next-token distribution along its answers
  (``replay_loss = "kl"``; "tokens" trains on the answers' tokens): on the invented-fact sets
  that kept far more general ability at the same recall (docs/finetune.md).
- ``warmup_steps``: ``warmup_ratio`` of the steps (10 %, LLaMA-Factory's and axolotl's usual ratio).
- DPO/KTO (``resolve_preference_config``): a tenth of that learning rate (TRL's DPOConfig
  default is 1e-6 for full fine-tuning of 7B models, LoRA takes ~10x) and 1 epoch; not measured
  here.
- ``eval_fraction``: no held-out split under ``SMALL_DATA_ROWS`` rows (every row may carry a fact
  the adapter must see); from there 10 %, at most ``MAX_EVAL_ROWS`` rows.
"""

import math
import sys
from dataclasses import replace

from llmloop.finetune.config import SFTConfig
from llmloop.finetune.errors import ConfigError

REFERENCE_NUM_PARAMS = 8e9
REFERENCE_LEARNING_RATE = 2e-4
"""The LoRA learning rate common recipes give 7-8B models (unsloth, axolotl, TRL docs)."""
DEFAULT_LORA_RANK = 16
TARGET_EXAMPLES = 4000
"""Rows seen over a run that the automatic epoch count aims for: 40 rows x 20 epochs and 400 rows
x 10 learned invented facts; 400 rows x 2 did not (docs/finetune.md)."""
MIN_EPOCHS = 3
"""The usual recipes' epochs for a large set (LLaMA-Factory 3, OpenAI's fine-tuning target 3)."""
MAX_EPOCHS = 20
SMALL_DATA_ROWS = 1000
"""Below this many rows there is no held-out split unless --eval-fraction asks for one."""
DEFAULT_EVAL_FRACTION = 0.1
MAX_EVAL_ROWS = 1000
MAX_REPLAY_ROWS = 100
REPLAY_LOSS = "kl"
"""Replay rows train toward the base's distribution: on the 40-row fact sets that kept capitals
at 83 % (base 85 %) where training on the answers' tokens kept 54 %."""


def learning_rate_for(num_params: int) -> float:
    """The LoRA peak learning rate for a base model of ``num_params`` parameters (2 digits)."""
    rate = REFERENCE_LEARNING_RATE * math.sqrt(REFERENCE_NUM_PARAMS / num_params)
    return float(f"{rate:.2g}")


def lora_rank_for(num_params: int) -> int:
    """The same at every size for now: at 135M rank 32 was not clearly better (see module doc)."""
    return DEFAULT_LORA_RANK


def eval_fraction_for(num_rows: int) -> float:
    if num_rows < SMALL_DATA_ROWS:
        return 0.0
    return min(DEFAULT_EVAL_FRACTION, MAX_EVAL_ROWS / num_rows)


def replay_rows_for(num_rows: int) -> int:
    if num_rows >= SMALL_DATA_ROWS:
        return 0
    return min(num_rows, MAX_REPLAY_ROWS)


def epochs_for(num_train_rows: int) -> int:
    return max(MIN_EPOCHS, min(MAX_EPOCHS, math.ceil(TARGET_EXAMPLES / num_train_rows)))


def resolve_sft_config(
    config: SFTConfig, num_params: int, num_rows: int, num_processes: int = 1
) -> tuple[SFTConfig, dict[str, str]]:
    """``(config with every unset default filled in, {setting: why})``."""
    why: dict[str, str] = {}
    lora, data, train = config.lora, config.data, config.train

    if lora.r is None:
        lora = replace(lora, r=lora_rank_for(num_params))
        why["r"] = f"{lora.r}: the default rank at every model size"
    if lora.lora_alpha is None:
        lora = replace(lora, lora_alpha=2 * lora.r)
        why["lora_alpha"] = f"{lora.lora_alpha}: 2 x r"

    if data.eval_fraction is None:
        data = replace(data, eval_fraction=eval_fraction_for(num_rows))
        why["eval_fraction"] = (
            f"{data.eval_fraction}: no held-out split under {SMALL_DATA_ROWS} rows ({num_rows} "
            "rows; pass --eval-fraction to hold some out)"
            if data.eval_fraction == 0
            else f"{data.eval_fraction:.3g}: 10 % of {num_rows} rows, at most {MAX_EVAL_ROWS}"
        )

    if not data.replay_loss:
        data = replace(data, replay_loss=REPLAY_LOSS)
    if data.replay_rows is None:
        data = replace(data, replay_rows=replay_rows_for(num_rows))
        why["replay_rows"] = (
            f"{data.replay_rows}: up to as many of the base model's own answers to general prompts "
            f"as the {num_rows} rows (at most {MAX_REPLAY_ROWS}; answers cut off are dropped), "
            "so it keeps what it could do"
            if data.replay_rows
            else f"0: no replay from {SMALL_DATA_ROWS} rows"
        )

    if train.learning_rate is None:
        train = replace(train, learning_rate=learning_rate_for(num_params))
        why["learning_rate"] = (
            f"{train.learning_rate:g}: {REFERENCE_LEARNING_RATE:g} x sqrt(8B / "
            f"{num_params / 1e6:.0f}M parameters)"
        )
    num_train_rows = num_rows - num_held_out(num_rows, data.eval_fraction)
    per_step = train.batch_size * train.gradient_accumulation_steps * num_processes
    steps_per_epoch = math.ceil((num_train_rows + data.replay_rows) / per_step)
    if not train.max_steps and train.epochs is None:
        train = replace(train, epochs=epochs_for(num_train_rows))
        why["epochs"] = (
            f"{train.epochs}: about {TARGET_EXAMPLES} rows seen over {num_train_rows} training "
            f"rows ({MIN_EPOCHS} to {MAX_EPOCHS} epochs)"
        )
    elif train.epochs is None:
        train = replace(train, epochs=1)  # unused: --max-steps decides
    total_steps = train.max_steps or steps_per_epoch * train.epochs
    if train.warmup_steps is None:
        train = replace(train, warmup_steps=int(train.warmup_ratio * total_steps))
        why["warmup_steps"] = (
            f"{train.warmup_steps}: --warmup-ratio {train.warmup_ratio:g} of {total_steps} steps"
        )
    return replace(config, lora=lora, data=data, train=train), why


def num_held_out(num_rows: int, eval_fraction: float) -> int:
    """Rows the seeded split holds out (the same count ``data.split`` takes)."""
    if eval_fraction == 0 or num_rows < 10:
        return 0
    return max(1, round(num_rows * eval_fraction))


def held_out_warning(num_rows: int, eval_fraction: float | None) -> str | None:
    """A warning when an explicit --eval-fraction takes rows of a small set out of training."""
    if eval_fraction is None or num_rows >= SMALL_DATA_ROWS:
        return None
    held_out = num_held_out(num_rows, eval_fraction)
    if not held_out:
        return None
    return (
        f"warning: --eval-fraction {eval_fraction:g} holds out {held_out} of {num_rows} rows; "
        "the adapter never trains on them, so a fact that only they state will not be learned. "
        "Pass --eval-fraction 0 to train on every row."
    )


def print_resolved(config: SFTConfig, why: dict[str, str]) -> None:
    """The settings that decide a run (stderr), with the reason for each one resolved here."""
    lora, train = config.lora, config.train
    steps = f"max_steps={train.max_steps}" if train.max_steps else f"epochs={train.epochs}"
    print(
        f"finetune: base={config.model.base} method={config.model.method} r={lora.r} "
        f"lora_alpha={lora.lora_alpha} learning_rate={train.learning_rate:g} {steps} "
        f"batch_size={train.batch_size}x{train.gradient_accumulation_steps} "
        f"warmup_steps={train.warmup_steps} eval_fraction={config.data.eval_fraction:g} "
        f"replay_rows={config.data.replay_rows}"
        + (f" replay_loss={config.data.replay_loss}" if config.data.replay_rows else ""),
        file=sys.stderr,
    )
    for name, reason in why.items():
        print(f"  {name} = {reason}", file=sys.stderr)


def resolve_preference_config(config, num_params: int, num_rows: int):
    """``resolve_sft_config`` with DPO/KTO's own unset learning rate and epochs."""
    train = config.train
    if train.learning_rate is None:
        train = replace(train, learning_rate=float(f"{learning_rate_for(num_params) / 10:.2g}"))
    if train.epochs is None:
        train = replace(train, epochs=1)
    data = config.data
    if data.replay_rows or data.replay_prompts or data.replay_loss:
        raise ConfigError(
            "--replay-rows, --replay-prompts and --replay-loss apply to `finetune sft` only"
        )
    data = replace(data, replay_rows=0)  # TRL's trainers take the pairs as they are
    resolved, why = resolve_sft_config(
        replace(config, train=train, data=data), num_params, num_rows
    )
    if config.train.learning_rate is None:
        why["learning_rate"] = f"{train.learning_rate:g}: a tenth of the SFT rule's rate"
    if config.train.epochs is None and not train.max_steps:
        why["epochs"] = "1: one pass over the preference pairs"
    return resolved, why
