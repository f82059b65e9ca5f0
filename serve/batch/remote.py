"""``llmloop batch submit|status|list|cancel|download``: a batch on a running server, through
the official ``openai`` client (OpenAI's Files and Batches API)."""

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import openai
from tqdm import tqdm

from llmloop.serve.batch.offline import BatchCliError, print_input_errors, read_input
from llmloop.serve.batch.protocol import BATCH_ENDPOINTS
from llmloop.serve.batch.validate import parse_input

FINAL_STATUSES = ("completed", "failed", "expired", "cancelled")


def make_client(args: argparse.Namespace) -> openai.OpenAI:
    return openai.OpenAI(base_url=args.base_url, api_key=_api_key(args) or "EMPTY")


def submit(args: argparse.Namespace, client: openai.OpenAI) -> int:
    input_path = Path(args.input)
    data = read_input(input_path)
    endpoint = args.endpoint or _first_url(data)
    parsed = parse_input(data, endpoint, max_line_bytes=len(data))  # the server checks sizes
    if not parsed.ok:
        print_input_errors(input_path, parsed.errors)
        return 1
    metadata = _metadata(args.metadata)
    file = client.files.create(file=(input_path.name, data), purpose="batch")
    print(f"uploaded {input_path} as {file.id} ({len(parsed.lines)} requests, {file.bytes} bytes)")
    batch = client.batches.create(
        input_file_id=file.id,
        endpoint=endpoint,
        completion_window=args.completion_window,
        metadata=metadata,
    )
    print(f"created batch {batch.id}", flush=True)
    if not args.wait:
        return 0
    batch = follow(client, batch, args.poll_interval)
    print(describe(batch), file=sys.stderr)
    return 0 if batch.status == "completed" else 1


def status(args: argparse.Namespace, client: openai.OpenAI) -> int:
    batch = client.batches.retrieve(args.batch_id)
    if args.json:
        print(batch.model_dump_json(indent=2))
        return 0
    if not args.no_follow:
        batch = follow(client, batch, args.poll_interval)
    print(describe(batch))
    return 0


def list_batches(args: argparse.Namespace, client: openai.OpenAI) -> int:
    page = client.batches.list(limit=args.limit)
    rows = [("ID", "STATUS", "ENDPOINT", "DONE/TOTAL", "FAILED", "CREATED")]
    for batch in page.data:
        counts = batch.request_counts
        done = f"{counts.completed + counts.failed}/{counts.total}" if counts else "-"
        failed = str(counts.failed) if counts else "-"
        rows.append((batch.id, batch.status, batch.endpoint, done, failed, _when(batch.created_at)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def cancel(args: argparse.Namespace, client: openai.OpenAI) -> int:
    batch = client.batches.cancel(args.batch_id)
    print(f"{batch.id} {batch.status}")
    return 0


def download(args: argparse.Namespace, client: openai.OpenAI) -> int:
    batch = client.batches.retrieve(args.batch_id)
    if batch.status not in FINAL_STATUSES:
        raise BatchCliError(
            f"batch {batch.id} is {batch.status}: download it once it has ended "
            f"(`llmloop batch status {batch.id}` follows it)"
        )
    output, errors = Path(args.output), Path(args.errors) if args.errors else None
    into_output = [batch.output_file_id] + ([batch.error_file_id] if errors is None else [])
    num_lines = _write_files(client, output, filter(None, into_output))
    print(f"{output}: {num_lines} answers")
    if errors is not None:
        num_errors = _write_files(client, errors, filter(None, [batch.error_file_id]))
        print(f"{errors}: {num_errors} failed answers")
    return 0


def follow(client: openai.OpenAI, batch, poll_interval_s: float):
    """``batch`` once it has ended, with a progress bar of its lines until then."""
    with tqdm(unit="line", desc=batch.id, file=sys.stderr) as bar:
        while True:
            counts = batch.request_counts
            if counts is not None:
                bar.total = counts.total or None
                bar.n = counts.completed + counts.failed
                bar.set_postfix(status=batch.status, failed=counts.failed, refresh=False)
            bar.refresh()
            if batch.status in FINAL_STATUSES:
                return batch
            time.sleep(poll_interval_s)
            batch = client.batches.retrieve(batch.id)


def describe(batch) -> str:
    counts = batch.request_counts
    lines = [
        f"{batch.id}: {batch.status} ({batch.endpoint}, created {_when(batch.created_at)})",
    ]
    if counts is not None:
        lines.append(
            f"  requests: {counts.total}, completed {counts.completed}, failed {counts.failed}"
        )
    if batch.usage is not None:
        lines.append(f"  tokens: {batch.usage.input_tokens} in, {batch.usage.output_tokens} out")
    for name in ("output_file_id", "error_file_id"):
        if file_id := getattr(batch, name):
            lines.append(f"  {name.removesuffix('_id').replace('_', ' ')}: {file_id}")
    if batch.errors and batch.errors.data:
        lines += [
            f"  line {error.line}: {error.code}: {error.message}"
            if error.line is not None
            else f"  {error.code}: {error.message}"
            for error in batch.errors.data
        ]
    if batch.status in ("completed", "expired", "cancelled"):
        lines.append(f"  download: llmloop batch download {batch.id} -o OUTPUT.jsonl")
    return "\n".join(lines)


def server_message(error: openai.APIError) -> str:
    if isinstance(error, openai.APIConnectionError):
        return f"cannot reach the server at {error.request.url}: {error.message}"
    body = error.body if isinstance(error.body, dict) else {}
    message = body.get("message") or error.message
    if isinstance(error, openai.APIStatusError):
        message = f"the server answered {error.status_code}: {message}"
    if isinstance(error, openai.AuthenticationError):
        message += " (give the key with --api-key-file, $LLMLOOP_API_KEY or $OPENAI_API_KEY)"
    return message


def _write_files(client: openai.OpenAI, path: Path, file_ids: Iterable[str]) -> int:
    """The contents of ``file_ids``, one after another, into ``path``; the number of lines."""
    num_lines = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for file_id in file_ids:
            with client.files.with_streaming_response.content(file_id) as response:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    num_lines += chunk.count(b"\n")
    return num_lines


def _api_key(args: argparse.Namespace) -> str | None:
    if args.api_key:
        return args.api_key
    if args.api_key_file:
        try:
            return Path(args.api_key_file).expanduser().read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise BatchCliError(f"--api-key-file {args.api_key_file}: cannot read it ({e})") from e
    return os.environ.get("LLMLOOP_API_KEY") or os.environ.get("OPENAI_API_KEY")


def _first_url(data: bytes) -> str | None:
    """The url of the first line, if it has one (else parse_input reports that line)."""
    first = next((line for line in data.split(b"\n") if line.strip()), b"")
    try:
        url = json.loads(first).get("url")
    except (ValueError, AttributeError):
        return None
    return url if url in BATCH_ENDPOINTS else None


def _metadata(pairs: list[str]) -> dict[str, str] | None:
    metadata = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not key or not sep:
            raise BatchCliError(f"--metadata {pair!r}: expected KEY=VALUE")
        metadata[key] = value
    return metadata or None


def _when(unix_time: int | None) -> str:
    if unix_time is None:
        return "-"
    return datetime.fromtimestamp(unix_time).astimezone().strftime("%Y-%m-%d %H:%M:%S")
