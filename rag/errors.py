"""The rag package's errors: each message says what the user should change."""

from llmloop.errors import LLMLoopError


class RagError(LLMLoopError):
    """Base of every error the rag package raises on purpose."""


class IndexNotFoundError(RagError):
    """No index of that name under ``$LLMLOOP_HOME/indexes``."""


class UnreadableFileError(RagError):
    """A file could not be read or held no text; indexing reports it and goes on."""


class NothingToIndexError(RagError):
    """The paths given hold no file a loader understands."""


class IndexConfigError(RagError):
    """An option given to the indexer or the retriever is out of range."""
