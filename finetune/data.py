"""Training data: load JSONL, validate each row (reported as file:line), render it with the
tokenizer's chat template, mask everything but the assistant turns, split off a held-out set,
and collate batches (padding-free packing or right-padding).

Row formats: ``{"messages": [{"role", "content", "weight"?}, ...], "tools"?: [...]}`` (OpenAI chat
fine-tuning format; ``weight: 0`` excludes an assistant turn from the loss; assistant turns may
carry ``tool_calls`` and ``tool`` turns answer them: TRL's tool-calling format, what
``llmloop feedback export --format sft`` writes) and ``{"prompt", "completion"}``. Tool calls are
rendered as the server renders them (``llmloop.chat_tools``), so the model learns the format it
will be asked to write.
"""

import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llmloop.chat_tools import hermes_messages, native_messages, renders_tools, uses_tools
from llmloop.finetune.config import DataConfig
from llmloop.finetune.errors import DataError
from llmloop.hashing import sha256_file

IGNORE_INDEX = -100
"""Label of a token that carries no loss (prompt, padding); PyTorch cross-entropy's ignore_index."""
ROLES = ("system", "user", "assistant", "tool", "developer")
MAX_REPORTED_BAD_ROWS = 20


class BadRow(ValueError):
    """One row that cannot be trained on; the message says why."""


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    """Same length as input_ids; IGNORE_INDEX everywhere except assistant tokens."""
    source: str
    """file:line the row came from."""
    anchor: bool = False
    """Train toward the base model's distribution at the labelled tokens
    (``replay.anchored_loss``), not toward the tokens themselves."""

    @property
    def num_trained_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


@dataclass
class SFTData:
    train: list[Example]
    eval: list[Example]
    manifest: dict[str, Any] = field(default_factory=dict)
    """data_manifest.json: files with sha256, row counts, bad rows."""


def load_sft_data(config: DataConfig, tokenizer, seed: int) -> SFTData:
    """Load and tokenize ``config.data``, skipping (or failing on) bad rows, then split it
    (an unset --eval-fraction resolved from the row count, as ``defaults`` does)."""
    from llmloop.finetune.defaults import eval_fraction_for

    examples, manifest = read_sft_examples(config, tokenizer)
    eval_fraction = config.eval_fraction
    if eval_fraction is None:
        eval_fraction = eval_fraction_for(len(examples))
    return split_sft_data(examples, manifest, eval_fraction, seed)


def read_sft_examples(config: DataConfig, tokenizer) -> tuple[list[Example], dict[str, Any]]:
    """Every usable row of ``config.data``, tokenized, and the file's part of the manifest."""
    path = Path(config.data).expanduser()
    examples, bad = [], []
    for line_no, row in read_jsonl(path, bad):
        source = f"{path}:{line_no}"
        try:
            messages = to_messages(row)
            tools = row_tools(row)
            examples.append(
                tokenize_chat(tokenizer, messages, config.max_seq_length, source, tools)
            )
        except BadRow as e:
            bad.append((line_no, str(e)))
    report_bad_rows(path, bad, config.bad_rows)
    if not examples:
        raise DataError(f"{path}: no usable rows (every row was bad); see the messages above")
    return examples, data_manifest(path, len(examples), bad)


def split_sft_data(
    examples: list[Example], manifest: dict[str, Any], eval_fraction: float, seed: int
) -> SFTData:
    train, eval_ = split(examples, eval_fraction, seed)
    manifest = manifest | {
        "train_rows": len(train),
        "eval_rows": len(eval_),
        "train_tokens": sum(len(e.input_ids) for e in train),
        "train_trained_tokens": sum(e.num_trained_tokens for e in train),
        "split_seed": seed,
    }
    return SFTData(train=train, eval=eval_, manifest=manifest)


def data_manifest(path: Path, num_rows_used: int, bad: list[tuple[int, str]]) -> dict:
    """The data file's part of ``data_manifest.json``: path, sha256, row counts, bad rows."""
    return {
        "files": [
            {
                "path": str(path.resolve()),
                "sha256": sha256_file(path),
                "rows": num_rows_used + len(bad),
                "rows_used": num_rows_used,
                "rows_skipped": len(bad),
            }
        ],
        "bad_rows": [f"{path}:{n}: {why}" for n, why in bad[:MAX_REPORTED_BAD_ROWS]],
    }


