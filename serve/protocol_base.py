"""The base of every OpenAI request and response model."""

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class OpenAIModel(BaseModel):
    # Unknown fields are ignored, as OpenAI's and vLLM's servers do; parameters they document
    # that we do not support are declared and refused (``protocol_unsupported.py``).
    model_config = ConfigDict(extra="ignore", protected_namespaces=(), populate_by_name=True)


def refused(reason: str, *allowed: Any) -> Any:
    """The type of a parameter OpenAI or vLLM documents that this server does not support:
    accepted only as null (or one of ``allowed``), else a 400 naming it."""

    def check(value: Any) -> Any:
        if value is None or value in allowed:
            return value
        raise ValueError(f"not supported by this server: {reason}")

    return Annotated[Any, AfterValidator(check), Field(description=f"Not supported: {reason}")]
