"""``llmloop batch``: run a batch file offline on the engine, or submit and track one on a running
server (see ``llmloop batch --help``).

``run`` is ``vllm run-batch`` on our own app: each line goes through the same validation, safety
layer, RAG and request log as on the server, in process (``dispatch.py``), with no HTTP server and
no key. The other subcommands talk to a server with the official ``openai`` client.
"""

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import openai
from tqdm import tqdm

from llmloop.config_flags import add_field_flag, add_field_flags
from llmloop.errors import LLMLoopError
from llmloop.models import DEFAULT_MODEL, resolve_model
from llmloop.serve.batch.dispatch import Dispatcher, LineOwner
from llmloop.serve.batch.protocol import BATCH_ENDPOINTS, MAX_METADATA_PAIRS, BatchOutputLine
from llmloop.serve.batch.validate import MAX_LINES, parse_input
from llmloop.serve.config import ConfigError, EngineConfig, ServerConfig

EPILOG = """\
examples:
  llmloop batch run requests.jsonl -o answers.jsonl     # offline, on the default model
  llmloop batch submit requests.jsonl --wait            # on a running server (OpenAI Batch API)
  llmloop batch status batch_abc123
  llmloop batch download batch_abc123 -o answers.jsonl

Input: one request a line, as OpenAI's batch input and `vllm run-batch`:
  {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}
Output: one answer a line, in any order:
  {"id": ..., "custom_id": "q1", "response": {"status_code": 200, "request_id": ..., "body": {...}}, "error": null}
See docs/batch.md.
"""

RUN_EPILOG = """\
examples:
  llmloop batch run requests.jsonl -o answers.jsonl            # the default model
  llmloop batch run requests.jsonl -o answers.jsonl --model /models/qwen --max-model-len 4096
  llmloop batch run requests.jsonl -o answers.jsonl            # again after a crash: resumes

Lines may mix /v1/chat/completions, /v1/completions and /v1/embeddings; a body's `model` is
--served-model-name (or an --adapter's name). Each line runs as the server would run it (safety
layer, RAG, request log) with no HTTP server and no key. A line the engine refuses (a bad
parameter, a prompt too long) is answered with that error in OUTPUT, as `vllm run-batch` does;
every custom_id gets exactly one line. If OUTPUT exists, the custom_ids already in it are skipped
and the rest appended, so a killed run is resumed by running the same command again.
"""

REMOTE_EPILOG = """\
The server is --base-url (default: $OPENAI_BASE_URL, else http://127.0.0.1:8000/v1); the key comes
from --api-key-file, $LLMLOOP_API_KEY or $OPENAI_API_KEY. A batch belongs to the key that created
it: another key gets 404, an admin key sees every batch.
"""

SUBMIT_EPILOG = f"""\
examples:
  llmloop batch submit requests.jsonl                   # prints the batch id last
  llmloop batch submit requests.jsonl --wait            # and follow it until it ends
  BATCH=$(llmloop batch submit requests.jsonl | tail -n1 | awk '{{print $NF}}')
  llmloop batch submit requests.jsonl --completion-window 2h --metadata team=search run=7

The file is checked here first (the server checks it again): every line must have the url
--endpoint, custom_ids must be unique. With --wait the exit status is 0 only if the batch
completed.

{REMOTE_EPILOG}"""

FINAL_STATUSES = ("completed", "failed", "expired", "cancelled")
OFFLINE = LineOwner("offline", None)
"""The owner of ``batch run``'s lines: no batch in the database, no key."""
OFFLINE_QUEUE_TIME_S = 7 * 86400.0
"""Offline, a line waits in the engine's queue for as long as the lines ahead of it take: nothing
interactive needs the engine, so the server's bound on queue time does not apply."""
ENGINE_FIELDS = (
    "dtype",
    "quantization",
    "max_num_seqs",
    "max_model_len",
    "gpu_memory_utilization",
    "kv_cache_memory_bytes",
    "enable_lora",
    "max_lora_rank",
    "seed",
    "tool_call_parser",
)


class BatchCliError(LLMLoopError):
    pass


