"""The evals package's errors: each message names what the user should change."""

from llmloop.errors import LLMLoopError


class EvalError(LLMLoopError):
    """Base of every error raised on purpose by ``llmloop eval`` and ``llmloop bench``."""


class TaskConfigError(EvalError):
    """A task YAML, its dataset or a prompts file is missing or malformed."""


class ServerError(EvalError):
    """The server could not be reached or kept failing after retries."""


class GateSpecError(EvalError):
    """A ``--gate`` expression could not be parsed."""


class ContentFilteredError(EvalError):
    """The server's safety filter blocked a scoring request (finish_reason content_filter)."""
