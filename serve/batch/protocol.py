"""OpenAI's Files and Batches objects (``openai.types.FileObject``, ``openai.types.Batch``) and
the lines of a batch's input and output files."""

import re
import uuid
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from sqlalchemy.engine import Row

from llmloop.feedback.schema import BATCH_EVENTS
from llmloop.serve.protocol_base import OpenAIModel

ID_PATTERN = r"^[A-Za-z0-9_-]+$"
"""What our file and batch ids are made of; anything else cannot name one."""
BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
MAX_METADATA_PAIRS = 16
_WINDOW = re.compile(r"^([1-9][0-9]{0,5})([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW_S = 7 * 86400


FILE_TTL_S = 30 * 86400
"""Batch input, output and error files expire after 30 days, as OpenAI's do by default."""


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex[:24]}"


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4().hex[:24]}"


def window_seconds(window: str) -> int:
    """``"24h"`` → 86400."""
    match = _WINDOW.fullmatch(window)
    assert match, window
    return int(match.group(1)) * _UNIT_S[match.group(2)]


class FileObject(OpenAIModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None

    @classmethod
    def of(cls, row: Row) -> "FileObject":
        return cls(
            id=row.id,
            bytes=row.bytes,
            created_at=int(row.created),
            filename=row.filename,
            purpose=row.purpose,
            expires_at=int(row.expires_at) if row.expires_at is not None else None,
        )


class CursorList(OpenAIModel):
    """OpenAI's cursor-paginated list: the next page starts ``after`` its ``last_id``."""

    object: Literal["list"] = "list"
    data: list
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None

    @classmethod
    def page(cls, data: list, has_more: bool):
        return cls(
            data=data,
            has_more=has_more,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
        )


class FileList(CursorList):
    data: list[FileObject]


class FileDeleted(OpenAIModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class BatchCreateRequest(OpenAIModel):
    input_file_id: str = Field(max_length=64, pattern=ID_PATTERN)
    endpoint: Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]
    completion_window: str = Field(
        max_length=8,
        description='How long the batch may take: "24h" as OpenAI, or N followed by s, m, h or '
        "d, up to 7 days; lines not answered by then are reported as expired.",
    )
    metadata: dict[str, str] | None = None

    @field_validator("completion_window")
    @classmethod
    def _window(cls, window: str) -> str:
        match = _WINDOW.fullmatch(window)
        if not match or window_seconds(window) > MAX_WINDOW_S:
            raise ValueError('must be like "24h" (N followed by s, m, h or d), at most 7d')
        return window

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        if metadata is None:
            return None
        if len(metadata) > MAX_METADATA_PAIRS:
            raise ValueError(f"at most {MAX_METADATA_PAIRS} pairs")
        for key, value in metadata.items():
            if len(key) > 64 or len(value) > 512:
                raise ValueError("keys are at most 64 characters, values at most 512")
        return metadata


class BatchError(BaseModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class BatchRequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class BatchUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)


class BatchObject(OpenAIModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    expires_at: int | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts
    usage: BatchUsage
    metadata: dict[str, str] | None = None

    @classmethod
    def of(cls, row: Row) -> "BatchObject":
        events = {
            f"{event}_at": int(at)
            for event in BATCH_EVENTS
            if (at := getattr(row, f"{event}_at")) is not None
        }
        return cls(
            id=row.id,
            endpoint=row.endpoint,
            errors=BatchErrors(data=[BatchError(**e) for e in row.errors]) if row.errors else None,
            input_file_id=row.input_file_id,
            completion_window=row.completion_window,
            status=row.status,
            output_file_id=row.output_file_id,
            error_file_id=row.error_file_id,
            created_at=int(row.created),
            expires_at=int(row.expires_at),
            request_counts=BatchRequestCounts(
                total=row.request_total,
                completed=row.request_completed,
                failed=row.request_failed,
            ),
            usage=BatchUsage(
                input_tokens=row.input_tokens,
                output_tokens=row.output_tokens,
                total_tokens=row.input_tokens + row.output_tokens,
            ),
            metadata=row.user_metadata,
            **events,
        )


class BatchList(CursorList):
    data: list[BatchObject]


class BatchResponse(BaseModel):
    status_code: int
    request_id: str
    body: dict


class BatchLineError(BaseModel):
    code: str
    message: str


class BatchOutputLine(BaseModel):
    """One line of an output or error file (as ``vllm run-batch`` writes them too)."""

    id: str = Field(default_factory=lambda: f"batch_req_{uuid.uuid4().hex[:24]}")
    custom_id: str
    response: BatchResponse | None = None
    error: BatchLineError | None = None

    @property
    def succeeded(self) -> bool:
        return self.response is not None and 200 <= self.response.status_code < 300
