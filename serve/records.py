"""Hand every completion the server returns to the request log (``llmloop.feedback``).

Texts arrive here already redacted by the safety layer; ``submit`` never blocks or raises."""

import time

from fastapi import Request

from llmloop.feedback.record import CompletionRecord
from llmloop.serve.protocol import SamplingRequest


def log_completion(
    request: Request,
    body: SamplingRequest,
    *,
    request_id: str,
    endpoint: str,
    lora: str | None,
    started: float,
    choices: list[dict],
    prompt_tokens: int,
    completion_tokens: int,
    messages: list[dict] | None = None,
    prompt: str | None = None,
    citations: list[dict] | None = None,
) -> None:
    """``started``: ``time.monotonic()`` when the request arrived; ``choices``: index/text/finish_reason."""
    state = request.app.state
    if state.request_log is None or body.store is False:
        return
    state.request_log.submit(
        CompletionRecord(
            id=request_id,
            created=time.time(),
            endpoint=endpoint,
            model=body.model,
            base_model=state.engine.model_name,
            adapter=lora,
            adapter_version=state.adapter_versions.get(lora) if lora else None,
            messages=messages,
            prompt=prompt,
            citations=citations or [],
            sampling_params=body.sampling_record(),
            choices=choices,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=time.monotonic() - started,
            api_key_id=getattr(request.state, "api_key_id", None),
            user=body.user,
        )
    )


def logged_choice(index: int, text: str | None, finish_reason: str | None) -> dict:
    return {"index": index, "text": text or "", "finish_reason": finish_reason}
