"""``llmloop feedback export``: labelled completions as TRL's conversational datasets.

- sft: ``{"messages": [...]}``: the correction if there is one, else an answer rated +1. An
  answer that called tools ends in an assistant message with ``tool_calls``, and the row carries
  the request's ``tools``: TRL's tool-calling format,
  https://huggingface.co/docs/trl/dataset_formats#tool-calling (the SFT trainer hands ``tools``
  to the chat template).
- dpo: ``{"prompt", "chosen", "rejected"}``: a correction beats the original answer; a preference
  (``preferred_over``) beats the other completion of the same prompt.
- kto: ``{"prompt", "completion", "label"}``: ratings give the label; a correction is a good
  completion and, unless it was rated, marks the original as a bad one.

Each row also names who labelled it (``labelled_by``: the key id behind the feedback; TRL ignores
the field). Every text passes through safety's PII detector again (the log is redacted when written; this is
the second line), identical rows are dropped, and a manifest beside the file records counts,
filters and the file's sha256.

Tool calls' ``function.arguments`` become JSON objects, as TRL's example and Hugging Face chat
templates (``arguments | tojson``) take them; arguments that are not valid JSON stay text.
"""

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from llmloop.feedback.db import redact_url
from llmloop.feedback.errors import EmptyExportError
from llmloop.feedback.record import prompt_messages
from llmloop.feedback.store import ConversationFilter, FeedbackStore

Format = Literal["sft", "dpo", "kto"]
FORMATS: tuple[str, ...] = ("sft", "dpo", "kto")
FILTERS_RECORDED = ("since", "until", "model", "project", "route", "labelled_since")
NEEDS = {
    "sft": "corrections or answers rated +1",
    "dpo": "corrections or preferences (preferred_over)",
    "kto": "ratings or corrections",
}


