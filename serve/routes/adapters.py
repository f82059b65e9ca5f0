"""Load and unload LoRA adapters at run time (vLLM's endpoint names and bodies)."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from serve.deps import EngineDep
from serve.engine_api import EngineRequestError
from serve.errors import BadRequestError, NotFoundError
from serve.protocol import LoadLoRAAdapterRequest, UnloadLoRAAdapterRequest

router = APIRouter()


@router.post("/v1/load_lora_adapter", response_class=PlainTextResponse)
async def load_lora_adapter(body: LoadLoRAAdapterRequest, engine: EngineDep) -> str:
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
        await engine.add_lora(body.lora_name, str(path.resolve()))
    except EngineRequestError as e:
        raise BadRequestError(str(e), param="lora_path") from e
    return f"Success: LoRA adapter '{body.lora_name}' added successfully."


@router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse)
async def unload_lora_adapter(body: UnloadLoRAAdapterRequest, engine: EngineDep) -> str:
    if not any(a.name == body.lora_name for a in engine.list_loras()):
        raise NotFoundError(f"no adapter named {body.lora_name!r} is loaded", param="lora_name")
    await engine.remove_lora(body.lora_name)
    return f"Success: LoRA adapter '{body.lora_name}' removed successfully."
