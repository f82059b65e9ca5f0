"""The routes one server applies: read from the log database every ``REFRESH_INTERVAL_S``, with
the adapters their versions need loaded into the engine before a route points at them, and
unloaded once no route does.

A version's adapter is loaded under its ref (``support@4``) as the LoRA name, so a client may also
name a version directly. Requests that were sent to a version before it was unloaded finish on it
(``VllmEngine.remove_lora``); new ones go where the route now points.
"""

import asyncio
import logging
import time
from dataclasses import dataclass

from llmloop import registry
from llmloop.errors import LLMLoopError
from llmloop.feedback.routes import Route, RouteStore, parse_ref
from llmloop.serve.engine_api import Engine, EngineRequestError
from llmloop.serve.routing.assign import assign
from llmloop.serve.routing.metrics import RouteMetrics

logger = logging.getLogger(__name__)

REFRESH_INTERVAL_S = 1.0
"""The contract gives a running server 5 s to apply a change, loading an adapter included."""
RETRY_FAILED_S = 30.0
"""How long a version that failed to load waits before the next try."""


@dataclass(frozen=True)
class Target:
    """Where one request goes."""

    model: str
    """What answers, as the response's ``model`` and the log name it: the base model, an
    adapter, or a route's version (``NAME@V``)."""
    lora: str | None
    """The engine's adapter name; None for the base model."""
    route: str | None = None
    """The route the client named, if it named one."""


class RouteTable:
    def __init__(self, store: RouteStore, metrics: RouteMetrics):
        self.store = store
        self.metrics = metrics
        self.routes: dict[str, Route] = {}
        self.loaded: dict[str, str | None] = {}
        """Each version the routes name that this server can run → its LoRA name (None: base)."""
        self.failed: dict[str, tuple[float, str]] = {}
        """Versions that could not load → (when, why)."""
        self._owned: set[str] = set()
        """LoRAs this table loaded (it unloads only those, never an operator's --adapter)."""
        self._lock = asyncio.Lock()

    async def keep_fresh(self, engine: Engine) -> None:
        while True:
            try:
                await self.refresh(engine)
            except Exception as e:  # the database is down: keep the routes last read
                logger.warning("could not read routes from the log database: %s", e)
            await asyncio.sleep(REFRESH_INTERVAL_S)

    async def refresh(self, engine: Engine) -> None:
        routes = await asyncio.to_thread(self.store.all)
        await self.apply(engine, routes)

    async def apply(self, engine: Engine, routes: list[Route]) -> None:
        """Load what ``routes`` need, then point requests at them, then unload what is left."""
        async with self._lock:
            needed = set().union(*(route.refs for route in routes))
            now = time.monotonic()
            for ref in sorted(needed - self.loaded.keys()):
                failed_at = self.failed.get(ref, (float("-inf"), ""))[0]
                if now - failed_at < RETRY_FAILED_S:
                    continue
                try:
                    self.loaded[ref] = await self._load(engine, ref)
                    self.failed.pop(ref, None)
                except (LLMLoopError, EngineRequestError) as e:
                    self.failed[ref] = (now, str(e))
                    logger.error("route version %s cannot be served: %s", ref, e)
            self.routes = {route.name: route for route in routes}
            for ref in self.loaded.keys() - needed:
                lora = self.loaded.pop(ref)
                if lora is not None and lora in self._owned:
                    self._owned.discard(lora)
                    await engine.remove_lora(lora)
                    logger.info("unloaded route version %s", ref)
            for ref in list(self.failed):
                if ref not in needed:
                    del self.failed[ref]
            self.metrics.observe(routes, len(self.failed))

    def target(self, name: str, sticky: str | None, count: bool = True) -> Target | None:
        """The version of route ``name`` for ``sticky`` (a user, else a key id); None when
        ``name`` is not a route. ``count``: a request the version will answer (on /metrics)."""
        route = self.routes.get(name)
        if route is None:
            return None
        ref = assign(route, sticky, self.loaded.keys())
        if ref is None:
            return Target(model="", lora=None, route=name)  # no version can run (yet)
        if count:
            self.metrics.requests.labels(name, ref).inc()
        return Target(model=ref, lora=self.loaded[ref], route=name)

    async def _load(self, engine: Engine, ref: str) -> str | None:
        if ref == engine.model_name:
            return None
        name, version = parse_ref(ref)
        artifact = await asyncio.to_thread(registry.resolve, name, version)
        if artifact is None:
            raise LLMLoopError(f"{ref} is not in the registry (`llmloop models list`)")
        if artifact.kind == "base":
            if artifact.name == engine.model_name:
                return None
            raise LLMLoopError(
                f"{ref} is another base model than this server's ({engine.model_name})"
            )
        if artifact.kind != "adapter":
            raise LLMLoopError(
                f"{ref} is {artifact.kind} weights: serve them with `llmloop serve --model` "
                "on a server of their own; a route here runs this server's base and adapters"
            )
        if any(adapter.name == ref for adapter in engine.list_loras()):
            return ref  # loaded by an operator (or a loop's eval): used, not owned
        await engine.add_lora(ref, artifact.path)
        self._owned.add(ref)
        logger.info("loaded route version %s from %s", ref, artifact.path)
        return ref
