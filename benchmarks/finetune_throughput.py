"""Training throughput and peak memory: `llmloop finetune sft` vs a plain transformers.Trainer +
PEFT baseline, same model, data, LoRA, batch size, steps and hardware.

Each side runs in its own subprocess so peak memory (GPU: max allocated; CPU: peak RSS) is its
own. Throughput counts real tokens only (pad excluded) per second of training loop, for both.
The data are chat rows with answer lengths spread like real chat data, so padding matters.

    .venv/bin/python benchmarks/finetune_throughput.py [--steps 8] [--batch-size 16] [--out FILE]
"""

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = [
    "the",
    "a",
    "model",
    "river",
    "city",
    "data",
    "answer",
    "light",
    "stone",
    "north",
    "quiet",
    "market",
    "garden",
    "letter",
]


def make_data(path: Path, num_rows: int, seed: int = 0) -> Path:
    """Chat rows whose answers run from a few words to ~150 (a long-tailed length spread)."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(num_rows):
            length = min(150, max(3, int(rng.lognormvariate(3.3, 0.8))))
            answer = " ".join(rng.choice(WORDS) for _ in range(length))
            messages = [
                {"role": "user", "content": f"Question {i}: tell me about {rng.choice(WORDS)}."},
                {"role": "assistant", "content": answer.capitalize() + "."},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


def run_llmloop(data: Path, steps: int, batch_size: int, work: Path) -> dict:
    from llmloop.finetune.config import SFTConfig
    from llmloop.finetune.sft import sft

    config = SFTConfig.from_flat(
        {
            "data": str(data),
            "output": str(work / "llmloop"),
            "max_steps": steps,
            "batch_size": batch_size,
            "eval_fraction": 0.0,
            "save_steps": 0,
            "seed": 0,
            "lora_dropout": 0.0,
        }
    )
    output = sft(config)
    metrics = json.loads((output / "metrics.json").read_text())
    return {
        "tokens_per_s": metrics["train_tokens_per_s"],
        "peak_memory_mb": metrics["peak_memory_mb"],
        "final_loss": metrics["train_loss"],
    }


def run_baseline(data: Path, steps: int, batch_size: int, work: Path) -> dict:
    """transformers.Trainer + PEFT LoRA with the usual dynamic right-padding collator."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from llmloop.finetune.config import DataConfig
    from llmloop.finetune.data import load_sft_data
    from llmloop.models import resolve_model

    base = resolve_model()
    tokenizer = AutoTokenizer.from_pretrained(base)
    examples = load_sft_data(DataConfig(data=str(data), eval_fraction=0.0), tokenizer, 0).train
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model.config.use_cache = False
    torch.manual_seed(0)
    model = get_peft_model(
        model,
        LoraConfig(
            r=16,
            lora_alpha=32,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )

    class CountTokens(TrainerCallback):
        tokens = 0

    counter = CountTokens()

    class CountingCollator(DataCollatorForSeq2Seq):
        def __call__(self, features, return_tensors=None):
            batch = super().__call__(features, return_tensors)
            counter.tokens += int(batch["attention_mask"].sum())
            return batch

    args = TrainingArguments(
        output_dir=str(work / "baseline"),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=2e-4,
        lr_scheduler_type="cosine",
        logging_steps=steps,
        save_strategy="no",
        report_to=[],
        seed=0,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
    )
    collator = CountingCollator(tokenizer, padding=True, label_pad_token_id=-100)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collator)
    started = time.perf_counter()
    result = trainer.train()
    runtime = time.perf_counter() - started
    return {
        "tokens_per_s": round(counter.tokens / runtime, 2),
        "peak_memory_mb": peak_memory_mb(),
        "final_loss": result.training_loss,
    }


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--out", help="Also write the JSON result here.")
    parser.add_argument("--side", choices=("llmloop", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.side:  # child process: one side only, result as the last stdout line
        run = run_llmloop if args.side == "llmloop" else run_baseline
        print(json.dumps(run(Path(args.data), args.steps, args.batch_size, Path(args.work))))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = make_data(work / "data.jsonl", args.rows)
        results = {}
        for side in ("baseline", "llmloop"):
            command = [
                sys.executable,
                __file__,
                "--side",
                side,
                "--data",
                str(data),
                "--work",
                str(work),
                "--steps",
                str(args.steps),
                "--batch-size",
                str(args.batch_size),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            results[side] = json.loads(done.stdout.strip().splitlines()[-1])
    import torch

    report = {
        "model": "smollm2-135m-instruct",
        "lora": "r=16, alpha=32, all-linear",
        "steps": args.steps,
        "batch_size": args.batch_size,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        **results,
        "speedup": round(
            results["llmloop"]["tokens_per_s"] / results["baseline"]["tokens_per_s"], 3
        ),
        "memory_ratio": round(
            results["llmloop"]["peak_memory_mb"] / results["baseline"]["peak_memory_mb"], 3
        ),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
