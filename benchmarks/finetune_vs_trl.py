"""`llmloop finetune sft` beside TRL's SFTTrainer: same fact set, model, LoRA, learning rate,
batch size and number of steps; tokens/s, peak memory, final loss and held-out fact score.

The data is a set from benchmarks/finetune_facts.py (invented facts, one per row). llmloop runs on
its computed defaults; TRL gets those resolved values (read back from llmloop's
training_config.yaml) so that both sides train the same thing. TRL sees the rows as conversational
prompt/completion pairs, so its loss is on the assistant turn only, as llmloop's is. Each side runs
in its own process, so peak memory (CPU: peak RSS; GPU: max allocated) is its own. Throughput is
real (non-pad) tokens per second of the training loop, for both.

    nice -n 10 .venv/bin/python benchmarks/finetune_vs_trl.py [--rows 40] [--seed 0] [--epochs N]
        [--out FILE]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from finetune_facts import fact_score, load_for_eval, make_fact_set, write_jsonl  # benchmarks/
from finetune_throughput import peak_memory_mb  # benchmarks/finetune_throughput.py


def run_llmloop(data: Path, work: Path, seed: int, epochs: int | None) -> dict:
    from llmloop.finetune.config import SFTConfig
    from llmloop.finetune.sft import sft

    settings = {"data": str(data), "output": str(work / "llmloop"), "seed": seed, "save_steps": 0}
    output = sft(SFTConfig.from_flat(settings | ({"epochs": epochs} if epochs else {})))
    metrics = json.loads((output / "metrics.json").read_text())
    return {
        "tokens_per_s": metrics["train_tokens_per_s"],
        "peak_memory_mb": metrics["peak_memory_mb"],
        "final_loss": metrics["train_loss"],
        "train_steps": metrics["train_steps"],
        "adapter": str(output),
    }


def run_trl(data: Path, work: Path, seed: int, settings: dict) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from llmloop.finetune.config import DataConfig
    from llmloop.finetune.data import read_sft_examples
    from llmloop.models import resolve_model

    lora, train = settings["lora"], settings["train"]
    base = resolve_model()
    tokenizer = AutoTokenizer.from_pretrained(base)
    rows = [json.loads(line)["messages"] for line in data.read_text().splitlines()]
    dataset = Dataset.from_list([{"prompt": m[:-1], "completion": m[-1:]} for m in rows])
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    args = SFTConfig(
        output_dir=str(work / "trl"),
        max_steps=settings["train_steps"],
        per_device_train_batch_size=train["batch_size"],
        learning_rate=train["learning_rate"],
        lr_scheduler_type=train["lr_scheduler_type"],
        warmup_steps=train["warmup_steps"],
        weight_decay=train["weight_decay"],
        max_grad_norm=train["max_grad_norm"],
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        dataloader_num_workers=0,
    )
    peft_config = LoraConfig(
        r=lora["r"],
        lora_alpha=lora["lora_alpha"],
        lora_dropout=lora["lora_dropout"],
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    started = time.perf_counter()
    trainer.train()
    runtime = time.perf_counter() - started
    trainer.model.save_pretrained(work / "trl-adapter")
    # Real tokens: every row is seen steps x batch / rows times (whole epochs here), with the
    # same chat-template tokenization llmloop uses.
    examples, _ = read_sft_examples(DataConfig(data=str(data)), tokenizer)
    passes = settings["train_steps"] * train["batch_size"] / len(examples)
    tokens = passes * sum(len(e.input_ids) for e in examples)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {
        "tokens_per_s": round(tokens / runtime, 2),
        "peak_memory_mb": peak_memory_mb(),
        "final_loss": losses[-1],
        "train_steps": trainer.state.global_step,
        "adapter": str(work / "trl-adapter"),
    }


def child(side: str, data: Path, work: Path, seed: int, epochs: int | None) -> int:
    if side == "llmloop":
        result = run_llmloop(data, work, seed, epochs)
    else:
        config = yaml.safe_load((work / "llmloop" / "training_config.yaml").read_text())
        metrics = json.loads((work / "llmloop" / "metrics.json").read_text())
        settings = {**config, "train_steps": metrics["train_steps"]}
        result = run_trl(data, work, seed, settings)
    print(json.dumps(result))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="Instead of llmloop's computed epochs.")
    parser.add_argument("--out", help="Also write the JSON result here.")
    parser.add_argument("--side", choices=("llmloop", "trl"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return child(args.side, Path(args.data), Path(args.work), args.seed, args.epochs)

    rows, asked = make_fact_set(args.rows, args.seed)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = write_jsonl(work / "facts.jsonl", rows)
        for side in ("llmloop", "trl"):  # trl reads llmloop's resolved settings
            command = [sys.executable, __file__, "--side", side, "--data", str(data)]
            command += ["--work", str(work), "--seed", str(args.seed)]
            command += ["--epochs", str(args.epochs)] if args.epochs else []
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            results[side] = json.loads(done.stdout.strip().splitlines()[-1])
        for result in results.values():
            model, tokenizer = load_for_eval(Path(result.pop("adapter")))
            result["facts_correct"] = f"{fact_score(model, tokenizer, asked)}/{len(asked)}"
    report = {"rows": args.rows, "seed": args.seed, **results}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
