"""The request/feedback log: every completion the server returns, the feedback users attach to it,
and ``llmloop feedback export`` (TRL's SFT/DPO/KTO formats).

The server builds one :class:`RequestLog` in its lifespan, keeps it on ``app.state.request_log``
and calls :meth:`RequestLog.submit` once per completion. The HTTP side (``POST /v1/feedback``, the
labelling UI at ``/ui/``) is server code: ``llmloop.serve.routes.feedback`` and ``serve/ui/``.
"""

from llmloop.feedback.log import RequestLog
from llmloop.feedback.record import CompletionRecord
from llmloop.feedback.store import FeedbackStore

__all__ = ["CompletionRecord", "FeedbackStore", "RequestLog"]
