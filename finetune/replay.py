"""Replay: the base model's own answers to general prompts, mixed into the training rows.

A small set of one kind of row (every answer an invented name) teaches the model that every
answer is an invented name: after 40 one-fact rows the default model answered capitals
questions with made-up cities (docs/finetune.md). Training on the base model's own greedy
answers to a spread of general prompts alongside the user's rows anchors the adapter to what the
base already did on everything else — self-distillation, as in "Self-Distillation Bridges
Distribution Gap in Language Model Fine-Tuning" (Yang et al., 2024) and replay in continual
learning. The answers come from the base being tuned, so the rows teach it nothing new and cost
only generation time (about a second a prompt on one CPU thread for the 135M default model).

The shipped prompts (``finetune/data/replay_prompts.jsonl``, written for this project: general
knowledge, arithmetic, language, writing, how-to, code, small talk) avoid the questions of the
eval harness's tasks so those still measure what replay keeps. ``--replay-prompts FILE`` takes
the user's own (JSONL, ``{"prompt": ...}`` per line).
"""

import dataclasses
import random
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from llmloop.finetune.data import IGNORE_INDEX, BadRow, Example, read_jsonl, tokenize_chat
from llmloop.finetune.errors import DataError
from llmloop.hashing import sha256_file

DEFAULT_PROMPTS = Path(__file__).parent / "data" / "replay_prompts.jsonl"
MAX_NEW_TOKENS = 64
"""An answer that has not ended by then is dropped (a cut answer would teach cutting off)."""
BATCH_SIZE = 16


def read_prompts(path: str | Path | None) -> tuple[Path, list[str]]:
    """``(path, prompts)`` of a ``{"prompt": ...}`` JSONL file (default: the shipped prompts);
    the first bad line stops with ``file:line``."""
    path = Path(path).expanduser() if path else DEFAULT_PROMPTS
    if not path.is_file():
        raise DataError(f"--replay-prompts {path}: no such file")
    bad: list[tuple[int, str]] = []
    prompts = []
    for line_no, row in read_jsonl(path, bad):
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            bad.append((line_no, 'expected {"prompt": "..."}'))
            break
        prompts.append(prompt)
    if bad:
        line_no, why = min(bad)
        raise DataError(f"{path}:{line_no}: {why}")
    return path, prompts


def replay_examples(
    model,
    tokenizer,
    prompts: list[str],
    num_rows: int,
    seed: int,
    max_seq_length: int,
    anchor: bool = False,
) -> list[Example]:
    """Up to ``num_rows`` chat examples: a seeded sample of ``prompts`` with the model's greedy
    answers (answers that do not end within ``MAX_NEW_TOKENS`` are dropped); ``anchor``: trained
    toward the base's distribution along the answer (``anchored_loss``)."""
    chosen = random.Random(seed).sample(prompts, min(num_rows, len(prompts)))
    examples = []
    answers = generate_answers(model, tokenizer, chosen)
    for i, (prompt, answer) in enumerate(zip(chosen, answers, strict=True)):
        if answer is None:
            continue
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        try:
            example = tokenize_chat(tokenizer, messages, max_seq_length, f"replay:{i}")
            examples.append(dataclasses.replace(example, anchor=anchor))
        except BadRow:
            continue
    return examples


def generate_answers(model, tokenizer, prompts: list[str]) -> list[str | None]:
    """Greedy answers; None for one that did not end within ``MAX_NEW_TOKENS`` (or is empty)."""
    answers = []
    for text, ended in greedy_replies(model, tokenizer, prompts, MAX_NEW_TOKENS):
        answers.append(text.strip() if ended and text.strip() else None)
    return answers


@torch.no_grad()
def greedy_replies(
    model, tokenizer, prompts: list[str], max_new_tokens: int, desc: str = "replay answers"
) -> list[tuple[str, bool]]:
    """Greedy chat replies to single-turn ``prompts``, batched with left padding: (the reply,
    whether it ended within ``max_new_tokens``). The model's mode and the tokenizer's padding
    side are put back afterwards."""
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    replies: list[tuple[str, bool]] = []
    device = next(model.parameters()).device
    try:
        for start in tqdm(
            range(0, len(prompts), BATCH_SIZE), desc=desc, unit="batch", file=sys.stderr
        ):
            texts = [
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                )
                for p in prompts[start : start + BATCH_SIZE]
            ]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            for row in out[:, batch["input_ids"].shape[1] :].tolist():
                text = tokenizer.decode(row, skip_special_tokens=True)
                replies.append((text, tokenizer.eos_token_id in row))
    finally:
        model.train(was_training)
        tokenizer.padding_side = side
    return replies


def anchored_loss(model, base_logits, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mean over labelled tokens of cross-entropy at a user row's tokens and of
    KL(base || model) at an anchor row's: an anchor pulls the adapter toward the base model's
    whole next-token distribution, not only its greedy token. ``base_logits(inputs)``: the
    base model's logits (the adapter disabled) for ``inputs``; called even when no token is
    an anchor, so every process of a distributed run makes the same forward passes."""
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "anchor")}
    targets = batch["labels"][:, 1:]
    trained = targets != IGNORE_INDEX
    anchor = batch["anchor"][:, 1:] & trained
    plain = trained & ~anchor
    logits = model(**inputs).logits[:, :-1]
    cross_entropy = F.cross_entropy(logits[plain].float(), targets[plain], reduction="sum")
    with torch.no_grad():
        base = base_logits(inputs)[:, :-1][anchor].float().log_softmax(-1)
    adapted = logits[anchor].float().log_softmax(-1)
    kl = F.kl_div(adapted, base, log_target=True, reduction="sum")
    return (cross_entropy + kl) / trained.sum().clamp(min=1)


def replay_manifest(path: Path, num_asked: int, examples: list[Example], loss: str) -> dict:
    return {
        "prompts": str(path),
        "sha256": sha256_file(path),
        "loss": loss,
        "rows_asked": num_asked,
        "rows": len(examples),
        "trained_tokens": sum(e.num_trained_tokens for e in examples),
    }
