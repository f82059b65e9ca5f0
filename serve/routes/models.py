"""``GET /v1/models``: routes (``root``: the primary version), the base model and every loaded
adapter (``parent`` = the base); a key restricted to some models sees those."""

import time

from fastapi import APIRouter, Depends, Request

from llmloop.serve.auth.deps import request_key, require_infer
from llmloop.serve.deps import EngineDep, may_use
from llmloop.serve.protocol import ModelCard, ModelList

router = APIRouter(dependencies=[Depends(require_infer)])  # scope: infer
_STARTED = int(time.time())


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request, engine: EngineDep) -> ModelList:
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
    table = request.app.state.routes
    routes = [
        ModelCard(
            id=route.name,
            created=int(route.updated),
            root=route.primary,
            parent=engine.model_name,
            max_model_len=engine.max_model_len,
        )
        for route in (table.routes.values() if table is not None else ())
    ]
    key = request_key(request)
    visible = [card for card in (*routes, base, *adapters) if may_use(key, card.id)]
    return ModelList(data=visible)
