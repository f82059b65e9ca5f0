"""One logged completion, as the server hands it to the log (already redacted by safety)."""

import dataclasses
import hashlib
import json
from dataclasses import dataclass

DEFAULT_PROJECT = "default"
"""The project of requests made with a key that names none (or on a server without keys)."""


@dataclass(frozen=True)
class CompletionRecord:
    id: str
    """The response id ("chatcmpl-…" / "cmpl-…"), unique; feedback keys on it."""
    created: float
    """Unix seconds."""
    endpoint: str
    """"chat.completions" | "completions"."""
    model: str
    """What answered: the base model or adapter the client named, or a route's version."""
    base_model: str
    adapter: str | None
    adapter_version: int | None
    messages: list[dict] | None
    """Chat: the request messages after redaction (plus any RAG system message)."""
    prompt: str | None
    """Completions: the prompt after redaction."""
    citations: list[dict]
    """[{source, chunk_id, score, text}] from RAG; empty without it."""
    sampling_params: dict
    """temperature, top_p, max_tokens, seed, n, ... as sent."""
    choices: list[dict]
    """[{"index", "text", "finish_reason"}], text redacted; a choice that called tools also has
    ``tool_calls`` in OpenAI's shape (``function.arguments``: JSON text), ``text`` the content
    beside them."""
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    api_key_id: str | None
    """A short sha256 prefix of the key, never the key."""
    user: str | None
    project: str = DEFAULT_PROJECT
    """The project of the key that made the request (``default`` for a key without one); a
    label key sees its project only."""
    tools: list[dict] | None = None
    """Chat: the request's tool definitions in OpenAI's shape (``{"type": "function",
    "function": {"name", "description", "parameters"}}``); None without tools. Spool lines
    written before tools were logged have none."""
    trace_id: str | None = None
    """The request's OpenTelemetry trace id (32 hex digits) when the server exports traces
    (``--otlp-traces-endpoint``); None otherwise."""
    route: str | None = None
    """The route the client named (``model`` is then the version that answered, ``NAME@V``);
    None when the client named a model or adapter directly."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> "CompletionRecord":
        return cls(**json.loads(line))

    @property
    def prompt_messages(self) -> list[dict]:
        return prompt_messages(self.messages, self.prompt)

    @property
    def prompt_hash(self) -> str:
        """Equal for completions of the same prompt: preferences may only pair those."""
        return prompt_hash(self.prompt_messages)


def prompt_messages(messages: list[dict] | None, prompt: str | None) -> list[dict]:
    """The conversation up to the answer; a completions prompt becomes one user message."""
    if messages is not None:
        return list(messages)
    return [{"role": "user", "content": prompt or ""}]


def prompt_hash(messages: list[dict]) -> str:
    canonical = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
