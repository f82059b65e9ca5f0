"""Errors of the feedback log and its export; the ``llmloop`` CLI prints them without a traceback."""

from llmloop.errors import LLMLoopError


class FeedbackError(LLMLoopError):
    """Base of every error the feedback package raises on purpose."""


class DatabaseURLError(FeedbackError):
    """``--db`` is not a URL SQLAlchemy can open (sqlite:/// or postgresql://)."""


class DatabaseUnavailableError(FeedbackError):
    """The log's database cannot be reached (the CLI; the server spools instead)."""


class EmptyExportError(FeedbackError):
    """The filters matched no labelled completion: nothing to export."""


class ExportArgumentError(FeedbackError):
    """A flag of ``llmloop feedback export`` has a value we cannot use."""


class UnknownCompletionError(FeedbackError):
    """Feedback names a completion id the log does not hold."""


class InvalidFeedbackError(FeedbackError):
    """Feedback whose fields cannot be used together (e.g. a preference across prompts)."""


class InvalidFilterError(FeedbackError):
    """A list/export filter (date, rating, cursor) that cannot be parsed."""
