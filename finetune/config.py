"""Fine-tuning configuration: one frozen dataclass per concern, validated once when built.

Each field's docstring is its ``--help`` text and its entry in the YAML recipe schema, so a recipe
(``finetune/recipes/*.yaml``) can hold every flag, either flat (``learning_rate: 2e-4``) or under
its section (``train: {learning_rate: 2e-4}``). Precedence: defaults < recipe < flags on the line.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmloop.finetune.errors import ConfigError
from llmloop.models import DEFAULT_MODEL

METHODS = ("lora", "qlora")
BAD_ROW_POLICIES = ("skip", "fail")
REPLAY_LOSSES = ("kl", "tokens")
MIXED_PRECISIONS = ("auto", "no", "bf16", "fp16")
LR_SCHEDULERS = ("cosine", "linear", "constant_with_warmup")
REPORT_TO = ("none", "tensorboard", "mlflow", "trackio")
ALIASES = {
    "model_name_or_path": "base",
    "lora_r": "r",
    "output_dir": "output",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "max_length": "max_seq_length",
}
"""Hugging Face names (TrainingArguments, TRL's SFTConfig and scripts) accepted for our fields,
as flags (``--num-train-epochs``) and as recipe keys."""


@dataclass(frozen=True)
class ModelConfig:
    base: str = DEFAULT_MODEL
    """Base model: a prepared model name (see `llmloop models list`) or an HF model dir on disk."""
    method: str = "lora"
    """lora: LoRA on the full-precision base; qlora: base loaded in 4-bit nf4 (bitsandbytes)."""

    def __post_init__(self) -> None:
        _choose("--method", self.method, METHODS)


@dataclass(frozen=True)
class LoraConfig:
    r: int | None = None
    """LoRA rank (PEFT `r`): size of the low-rank update; vLLM serves ranks up to its
    max_lora_rank. Default: 16 at every size (rank 32 at 135M: see docs/finetune.md)."""
    lora_alpha: int | None = None
    """LoRA scaling numerator (PEFT `lora_alpha`); the update is scaled by lora_alpha / r.
    Default: 2 x r."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input during training (PEFT `lora_dropout`)."""
    target_modules: str = "all-linear"
    """Comma-separated module names to adapt, or all-linear for every linear layer but the head."""

    def __post_init__(self) -> None:
        _require(self.r is None or self.r > 0, "--r must be a positive integer")
        _require(self.lora_alpha is None or self.lora_alpha > 0, "--lora-alpha must be positive")
        _require(0 <= self.lora_dropout < 1, "--lora-dropout must be in [0, 1)")


@dataclass(frozen=True)
class DataConfig:
    data: str = ""
    """Training data, JSONL: {"messages": [...]} (OpenAI chat, optional per-message weight 0|1)
    or {"prompt": ..., "completion": ...} rows."""
    max_seq_length: int = 1024
    """Tokens per example; a longer row is a bad row (see --bad-rows)."""
    packing: bool = True
    """Padding-free packing: each batch is one row of concatenated examples, no pad tokens."""
    eval_fraction: float | None = None
    """Share of rows held out to measure eval loss (0 for none; needs at least 10 rows).
    Default: none under 1000 rows (a held-out row is a fact never trained on), else 10 %."""
    bad_rows: str = "skip"
    """What a bad row does (not JSON, missing role, empty assistant turn, too long): skip or fail."""
    replay_rows: int | None = None
    """Rows of the base model's own answers to general prompts trained on alongside the data, so
    the adapter keeps what the base could do (0: none). Default: as many as the training rows,
    at most 100, under 1000 rows; none from there."""
    replay_prompts: str = ""
    """JSONL of {"prompt": ...} rows the base answers for --replay-rows (default: the shipped
    general prompts, finetune/data/replay_prompts.jsonl)."""
    replay_loss: str = ""
    """What a replay row trains toward: "kl", the base model's whole next-token distribution
    along its answer (KL divergence), or "tokens", the answer's tokens (cross-entropy).
    Default: kl."""

    def __post_init__(self) -> None:
        _require(
            bool(self.data), "--data is required: a JSONL file of chat or prompt/completion rows"
        )
        _require(self.max_seq_length > 8, "--max-seq-length must be more than 8 tokens")
        _require(
            self.eval_fraction is None or 0 <= self.eval_fraction < 1,
            "--eval-fraction must be in [0, 1)",
        )
        _choose("--bad-rows", self.bad_rows, BAD_ROW_POLICIES)
        _require(self.replay_rows is None or self.replay_rows >= 0, "--replay-rows must be >= 0")
        if self.replay_loss:
            _choose("--replay-loss", self.replay_loss, REPLAY_LOSSES)


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 0
    """Optimizer steps to run; 0 means use --epochs instead."""
    epochs: int | None = None
    """Passes over the training rows (used when --max-steps is 0). Default: from the data size,
    about 4000 rows seen, 3 to 20 epochs (40 rows: 20, 400 rows: 10)."""
    batch_size: int = 8
    """Examples per micro-batch on each device."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step (effective batch = batch_size x this x devices)."""
    learning_rate: float | None = None
    """Peak AdamW learning rate. Default: from the base model's size, 2e-4 x sqrt(8B / params)
    (1.5e-3 for the 135M default model)."""
    lr_scheduler_type: str = "cosine"
    """Learning-rate schedule after warmup: cosine, linear or constant_with_warmup."""
    warmup_steps: int | None = None
    """Steps of linear warmup from 0 to the peak learning rate. Default: --warmup-ratio of the
    steps."""
    warmup_ratio: float = 0.1
    """Share of the training steps spent warming up, when --warmup-steps is not given."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables clipping)."""
    neftune_noise_alpha: float = 0.0
    """NEFTune: uniform noise of scale alpha / sqrt(tokens x width) added to the input embeddings
    while training (transformers' and TRL's neftune_noise_alpha; the paper used 5). 0: off."""
    seed: int = 42
    """Seed for LoRA initialisation, data order, the held-out split and dropout."""
    mixed_precision: str = "auto"
    """auto (bf16 where the GPU has it, else fp32), no, bf16 or fp16 (Accelerate's setting)."""
    save_steps: int = 50
    """Save a checkpoint every N optimizer steps (0: only at the end)."""
    save_total_limit: int = 2
    """Checkpoints kept on disk; older ones are deleted."""
    eval_steps: int = 0
    """Measure eval loss every N steps (0: only at the end)."""
    report_to: str = "none"
    """Where to log loss and learning rate as training runs: none, or a comma-separated list of
    tensorboard, mlflow, trackio (each needs its package installed); logs go under OUTPUT/runs."""

    def __post_init__(self) -> None:
        _require(self.max_steps >= 0, "--max-steps must be >= 0")
        _require(self.epochs is None or self.epochs > 0, "--epochs must be positive")
        _require(self.batch_size > 0, "--batch-size must be positive")
        _require(self.gradient_accumulation_steps > 0, "--gradient-accumulation-steps must be > 0")
        _require(
            self.learning_rate is None or self.learning_rate > 0, "--learning-rate must be positive"
        )
        _require(self.warmup_steps is None or self.warmup_steps >= 0, "--warmup-steps must be >= 0")
        _require(0 <= self.warmup_ratio < 1, "--warmup-ratio must be in [0, 1)")
        _require(self.neftune_noise_alpha >= 0, "--neftune-noise-alpha must be >= 0")
        _require(self.save_steps >= 0 and self.eval_steps >= 0, "--save/eval-steps must be >= 0")
        _require(self.save_total_limit > 0, "--save-total-limit must be positive")
        _choose("--lr-scheduler-type", self.lr_scheduler_type, LR_SCHEDULERS)
        _choose("--mixed-precision", self.mixed_precision, MIXED_PRECISIONS)
        for tracker in self.report_to.split(","):
            _choose("--report-to", tracker.strip(), REPORT_TO)

    @property
    def trackers(self) -> list[str]:
        return [t.strip() for t in self.report_to.split(",") if t.strip() not in ("", "none")]


@dataclass(frozen=True)
class OutputConfig:
    output: str = ""
    """Artifact directory to write (adapter, config, data manifest, metrics, model card)."""
    name: str = ""
    """Registry name of the artifact (default: the output dir's name)."""
    resume: bool = False
    """Continue from the last checkpoint in --output instead of starting over."""

    def __post_init__(self) -> None:
        _require(bool(self.output), "--output is required: the artifact directory to write")

    @property
    def output_dir(self) -> Path:
        return Path(self.output).expanduser().resolve()

    @property
    def artifact_name(self) -> str:
        return self.name or self.output_dir.name


@dataclass(frozen=True)
class SFTConfig:
    """Everything one supervised fine-tuning run needs; written as training_config.yaml."""

    model: ModelConfig
    lora: LoraConfig
    data: DataConfig
    train: TrainConfig
    output: OutputConfig

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> "SFTConfig":
        """Build from flat ``{field: value}`` (flags) and/or ``{section: {field: value}}`` (YAML)."""
        flat = flatten(values)
        sections = {}
        for section in dataclasses.fields(cls):
            names = {f.name for f in dataclasses.fields(section.type)}
            sections[section.name] = section.type(
                **{k: flat.pop(k) for k in list(flat) if k in names}
            )
        if flat:
            raise ConfigError(f"unknown setting(s) {', '.join(sorted(flat))}; see --help")
        return cls(**sections)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PreferenceConfig:
    beta: float = 0.1
    """DPO/KTO beta: how far the tuned model may move from the base (higher stays closer)."""
    loss_type: str = ""
    """TRL loss_type (DPO: sigmoid, ipo, hinge, ...; KTO: kto, apo_zero_unpaired); empty: TRL's."""

    def __post_init__(self) -> None:
        _require(self.beta > 0, "--beta must be positive")


@dataclass(frozen=True)
class PreferenceRunConfig(SFTConfig):
    """An SFTConfig plus the preference-tuning knobs (``llmloop finetune dpo|kto``)."""

    preference: PreferenceConfig


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "lora": LoraConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "output": OutputConfig,
    "preference": PreferenceConfig,
}


def load_recipe(path: str | Path) -> dict[str, Any]:
    """A YAML recipe as flat ``{field: value}``; sections and flat keys may be mixed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path} is not valid YAML: {e}") from e
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path} must be a mapping of setting: value")
    return flatten(values)


def flatten(values: dict[str, Any]) -> dict[str, Any]:
    """``{field: value}`` from flat and/or sectioned settings, Hugging Face names mapped to ours."""
    pairs: list[tuple[str, Any]] = []
    for key, value in values.items():
        key = key.replace("-", "_")
        if key in SECTIONS and isinstance(value, dict):
            pairs += [(k.replace("-", "_"), v) for k, v in value.items()]
        else:
            pairs.append((key, value))
    flat: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in pairs:
        name = ALIASES.get(key, key)
        if name in flat and given_as[name] != key:
            raise ConfigError(
                f"--{_flag(given_as[name])} and --{_flag(key)} set the same thing: choose one"
            )
        flat[name], given_as[name] = value, key
    return flat


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _choose(flag: str, value: str, choices: tuple[str, ...]) -> None:
    _require(value in choices, f"{flag} must be one of {', '.join(choices)}; got {value!r}")
