"""``/v1/files``: upload, list, retrieve, download and delete files (OpenAI's Files API), for
batch input; a batch's output and error files are listed here too.

A file belongs to the key that uploaded it (an admin key sees every file); another key gets 404,
as for a file that does not exist. Bytes live under ``$LLMLOOP_HOME/files``, rows in the log
database (``feedback/files.py``, ``feedback/batches.py``)."""

import asyncio
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from llmloop.feedback.files import FileTooLargeError
from llmloop.serve.auth.deps import limit_infer, require_infer
from llmloop.serve.auth.keys import ApiKey
from llmloop.serve.batch.protocol import (
    FILE_TTL_S,
    FileDeleted,
    FileList,
    FileObject,
    new_file_id,
)
from llmloop.serve.batch.state import ID_PATTERN, IdPath, batch_state, owner_of, visible_to
from llmloop.serve.errors import BadRequestError, NotFoundError, RequestTooLargeError

# scope: infer (its own files), admin (every file); uploads count against the key's rate limits
router = APIRouter()
KeyDep = Annotated[ApiKey | None, Depends(require_infer)]
UPLOAD_PURPOSES = ("batch",)
READ_CHUNK = 1 << 20


@router.post("/v1/files", response_model=FileObject, dependencies=[Depends(limit_infer)])
async def create_file(
    request: Request,
    key: KeyDep,
    file: Annotated[UploadFile, File(description="The JSONL file.")],
    purpose: Annotated[str, Form(max_length=32)],
) -> FileObject:
    if purpose not in UPLOAD_PURPOSES:
        raise BadRequestError(
            f"purpose: {purpose!r} is not supported; this server takes files for "
            f"{', '.join(UPLOAD_PURPOSES)}",
            param="purpose",
        )
    state = batch_state(request)
    api_key_id, project = owner_of(key)
    stored = await asyncio.to_thread(state.store.stored_bytes, api_key_id)
    room = state.max_stored_bytes - stored
    if room <= 0:
        raise _storage_full(stored)
    limit = min(state.max_file_bytes, room)
    file_id = new_file_id()
    chunks = iter(lambda: file.file.read(READ_CHUNK), b"")
    try:
        size = await asyncio.to_thread(state.blobs.write, file_id, chunks, limit)
    except FileTooLargeError as e:
        raise RequestTooLargeError(
            f"file: {e} (at most {state.max_file_bytes} bytes a file, and "
            f"{state.max_stored_bytes} stored per key)",
            param="file",
            code="file_too_large",
        ) from None
    if size == 0:
        state.blobs.delete(file_id)
        raise BadRequestError("file: the file is empty", param="file")
    now = time.time()
    row = await asyncio.to_thread(
        state.store.add_file,
        id=file_id,
        created=now,
        bytes=size,
        filename=_display_name(file.filename),
        purpose=purpose,
        expires_at=now + FILE_TTL_S,
        api_key_id=api_key_id,
        project=project,
    )
    # Uploads at once each saw room before writing: the one that overshot takes itself back.
    if (
        stored := await asyncio.to_thread(state.store.stored_bytes, api_key_id)
    ) > state.max_stored_bytes:
        await asyncio.to_thread(state.store.delete_file, file_id, None)
        await asyncio.to_thread(state.blobs.delete, file_id)
        raise _storage_full(stored - size)
    return FileObject.of(row)


@router.get("/v1/files", response_model=FileList)
async def list_files(
    request: Request,
    key: KeyDep,
    purpose: Literal["batch", "batch_output"] | None = None,
    after: Annotated[str | None, Query(max_length=64, pattern=ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
) -> FileList:
    store = batch_state(request).store
    page = await asyncio.to_thread(store.list_files, visible_to(key), purpose, after, limit, order)
    return FileList.page([FileObject.of(row) for row in page.rows], page.has_more)


@router.get("/v1/files/{file_id}", response_model=FileObject)
async def retrieve_file(file_id: IdPath, request: Request, key: KeyDep) -> FileObject:
    return FileObject.of(await _file(request, key, file_id))


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: IdPath, request: Request, key: KeyDep) -> FileResponse:
    row = await _file(request, key, file_id)
    path = batch_state(request).blobs.path(row.id)
    if not path.is_file():
        raise NotFoundError(f"the content of file {file_id!r} is gone", param="file_id")
    return FileResponse(path, media_type="application/octet-stream", filename=row.filename)


@router.delete("/v1/files/{file_id}", response_model=FileDeleted)
async def delete_file(file_id: IdPath, request: Request, key: KeyDep) -> FileDeleted:
    state = batch_state(request)
    if not await asyncio.to_thread(state.store.delete_file, file_id, visible_to(key)):
        raise _not_found(file_id)
    await asyncio.to_thread(state.blobs.delete, file_id)
    return FileDeleted(id=file_id)


async def _file(request: Request, key: ApiKey | None, file_id: str):
    store = batch_state(request).store
    row = await asyncio.to_thread(store.get_file, file_id, visible_to(key))
    if row is None:
        raise _not_found(file_id)
    return row


def _storage_full(stored: int) -> BadRequestError:
    return BadRequestError(
        f"this key stores {stored} bytes of files (uploads and batch outputs), its limit is "
        "--max-stored-bytes-per-key; delete some first",
        code="storage_limit_exceeded",
    )


def _display_name(filename: str | None) -> str:
    """The client's file name, for display only (never a path): its last part, printable."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).encode(errors="ignore").decode()
    return name[:256] or "upload.jsonl"


def _not_found(file_id: str) -> NotFoundError:
    return NotFoundError(f"No such File object: {file_id[:64]}", param="file_id")
