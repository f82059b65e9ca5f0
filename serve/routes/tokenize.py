"""``POST /tokenize`` and ``POST /detokenize``, as vLLM's OpenAI server has them (no ``/v1``).

A chat form is templated and tokenized by ``render_chat``, the function chat completions use, so
its ``count`` is the ``usage.prompt_tokens`` a chat completion of the same messages reports
(before the safety layer redacts anything or retrieval adds sources)."""

from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request

from llmloop.serve.auth.deps import limit_infer
from llmloop.serve.deps import EngineDep, resolve_target
from llmloop.serve.engine_api import Engine, Tokenizer
from llmloop.serve.errors import BadRequestError
from llmloop.serve.generation import off_loop
from llmloop.serve.protocol import MAX_PROMPT_TOKEN_IDS
from llmloop.serve.protocol_tokenize import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
    TokenizeRequest,
    TokenizeResponse,
)
from llmloop.serve.routes.chat import render_chat
from llmloop.serve.tools import request_messages, template_inputs

router = APIRouter(dependencies=[Depends(limit_infer)])  # scope: infer, rate-limited


@router.post("/tokenize", response_model=TokenizeResponse)
async def tokenize(body: TokenizeRequest, request: Request, engine: EngineDep) -> TokenizeResponse:
    _check_model(request, engine, body.model)
    token_ids, token_strs = await off_loop(
        request, _tokenize, engine.tokenizer, engine.tool_calling.name, body
    )
    return TokenizeResponse(
        count=len(token_ids),
        max_model_len=engine.max_model_len,
        tokens=token_ids,
        token_strs=token_strs,
    )


@router.post("/detokenize", response_model=DetokenizeResponse)
async def detokenize(
    body: DetokenizeRequest, request: Request, engine: EngineDep
) -> DetokenizeResponse:
    _check_model(request, engine, body.model)
    _check_vocabulary(body.tokens, engine.vocab_size)
    return DetokenizeResponse(prompt=await off_loop(request, _detokenize, engine.tokenizer, body))


def _check_model(request: Request, engine: Engine, model: str | None) -> None:
    """404 for a name that is not served, or that the key may not use (as chat completions).
    Adapters share the base model's tokenizer, so which one was named changes nothing else."""
    resolve_target(request, model or engine.model_name, count=False)


def _check_vocabulary(token_ids: list[int], vocab_size: int) -> None:
    if not token_ids or (min(token_ids) >= 0 and max(token_ids) < vocab_size):
        return
    i, token_id = next((i, t) for i, t in enumerate(token_ids) if not 0 <= t < vocab_size)
    raise BadRequestError(
        f"tokens[{i}]: {token_id} is not a token id of this model (ids run from 0 to "
        f"{vocab_size - 1})",
        param="tokens",
        code="invalid_value",
    )


def _tokenize(
    tokenizer: Tokenizer, tool_format: str, body: TokenizeChatRequest | TokenizeCompletionRequest
) -> tuple[list[int], list[str] | None]:
    """(token ids, each token's text if the request asks for it)."""
    if isinstance(body, TokenizeChatRequest):
        tools = [t.model_dump(exclude_none=True) for t in body.tools or ()]
        messages, kwargs = template_inputs(
            request_messages(body.messages), tools, tokenizer, tool_format
        )
        token_ids = render_chat(_WithTemplateOptions(tokenizer, body), messages, **kwargs)
    else:
        token_ids = tokenizer.encode(body.prompt, add_special_tokens=body.add_special_tokens)
    if len(token_ids) > MAX_PROMPT_TOKEN_IDS:  # e.g. 1M characters as 3M byte-level tokens
        param = "messages" if isinstance(body, TokenizeChatRequest) else "prompt"
        raise BadRequestError(
            f"{param}: {len(token_ids)} tokens, more than the {MAX_PROMPT_TOKEN_IDS} a response "
            "may list; send less text",
            param=param,
            code="invalid_value",
        )
    if not body.return_token_strs:
        return token_ids, None
    # Each token decoded on its own (" the"); vLLM returns the vocabulary's spelling ("Ġthe"),
    # which the engine's Tokenizer interface does not expose.
    return token_ids, [tokenizer.decode([t], skip_special_tokens=False) for t in token_ids]


def _detokenize(tokenizer: Tokenizer, body: DetokenizeRequest) -> str:
    return tokenizer.decode(body.tokens, skip_special_tokens=False)  # special tokens kept, as vLLM


@dataclass(frozen=True)
class _WithTemplateOptions:
    """``tokenizer`` with a tokenize request's template options in place of the ones
    ``render_chat`` sets for a chat completion; its defaults are the same, so by default the
    prompt is the one a chat completion would get."""

    tokenizer: Tokenizer
    body: TokenizeChatRequest

    def apply_chat_template(self, conversation: list[dict], **kwargs) -> str | list[int]:
        options = {
            "add_generation_prompt": self.body.add_generation_prompt,
            "continue_final_message": self.body.continue_final_message,
        }
        return self.tokenizer.apply_chat_template(conversation, **(kwargs | options))

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=self.body.add_special_tokens)
