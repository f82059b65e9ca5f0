"""Load and unload LoRA adapters at run time (vLLM's endpoint names and bodies)."""

import logging
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse

from llmloop import registry
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
    if body.lora_name == engine.model_name or any(
        a.name == body.lora_name for a in engine.list_loras()
    ):
        raise BadRequestError(
            f"a model named {body.lora_name!r} is already served", param="lora_name"
        )
    path = Path(body.lora_path).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise BadRequestError(
            f"{body.lora_path} is not a PEFT adapter directory (no adapter_config.json)",
            param="lora_path",
        )
    try:
        await load_adapter(request.app, engine, body.lora_name, str(path.resolve()))
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


async def load_adapter(app: FastAPI, engine: Engine, name: str, path: str) -> None:
    """Load into the engine and note the registry version (for the request log)."""
    await engine.add_lora(name, path)
    artifact = registry.find_by_path(path)
    app.state.adapter_versions[name] = artifact.version if artifact else None
    logger.info("loaded adapter %s from %s", name, path)
