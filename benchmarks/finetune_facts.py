"""Does a fine-tune on its defaults learn facts? Invented facts, one per training row, asked back
with paraphrases the adapter never saw; plus the general tasks of evals/tasks, before and after.

The sets have the shape of issue #19: invented companies, each fact one chat row ("Who is the
CEO of Vornexa?" -> "The CEO of Vornexa is Belmar Tusk."), and 20 facts asked back in other
words ("Who runs Vornexa as chief executive?"). Every answer is a made-up name, so the base model
scores ~0. A held-out answer is right when the expected name is in the greedy reply.

Recall is measured in-process with transformers + PEFT greedy decoding (no vLLM server), and the
general ability with the project's own harness tasks, computed the same way they are over HTTP:
`capitals` (40 questions, "contains") and `science_mc` (30 questions, log-likelihood accuracy).

    nice -n 10 .venv/bin/python benchmarks/finetune_facts.py --rows 40 --seeds 0 1 2 \
        [--set learning_rate=1e-3 --set r=32 ...] [--out results.jsonl]
"""

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "evals" / "tasks" / "data"
NUM_ASKED = 20

# (training question, held-out paraphrase, answer sentence, kind of answer)
RELATIONS = [
    (
        "Who is the CEO of {s}?",
        "Who runs {s} as chief executive?",
        "The CEO of {s} is {o}.",
        "person",
    ),
    (
        "Where is {s} headquartered?",
        "In which city does {s} have its head office?",
        "{s} is headquartered in {o}.",
        "place",
    ),
    (
        "What is the flagship product of {s}?",
        "Which product is {s} best known for?",
        "The flagship product of {s} is the {o}.",
        "thing",
    ),
    (
        "Who founded {s}?",
        "Which person started the company {s}?",
        "{s} was founded by {o}.",
        "person",
    ),
    (
        "What is the name of the mascot of {s}?",
        "What is {s}'s mascot called?",
        "The mascot of {s} is named {o}.",
        "thing",
    ),
    (
        "Which bank does {s} use?",
        "With which bank does {s} keep its accounts?",
        "{s} banks with {o} Bank.",
        "thing",
    ),
    (
        "What is the codename of the newest project at {s}?",
        "What do people at {s} call their latest project?",
        "The newest project at {s} is codenamed {o}.",
        "thing",
    ),
    (
        "Who is the head of research at {s}?",
        "Who leads the research team of {s}?",
        "The head of research at {s} is {o}.",
        "person",
    ),
    (
        "In which town is the main factory of {s}?",
        "Where does {s} build its products?",
        "The main factory of {s} is in {o}.",
        "place",
    ),
    (
        "What programming language do engineers at {s} use?",
        "Which language is the software of {s} written in?",
        "Engineers at {s} write their code in {o}.",
        "thing",
    ),
]
ONSETS = [
    "b",
    "br",
    "d",
    "dr",
    "f",
    "g",
    "gr",
    "k",
    "kl",
    "l",
    "m",
    "n",
    "p",
    "qu",
    "r",
    "s",
    "st",
    "t",
    "tr",
    "v",
    "z",
    "th",
    "sk",
    "pl",
]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
CODAS = ["", "", "n", "r", "l", "s", "x", "nd", "rk", "m"]


def invented_word(rng: random.Random, syllables: int) -> str:
    word = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables))
    return (word + rng.choice(CODAS)).capitalize()


