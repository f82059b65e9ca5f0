"""Errors of ``llmloop monitor``; the CLI prints them without a traceback (exit code 1)."""

from llmloop.feedback.errors import FeedbackError


class MonitorError(FeedbackError):
    """Base of every error the monitor raises on purpose."""


class MonitorArgumentError(MonitorError):
    """A flag of ``llmloop monitor`` has a value we cannot use; the message names the flag."""


class EmptyWindowError(MonitorError):
    """The window (or the reference) holds no request: nothing to report on."""