def main(argv: list[str], client: openai.OpenAI | None = None) -> int:
    """``client``: the server to talk to (tests pass one over their app); default: from flags."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return run(args)
        return args.handler(args, client or make_client(args))
    except openai.APIError as e:
        print(f"llmloop batch {args.command}: error: {server_message(e)}", file=sys.stderr)
        return 1
    except LLMLoopError as e:
        print(f"llmloop batch {args.command}: error: {e}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmloop batch",
        description="Run a batch of OpenAI requests (a JSONL file) offline on the engine, or "
        "submit and track one on a running server (OpenAI's Batch API).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_parser(commands)
    _add_remote_parsers(commands)
    return parser


def _add_run_parser(commands) -> None:
    p = commands.add_parser(
        "run",
        help="Answer every line of a batch file offline, on the engine in this process.",
        description="Answer every line of INPUT on the engine in this process (no server), "
        "writing one answer a line to OUTPUT as each finishes. Resumable.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT.jsonl", help="The requests, one a line.")
    p.add_argument(
        "-o", "--output", required=True, metavar="OUTPUT.jsonl", help="Where answers go."
    )
    p.add_argument(
        "--concurrency",
        type=int,
        help="Lines in flight at once (default: 2 x --max-num-seqs, so the engine's queue never "
        "runs dry).",
    )
    m = p.add_argument_group("model")
    m.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"Model name or HF model directory (default: {DEFAULT_MODEL}).",
    )
    m.add_argument(
        "--served-model-name",
        help="The `model` the lines' bodies name (default: --model as given).",
    )
    m.add_argument(
        "--adapter",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME=PATH",
        help="LoRA adapter that lines use as model NAME (repeatable; implies --enable-lora).",
    )
    s = p.add_argument_group("around the engine (as `llmloop serve`)")
    add_field_flag(s, ServerConfig, "safety", help="Turn the safety layer off entirely.")
    add_field_flag(s, ServerConfig, "safety_policy", "--safety", metavar="POLICY.yaml")
    add_field_flag(s, ServerConfig, "rag_index")
    add_field_flag(s, ServerConfig, "db_url", "--db")
    add_field_flag(
        s, ServerConfig, "store_requests", "--no-store", help="Do not log the lines' requests."
    )
    add_field_flag(
        s,
        ServerConfig,
        "max_request_body_bytes",
        help="Largest input line in bytes, as the server's limit on a request (default: "
        "%(default)s).",
    )
    s.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    e = p.add_argument_group("engine (vLLM options, passed through)")
    add_field_flags(e, EngineConfig, *ENGINE_FIELDS)
    add_field_flag(e, EngineConfig, "tensor_parallel_size", "--tensor-parallel-size", "-tp")
    add_field_flag(
        e,
        EngineConfig,
        "enforce_eager",
        help="Allow graph capture / torch.compile (GPU: faster steps, slower start).",
    )


def _add_remote_parsers(commands) -> None:
    remote = argparse.ArgumentParser(add_help=False)
    r = remote.add_argument_group("server")
    r.add_argument(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL") or "http://127.0.0.1:8000/v1",
        help="The server's OpenAI API (default: $OPENAI_BASE_URL, else %(default)s).",
    )
    r.add_argument(
        "--api-key-file",
        metavar="PATH",
        help="A file holding the API key (default: $LLMLOOP_API_KEY, else $OPENAI_API_KEY).",
    )
    r.add_argument(
        "--api-key",
        metavar="KEY",
        help="The API key itself: every user of the host sees it in `ps`; prefer the above.",
    )
    follow = argparse.ArgumentParser(add_help=False)
    follow.add_argument(
        "--poll-interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="How often to ask the server while following a batch (default: %(default)s).",
    )

    def add(name: str, handler, help_: str, parents=(remote,), epilog: str = REMOTE_EPILOG):
        p = commands.add_parser(
            name,
            help=help_,
            description=help_,
            parents=list(parents),
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(handler=handler)
        return p

    p = add(
        "submit",
        submit,
        "Upload a batch file to a server and create a batch of it.",
        (remote, follow),
        SUBMIT_EPILOG,
    )
    p.add_argument("input", metavar="INPUT.jsonl", help="The requests, one a line.")
    p.add_argument(
        "--endpoint",
        choices=BATCH_ENDPOINTS,
        help="The url of every line (default: the url of the first line).",
    )
    p.add_argument(
        "--completion-window",
        default="24h",
        help="How long the batch may take: N followed by s, m, h or d, at most 7d; lines not "
        "answered by then are reported as expired (default: %(default)s).",
    )
    p.add_argument(
        "--metadata",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help=f"Labels stored with the batch (at most {MAX_METADATA_PAIRS}).",
    )
    p.add_argument("--wait", action="store_true", help="Follow the batch until it ends.")

    p = add(
        "status",
        status,
        "Show a batch; follow its progress until it ends.",
        (remote, follow),
        "examples:\n  llmloop batch status batch_abc123\n  llmloop batch status batch_abc123 "
        "--json | jq .request_counts\n\n" + REMOTE_EPILOG,
    )
    p.add_argument("batch_id", metavar="BATCH_ID")
    p.add_argument("--json", action="store_true", help="Print the Batch object as JSON, once.")
    p.add_argument("--no-follow", action="store_true", help="Print it once, do not follow it.")

    p = add("list", list_batches, "List batches, newest first.")
    p.add_argument("--limit", type=int, default=20, help="At most this many (default: 20).")

    p = add("cancel", cancel, "Cancel a batch: lines in flight are aborted, the rest not run.")
    p.add_argument("batch_id", metavar="BATCH_ID")

    p = add(
        "download",
        download,
        "Download the answers of a batch that has ended.",
        epilog="examples:\n  llmloop batch download batch_abc123 -o answers.jsonl\n"
        "  llmloop batch download batch_abc123 -o answers.jsonl --errors failed.jsonl\n\n"
        + REMOTE_EPILOG,
    )
    p.add_argument("batch_id", metavar="BATCH_ID")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUTPUT.jsonl",
        help="Where the answers go: the output file, and the error file's lines too unless "
        "--errors (so every custom_id is in it, as `llmloop batch run` writes it).",
    )
    p.add_argument("--errors", metavar="ERRORS.jsonl", help="Write the failed lines here instead.")


# -- offline: llmloop batch run -------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    input_path, output = Path(args.input), Path(args.output)
    parsed = parse_input(_read(input_path), None, args.max_request_body_bytes)
    if not parsed.ok:
        _print_errors(input_path, parsed.errors)
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    done = answered_ids(output)
    todo = [line for line in parsed.lines if line[0] not in done]
    skipped = len(parsed.lines) - len(todo)
    if not todo:
        print(f"{output}: all {skipped} lines are answered already", file=sys.stderr)
        return 0
    if skipped:
        print(f"{output}: resuming: {skipped} lines answered already, skipped", file=sys.stderr)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server_config, engine_config = build_run_configs(args)
    concurrency = args.concurrency or 2 * engine_config.max_num_seqs
    most = engine_config.max_num_seqs + engine_config.max_waiting_requests
    if not 1 <= concurrency <= most:
        raise ConfigError(
            f"--concurrency must be in 1..{most} (--max-num-seqs plus the "
            f"{engine_config.max_waiting_requests} requests the engine queues), got {concurrency}"
        )
    engine_factory, sampling_defaults = engine_for(engine_config)
    num_failed = asyncio.run(
        run_offline(
            server_config,
            engine_factory,
            sampling_defaults,
            todo,
            output,
            concurrency,
            (len(parsed.lines), skipped),
        )
    )
    print(f"{output}: {len(todo)} answers written, {num_failed} of them errors", file=sys.stderr)
    return 0


def build_run_configs(args: argparse.Namespace) -> tuple[ServerConfig, EngineConfig]:
    from llmloop.serve.cli import parse_adapter

    engine_config = EngineConfig(
        **{name: getattr(args, name) for name in ENGINE_FIELDS}
        | {"enable_lora": args.enable_lora or bool(args.adapter)},
        tensor_parallel_size=args.tensor_parallel_size,
        enforce_eager=args.enforce_eager,
        model_dir=resolve_model(args.model),
        served_model_name=args.served_model_name or args.model,
    )
    server_config = ServerConfig(
        safety=args.safety,
        safety_policy=args.safety_policy,
        rag_index=args.rag_index,
        db_url=args.db_url or os.environ.get("LLMLOOP_DB") or None,
        store_requests=args.store_requests,
        max_request_body_bytes=args.max_request_body_bytes,
        max_queue_time_s=OFFLINE_QUEUE_TIME_S,
        adapters=tuple(parse_adapter(spec) for spec in args.adapter),
    )
    return server_config, engine_config


def engine_for(engine_config: EngineConfig):
    """(the factory that starts vLLM's engine, the model's sampling defaults); tests replace it."""
    import torch

    from llmloop.preflight import check_serving_install
    from llmloop.serve.cli import sampling_defaults
    from llmloop.serve.engine import start_engine

    check_serving_install()
    torch.set_num_threads(1)  # as `llmloop serve`: the engine's workers are processes of their own
    return (lambda: start_engine(engine_config)), sampling_defaults(engine_config.model_dir)


async def run_offline(
    server_config: ServerConfig,
    engine_factory,
    sampling_defaults: dict,
    lines: list[tuple[str, str, str]],
    output: Path,
    concurrency: int,
    progress_of: tuple[int, int] = (0, 0),
) -> int:
    """Answer ``lines`` (custom_id, url, body) through the app, appending each answer to
    ``output`` as it comes; the number that failed. ``progress_of``: (lines in the file, lines
    answered before), for the progress bar."""
    from llmloop.serve.app import create_app
    from llmloop.serve.auth.keyring import KeyRing

    failures: list[BaseException] = []
    keyring = KeyRing()  # holds no key: the lines need none, whatever keys the database has
    app = create_app(
        server_config,
        engine_factory,
        sampling_defaults,
        failures.append,
        keyring=keyring,
        batch_worker=False,  # the database's batches are a server's to run, not ours
    )
    async with app.router.lifespan_context(app):
        while app.state.engine is None:  # the lifespan starts it in the background
            if failures:
                raise BatchCliError(f"the engine failed to start: {failures[0]}")
            await asyncio.sleep(0.05)
        dispatcher = Dispatcher(app)
        total, initial = progress_of
        progress = tqdm(total=total or len(lines), initial=initial, unit="line", desc="batch")
        try:
            with output.open("a", encoding="utf-8") as out, progress:
                return await _answer_all(
                    app.state.engine, dispatcher, lines, concurrency, out, progress
                )
        finally:
            await dispatcher.aclose()
            keyring.close()


async def _answer_all(engine, dispatcher: Dispatcher, lines, concurrency, out, progress) -> int:
    pending = iter(lines)  # shared by the workers: each line is taken once
    num_failed = 0

    async def worker() -> None:
        nonlocal num_failed
        for custom_id, url, body in pending:
            line = await _answer(dispatcher, custom_id, url, body)
            if line.response is not None and line.response.status_code >= 500:
                await _check_health(engine)  # a dead engine's 500s are not answers to keep
            out.write(line.model_dump_json() + "\n")
            out.flush()  # a killed run keeps every answer written so far
            num_failed += not line.succeeded
            progress.set_postfix(failed=num_failed, refresh=False)
            progress.update()

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, len(lines))):
                group.create_task(worker())
    except* BatchCliError as errors:
        raise errors.exceptions[0] from None
    return num_failed


async def _check_health(engine) -> None:
    try:
        await engine.check_health()
    except Exception as e:
        raise BatchCliError(
            f"the engine stopped ({type(e).__name__}: {e}); the answers so far are kept: run the "
            "same command again to resume"
        ) from e


async def _answer(dispatcher: Dispatcher, custom_id: str, url: str, body: str) -> BatchOutputLine:
    """The line's answer; a refusal for capacity (503) is retried after the delay it asks for,
    as the server's batch worker retries it, for as long as it takes."""
    while True:
        answer = await dispatcher.dispatch(OFFLINE, custom_id, url, body)
        if answer.retry_after_s is None:
            return answer.line
        await asyncio.sleep(answer.retry_after_s)


