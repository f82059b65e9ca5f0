"""Hand every completion the server returns to the request log (``llmloop.feedback``).

Texts arrive here already redacted by the safety layer; ``submit`` never blocks or raises."""

import time
from typing import TYPE_CHECKING

from llmloop.feedback.record import DEFAULT_PROJECT, CompletionRecord
from llmloop.feedback.routes import parse_ref
from llmloop.serve.auth.deps import request_key
from llmloop.serve.tracing import current_trace_id

if TYPE_CHECKING:
    from llmloop.serve.pipeline import ServeContext


def log_completion(ctx: "ServeContext", choices: list[dict], num_completion_tokens: int) -> None:
    """``choices``: each choice's index, text and finish_reason (``logged_choice``)."""
    state, body, key = ctx.request.app.state, ctx.body, request_key(ctx.request)
    if state.request_log is None or body.store is False:
        return
    state.request_log.submit(
        CompletionRecord(
            id=ctx.id,
            created=time.time(),
            endpoint=ctx.endpoint,
            model=ctx.model,
            base_model=state.engine.model_name,
            adapter=ctx.lora,
            adapter_version=_adapter_version(ctx),
            messages=ctx.messages,
            prompt=ctx.prompt,
            citations=ctx.citations,
            sampling_params=body.sampling_record(),
            choices=choices,
            prompt_tokens=ctx.num_prompt_tokens,
            completion_tokens=num_completion_tokens,
            latency_s=time.monotonic() - ctx.started,
            api_key_id=key.id if key else None,
            user=body.user,
            project=key.log_project if key else DEFAULT_PROJECT,
            tools=ctx.tools or None,
            trace_id=current_trace_id(),
            route=ctx.target.route,
        )
    )


def logged_choice(
    index: int, text: str | None, finish_reason: str | None, tool_calls: list[dict] | None = None
) -> dict:
    """``tool_calls`` in OpenAI's shape; ``text`` is then the content beside them."""
    choice = {"index": index, "text": text or "", "finish_reason": finish_reason}
    return choice | {"tool_calls": tool_calls} if tool_calls else choice


def _adapter_version(ctx: "ServeContext") -> int | None:
    """A route's version names its registry version (``support@4``); a named adapter's was
    noted when it loaded."""
    if ctx.lora is None:
        return None
    if ctx.target.route is not None:
        return parse_ref(ctx.lora)[1]
    return ctx.request.app.state.adapter_versions.get(ctx.lora)