def read_jsonl(path: Path, bad: list[tuple[int, str]]):
    """Yield ``(line_no, object)``; lines that are not a JSON object go to ``bad``."""
    if not path.is_file():
        raise DataError(f"--data {path}: no such file")
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                bad.append((line_no, f"not JSON ({e.msg})"))
                continue
            if not isinstance(row, dict):
                bad.append((line_no, "not a JSON object"))
                continue
            yield line_no, row


def to_messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat messages of one row, validated; raises BadRow."""
    if "messages" in row:
        messages = row["messages"]
    elif "prompt" in row and "completion" in row:
        messages = _as_turns(row["prompt"], "user") + _as_turns(row["completion"], "assistant")
    else:
        raise BadRow('expected {"messages": [...]} or {"prompt": ..., "completion": ...}')
    if not isinstance(messages, list) or not messages:
        raise BadRow('"messages" must be a non-empty list')
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise BadRow(f"message {i} has no valid role (one of {', '.join(ROLES)})")
        content = message.get("content")
        calls = message.get("tool_calls")
        if calls is not None and (message["role"] != "assistant" or not _are_calls(calls)):
            raise BadRow(
                f"message {i}: tool_calls must be an assistant's list of "
                '{"function": {"name", "arguments"}}'
            )
        if not isinstance(content, str) and not (calls and content is None):
            raise BadRow(f"message {i} ({message['role']}) has no text content")
        if message["role"] == "assistant" and not (content or "").strip() and not calls:
            raise BadRow(f"message {i} is an empty assistant turn")
        if message.get("weight", 1) not in (0, 1):
            raise BadRow(f"message {i} has weight {message['weight']!r}; weight must be 0 or 1")
    if not any(m["role"] == "assistant" and m.get("weight", 1) for m in messages):
        raise BadRow("no assistant turn to learn from")
    return messages


def row_tools(row: dict[str, Any]) -> list[dict]:
    """The row's tool definitions (TRL's ``tools`` column), validated; raises BadRow."""
    tools = row.get("tools") or []
    if not isinstance(tools, list) or not all(
        isinstance(t, dict) and isinstance(t.get("function"), dict) for t in tools
    ):
        raise BadRow('"tools" must be a list of {"type": "function", "function": {...}}')
    return tools


def tokenize_chat(
    tokenizer, messages: list[dict], max_seq_length: int, source: str, tools: list[dict] = ()
) -> Example:
    """Render ``messages`` with the chat template; labels only on trained assistant turns.

    An assistant turn's span runs from the end of the prompt rendered with the generation prompt
    to the end of the conversation rendered through that turn, so it includes the end-of-turn
    token (the model learns to stop) and excludes the ``<|im_start|>assistant`` header.
    """
    chat, tools, first = _template_input(tokenizer, messages, list(tools))
    text = _render(tokenizer, chat, tools=tools)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or not message.get("weight", 1):
            continue
        at = first + i  # where message i sits in ``chat``
        start = len(_render(tokenizer, chat[:at], add_generation_prompt=True, tools=tools))
        end = len(_render(tokenizer, chat[: at + 1], tools=tools))
        if not text.startswith(_render(tokenizer, chat[: at + 1], tools=tools)):
            raise DataError(
                "the tokenizer's chat template does not render conversations prefix-wise"
            )
        spans.append((start, end))
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = encoding["input_ids"]
    if len(input_ids) > max_seq_length:
        raise BadRow(f"{len(input_ids)} tokens is longer than --max-seq-length {max_seq_length}")
    labels = [
        token if any(a <= start < b for a, b in spans) else IGNORE_INDEX
        for token, (start, _) in zip(input_ids, encoding["offset_mapping"], strict=True)
    ]
    return Example(input_ids=input_ids, labels=labels, source=source)


def split(examples: list[Example], eval_fraction: float, seed: int):
    """A seeded train/eval split; no eval set below 10 rows (its loss would be noise)."""
    if eval_fraction == 0 or len(examples) < 10:
        return list(examples), []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    num_eval = max(1, round(len(examples) * eval_fraction))
    held_out = set(order[:num_eval])
    train = [e for i, e in enumerate(examples) if i not in held_out]
    return train, [examples[i] for i in sorted(held_out)]


def collate(examples: list[Example], packing: bool, pad_token_id: int) -> dict[str, torch.Tensor]:
    """A batch for a causal LM.

    packing: the examples are bin-packed (first-fit decreasing) into as few rows as possible, each
    as long as the longest example, with position_ids restarting at every example; transformers
    turns restarting position_ids into a block-diagonal causal mask, so examples never attend to
    each other, attention stays as cheap as for the longest example, and almost no pad is computed.
    Otherwise: one right-padded row per example, ``[batch, longest]``, with an attention mask.
    """
    if not packing:
        return _pad_rows([(e,) for e in examples], pad_token_id, with_attention_mask=True)
    return _pad_rows(pack_rows(examples), pad_token_id, with_attention_mask=False)


def pack_rows(examples: list[Example]) -> list[tuple[Example, ...]]:
    """First-fit decreasing: rows of examples, each row at most as long as the longest example."""
    capacity = max(len(e.input_ids) for e in examples)
    rows: list[list[Example]] = []
    free: list[int] = []
    for example in sorted(examples, key=lambda e: len(e.input_ids), reverse=True):
        size = len(example.input_ids)
        row = next((i for i, room in enumerate(free) if room >= size), None)
        if row is None:
            rows.append([])
            free.append(capacity)
            row = len(rows) - 1
        rows[row].append(example)
        free[row] -= size
    return [tuple(row) for row in rows]


def _pad_rows(rows, pad_token_id: int, with_attention_mask: bool) -> dict[str, torch.Tensor]:
    """``[rows, longest]`` tensors; pad tokens form their own position segment and carry no loss."""
    lengths = [sum(len(e.input_ids) for e in row) for row in rows]
    width = max(lengths)
    input_ids, labels, position_ids, attention_mask, anchor = [], [], [], [], []
    for row, length in zip(rows, lengths, strict=True):
        ids, targets, positions, anchored = [], [], [], []
        for e in row:
            ids += e.input_ids
            targets += [IGNORE_INDEX, *e.labels[1:]]  # never predict across an example boundary
            positions += range(len(e.input_ids))
            anchored += [e.anchor] * len(e.input_ids)
        pad = width - length
        input_ids.append(ids + [pad_token_id] * pad)
        labels.append(targets + [IGNORE_INDEX] * pad)
        position_ids.append(positions + list(range(pad)))
        attention_mask.append([1] * length + [0] * pad)
        anchor.append(anchored + [False] * pad)
    batch = {"input_ids": torch.tensor(input_ids), "labels": torch.tensor(labels)}
    if any(e.anchor for row in rows for e in row):
        batch["anchor"] = torch.tensor(anchor)
    if with_attention_mask:
        batch["attention_mask"] = torch.tensor(attention_mask)
    else:
        batch["position_ids"] = torch.tensor(position_ids)
    return batch


def report_bad_rows(path: Path, bad: list[tuple[int, str]], policy: str) -> None:
    if bad and policy == "fail":
        line_no, why = bad[0]
        raise DataError(
            f"{path}:{line_no}: {why} ({len(bad)} bad row(s)); fix the data or pass --bad-rows skip"
        )
    for line_no, why in bad[:MAX_REPORTED_BAD_ROWS]:
        print(f"{path}:{line_no}: {why} (skipped)", file=sys.stderr)
    if len(bad) > MAX_REPORTED_BAD_ROWS:
        print(f"{path}: {len(bad) - MAX_REPORTED_BAD_ROWS} more bad rows skipped", file=sys.stderr)


def _template_input(
    tokenizer, messages: list[dict], tools: list[dict]
) -> tuple[list[dict], list[dict] | None, int]:
    """(the messages as the template takes them, the tools it renders itself, where the first
    message sits): tool calls as the server renders them for this template."""
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    if not uses_tools(messages, tools):
        return plain, None, 0
    keep = ("role", "content", "tool_calls", "tool_call_id")
    conversation = [{k: m[k] for k in keep if m.get(k) is not None} for m in messages]
    if renders_tools(getattr(tokenizer, "chat_template", None)):
        return native_messages(conversation), tools or None, 0
    converted = hermes_messages(conversation, tools)
    return converted, None, len(converted) - len(messages)  # a system message may lead


def _render(
    tokenizer, messages: list[dict], add_generation_prompt: bool = False, tools=None
) -> str:
    if not messages:
        return ""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("the base model's tokenizer has no chat template; pick another --base")
    extra = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, **extra
    )


def _are_calls(calls: Any) -> bool:
    return isinstance(calls, list) and all(
        isinstance(c, dict)
        and isinstance(c.get("function"), dict)
        and isinstance(c["function"].get("name"), str)
        and "arguments" in c["function"]
        for c in calls
    )


def _as_turns(value: Any, role: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):  # TRL's conversational prompt/completion
        return value
    raise BadRow(f'"{"prompt" if role == "user" else "completion"}" must be a string or messages')
