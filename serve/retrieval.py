"""RAG for chat requests: retrieve on the conversation's last user turns, put numbered sources into the prompt
within the context budget, return the sources used as citations. Also owns the embedder that
``/v1/embeddings`` serves (the same all-MiniLM-L6-v2 the indexes were built with)."""

import asyncio
import contextlib
import threading
from collections.abc import Callable

from llmloop.rag.embed import Embedder
from llmloop.rag.errors import IndexNotFoundError, RagError
from llmloop.rag.prompt import augment_messages
from llmloop.rag.retrieve import Hit, Retriever
from llmloop.serve.errors import BadRequestError, NotFoundError
from llmloop.serve.metrics import ServerMetrics


class Retrieval:
    """Opened retrievers by index name (reopened when the index is re-published), one embedder."""

    def __init__(self, default_index: str | None = None, metrics: ServerMetrics | None = None):
        self.default_index = default_index
        self.metrics = metrics
        self._lock = threading.Lock()
        self._embedder: Embedder | None = None
        self._retrievers: dict[str, Retriever] = {}

    def embedder(self) -> Embedder:
        """Loaded on first use (blocking: call from a worker thread)."""
        with self._lock:
            if self._embedder is None:
                self._embedder = Embedder()
            return self._embedder

    async def search(self, index: str, query: str, top_k: int) -> list[Hit]:
        timer = self.metrics.retrieval_duration.time() if self.metrics else contextlib.nullcontext()
        with timer:
            return await asyncio.to_thread(self._search, index, query, top_k)

    def _search(self, index: str, query: str, top_k: int) -> list[Hit]:
        try:
            return self._retriever(index).search(query, top_k=top_k)
        except IndexNotFoundError as e:
            raise NotFoundError(str(e), param="rag.index", code="index_not_found") from e
        except RagError as e:
            raise BadRequestError(str(e), param="rag") from e

    def _retriever(self, index: str) -> Retriever:
        embedder = self.embedder()
        with self._lock:
            retriever = self._retrievers.get(index)
            if retriever is None or retriever.is_stale():
                retriever = self._retrievers[index] = Retriever.open(index, embedder=embedder)
            return retriever


QUERY_USER_TURNS = 3
"""User turns a retrieval query is made of: the last one and the ones before it."""


def retrieval_query(messages: list[dict], turns: int = QUERY_USER_TURNS) -> str:
    """The search query for a chat: its last ``turns`` user messages, newest first (the
    embedder truncates long text at its end). A follow-up ("what is a common mistake with
    it?") names nothing to search for on its own; with the questions before it, it retrieves
    what the conversation is about, and mostly the same chunks as the turn before, so the
    prompt's sources (and vLLM's cached prefix) stay the same. Asking the model to rewrite
    the query would cost a generation before every retrieval: more than a whole chat without
    retrieval takes on a CPU (docs/rag.md, "RAG chat latency")."""
    texts = [m["content"] for m in reversed(messages) if m["role"] == "user"]
    return "\n".join(t for t in texts[:turns] if isinstance(t, str) and t.strip())


def with_sources(
    messages: list[dict], hits: list[Hit], count_tokens: Callable[[str], int], budget_tokens: int
) -> tuple[list[dict], list[dict]]:
    """(messages with the sources that fit ``budget_tokens``, their citations)."""
    messages, used = augment_messages(messages, hits, count_tokens, budget_tokens)
    return messages, [hit.citation() for hit in used]
