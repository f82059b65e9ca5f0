"""Shadow traffic: a sampled share of a route's requests is run again on the shadow version once
the primary answer is complete, and the shadow's answer is logged beside the primary's
(``shadow_completions``) for ``llmloop deploy compare``. The client never sees it and never waits
for it: it starts after the primary answer was sent, below batch lines in the engine's priority,
and is skipped (counted) when ``max(1, max_num_seqs // 4)`` shadow runs are already in flight.

A shadow run repeats the first prompt with the primary's sampling options and one choice; its
answer passes the output safety filter and is redacted with the request's own placeholders before
it is stored, as the primary's was.
"""

import asyncio
import dataclasses
import logging
import random
import time
from typing import TYPE_CHECKING

from llmloop.feedback.routes import RouteStore
from llmloop.serve.generation import generate_all
from llmloop.serve.guardrails import CONTENT_FILTER, REFUSAL, Blocked
from llmloop.serve.routing.metrics import RouteMetrics

if TYPE_CHECKING:
    from llmloop.serve.engine_api import SamplingOptions
    from llmloop.serve.pipeline import ServeContext

logger = logging.getLogger(__name__)

SHADOW_PRIORITY = 2
"""Below interactive requests (0) and batch lines (1): vLLM runs lower values first."""


class ShadowRunner:
    def __init__(self, store: RouteStore, metrics: RouteMetrics):
        self.store = store
        self.metrics = metrics
        self._tasks: set[asyncio.Task] = set()

    def after(self, ctx: "ServeContext", options: "SamplingOptions") -> None:
        """Called once the primary answer of ``ctx`` is logged: maybe start its shadow run."""
        route_name = ctx.target.route
        request_log = ctx.request.app.state.request_log
        if (
            route_name is None
            or ctx.body.store is False
            or request_log is None
            or not request_log.enabled
        ):
            return  # nothing of this request is stored (``store: false``, ``--no-store``)
        table = ctx.request.app.state.routes
        route = table.routes.get(route_name)
        shadow = route.shadow if route is not None else None
        if shadow is None or shadow.ref not in table.loaded or random.random() >= shadow.fraction:
            return
        if len(self._tasks) >= max(1, ctx.engine.max_num_seqs // 4):
            self.metrics.shadow_requests.labels(route_name, "skipped").inc()
            return
        task = asyncio.create_task(self._run(ctx, options, shadow.ref, table.loaded[shadow.ref]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(
        self, ctx: "ServeContext", options: "SamplingOptions", ref: str, lora: str | None
    ) -> None:
        route = ctx.target.route or ""
        started = time.monotonic()
        options = dataclasses.replace(options, n=1, priority=SHADOW_PRIORITY, trace_headers=None)
        try:
            [output] = await generate_all(
                ctx.engine, ctx.prompt_ids[:1], options, f"{ctx.id}-shadow", lora
            )
            seq = output.outputs[0]
            text, finish_reason = seq.text, seq.finish_reason
            if ctx.guardrails is not None:
                screened = await ctx.guardrails.screen_output(seq.text, ctx.redactor)
                if isinstance(screened, Blocked):
                    text, finish_reason = REFUSAL, CONTENT_FILTER
                else:
                    text = screened[0]
            row = {
                "completion_id": ctx.id,
                "route": route,
                "model": ref,
                "created": time.time(),
                "output": text,
                "finish_reason": finish_reason,
                "completion_tokens": len(seq.token_ids),
                "latency_s": time.monotonic() - started,
            }
            await asyncio.to_thread(self.store.add_shadow, row)
        except Exception as e:  # a shadow run never affects the primary answer
            self.metrics.shadow_requests.labels(route, "failed").inc()
            logger.warning("shadow run of %s on %s failed: %s", ctx.id, ref, e)
            return
        self.metrics.shadow_requests.labels(route, "logged").inc()
