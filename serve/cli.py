"""``llmloop serve``: the OpenAI-compatible server over vLLM (see ``llmloop serve --help``)."""

import argparse
import dataclasses
import json
import logging
import os
from pathlib import Path

from llmloop import registry
from llmloop.config_docs import field_docs
from llmloop.config_flags import add_field_flag, add_field_flags
from llmloop.models import DEFAULT_MODEL, resolve_model
from llmloop.paths import default_db_url
from llmloop.preflight import check_serving_install
from llmloop.serve.config import ConfigError, EngineConfig, ServerConfig
from llmloop.serve.protocol import DEFAULTABLE_FIELDS

EPILOG = """\
examples:
  llmloop serve                                   # the default model on 127.0.0.1:8000
  llmloop serve --adapter support=runs/support    # base model + a LoRA adapter (model="support")
  LLMLOOP_API_KEY="$KEY" llmloop serve --host 0.0.0.0   # require `Authorization: Bearer $KEY`
  llmloop serve --model /models/llama --tensor-parallel-size 4   # scale out (vLLM options)

Clients use any OpenAI SDK with base_url http://HOST:PORT/v1. /health answers 503 while the
engine starts and 200 once it is ready; SIGTERM lets in-flight requests finish, then exits.

Secrets on the command line are visible to every user of the host (`ps`): pass keys as
$LLMLOOP_API_KEY or --api-key-file, and a database URL with a password as $LLMLOOP_DB or
--db-file.
"""


# Fields that no flag sets 1:1: their flags are written by hand below, or they do not come
# from the command line at all. tests/serve/test_cli_flags.py holds every other field to a flag.
FIELDS_WITHOUT_FLAG: dict[str, str] = {
    "model_dir": "--model, a name or dir resolved to a model dir",
    "served_model_name": "--served-model-name, whose default is --model as given",
    "api_keys": "--api-key, repeatable",
    "adapters": "--adapter NAME=PATH, repeatable",
    "default_sampling": "the model's generation_config.json",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmloop serve",
        description="Serve a model and its LoRA adapters over the OpenAI API, on vLLM's engine "
        "(continuous batching, paged KV cache, prefix caching).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p = parser.add_argument_group("model")
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"Model name or HF model directory (default: {DEFAULT_MODEL}, prepared from the shipped wheel on first use).",
    )
    p.add_argument(
        "--served-model-name",
        help="Name clients use for the base model (default: --model as given).",
    )
    p.add_argument(
        "--adapter",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME=PATH",
        help="LoRA adapter to serve as model NAME (repeatable). NAME alone: the newest registered artifact of that name.",
    )
    add_field_flags(p, EngineConfig, "dtype", "quantization")

    s = parser.add_argument_group("server")
    add_field_flags(s, ServerConfig, "host", "port")
    s.add_argument(
        "--api-key",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY",
        help=field_docs(ServerConfig)["api_keys"],
    )
    s.add_argument(
        "--api-key-file",
        metavar="PATH",
        help="A file of admin API keys, one per line, read at start (`ps` does not show them).",
    )
    add_field_flag(s, ServerConfig, "db_url", "--db")
    s.add_argument(
        "--db-file",
        metavar="PATH",
        help="A file holding the database URL, for one with a password (`ps` does not show it).",
    )
    add_field_flag(
        s, ServerConfig, "store_requests", "--no-store", help="Do not log requests at all."
    )
    add_field_flag(s, ServerConfig, "rag_index")
    add_field_flag(s, ServerConfig, "safety_policy", "--safety", metavar="POLICY.yaml")
    add_field_flag(s, ServerConfig, "safety", help="Turn the safety layer off entirely.")
    add_field_flags(s, ServerConfig, "public_metrics", "public_docs")
    add_field_flag(
        s, ServerConfig, "http_metrics", help="Leave HTTP requests out of /metrics (benchmarks)."
    )
    add_field_flag(s, ServerConfig, "max_request_body_bytes")
    add_field_flag(s, ServerConfig, "drain_timeout_s", "--drain-timeout")
    add_field_flag(s, ServerConfig, "max_queue_time_s", "--max-queue-time")
    add_field_flag(s, ServerConfig, "otlp_traces_endpoint", metavar="URL")
    b = parser.add_argument_group("files and batches (/v1/files, /v1/batches)")
    add_field_flags(
        b,
        ServerConfig,
        "max_file_bytes",
        "max_stored_bytes_per_key",
        "batch_concurrency",
        "batch_busy_concurrency",
    )
    add_field_flag(b, ServerConfig, "batch_lease_s", "--batch-lease")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.add_argument(
        "--disable-access-log", action="store_true", help="Do not log one line per HTTP request."
    )

    e = parser.add_argument_group("engine (vLLM options, passed through)")
    add_field_flags(
        e,
        EngineConfig,
        "max_num_seqs",
        "max_waiting_requests",
        "max_model_len",
        "gpu_memory_utilization",
        "kv_cache_memory_bytes",
    )
    add_field_flag(e, EngineConfig, "tensor_parallel_size", "--tensor-parallel-size", "-tp")
    add_field_flag(e, EngineConfig, "pipeline_parallel_size", "--pipeline-parallel-size", "-pp")
    add_field_flag(e, EngineConfig, "data_parallel_size", "--data-parallel-size", "-dp")
    add_field_flag(e, EngineConfig, "distributed_executor_backend", choices=["mp", "ray"])
    add_field_flag(
        e,
        EngineConfig,
        "enforce_eager",
        help="Allow graph capture / torch.compile (GPU: faster steps, slower start).",
    )
    add_field_flag(
        e,
        EngineConfig,
        "enable_lora",
        help="Serve LoRA adapters: needed for /v1/load_lora_adapter; implied by --adapter and by "
        "routes in the log database that name adapters (`llmloop deploy`). Off by default, as "
        "in vLLM: once enabled, the LoRA kernels run on every engine step.",
    )
    add_field_flags(e, EngineConfig, "max_lora_rank", "max_loras", "max_cpu_loras", "seed")
    add_field_flag(e, EngineConfig, "tool_call_parser")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    check_serving_install()
    server_config, engine_config = build_configs(args)
    if not engine_config.enable_lora and routes_name_adapters(
        server_config.db_url or default_db_url(), engine_config.served_model_name
    ):
        print("Routes in the log database name adapters: LoRA enabled.", flush=True)
        engine_config = dataclasses.replace(engine_config, enable_lora=True)
    return run_server(server_config, engine_config, args.log_level, not args.disable_access_log)


