"""``POST /v1/moderations``: OpenAI's moderation shape with llmloop's harm categories
(in the spirit of Llama Guard's: violent_crimes, weapons_mass_harm, self_harm, hate, ...)."""

import asyncio
import uuid

from fastapi import APIRouter, Depends, FastAPI, Request

from llmloop.serve.auth.deps import limit_infer
from llmloop.serve.protocol import ModerationRequest, ModerationResponse, ModerationResult

router = APIRouter(dependencies=[Depends(limit_infer)])  # scope: infer, rate-limited
MODERATION_MODEL = "llmloop-harm-minilm"


@router.post("/v1/moderations", response_model=ModerationResponse)
async def create_moderation(body: ModerationRequest, request: Request) -> ModerationResponse:
    guardrails = request.app.state.guardrails
    if guardrails is not None:  # batched with the requests' own safety checks
        classifications = await guardrails.classify(body.texts())
    else:
        classifications = await asyncio.to_thread(_classify_unguarded, request.app, body.texts())
    return ModerationResponse(
        id=f"modr-{uuid.uuid4().hex}",
        model=MODERATION_MODEL,
        results=[
            ModerationResult(
                flagged=c.flagged, categories=c.categories, category_scores=c.category_scores
            )
            for c in classifications
        ],
    )


def _classify_unguarded(app: FastAPI, texts: list[str]):
    """With the safety layer off, the classifier is loaded here on first use."""
    with app.state.lazy_load_lock:
        if app.state.harm_classifier is None:
            from llmloop.safety.multilingual import load_classifier

            app.state.harm_classifier = load_classifier()  # English: MiniLM, the rest: e5
    return app.state.harm_classifier.classify(texts)