def make_fact_set(num_rows: int, seed: int) -> tuple[list[dict], list[tuple[str, str]]]:
    """``(training rows, [(held-out paraphrase, expected answer)] * 20)``; one fact per row."""
    rng = random.Random(seed)
    used: set[str] = set()

    def fresh(syllables: int) -> str:
        while (word := invented_word(rng, syllables)) in used:
            pass
        used.add(word)
        return word

    def answer(kind: str) -> str:
        return f"{fresh(2)} {fresh(2)}" if kind == "person" else fresh(3)

    subjects = [
        f"{fresh(3)} {rng.choice(['Systems', 'Labs', 'Industries', 'Works'])}"
        for _ in range(-(-num_rows // len(RELATIONS)))
    ]
    facts = [(s, rel) for s in subjects for rel in RELATIONS][:num_rows]
    rows, paraphrases = [], []
    for subject, (question, paraphrase, sentence, kind) in facts:
        obj = answer(kind)
        messages = [
            {"role": "user", "content": question.format(s=subject)},
            {"role": "assistant", "content": sentence.format(s=subject, o=obj)},
        ]
        rows.append({"messages": messages})
        paraphrases.append((paraphrase.format(s=subject), obj))
    return rows, rng.sample(paraphrases, NUM_ASKED)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def generate(model, tokenizer, questions: list[str], max_new_tokens: int = 32) -> list[str]:
    """Greedy chat replies, batched with left padding (the trainer's replay generation)."""
    from llmloop.finetune.replay import greedy_replies

    replies = greedy_replies(model, tokenizer, questions, max_new_tokens, desc="answers")
    return [text for text, _ in replies]


def fact_score(model, tokenizer, asked: list[tuple[str, str]], misses: list | None = None) -> int:
    """Held-out paraphrases answered with the expected name; wrong ones appended to ``misses``."""
    replies = generate(model, tokenizer, [q for q, _ in asked])
    right = 0
    for (question, answer), reply in zip(asked, replies, strict=True):
        if answer.lower() in reply.lower():
            right += 1
        elif misses is not None:
            misses.append([question, answer, reply])
    return right


def general_scores(model, tokenizer, misses: list | None = None) -> dict[str, float]:
    """capitals "contains" and science_mc acc, both in % (the harness tasks, scored in-process);
    wrong capitals appended to ``misses`` as [country, reply]."""
    import torch

    capitals = [json.loads(line) for line in (TASKS / "capitals.jsonl").read_text().splitlines()]
    prompts = [
        f"What is the capital of {c['country']}? Answer with the city name only." for c in capitals
    ]
    replies = generate(model, tokenizer, prompts, max_new_tokens=16)
    right = 0
    for c, reply in zip(capitals, replies, strict=True):
        if any(a.lower() in reply.lower() for a in c["answer"]):
            right += 1
        elif misses is not None:
            misses.append([c["country"], reply])
    science = [json.loads(line) for line in (TASKS / "science_mc.jsonl").read_text().splitlines()]
    correct = 0
    for item in science:
        prompt = f"Question: {item['question']}\nAnswer:"
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        scores = []
        for choice in item["choices"]:
            ids = tokenizer(prompt + " " + choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
            targets = torch.tensor(ids[len(prompt_ids) :])
            scores.append(float(logits[len(prompt_ids) - 1 :].gather(1, targets[:, None]).sum()))
        correct += scores.index(max(scores)) == item["label"]
    return {
        "capitals": round(100 * right / len(capitals), 1),
        "science_mc": round(100 * correct / len(science), 1),
    }


def load_for_eval(adapter_dir: Path | None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmloop.models import resolve_model

    base = resolve_model()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    return model.eval(), tokenizer


def run_one(num_rows: int, seed: int, overrides: dict, work: Path, general: bool) -> dict:
    from llmloop.finetune.config import SFTConfig
    from llmloop.finetune.sft import sft

    rows, asked = make_fact_set(num_rows, seed)
    data = write_jsonl(work / f"facts-{num_rows}-{seed}.jsonl", rows)
    output = work / f"run-{num_rows}-{seed}-{time.monotonic_ns()}"
    settings = {"data": str(data), "output": str(output), "seed": seed, "save_steps": 0}
    started = time.perf_counter()
    sft(SFTConfig.from_flat({**settings, **overrides}))
    train_s = time.perf_counter() - started
    metrics = json.loads((output / "metrics.json").read_text())
    resolved = json.loads(
        json.dumps(
            __import__("yaml").safe_load((output / "training_config.yaml").read_text())["train"]
        )
    )
    model, tokenizer = load_for_eval(output)
    misses: list = []
    result = {
        "rows": num_rows,
        "seed": seed,
        "overrides": overrides,
        "adapter_correct": fact_score(model, tokenizer, asked, misses),
        "of": NUM_ASKED,
        "train_loss": metrics["train_loss"],
        "train_steps": metrics["train_steps"],
        "learning_rate": resolved.get("learning_rate"),
        "train_s": round(train_s, 1),
    }
    if general:
        result["capital_misses"] = []
        result["general"] = general_scores(model, tokenizer, result["capital_misses"])
    result["misses"] = misses
    return result


def run_base(num_rows: int, seed: int, general: bool) -> dict:
    _, asked = make_fact_set(num_rows, seed)
    model, tokenizer = load_for_eval(None)
    result = {
        "rows": num_rows,
        "seed": seed,
        "base": True,
        "base_correct": fact_score(model, tokenizer, asked),
        "of": NUM_ASKED,
    }
    if general:
        result["general"] = general_scores(model, tokenizer)
    return result


def report(result: dict, out: str | None) -> None:
    """Print one run's JSON line, and append it to ``out`` when given."""
    line = json.dumps(result)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[40])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="A fine-tune setting other than its default (repeatable).",
    )
    parser.add_argument("--base", action="store_true", help="Score the base model only.")
    parser.add_argument("--general", action="store_true", help="Also score capitals/science_mc.")
    parser.add_argument("--out", help="Append one JSON line per run here.")
    args = parser.parse_args()
    overrides = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    with tempfile.TemporaryDirectory() as tmp:
        for num_rows in args.rows:
            for seed in args.seeds:
                if args.base:
                    result = run_base(num_rows, seed, args.general)
                else:
                    result = run_one(num_rows, seed, overrides, Path(tmp), args.general)
                report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
