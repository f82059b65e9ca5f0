"""The one place evals talks to a server: the ``openai`` client, with retries and backoff.

The openai client retries connection errors, 408/409/429 and 5xx with exponential backoff and
jitter (``max_retries``); what still fails becomes a ``ServerError`` naming what to check.
"""

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import openai

from llmloop.evals.errors import ContentFilteredError, ServerError


@dataclass
class Reply:
    text: str
    finish_reason: str | None
    latency_s: float
    completion_tokens: int = 0
    citations: list[dict] = field(default_factory=list)


@dataclass
class PromptLogprobs:
    """Per-token logprobs of an echoed prompt (the first token's is None: nothing precedes it)."""

    tokens: list[str]
    token_logprobs: list[float | None]
    text_offset: list[int]


class EvalClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        max_retries: int = 5,
        timeout_s: float = 600.0,
        max_connections: int = 64,
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self._client = openai.OpenAI(
            base_url=f"{self.base_url}/v1",
            api_key=api_key or "EMPTY",
            max_retries=max_retries,
            timeout=timeout_s,
            http_client=httpx.Client(limits=httpx.Limits(max_connections=max_connections)),
        )

    def chat(self, messages: list[dict], **params) -> Reply:
        start = time.perf_counter()
        with self._errors():
            completion = self._client.chat.completions.create(
                model=self.model, messages=messages, **_split_extras(params)
            )
        choice = completion.choices[0]
        return Reply(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason,
            latency_s=time.perf_counter() - start,
            completion_tokens=completion.usage.completion_tokens if completion.usage else 0,
            citations=(completion.model_extra or {}).get("citations") or [],
        )

    def complete(self, prompt: str, **params) -> Reply:
        start = time.perf_counter()
        with self._errors():
            completion = self._client.completions.create(
                model=self.model, prompt=prompt, **_split_extras(params)
            )
        choice = completion.choices[0]
        return Reply(
            text=choice.text or "",
            finish_reason=choice.finish_reason,
            latency_s=time.perf_counter() - start,
            completion_tokens=completion.usage.completion_tokens if completion.usage else 0,
            citations=(completion.model_extra or {}).get("citations") or [],
        )

    def prompt_logprobs(self, prompt: str) -> PromptLogprobs:
        """Logprobs of every token of ``prompt`` via ``echo`` (as lm-eval's local-completions)."""
        with self._errors():
            completion = self._client.completions.create(
                model=self.model, prompt=prompt, max_tokens=1, temperature=0, echo=True, logprobs=1
            )
        choice = completion.choices[0]
        if choice.finish_reason == "content_filter":
            raise ContentFilteredError(f"the server's safety filter blocked {prompt[:60]!r}...")
        logprobs = choice.logprobs
        if logprobs is None or not logprobs.tokens:
            raise ServerError(
                f"{self.base_url} returned no prompt logprobs for echo=True; multiple_choice and "
                "perplexity tasks need a server with vLLM's echo + logprobs on /v1/completions"
            )
        offsets = logprobs.text_offset or _offsets(logprobs.tokens)
        return PromptLogprobs(list(logprobs.tokens), list(logprobs.token_logprobs), list(offsets))

    def _errors(self):
        return _server_errors(self.base_url, self.model)


@contextlib.contextmanager
def _server_errors(base_url: str, model: str) -> Iterator[None]:
    """Turn openai exceptions (after its retries) into messages that say what to check."""
    try:
        yield
    except openai.APIConnectionError as e:
        raise ServerError(f"cannot reach {base_url} ({e}); check --base-url") from e
    except openai.AuthenticationError as e:
        raise ServerError(f"{base_url} refused the API key; pass --api-key") from e
    except openai.NotFoundError as e:
        raise ServerError(
            f"{base_url}: {e.message}; check --model {model!r} (GET /v1/models)"
        ) from e
    except openai.APIStatusError as e:
        raise ServerError(f"{base_url} answered {e.status_code}: {e.message}") from e


_OPENAI_PARAMS = {"max_tokens", "temperature", "top_p", "n", "stop", "seed", "logprobs", "echo"}


def _split_extras(params: dict) -> dict:
    """Fields the openai SDK does not know (vLLM's extras, ``rag``) travel in ``extra_body``."""
    known = {k: v for k, v in params.items() if k in _OPENAI_PARAMS and v is not None}
    extras = {k: v for k, v in params.items() if k not in _OPENAI_PARAMS and v is not None}
    return known | ({"extra_body": extras} if extras else {})


def _offsets(tokens: list[str]) -> list[int]:
    offsets, position = [], 0
    for token in tokens:
        offsets.append(position)
        position += len(token)
    return offsets