def export(store: FeedbackStore, fmt: Format, out: Path, filters: ConversationFilter) -> dict:
    """Write ``out`` and ``<out>.manifest.json``; returns the manifest. Nothing is written when
    no row matches (``EmptyExportError``)."""
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    lines: list[str] = []
    for source, row, labelled_by in _rows(store, fmt, filters, counts):
        row, num_pii = _scrub(row)
        counts["pii_redacted"] += num_pii
        # the same example labelled twice is one row: the labeller is not part of its identity
        digest = hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()
        line = json.dumps(row | {"labelled_by": labelled_by}, ensure_ascii=False, sort_keys=True)
        if digest in seen:
            counts["duplicates_dropped"] += 1
            continue
        seen.add(digest)
        counts[f"from_{source}"] += 1
        lines.append(line)
    if not lines:
        raise EmptyExportError(
            f"nothing to export as {fmt}: it needs {NEEDS[fmt]}, and none match"
            f"{_describe(filters)}. Label completions in the UI at /ui/ (or POST /v1/feedback), "
            "or widen --since/--until/--model."
        )
    data = "".join(line + "\n" for line in lines).encode()
    manifest = {
        "format": fmt,
        "trl_format": "conversational",
        "file": out.name,
        "rows": len(lines),
        "sha256": hashlib.sha256(data).hexdigest(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "db": redact_url(store.db_url),
        "filters": {k: getattr(filters, k) for k in FILTERS_RECORDED},
        "counts": dict(sorted(counts.items())),
    }
    _write_atomic(out, data)
    _write_atomic(manifest_path(out), (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def manifest_path(out: Path) -> Path:
    return out.with_name(out.name + ".manifest.json")


def _rows(
    store: FeedbackStore, fmt: Format, filters: ConversationFilter, counts: Counter
) -> Iterator[tuple[str, dict, str | None]]:
    """(where it came from, the TRL row, the key id of who labelled it)"""
    total = store.count(ConversationFilter(**{**vars(filters), "labelled": True}))
    for row in tqdm(store.iter_labelled(filters), total=total, desc="export", unit="row"):
        counts["completions_scanned"] += 1
        prompt, answer = _prompt(row), row["output"]
        correction, rating, who = row["correction"], row["rating"], row["labelled_by"]
        if fmt == "sft":
            if correction:
                yield "correction", _with_tools({"messages": prompt + _said(correction)}, row), who
            elif rating == 1:
                yield "rating", _with_tools({"messages": [*prompt, _answer(row)]}, row), who
        elif _calls_tools(row):
            # DPO/KTO rows here are text answers: a call's content alone (often empty) would
            # teach the opposite of what was labelled, so only a correction's text is used.
            counts["tool_call_answers_skipped"] += 1
            if fmt == "kto" and correction:
                yield "correction", _kto(prompt, correction, True), who
        elif fmt == "dpo":
            if correction and correction != answer:
                yield "correction", _pair(prompt, correction, answer), who
        elif fmt == "kto":
            if rating is not None:
                yield "rating", _kto(prompt, answer, rating == 1), who
            if correction:
                yield "correction", _kto(prompt, correction, True), who
                if rating is None and correction != answer:
                    yield "correction", _kto(prompt, answer, False), who
    if fmt == "dpo":
        yield from _preferences(store, filters, counts)


def _preferences(
    store: FeedbackStore, filters: ConversationFilter, counts: Counter
) -> Iterator[tuple[str, dict, str | None]]:
    pairs = store.preferences(filters)
    rows = store.get_many(i for winner, loser, _ in pairs for i in (winner, loser))
    for winner, loser, who in pairs:
        if _calls_tools(rows[winner]) or _calls_tools(rows[loser]):
            counts["tool_call_answers_skipped"] += 1  # text pairs only, as in _rows
            continue
        chosen, rejected = rows[winner]["output"], rows[loser]["output"]
        if chosen != rejected:
            yield "preference", _pair(_prompt(rows[winner]), chosen, rejected), who


def _prompt(row: dict) -> list[dict]:
    return [_with_argument_objects(m) for m in prompt_messages(row["messages"], row["prompt"])]


def _said(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _calls_tools(row: dict) -> bool:
    return bool(row["choices"] and row["choices"][0].get("tool_calls"))


def _answer(row: dict) -> dict:
    """The logged answer as an assistant message: its content, and its tool calls if any."""
    if not _calls_tools(row):
        return _said(row["output"])[0]
    message = {"role": "assistant", "content": row["output"] or None}
    return _with_argument_objects(message | {"tool_calls": row["choices"][0]["tool_calls"]})


def _with_tools(example: dict, row: dict) -> dict:
    return example | {"tools": row["tools"]} if row.get("tools") else example


def _with_argument_objects(message: dict) -> dict:
    """Hugging Face templates write ``arguments | tojson``: an object, not JSON text."""
    if not message.get("tool_calls"):
        return message
    calls = [
        call | {"function": call["function"] | {"arguments": _json_or_text(call["function"])}}
        for call in message["tool_calls"]
    ]
    return message | {"tool_calls": calls}


def _json_or_text(function: dict):
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments  # what the model wrote: the template shows it as it was


def _pair(prompt: list[dict], chosen: str, rejected: str) -> dict:
    return {"prompt": prompt, "chosen": _said(chosen), "rejected": _said(rejected)}


def _kto(prompt: list[dict], completion: str, label: bool) -> dict:
    return {"prompt": prompt, "completion": _said(completion), "label": label}


_MESSAGE_KEYS_KEPT = frozenset({"role", "tool_call_id"})


def _scrub(row: dict) -> tuple[dict, int]:
    """The row with every PII span replaced by a typed placeholder, stable within the row."""
    from llmloop.safety.pii import detect
    from llmloop.safety.redact import Redactor

    redactor = Redactor("placeholder")
    num_found = 0

    def scrub_text(text: str) -> str:
        nonlocal num_found
        findings = detect(text)
        num_found += len(findings)
        return redactor.redact(text, findings) if findings else text

    def walk(value):
        if isinstance(value, str):
            return scrub_text(value)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    def message(m):
        if not isinstance(m, dict):
            return walk(m)
        out = {}
        for key, value in m.items():
            if key in _MESSAGE_KEYS_KEPT:
                out[key] = value
            elif key == "tool_calls" and isinstance(value, list):
                out[key] = [call(c) for c in value]
            else:
                out[key] = walk(value)
        return out

    def call(c):
        # id, type and the function's name are the call's structure (a later tool message's
        # tool_call_id must still match it); the arguments are what was said, at any depth,
        # whatever their keys are called ("name", "id", ...)
        if not isinstance(c, dict) or not isinstance(c.get("function"), dict):
            return walk(c)
        return c | {"function": c["function"] | {"arguments": walk(c["function"].get("arguments"))}}

    out = {}
    for key, value in row.items():
        if key in ("tools", "label"):
            # The tools are not scrubbed: they are the app's definitions, the same in every
            # request and not what a user said, and a placeholder inside a JSON schema (in an
            # example, a pattern, an enum) would change the tools the model learns to call.
            out[key] = value
        elif isinstance(value, list):  # messages, prompt, chosen, rejected, completion
            out[key] = [message(m) for m in value]
        else:
            out[key] = walk(value)
    return out, num_found


def _describe(filters: ConversationFilter) -> str:
    given = {k: getattr(filters, k) for k in FILTERS_RECORDED if k != "project"}
    given = {k: v for k, v in given.items() if v is not None}
    return (" (filters: " + ", ".join(f"{k}={v}" for k, v in given.items()) + ")") if given else ""


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
