"""What one log row may hold: every record is made to fit before it is written or spooled.

PostgreSQL refuses a whole multi-row INSERT for one value it cannot store, so the writer makes each
record storable on both backends and in the JSONL spool first. Whatever the database still refuses
is found row by row and kept in the dead-letter file (``log.py``); nothing here raises.
"""

import hashlib
import json
import math
import re
from dataclasses import fields, replace
from typing import Any

from llmloop.feedback.record import CompletionRecord
from llmloop.feedback.schema import completions

REPLACEMENT = "\ufffd"
"""What stands in for a character no backend can store."""

# NUL: PostgreSQL text cannot hold it. Lone surrogates (a JSON "\ud800" escape parses to one):
# UTF-8 cannot encode them, so neither database nor the spool file can. Both become U+FFFD,
# Unicode's own mark for "a character that could not be represented", one for one: the text keeps
# its length and offsets, a reader sees that something was there, and it cannot be mistaken for
# text the user typed (as an escape like "\0" could). Dropping the character instead would
# silently join the words around it.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

# Every String(n) column a record fills, capped at the schema's n: PostgreSQL refuses a longer
# value, SQLite would keep it. Among them: `user` 256 (OpenAI's end-user id, a hashed name or
# e-mail), `model` and `adapter` 256 (a served name, as long as `lora_name` may be), `base_model`
# 512 (a Hugging Face id or a path), `endpoint` 32, `api_key_id` 64; a column added later is
# capped without a change here. A longer value keeps its start and gains a hash of the whole, so
# two long values stay two. The id is left alone: the server makes it, and a cut id would no
# longer be the one its client was given (the database's refusal sends that row to dead-letter).
COLUMN_CHARS: dict[str, int] = {
    column.name: column.type.length
    for column in completions.c
    if column.name in {f.name for f in fields(CompletionRecord)} - {"id"}
    and getattr(column.type, "length", None)
}
MAX_USER_CHARS = COLUMN_CHARS["user"]

JSON_FIELDS = ("prompt", "messages", "citations", "sampling_params", "choices", "tools")

MAX_JSON_CHARS = 8_000_000
"""Characters of text in each of ``messages``, ``citations``, ``sampling_params``, ``choices``,
``tools``, and in ``prompt``. As large as the server's default request body (8 MiB), far beyond
any context window we serve, so only a server with a raised body limit or a runaway generation
meets it; it keeps one row (and a batch of 256) well inside PostgreSQL's 1 GB per value and the
writer's memory. Over it, the longest strings are cut, all to the same length, and say how much
was cut; shorter strings and the structure stay whole."""


def fit_record(record: CompletionRecord) -> CompletionRecord:
    """The record with every text storable and every field within its cap; ``record`` itself
    when it already is (the usual case)."""
    fitted: dict[str, Any] = {
        name: _fit_column(getattr(record, name), max_chars)
        for name, max_chars in COLUMN_CHARS.items()
    }
    for name in JSON_FIELDS:
        fitted[name] = _fit_json(getattr(record, name))
    if all(value is getattr(record, name) for name, value in fitted.items()):
        return record
    return replace(record, **fitted)


def clean_text(text: str) -> str:
    if text.isascii() and "\x00" not in text:  # the usual case, without a regex scan
        return text
    return _UNSTORABLE.sub(REPLACEMENT, text)


def _fit_column(value: Any, max_chars: int) -> Any:
    if value is None:
        return None
    text = clean_text(value if isinstance(value, str) else str(value))
    if len(text) <= max_chars:
        return value if text is value else text
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{text[: max_chars - len(digest) - 1]}…{digest}"


def _fit_json(value: Any) -> Any:
    lengths: list[int] = []

    def measure_and_clean(text: str) -> str:
        lengths.append(len(text))
        return clean_text(text)

    clean = _map_strings(value, measure_and_clean)
    if sum(lengths) <= MAX_JSON_CHARS:
        return value if clean == value else clean
    max_string_chars = _fill_limit(lengths, MAX_JSON_CHARS)
    return _map_strings(clean, lambda s: _cut(s, max_string_chars))


def _map_strings(value: Any, fn) -> Any:
    """``value`` with ``fn`` applied to every string in it (dict keys too), as JSON PostgreSQL
    accepts: its ``json`` type refuses NaN and Infinity, so those become JSON's own spelling as a
    string, and what JSON cannot hold becomes its ``str``."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {fn(str(k)): _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_map_strings(v, fn) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return fn(str(value))


def _fill_limit(lengths: list[int], budget: int) -> int:
    """The largest L with sum(min(n, L) for n in lengths) <= budget: cutting only the strings
    longer than L, all to L, removes the least text from the fewest strings."""
    lengths = sorted(lengths, reverse=True)
    rest = sum(lengths)
    for num_cut, n in enumerate(lengths, start=1):
        rest -= n  # the strings kept whole if the num_cut longest are cut
        limit = (budget - rest) // num_cut
        next_longest = lengths[num_cut] if num_cut < len(lengths) else 0
        if limit >= next_longest:
            return limit
    return 0


def _cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}…[{len(text) - max_chars} characters cut]"
