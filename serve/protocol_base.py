"""The base of every OpenAI request and response model."""

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict


class OpenAIModel(BaseModel):
    # Unknown fields are ignored, as OpenAI's and vLLM's servers do; parameters they document
    # that we do not support are refused by name (``Refused``).
    model_config = ConfigDict(extra="ignore", protected_namespaces=(), populate_by_name=True)


class Refused:
    """A parameter OpenAI or vLLM documents that this server does not support: accepted only
    as null (or one of ``allowed``), else a 400 naming it. Never silently ignored."""

    def __init__(self, reason: str, *allowed: Any):
        self.reason = reason
        self.allowed = allowed

    def check(self, name: str, value: Any) -> None:
        if value is not None and value not in self.allowed:
            raise ValueError(f"{name}: not supported by this server: {self.reason}")


def refuse_unsupported(refused: dict[str, "Refused"]) -> Callable[[type, Any], Any]:
    """A ``model_validator(mode="before")`` that checks ``refused`` parameters of the raw body
    (the 400 names the parameter: ``app._to_bad_request`` reads it from the message)."""

    def check(cls: type, data: Any) -> Any:
        if isinstance(data, dict):
            for name in refused.keys() & data.keys():
                refused[name].check(name, data[name])
        return data

    return classmethod(check)  # type: ignore[return-value]