def build_configs(args: argparse.Namespace) -> tuple[ServerConfig, EngineConfig]:
    values = vars(args) | {
        "enable_lora": args.enable_lora or bool(args.adapter),
        "db_url": _db_url(args),
    }
    engine_config = EngineConfig(
        **_flag_values(EngineConfig, values),
        model_dir=resolve_model(args.model),
        served_model_name=args.served_model_name or args.model,
    )
    server_config = ServerConfig(
        **_flag_values(ServerConfig, values),
        api_keys=(
            *args.api_key,
            *(_read_secrets(args.api_key_file, "--api-key-file") if args.api_key_file else ()),
            *filter(None, [os.environ.get("LLMLOOP_API_KEY")]),
        ),
        adapters=tuple(parse_adapter(spec) for spec in args.adapter),
    )
    return server_config, engine_config


def routes_name_adapters(db_url: str, base_model: str) -> bool:
    """Whether a route (``llmloop deploy``) runs a version other than the base model, so the
    engine needs LoRA (a route added later to a server without it is reported, not served)."""
    from llmloop.feedback.db import create_db_engine
    from llmloop.feedback.routes import RouteStore

    engine = create_db_engine(db_url)
    try:
        routes = RouteStore(engine).all()
    except Exception:  # no routes table yet, or the database is down: the server says so later
        return False
    finally:
        engine.dispose()
    return any(ref != base_model for route in routes for ref in route.refs)


def _flag_values(cls: type, values: dict) -> dict:
    """The parsed flags that set fields of ``cls`` 1:1 (their ``dest`` is the field name)."""
    return {
        f.name: values[f.name] for f in dataclasses.fields(cls) if f.name not in FIELDS_WITHOUT_FLAG
    }


def _db_url(args: argparse.Namespace) -> str | None:
    """--db, else --db-file, else $LLMLOOP_DB (as `llmloop keys` reads it), else the default."""
    if args.db_url:
        return args.db_url
    if args.db_file:
        return _read_secrets(args.db_file, "--db-file")[0]
    return os.environ.get("LLMLOOP_DB") or None


def _read_secrets(path: str, flag: str) -> list[str]:
    """The non-blank lines of a secrets file, stripped."""
    try:
        lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{flag} {path}: cannot read it ({e})") from e
    secrets = [line.strip() for line in lines if line.strip()]
    if not secrets:
        raise ConfigError(f"{flag} {path}: the file is empty")
    return secrets


def parse_adapter(spec: str) -> tuple[str, str]:
    """``NAME=PATH`` → (NAME, PATH); ``NAME`` alone → the newest registered artifact NAME."""
    name, sep, path = spec.partition("=")
    if not name:
        raise ConfigError(f"--adapter {spec!r}: expected NAME=PATH")
    if not sep:
        artifact = registry.resolve(name)
        if artifact is None:
            raise ConfigError(
                f"--adapter {name!r}: no registered artifact of that name; use NAME=PATH"
            )
        path = artifact.path
    if not (Path(path).expanduser() / "adapter_config.json").is_file():
        raise ConfigError(
            f"--adapter {spec!r}: {path} is not a PEFT adapter dir (no adapter_config.json)"
        )
    return name, str(Path(path).expanduser().resolve())


def sampling_defaults(model_dir: Path) -> dict:
    """Sampling defaults from the model's generation_config.json, as vLLM applies them."""
    path = model_dir / "generation_config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    return {k: config[k] for k in DEFAULTABLE_FIELDS if config.get(k) is not None}


def run_server(
    server_config: ServerConfig, engine_config: EngineConfig, log_level: str, access_log: bool
) -> int:
    import torch
    import uvicorn

    from llmloop.serve.app import create_app
    from llmloop.serve.engine import start_engine

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # This process runs only small models (the safety classifier, the embedder) next to the
    # engine, whose workers are processes of their own: one intra-op thread keeps them from
    # fighting the engine for cores (with 2 threads on a busy 2-core host a 5 ms call took 800 ms).
    torch.set_num_threads(1)
    failures: list[BaseException] = []

    def on_engine_failure(error: BaseException) -> None:
        failures.append(error)
        server.should_exit = True

    app = create_app(
        server_config,
        lambda: start_engine(engine_config),
        sampling_defaults(engine_config.model_dir),
        on_engine_failure,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=server_config.host,
            port=server_config.port,
            log_level=log_level,
            access_log=access_log,
            timeout_graceful_shutdown=int(server_config.drain_timeout_s),
        )
    )
    server.run()
    return 1 if failures else 0
