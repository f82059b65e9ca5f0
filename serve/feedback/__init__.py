"""The request/feedback log: every completion the server returns, the feedback users attach to it,
the labelling UI at ``/ui/`` and ``llmloop feedback export`` (TRL's SFT/DPO/KTO formats).

The server builds one :class:`RequestLog` in its lifespan, keeps it on ``app.state.request_log``,
calls :meth:`RequestLog.submit` once per completion and mounts :data:`serve.feedback.router.router`.
"""

from serve.feedback.log import RequestLog
from serve.feedback.record import CompletionRecord
from serve.feedback.store import FeedbackStore

__all__ = ["CompletionRecord", "FeedbackStore", "RequestLog"]
