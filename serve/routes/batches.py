"""``/v1/batches``: create, retrieve, list and cancel batches (OpenAI's Batch API). The work
itself is the batch worker's (``serve/batch/runner.py``); a batch belongs to the key that made it
(an admin key sees every batch), and another key gets 404."""

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from llmloop.serve.auth.deps import limit_infer, require_infer
from llmloop.serve.auth.keys import ApiKey
from llmloop.serve.batch.protocol import (
    BatchCreateRequest,
    BatchList,
    BatchObject,
    new_batch_id,
    window_seconds,
)
from llmloop.serve.batch.state import ID_PATTERN, IdPath, batch_state, owner_of, visible_to
from llmloop.serve.errors import BadRequestError, ConflictError, NotFoundError, RateLimitError

# scope: infer (its own batches), admin (every batch); creating one counts against rate limits
router = APIRouter()
MAX_ACTIVE_BATCHES_PER_KEY = 100
"""Batches one key may have unfinished at once (each holds up to 50,000 lines)."""
KeyDep = Annotated[ApiKey | None, Depends(require_infer)]


@router.post("/v1/batches", response_model=BatchObject, dependencies=[Depends(limit_infer)])
async def create_batch(body: BatchCreateRequest, request: Request, key: KeyDep) -> BatchObject:
    state = batch_state(request)
    file = await asyncio.to_thread(state.store.get_file, body.input_file_id, visible_to(key))
    if file is None:
        raise NotFoundError(f"No such File object: {body.input_file_id}", param="input_file_id")
    if file.purpose != "batch":
        raise BadRequestError(
            f"input_file_id: the file's purpose is {file.purpose!r}; upload it with purpose=batch",
            param="input_file_id",
        )
    api_key_id, project = owner_of(key)
    active = await asyncio.to_thread(state.store.count_active_batches, api_key_id)
    if active >= MAX_ACTIVE_BATCHES_PER_KEY:
        raise RateLimitError(
            f"this key has {active} unfinished batches, the most it may have; wait for some to "
            "finish or cancel them",
            code="batch_limit_exceeded",
            headers={"retry-after": "60"},
        )
    if await asyncio.to_thread(state.store.stored_bytes, api_key_id) >= state.max_stored_bytes:
        raise BadRequestError(
            "this key's files fill its storage (--max-stored-bytes-per-key), leaving no room "
            "for the batch's output; delete some files first",
            code="storage_limit_exceeded",
        )
    now = time.time()
    row = await asyncio.to_thread(
        state.store.create_batch,
        id=new_batch_id(),
        created=now,
        api_key_id=api_key_id,
        project=project,
        endpoint=body.endpoint,
        input_file_id=body.input_file_id,
        completion_window=body.completion_window,
        expires_at=now + window_seconds(body.completion_window),
        user_metadata=body.metadata,
    )
    state.wake()
    return BatchObject.of(row)


@router.get("/v1/batches", response_model=BatchList)
async def list_batches(
    request: Request,
    key: KeyDep,
    after: Annotated[str | None, Query(max_length=64, pattern=ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> BatchList:
    store = batch_state(request).store
    page = await asyncio.to_thread(store.list_batches, visible_to(key), after, limit)
    return BatchList.page([BatchObject.of(row) for row in page.rows], page.has_more)


@router.get("/v1/batches/{batch_id}", response_model=BatchObject)
async def retrieve_batch(batch_id: IdPath, request: Request, key: KeyDep) -> BatchObject:
    store = batch_state(request).store
    row = await asyncio.to_thread(store.get_batch, batch_id, visible_to(key))
    if row is None:
        raise _not_found(batch_id)
    return BatchObject.of(row)


@router.post("/v1/batches/{batch_id}/cancel", response_model=BatchObject)
async def cancel_batch(batch_id: IdPath, request: Request, key: KeyDep) -> BatchObject:
    state = batch_state(request)
    row = await asyncio.to_thread(state.store.cancel_batch, batch_id, visible_to(key))
    if row is None:
        raise _not_found(batch_id)
    if row.status not in ("cancelling", "cancelled"):
        raise ConflictError(
            f"batch {batch_id} is {row.status}; only a validating or in-progress batch can be "
            "cancelled",
            code="batch_not_cancellable",
        )
    state.wake()
    return BatchObject.of(row)


def _not_found(batch_id: str) -> NotFoundError:
    return NotFoundError(f"No such Batch object: {batch_id[:64]}", param="batch_id")
