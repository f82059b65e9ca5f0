"""A batch's input file checked line by line, as OpenAI's ``validating`` step does.

Each line is ``{"custom_id": ..., "method": "POST", "url": ENDPOINT, "body": {...}}``. A file
with any malformed line fails as a whole, with one error per bad line (``errors`` of the Batch
object, at most ``MAX_REPORTED_ERRORS``); a body the endpoint refuses is not checked here: it is
answered with that endpoint's 400 in the error file, like any request. One pass, linear in the
file's size.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from llmloop.serve.batch.protocol import BATCH_ENDPOINTS

MAX_LINES = 50_000
"""Requests per batch, as OpenAI."""
MAX_PHYSICAL_LINES = 2 * MAX_LINES
"""Lines of any kind, blank ones included: the most a file may have."""
MAX_CUSTOM_ID_CHARS = 512
MAX_REPORTED_ERRORS = 100


@dataclass
class ParsedInput:
    lines: list[tuple[str, str, str]] = field(default_factory=list)
    """(custom_id, url, the body as JSON text), in file order."""
    errors: list[dict] = field(default_factory=list)
    """OpenAI's BatchError objects: {code, message, param, line}."""

    @property
    def ok(self) -> bool:
        return not self.errors


def parse_input(data: bytes, endpoint: str | None, max_line_bytes: int) -> ParsedInput:
    """``endpoint``: the url every line must have (a batch's); None: any of ``BATCH_ENDPOINTS``
    (``llmloop batch run``, like ``vllm run-batch``)."""
    parsed = ParsedInput()
    seen: set[str] = set()
    for number, raw in _lines(data):
        if number > MAX_PHYSICAL_LINES:
            parsed.errors.append(_file_error(f"a file has at most {MAX_PHYSICAL_LINES} lines"))
            break
        if len(parsed.errors) >= MAX_REPORTED_ERRORS:
            break
        error = _check_line(raw, endpoint, max_line_bytes, seen, parsed)
        if error is not None:
            code, message, param = error
            parsed.errors.append(batch_error(code, message, param, number))
        if len(parsed.lines) > MAX_LINES:
            parsed.errors.append(_file_error(f"a batch holds at most {MAX_LINES} requests"))
            break
    if not parsed.lines and not parsed.errors:
        parsed.errors.append(_file_error("the input file has no requests"))
    return parsed


def _lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(1-based number, content) of each non-blank line, one at a time (a file of empty lines
    costs no list of them)."""
    start, number = 0, 0
    while start <= len(data):
        end = data.find(b"\n", start)
        end = len(data) if end == -1 else end
        number += 1
        if number > MAX_PHYSICAL_LINES:
            yield number, b""
            return
        raw = data[start:end]
        if raw.strip():
            yield number, raw
        start = end + 1


def _check_line(
    raw: bytes, endpoint: str | None, max_line_bytes: int, seen: set[str], parsed: ParsedInput
) -> tuple[str, str, str | None] | None:
    """None after adding a good line to ``parsed``; else (code, message, param)."""
    if len(raw) > max_line_bytes:
        return "line_too_large", f"the line exceeds {max_line_bytes} bytes", None
    try:
        request = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return "invalid_json_line", "the line is not valid JSON (one JSON object per line)", None
    except RecursionError:
        return "invalid_json_line", "the line's JSON is nested too deeply", None
    if not isinstance(request, dict):
        return "invalid_json_line", "the line is not a JSON object", None
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return (
            "missing_required_parameter",
            "custom_id: a non-empty string is required",
            "custom_id",
        )
    if len(custom_id) > MAX_CUSTOM_ID_CHARS:
        return "invalid_value", f"custom_id: at most {MAX_CUSTOM_ID_CHARS} characters", "custom_id"
    if "\x00" in custom_id or not _encodable(custom_id):
        return "invalid_value", "custom_id: must be text without NUL characters", "custom_id"
    if custom_id in seen:
        return "duplicate_custom_id", f"custom_id {custom_id!r} appears twice", "custom_id"
    if request.get("method") != "POST":
        return "invalid_value", 'method: must be "POST"', "method"
    url = request.get("url")
    if url not in ((endpoint,) if endpoint else BATCH_ENDPOINTS):
        expected = f"the batch's endpoint {endpoint}" if endpoint else " or ".join(BATCH_ENDPOINTS)
        return "invalid_url", f"url: must be {expected}, got {str(url)[:100]!r}", "url"
    body = request.get("body")
    if not isinstance(body, dict):
        return "missing_required_parameter", "body: a JSON object is required", "body"
    if body.get("stream") not in (None, False):
        return "invalid_value", "body.stream: a batch line cannot be streamed", "body.stream"
    seen.add(custom_id)
    parsed.lines.append((custom_id, url, json.dumps(body)))  # ASCII: lone surrogates escaped
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON)
        return False
    return True


def batch_error(code: str, message: str, param: str | None = None, line: int | None = None) -> dict:
    """One entry of a failed batch's ``errors`` (OpenAI's BatchError)."""
    return {"code": code, "message": message, "param": param, "line": line}


def _file_error(message: str) -> dict:
    return batch_error("invalid_file", message)
