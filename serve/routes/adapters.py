"""Load and unload LoRA adapters at run time (vLLM's endpoint names and bodies)."""

import logging
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse

from llmloop import registry
from llmloop.paths import adapters_dir
from llmloop.serve.auth.deps import require_admin
from llmloop.serve.deps import EngineDep
from llmloop.serve.engine_api import Engine, EngineRequestError
from llmloop.serve.errors import BadRequestError, NotFoundError
from llmloop.serve.protocol import LoadLoRAAdapterRequest, UnloadLoRAAdapterRequest

logger = logging.getLogger(__name__)
router = APIRouter(dependencies=[Depends(require_admin)])  # scope: admin


@router.post("/v1/load_lora_adapter", response_class=PlainTextResponse)
async def load_lora_adapter(
    body: LoadLoRAAdapterRequest, request: Request, engine: EngineDep
) -> str:
    served = any(a.name == body.lora_name for a in engine.list_loras())
    if body.lora_name == engine.model_name or (served and not body.load_inplace):
        raise BadRequestError(
            f"a model named {body.lora_name!r} is already served"
            + ("; pass load_inplace: true to replace it" if served else ""),
            param="lora_name",
        )
    path = adapter_dir(body.lora_path)
    try:
        if served:
            await replace_adapter(request.app, engine, body.lora_name, path)
        else:
            await load_adapter(request.app, engine, body.lora_name, path)
    except EngineRequestError as e:
        raise BadRequestError(str(e), param="lora_path") from e
    return f"Success: LoRA adapter '{body.lora_name}' added successfully."


@router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse)
async def unload_lora_adapter(
    body: UnloadLoRAAdapterRequest, request: Request, engine: EngineDep
) -> str:
    if not any(a.name == body.lora_name for a in engine.list_loras()):
        raise NotFoundError(f"no adapter named {body.lora_name!r} is loaded", param="lora_name")
    await engine.remove_lora(body.lora_name)
    request.app.state.adapter_versions.pop(body.lora_name, None)
    return f"Success: LoRA adapter '{body.lora_name}' removed successfully."


def adapter_dir(lora_path: str) -> str:
    """A registry ref (``NAME``, ``NAME@VERSION``) or a directory inside the artifact store
    (``$LLMLOOP_HOME/adapters``, or a registered adapter's dir): never any other path on the
    host, so a key cannot make the server read files it chooses."""
    name, _, version = lora_path.partition("@")
    artifact = registry.resolve(name, int(version) if version.isdigit() else None)
    if artifact is not None and artifact.kind == "adapter":
        path = Path(artifact.path)
    else:
        path = Path(lora_path).expanduser().resolve()  # symlinks and .. resolved before the check
        registered = registry.find_by_path(path)
        if not (
            path.is_relative_to(adapters_dir().resolve())
            or (registered and registered.kind == "adapter")
        ):
            raise BadRequestError(
                f"lora_path {lora_path!r} is neither a registered adapter (NAME or NAME@VERSION: "
                "`llmloop models list`) nor a directory under $LLMLOOP_HOME/adapters",
                param="lora_path",
            )
    if not (path / "adapter_config.json").is_file():
        raise BadRequestError(
            f"{lora_path} is not a PEFT adapter directory (no adapter_config.json)",
            param="lora_path",
        )
    return str(path)


async def replace_adapter(app: FastAPI, engine: Engine, name: str, path: str) -> None:
    """Swap the adapter served as ``name``; if the new one fails to load, the old one is back."""
    old_path = next(a.path for a in engine.list_loras() if a.name == name)
    await engine.remove_lora(name)
    try:
        await load_adapter(app, engine, name, path)
    except BaseException:
        await load_adapter(app, engine, name, old_path)
        raise


async def load_adapter(app: FastAPI, engine: Engine, name: str, path: str) -> None:
    """Load into the engine and note the registry version (for the request log)."""
    await engine.add_lora(name, path)
    artifact = registry.find_by_path(path)
    app.state.adapter_versions[name] = artifact.version if artifact else None
    logger.info("loaded adapter %s from %s", name, path)
