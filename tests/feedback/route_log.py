"""Request-log rows for a route's versions, written straight into ``completions``: what the
route health reads, without a server in between."""

import itertools
import time

from sqlalchemy import Engine, insert

from llmloop.feedback.schema import completions

_ids = itertools.count()


def log_requests(
    db: Engine,
    route: str,
    version: str,
    n: int,
    *,
    finish_reason: str = "stop",
    rating: int | None = None,
    latency_s: float = 0.1,
    completion_tokens: int = 3,
    created: float | None = None,
) -> None:
    """``n`` requests of ``route`` answered by ``version`` (the log's ``model``)."""
    created = time.time() if created is None else created
    rows = [
        {
            "id": f"chatcmpl-route-{next(_ids):08d}",
            "created": created,
            "endpoint": "chat.completions",
            "model": version,
            "base_model": "base",
            "citations": [],
            "sampling_params": {},
            "choices": [],
            "output": "answer",
            "finish_reason": finish_reason,
            "prompt_tokens": 5,
            "completion_tokens": completion_tokens,
            "latency_s": latency_s,
            "prompt_hash": "0" * 64,
            "search_text": "question answer",
            "prompt_preview": "question",
            "rating": rating,
            "route": route,
        }
        for _ in range(n)
    ]
    with db.begin() as conn:
        conn.execute(insert(completions), rows)
