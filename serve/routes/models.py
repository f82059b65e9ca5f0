"""``GET /v1/models``: the base model and every loaded adapter (``parent`` = the base)."""

import time

from fastapi import APIRouter, Depends

from llmloop.serve.auth.deps import require_infer
from llmloop.serve.deps import EngineDep
from llmloop.serve.protocol import ModelCard, ModelList

router = APIRouter(dependencies=[Depends(require_infer)])  # scope: infer
_STARTED = int(time.time())


@router.get("/v1/models", response_model=ModelList)
async def list_models(engine: EngineDep) -> ModelList:
    base = ModelCard(
        id=engine.model_name,
        created=_STARTED,
        root=engine.model_name,
        max_model_len=engine.max_model_len,
    )
    adapters = [
        ModelCard(
            id=a.name,
            created=a.created,
            root=a.path,
            parent=engine.model_name,
            max_model_len=engine.max_model_len,
        )
        for a in engine.list_loras()
    ]
    return ModelList(data=[base, *adapters])
