"""Errors raised by ``safety``: each message says what the user should change."""

from llmloop.errors import LLMLoopError


class SafetyError(LLMLoopError):
    """Base of every error the safety package raises on purpose."""


class PolicyError(SafetyError):
    """A safety policy file that cannot be used (bad YAML, unknown key or action)."""


class InputLineError(SafetyError):
    """A line of a JSONL input that is not a JSON object with a string ``text``."""


class ClassifierNotFoundError(SafetyError):
    """The shipped harm-classifier head is missing or unreadable."""
