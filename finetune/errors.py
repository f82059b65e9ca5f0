"""The fine-tuning error hierarchy: each message names the flag or file the user must change."""

from llmloop.errors import LLMLoopError


class FinetuneError(LLMLoopError):
    """Base of every error ``finetune`` raises on purpose."""


class ConfigError(FinetuneError):
    """A flag or recipe value is invalid or conflicts with another."""


class DataError(FinetuneError):
    """A data file is missing, unreadable, or has a bad row (reported as file:line)."""


class NaNLossError(FinetuneError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


class ArtifactError(FinetuneError):
    """An artifact dir or registry name does not hold what a command needs."""
