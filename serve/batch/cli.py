"""``llmloop batch``: run a batch file offline on the engine, or submit and track one on a running
server (see ``llmloop batch --help``).

This module is the command line: its parsers, help and ``main``. ``run`` (``offline.py``) is
``vllm run-batch`` on our own app: each line goes through the same validation, safety layer, RAG
and request log as on the server, in process (``dispatch.py``), with no HTTP server and no key. The
other subcommands (``remote.py``) talk to a server with the official ``openai`` client.
"""

import argparse
import os
import sys

import openai

from llmloop.config_flags import add_field_flag, add_field_flags
from llmloop.errors import LLMLoopError
from llmloop.models import DEFAULT_MODEL
from llmloop.serve.batch import offline, remote
from llmloop.serve.batch.offline import ENGINE_FIELDS
from llmloop.serve.batch.protocol import BATCH_ENDPOINTS, MAX_METADATA_PAIRS
from llmloop.serve.config import EngineConfig, ServerConfig

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


def main(argv: list[str], client: openai.OpenAI | None = None) -> int:
    """``client``: the server to talk to (tests pass one over their app); default: from flags."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return offline.run(args, engine_for)
        return args.handler(args, client or remote.make_client(args))
    except openai.APIError as e:
        print(f"llmloop batch {args.command}: error: {remote.server_message(e)}", file=sys.stderr)
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
    add_field_flag(s, ServerConfig, "otlp_traces_endpoint", metavar="URL")
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
    server = argparse.ArgumentParser(add_help=False)
    r = server.add_argument_group("server")
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

    def add(name: str, handler, help_: str, parents=(server,), epilog: str = REMOTE_EPILOG):
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
        remote.submit,
        "Upload a batch file to a server and create a batch of it.",
        (server, follow),
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
        remote.status,
        "Show a batch; follow its progress until it ends.",
        (server, follow),
        "examples:\n  llmloop batch status batch_abc123\n  llmloop batch status batch_abc123 "
        "--json | jq .request_counts\n\n" + REMOTE_EPILOG,
    )
    p.add_argument("batch_id", metavar="BATCH_ID")
    p.add_argument("--json", action="store_true", help="Print the Batch object as JSON, once.")
    p.add_argument("--no-follow", action="store_true", help="Print it once, do not follow it.")

    p = add("list", remote.list_batches, "List batches, newest first.")
    p.add_argument("--limit", type=int, default=20, help="At most this many (default: 20).")

    p = add(
        "cancel", remote.cancel, "Cancel a batch: lines in flight are aborted, the rest not run."
    )
    p.add_argument("batch_id", metavar="BATCH_ID")

    p = add(
        "download",
        remote.download,
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


def engine_for(engine_config: EngineConfig):
    """(the factory that starts vLLM's engine, the model's sampling defaults); tests replace it
    here (``main`` passes it to ``offline.run`` at each call)."""
    import torch

    from llmloop.preflight import check_serving_install
    from llmloop.serve.cli import sampling_defaults
    from llmloop.serve.engine import start_engine

    check_serving_install()
    torch.set_num_threads(1)  # as `llmloop serve`: the engine's workers are processes of their own
    return (lambda: start_engine(engine_config)), sampling_defaults(engine_config.model_dir)
