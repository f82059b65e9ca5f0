"""``llmloop`` console script: maps each subcommand to the ``main(argv)`` of the package owning it.

Packages are imported only when their subcommand runs, so ``llmloop --help`` and light commands
never pay for torch or vLLM.
"""

import importlib
import sys

from llmloop import __version__
from llmloop.errors import LLMLoopError

# subcommand -> (module whose main(argv) -> int handles it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": (
        "llmloop.serve.cli",
        "Serve a model and its adapters over the OpenAI API (vLLM engine).",
    ),
    "finetune": (
        "llmloop.finetune.cli",
        "Fine-tune (sft|dpo|kto) with LoRA/QLoRA; merge or quantize.",
    ),
    "cluster": (
        "llmloop.serve.cluster",
        "Start N serve replicas on one database behind vLLM's router on this machine; stop them.",
    ),
    "batch": (
        "llmloop.serve.batch.cli",
        "Run a batch file offline, or submit and track one on a server.",
    ),
    "keys": ("llmloop.serve.auth.cli", "Create, list and revoke scoped API keys."),
    "deploy": (
        "llmloop.serve.routing.cli",
        "Route model names to versions: split, canary, shadow, promote, rollback.",
    ),
    "models": (
        "llmloop.models_cli",
        "List base models and adapters; register an adapter trained elsewhere.",
    ),
    "rag": ("llmloop.rag.cli", "Index documents and query them (dense + BM25)."),
    "safety": ("llmloop.safety.cli", "Scan text for PII and classify harmful content."),
    "feedback": (
        "llmloop.feedback.cli",
        "Export logged requests and feedback as SFT/DPO/KTO data.",
    ),
    "monitor": (
        "llmloop.feedback.monitor.cli",
        "Report traffic, latency, quality and drift from the log; watch them as metrics.",
    ),
    "eval": (
        "llmloop.evals.cli",
        "Run evaluation tasks against an OpenAI-compatible server; compare runs.",
    ),
    "loop": (
        "llmloop.finetune.loop",
        "Run the loop once for a route: feedback -> export -> fine-tune -> eval gate -> canary.",
    ),
    "bench": (
        "llmloop.evals.bench",
        "Benchmark an OpenAI-compatible server (TTFT, TPOT, ITL, throughput).",
    ),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"llmloop {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"llmloop: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    try:
        return module.main(rest) or 0
    except LLMLoopError as e:
        print(f"llmloop {command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return (
        "usage: llmloop COMMAND [ARGS]\n\n"
        "The whole loop: finetune -> serve -> guard -> retrieve -> log -> label -> finetune.\n\n"
        "commands:\n"
        + "\n".join(lines)
        + "\n\nRun `llmloop COMMAND --help` for a command's options."
    )


if __name__ == "__main__":
    sys.exit(main())
