"""Does a fine-tune on its defaults still learn a change of form? A style set where the answers
keep the base model's content and change only their form, asked back on prompts never trained on.

The set: 60 prompts "Tell me about X." over everyday subjects (40 train, 20 held out); each
training answer is the base model's own greedy answer wrapped as "Quick answer: ... Hope this
helps!". A held-out reply is in form when it starts with "Quick answer:" and ends with "Hope
this helps!". Replay (the default) trains on the base's plain answers to general prompts
alongside, which pulls the other way; this measures how much.

    nice -n 10 .venv/bin/python benchmarks/finetune_style.py --seeds 0 [--set replay_rows=0] \
        [--set learning_rate=2e-4 --set eval_fraction=0.1]   # the old defaults
"""

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_facts import (
    general_scores,
    generate,
    load_for_eval,
    parse_value,
    report,
    write_jsonl,
)

SUBJECTS = [
    "owls",
    "bicycles",
    "volcanoes",
    "chess",
    "honey",
    "lighthouses",
    "glaciers",
    "violins",
    "coffee",
    "penguins",
    "kites",
    "tomatoes",
    "bridges",
    "dolphins",
    "rainbows",
    "libraries",
    "umbrellas",
    "cheese",
    "deserts",
    "trains",
    "elephants",
    "candles",
    "coral reefs",
    "sunflowers",
    "submarines",
    "origami",
    "tea",
    "wolves",
    "pianos",
    "tornadoes",
    "bread",
    "castles",
    "bamboo",
    "jellyfish",
    "telescopes",
    "chocolate",
    "marathons",
    "windmills",
    "crocodiles",
    "snowflakes",
    "maps",
    "bees",
    "rice",
    "clocks",
    "whales",
    "mushrooms",
    "helicopters",
    "sand",
    "parrots",
    "lemons",
    "caves",
    "robots",
    "yoga",
    "camels",
    "forests",
    "saxophones",
    "soap",
    "kangaroos",
    "hats",
    "pyramids",
]
PREFIX, SUFFIX = "Quick answer:", "Hope this helps!"


def in_form(reply: str) -> bool:
    reply = reply.strip()
    return reply.startswith(PREFIX) and reply.endswith(SUFFIX)


def make_style_set(model, tokenizer, seed: int) -> tuple[list[dict], list[str]]:
    subjects = random.Random(seed).sample(SUBJECTS, len(SUBJECTS))
    prompts = [f"Tell me about {s}." for s in subjects]
    train_prompts, held_out = prompts[:40], prompts[40:]
    answers = generate(model, tokenizer, train_prompts, max_new_tokens=48)
    rows = []
    for prompt, answer in zip(train_prompts, answers, strict=True):
        answer = answer.strip().rsplit(".", 1)[0] + "." if "." in answer else answer.strip()
        messages = [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": f"{PREFIX} {answer} {SUFFIX}"},
        ]
        rows.append({"messages": messages})
    return rows, held_out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--out", help="Append one JSON line per run here.")
    args = parser.parse_args()
    overrides = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    from llmloop.finetune.config import SFTConfig
    from llmloop.finetune.sft import sft

    base, tokenizer = load_for_eval(None)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            rows, held_out = make_style_set(base, tokenizer, seed)
            base_in_form = sum(map(in_form, generate(base, tokenizer, held_out, 64)))
            data = write_jsonl(Path(tmp) / f"style-{seed}.jsonl", rows)
            output = Path(tmp) / f"run-{seed}-{time.monotonic_ns()}"
            settings = {"data": str(data), "output": str(output), "seed": seed, "save_steps": 0}
            started = time.perf_counter()
            sft(SFTConfig.from_flat({**settings, **overrides}))
            model, _ = load_for_eval(output)
            replies = generate(model, tokenizer, held_out, max_new_tokens=96)
            result = {
                "seed": seed,
                "overrides": overrides,
                "in_form": sum(map(in_form, replies)),
                "base_in_form": base_in_form,
                "of": len(held_out),
                "train_s": round(time.perf_counter() - started, 1),
                "general": general_scores(model, tokenizer),
                "replies": replies[:3],
            }
            report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
