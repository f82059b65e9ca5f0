"""``llmloop batch run``: answer a batch file offline, on the engine in this process.

Our app is built in process (no HTTP server, no key) and every line goes through it as on the
server (``dispatch.py``); answers are appended to the output as they finish, so a killed run resumes
where it stopped.
"""

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llmloop.errors import LLMLoopError
from llmloop.models import resolve_model
from llmloop.serve.batch.dispatch import Dispatcher, LineOwner
from llmloop.serve.batch.protocol import BatchOutputLine
from llmloop.serve.batch.validate import MAX_LINES, parse_input
from llmloop.serve.config import ConfigError, EngineConfig, ServerConfig

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
EngineFor = Callable[[EngineConfig], tuple[Callable[[], Any], dict]]
"""What ``run`` starts its engine with: ``cli.engine_for``, or a test's fake."""


class BatchCliError(LLMLoopError):
    pass


def run(args: argparse.Namespace, engine_for: EngineFor) -> int:
    """``engine_for``: (the factory that starts the engine, the model's sampling defaults) of an
    engine config; the CLI passes its own, which tests replace."""
    input_path, output = Path(args.input), Path(args.output)
    parsed = parse_input(read_input(input_path), None, args.max_request_body_bytes)
    if not parsed.ok:
        print_input_errors(input_path, parsed.errors)
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
        otlp_traces_endpoint=args.otlp_traces_endpoint,
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
        otlp_traces_endpoint=args.otlp_traces_endpoint,
    )
    return server_config, engine_config


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


# -- the input file, as `batch submit` reads it too ---------------------------------------


def read_input(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise BatchCliError(f"{path}: cannot read it ({e.strerror})") from e


def print_input_errors(path: Path, errors: list[dict]) -> None:
    for error in errors:
        where = f"{path}:{error['line']}" if error["line"] is not None else str(path)
        print(f"{where}: {error['code']}: {error['message']}", file=sys.stderr)
    print(
        f"{path}: fix the lines above; nothing was run (at most {MAX_LINES} lines, each "
        '{"custom_id", "method": "POST", "url", "body"})',
        file=sys.stderr,
    )
