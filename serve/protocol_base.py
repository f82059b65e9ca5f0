"""The base of every OpenAI request and response model."""

from pydantic import BaseModel, ConfigDict


class OpenAIModel(BaseModel):
    # Unknown fields are ignored, as OpenAI's and vLLM's servers do; parameters they document
    # that we do not support are declared and refused (``protocol_unsupported.py``).
    model_config = ConfigDict(extra="ignore", protected_namespaces=(), populate_by_name=True)