def answered_ids(output: Path) -> set[str]:
    """The custom_ids already in ``output``. A last line cut short (by a killed run) is cut off
    the file, so appending starts on a line of its own."""
    if not output.exists():
        return set()
    data = output.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) < len(data):
        with output.open("r+b") as f:
            f.truncate(len(whole))
    custom_ids = set()
    for number, raw in enumerate(whole.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            custom_ids.add(str(json.loads(raw)["custom_id"]))
        except (ValueError, KeyError, TypeError):
            raise BatchCliError(
                f"{output}:{number}: not an answer line (a JSON object with a custom_id); "
                "give -o a new file, or remove that line to resume"
            ) from None
    return custom_ids


# -- on a server: submit, status, list, cancel, download ------------------------------------


def make_client(args: argparse.Namespace) -> openai.OpenAI:
    return openai.OpenAI(base_url=args.base_url, api_key=_api_key(args) or "EMPTY")


def submit(args: argparse.Namespace, client: openai.OpenAI) -> int:
    input_path = Path(args.input)
    data = _read(input_path)
    endpoint = args.endpoint or _first_url(data)
    parsed = parse_input(data, endpoint, max_line_bytes=len(data))  # the server checks sizes
    if not parsed.ok:
        _print_errors(input_path, parsed.errors)
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


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise BatchCliError(f"{path}: cannot read it ({e.strerror})") from e


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


def _print_errors(path: Path, errors: list[dict]) -> None:
    for error in errors:
        where = f"{path}:{error['line']}" if error["line"] is not None else str(path)
        print(f"{where}: {error['code']}: {error['message']}", file=sys.stderr)
    print(
        f"{path}: fix the lines above; nothing was run (at most {MAX_LINES} lines, each "
        '{"custom_id", "method": "POST", "url", "body"})',
        file=sys.stderr,
    )


def _when(unix_time: int | None) -> str:
    if unix_time is None:
        return "-"
    return datetime.fromtimestamp(unix_time).astimezone().strftime("%Y-%m-%d %H:%M:%S")
