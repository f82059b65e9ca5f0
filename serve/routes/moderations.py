"""``POST /v1/moderations``: OpenAI's moderation shape with llmloop's harm categories
(in the spirit of Llama Guard's: violent_crimes, weapons_mass_harm, self_harm, hate, ...)."""

import asyncio
import uuid

from fastapi import APIRouter, FastAPI, Request

from serve.protocol import ModerationRequest, ModerationResponse, ModerationResult

router = APIRouter()
MODERATION_MODEL = "llmloop-harm-minilm"


@router.post("/v1/moderations", response_model=ModerationResponse)
async def create_moderation(body: ModerationRequest, request: Request) -> ModerationResponse:
    classifications = await asyncio.to_thread(_classify, request.app, body.texts())
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


def _classify(app: FastAPI, texts: list[str]):
    """The guardrails' classifier; loaded here on first use when the safety layer is off."""
    if app.state.guardrails is not None:
        return app.state.guardrails.classifier.classify(texts)
    with app.state.lazy_load_lock:
        if app.state.harm_classifier is None:
            from safety.harm import HarmClassifier

            app.state.harm_classifier = HarmClassifier.load()
    return app.state.harm_classifier.classify(texts)
