"""What the drift tests read: a bounded random sample of prompts from a window of the log or from
a reference JSONL file, plus whole-source counts for the rate tests.

From the log only ``prompt_preview`` (the last user turn, at most 200 characters, as the UI lists
it) and the token counts of at most ``sample_size`` rows are read: a row with a megabyte prompt
costs no more than any other. The sample is drawn in SQL (``ORDER BY random()`` over the ids of
the window, then a join), so only the sampled rows leave the database.
"""

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import Connection, func, select

from llmloop.feedback.monitor.aggregates import REFUSED, Scope
from llmloop.feedback.monitor.errors import MonitorArgumentError
from llmloop.feedback.schema import completions

DEFAULT_SAMPLE_SIZE = 1000
"""Prompts per side: enough for MMD to see a topic shift of a few percent of traffic, and
embedded by MiniLM in a few seconds on two cores."""
PREVIEW_CHARS = 200
"""As ``prompt_preview`` in the log: a file's prompts are cut the same way, so both sides match."""
MAX_LINE_CHARS = 1 << 20


@dataclass(frozen=True)
class DriftSample:
    texts: list[str]
    """Sampled prompts: the last user turn, first PREVIEW_CHARS characters."""
    prompt_tokens: np.ndarray | None
    """[len(texts)]; None where the source has no token counts."""
    completion_tokens: np.ndarray | None
    requests: int
    """Rows in the whole source, for the rate tests."""
    refusals: int | None
    rated: int | None
    thumbs_down: int | None
    source: dict
    """Where it came from: ``{"since", "until"}`` or ``{"file", "rows"}``."""


def sample_window(
    conn: Connection, scope: Scope, counts: dict, sample_size: int, source: dict
) -> DriftSample:
    """``counts``: ``aggregates.totals`` of the same scope (whole-window rates)."""
    c = completions.c
    ids = select(c.id).where(*scope.where()).order_by(func.random()).limit(sample_size).subquery()
    rows = conn.execute(
        select(c.prompt_preview, c.prompt_tokens, c.completion_tokens).join(ids, c.id == ids.c.id)
    ).all()
    return DriftSample(
        texts=[r.prompt_preview for r in rows],
        prompt_tokens=np.array([r.prompt_tokens for r in rows], dtype=np.float64),
        completion_tokens=np.array([r.completion_tokens for r in rows], dtype=np.float64),
        requests=counts["requests"],
        refusals=counts["refusals"],
        rated=counts["rated"],
        thumbs_down=counts["thumbs_down"],
        source=source,
    )


def sample_file(path: Path, sample_size: int, seed: int = 0) -> DriftSample:
    """A reference JSONL: each line holds ``messages`` (OpenAI chat, as ``llmloop feedback
    export --format sft`` writes) or ``prompt`` (a string or a message list, as the dpo/kto
    exports write); optionally the log's ``prompt_tokens``, ``completion_tokens``,
    ``finish_reason`` and ``rating``. A field compares only when every line has it. One pass,
    reservoir-sampled: a file of any size holds ``sample_size`` lines in memory."""
    rng = random.Random(seed)
    kept: list[dict] = []
    num_rows = refusals = rated = thumbs_down = 0
    has_finish_reason = True
    try:
        lines = path.open(encoding="utf-8")
    except OSError as e:
        raise MonitorArgumentError(f"--reference {path}: cannot read it ({e.strerror})") from e
    with lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            row = _parse_line(line, path, line_number)
            num_rows += 1
            has_finish_reason = has_finish_reason and "finish_reason" in row
            refusals += row.get("finish_reason") == REFUSED
            if row.get("rating") is not None:
                rated += 1
                thumbs_down += row["rating"] < 0
            if len(kept) < sample_size:
                kept.append(row)
            elif (slot := rng.randrange(num_rows)) < sample_size:
                kept[slot] = row
    if not kept:
        raise MonitorArgumentError(f"--reference {path} holds no lines")
    return DriftSample(
        texts=[row["text"] for row in kept],
        prompt_tokens=_column(kept, "prompt_tokens"),
        completion_tokens=_column(kept, "completion_tokens"),
        requests=num_rows,
        refusals=refusals if has_finish_reason else None,
        rated=rated or None,
        thumbs_down=thumbs_down if rated else None,
        source={"file": str(path), "rows": num_rows},
    )


def _parse_line(line: str, path: Path, line_number: int) -> dict:
    where = f"--reference {path} line {line_number}"
    if len(line) > MAX_LINE_CHARS:
        raise MonitorArgumentError(f"{where} is longer than {MAX_LINE_CHARS} characters")
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise MonitorArgumentError(f"{where} is not JSON ({e.msg})") from e
    if not isinstance(row, dict):
        raise MonitorArgumentError(f"{where} is not a JSON object")
    prompt = row.get("messages", row.get("prompt"))
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, list):
        text = _last_user_turn(prompt)
    else:
        raise MonitorArgumentError(f"{where} has neither `messages` nor `prompt`")
    out = {"text": text[:PREVIEW_CHARS]}
    for key in ("prompt_tokens", "completion_tokens", "finish_reason", "rating"):
        if key in row:
            out[key] = row[key]
    return out


def _last_user_turn(messages: list) -> str:
    turns = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    content = turns[-1].get("content", "") if turns else ""
    if isinstance(content, list):  # content parts: keep the text ones
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else str(content)


def _column(rows: list[dict], key: str) -> np.ndarray | None:
    values = [row.get(key) for row in rows]
    if any(not isinstance(v, int | float) for v in values):
        return None
    return np.array(values, dtype=np.float64)
