"""``llmloop models``: list what the registry holds (newest version first), and register a PEFT
adapter trained elsewhere as the next version of a name."""

import argparse
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from llmloop import registry
from llmloop.errors import LLMLoopError
from llmloop.paths import adapters_dir, models_dir

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""As a route name: ``NAME@VERSION`` names a version, so no '@'."""
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
MAX_ADAPTER_FILES = 1000
HASH_CHARS = 12

EPILOG = """\
examples:
  llmloop models list
  llmloop models register ./my-lora --name support
  llmloop models register ./my-lora --name support --base HuggingFaceTB/SmolLM2-135M-Instruct
  llmloop deploy canary support --candidate support@4 --weight 10

`register` copies the adapter into $LLMLOOP_HOME/adapters/NAME/ and prints NAME@VERSION as the
last word of stdout; the same files registered again are the same version.
"""


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmloop models",
        description="The artifact registry: base models, adapters, merged and quantized weights.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="COMMAND")
    list_parser = sub.add_parser(
        "list", help="List base models and adapters with versions and metrics."
    )
    list_parser.add_argument("--json", action="store_true", help="One JSON object per line.")
    list_parser.set_defaults(run=_list)

    register = sub.add_parser(
        "register",
        help="Import a PEFT adapter trained elsewhere as the next version of NAME.",
        description="Copy a PEFT adapter directory (adapter_config.json and "
        "adapter_model.safetensors or .bin) into the artifact store and register it as the "
        "next version of NAME; prints NAME@VERSION last.",
    )
    register.add_argument("dir", type=Path, help="The adapter directory (PEFT's save_pretrained).")
    register.add_argument(
        "--name",
        required=True,
        help="The adapter's name in the registry (letters, digits, '.', '_', '-').",
    )
    register.add_argument(
        "--base",
        help="The base model it was trained on (default: adapter_config.json's "
        "base_model_name_or_path).",
    )
    register.set_defaults(run=_register)
    return parser


def _register(args: argparse.Namespace) -> int:
    artifact = register_adapter(args.dir, args.name, args.base)
    print(f"registered {args.dir} as adapter {artifact.name} (base {artifact.base}), stored in")
    print(f"{artifact.path}; use it as {artifact.name}@{artifact.version}")
    return 0


def register_adapter(src: Path, name: str, base: str | None = None) -> registry.Artifact:
    """Copy the adapter at ``src`` into ``adapters/NAME/<content hash>/`` (once per content) and
    register that copy: the registry points at files nobody else edits or deletes."""
    if not NAME.fullmatch(name):
        raise LLMLoopError(
            f"--name {name!r}: use 1-128 letters, digits, '.', '_' or '-' (no '@': "
            "NAME@VERSION names a version)"
        )
    config = check_adapter_dir(src)
    base = base or config.get("base_model_name_or_path")
    if not base:
        raise LLMLoopError(
            f"{src}/adapter_config.json names no base_model_name_or_path: pass --base MODEL"
        )
    dest = adapters_dir() / name / content_hash(src)
    known = registry.find_by_path(dest)
    if known is not None and known.base != str(base):
        raise LLMLoopError(
            f"{src} is already {known.name}@{known.version}, on base {known.base}; a version's "
            "base never changes (register it under another name)"
        )
    if not dest.exists():
        try:
            _copy_atomically(src, dest)
        except (OSError, shutil.Error) as e:
            raise LLMLoopError(f"cannot copy {src} into the artifact store: {e}") from e
    return registry.register(name, dest, "adapter", base=str(base))


def check_adapter_dir(src: Path) -> dict:
    """The adapter's ``adapter_config.json``, once ``src`` is a PEFT adapter directory."""
    if not src.is_dir():
        raise LLMLoopError(f"{src} is not a directory: give the adapter's directory")
    config_path = src / "adapter_config.json"
    if not config_path.is_file():
        raise LLMLoopError(f"{src} is not a PEFT adapter directory (no adapter_config.json)")
    if not any((src / weights).is_file() for weights in ADAPTER_WEIGHTS):
        raise LLMLoopError(f"{src} has no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LLMLoopError(f"{config_path} is not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise LLMLoopError(f"{config_path} must hold a JSON object")
    return config


def content_hash(src: Path) -> str:
    """A short hash of every file's relative path and bytes: the same adapter, the same dir.
    Symbolic links are refused: what is copied must be what is hashed, and from ``src``."""
    links = [p for p in src.rglob("*") if p.is_symlink()]
    if links:
        raise LLMLoopError(
            f"{src} holds symbolic links ({links[0].relative_to(src)}); copy the real files in"
        )
    files = sorted(p for p in src.rglob("*") if p.is_file())
    if len(files) > MAX_ADAPTER_FILES:
        raise LLMLoopError(f"{src} holds {len(files)} files; an adapter has a few")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(src).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()[:HASH_CHARS]


def _copy_atomically(src: Path, dest: Path) -> None:
    """Copy beside ``dest``, then rename: a server never sees half an adapter."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide it from a server running as another user
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        os.rename(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not dest.is_dir():  # else the same content landed first, from another register
            raise


def _list(args: argparse.Namespace) -> int:
    rows = [registry.to_dict(a) for a in registry.list_artifacts()]
    registered = {r["path"] for r in rows}
    for model_dir in sorted(models_dir().glob("*/config.json")):  # prepared but never registered
        if str(model_dir.parent.resolve()) not in registered:
            rows.append(
                {
                    "name": model_dir.parent.name,
                    "version": 1,
                    "kind": "base",
                    "path": str(model_dir.parent),
                    "base": None,
                    "created": "",
                    "metrics": {},
                }
            )
    rows.sort(key=lambda r: (r["kind"] != "base", r["name"], -r["version"]))
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    if not rows:
        print(
            "No models yet: `llmloop serve` prepares the default model; `llmloop finetune` adds "
            "adapters; `llmloop models register` imports one."
        )
        return 0
    print(f"{'NAME':<32} {'VER':>3}  {'KIND':<9} {'BASE':<24} METRICS")
    for r in rows:
        metrics = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in sorted(r["metrics"].items())
            if not isinstance(v, dict)
        )
        print(f"{r['name']:<32} {r['version']:>3}  {r['kind']:<9} {r['base'] or '-':<24} {metrics}")
    return 0
