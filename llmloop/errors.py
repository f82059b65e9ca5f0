"""Errors shared by every package: a message that tells the user what to change."""


class LLMLoopError(Exception):
    """Base of every error llmloop raises on purpose; the CLI prints it without a traceback."""


class ModelNotFoundError(LLMLoopError):
    pass
