"""``llmloop serve``: the OpenAI-compatible server over vLLM (see ``llmloop serve --help``)."""

import argparse
import json
import logging
from pathlib import Path

from llmloop import registry
from llmloop.config_docs import field_docs
from llmloop.models import DEFAULT_MODEL, resolve_model
from llmloop.serve.config import ConfigError, EngineConfig, ServerConfig
from llmloop.serve.protocol import DEFAULTABLE_FIELDS

EPILOG = """\
examples:
  llmloop serve                                   # the default model on 127.0.0.1:8000
  llmloop serve --adapter support=runs/support    # base model + a LoRA adapter (model="support")
  llmloop serve --api-key "$KEY" --host 0.0.0.0   # require `Authorization: Bearer $KEY`
  llmloop serve --model /models/llama --tensor-parallel-size 4   # scale out (vLLM options)

Clients use any OpenAI SDK with base_url http://HOST:PORT/v1. /health answers 503 while the
engine starts and 200 once it is ready; SIGTERM lets in-flight requests finish, then exits.
"""


def build_parser() -> argparse.ArgumentParser:
    engine_doc, server_doc = field_docs(EngineConfig), field_docs(ServerConfig)
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
    p.add_argument("--dtype", default="bfloat16", help=engine_doc["dtype"])
    p.add_argument("--quantization", help=engine_doc["quantization"])

    s = parser.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1", help=server_doc["host"])
    s.add_argument("--port", type=int, default=8000, help=server_doc["port"])
    s.add_argument(
        "--api-key",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY",
        help=server_doc["api_keys"],
    )
    s.add_argument(
        "--db",
        help="Request/feedback log database URL (default: SQLite at $LLMLOOP_HOME/llmloop.db; or postgresql://...).",
    )
    s.add_argument("--no-store", action="store_true", help="Do not log requests at all.")
    s.add_argument("--rag-index", help=server_doc["rag_index"])
    s.add_argument("--safety", metavar="POLICY.yaml", help=server_doc["safety_policy"])
    s.add_argument("--no-safety", action="store_true", help="Turn the safety layer off entirely.")
    s.add_argument(
        "--max-request-body-bytes",
        type=int,
        default=8 << 20,
        help=server_doc["max_request_body_bytes"],
    )
    s.add_argument("--drain-timeout", type=float, default=30.0, help=server_doc["drain_timeout_s"])
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.add_argument(
        "--disable-access-log", action="store_true", help="Do not log one line per HTTP request."
    )

    e = parser.add_argument_group("engine (vLLM options, passed through)")
    e.add_argument("--max-num-seqs", type=int, default=64, help=engine_doc["max_num_seqs"])
    e.add_argument(
        "--max-waiting-requests", type=int, default=512, help=engine_doc["max_waiting_requests"]
    )
    e.add_argument("--max-model-len", type=int, help=engine_doc["max_model_len"])
    e.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=0.9,
        help=engine_doc["gpu_memory_utilization"],
    )
    e.add_argument("--kv-cache-memory-bytes", type=int, help=engine_doc["kv_cache_memory_bytes"])
    e.add_argument(
        "--tensor-parallel-size",
        "-tp",
        type=int,
        default=1,
        help=engine_doc["tensor_parallel_size"],
    )
    e.add_argument(
        "--pipeline-parallel-size",
        "-pp",
        type=int,
        default=1,
        help=engine_doc["pipeline_parallel_size"],
    )
    e.add_argument(
        "--data-parallel-size", "-dp", type=int, default=1, help=engine_doc["data_parallel_size"]
    )
    e.add_argument(
        "--distributed-executor-backend",
        choices=["mp", "ray"],
        help=engine_doc["distributed_executor_backend"],
    )
    e.add_argument(
        "--no-enforce-eager",
        action="store_true",
        help="Allow graph capture / torch.compile (GPU: faster steps, slower start).",
    )
    e.add_argument(
        "--enable-lora",
        action="store_true",
        help="Serve LoRA adapters: needed for /v1/load_lora_adapter; implied by --adapter. Off by "
        "default, as in vLLM: once enabled, the LoRA kernels run on every engine step.",
    )
    e.add_argument("--max-lora-rank", type=int, default=64, help=engine_doc["max_lora_rank"])
    e.add_argument("--max-loras", type=int, default=4, help=engine_doc["max_loras"])
    e.add_argument("--seed", type=int, default=0, help=engine_doc["seed"])
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    model_dir = resolve_model(args.model)
    engine_config = EngineConfig(
        model_dir=model_dir,
        served_model_name=args.served_model_name or args.model,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        max_waiting_requests=args.max_waiting_requests,
        enforce_eager=not args.no_enforce_eager,
        gpu_memory_utilization=args.gpu_memory_utilization,
        kv_cache_memory_bytes=args.kv_cache_memory_bytes,
        tensor_parallel_size=args.tensor_parallel_size,
        pipeline_parallel_size=args.pipeline_parallel_size,
        data_parallel_size=args.data_parallel_size,
        distributed_executor_backend=args.distributed_executor_backend,
        quantization=args.quantization,
        enable_lora=args.enable_lora or bool(args.adapter),
        max_lora_rank=args.max_lora_rank,
        max_loras=args.max_loras,
        seed=args.seed,
    )
    server_config = ServerConfig(
        host=args.host,
        port=args.port,
        api_keys=tuple(args.api_key),
        adapters=tuple(parse_adapter(spec) for spec in args.adapter),
        max_request_body_bytes=args.max_request_body_bytes,
        drain_timeout_s=args.drain_timeout,
        db_url=args.db,
        store_requests=not args.no_store,
        rag_index=args.rag_index,
        safety_policy=args.safety,
        safety=not args.no_safety,
    )
    return run_server(server_config, engine_config, args.log_level, not args.disable_access_log)


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
