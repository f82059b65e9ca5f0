"""``POST /v1/embeddings``: the embedder the RAG indexes use (all-MiniLM-L6-v2), OpenAI's shape."""

import asyncio
import base64

from fastapi import APIRouter, Depends, Request

from llmloop.models import DEFAULT_EMBEDDER
from llmloop.serve.auth.deps import limit_infer
from llmloop.serve.errors import BadRequestError, NotFoundError
from llmloop.serve.protocol import Embedding, EmbeddingRequest, EmbeddingResponse, UsageInfo

router = APIRouter(dependencies=[Depends(limit_infer)])  # scope: infer, rate-limited


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def create_embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingResponse:
    texts = body.texts()
    if any(not text for text in texts):
        raise BadRequestError("input: texts must not be empty", param="input")
    vectors, num_tokens, name = await asyncio.to_thread(
        _embed, request.app.state.retrieval, texts, body
    )
    data = [
        Embedding(index=i, embedding=_encode(vector, body.encoding_format))
        for i, vector in enumerate(vectors)
    ]
    return EmbeddingResponse(data=data, model=name, usage=UsageInfo.of(num_tokens, 0))


def _embed(retrieval, texts: list[str], body: EmbeddingRequest):
    if body.model != DEFAULT_EMBEDDER:  # checked before the embedder is loaded
        raise NotFoundError(
            f"The model `{body.model}` does not exist for embeddings; use `{DEFAULT_EMBEDDER}`",
            param="model",
            code="model_not_found",
        )
    embedder = retrieval.embedder()
    if body.dimensions is not None and body.dimensions != embedder.dim:
        raise BadRequestError(f"dimensions: {embedder.name} has {embedder.dim}", param="dimensions")
    return embedder.encode(texts), sum(embedder.count_tokens(texts)), embedder.name


def _encode(vector, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # float32 little-endian, as OpenAI's SDK decodes it
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()
