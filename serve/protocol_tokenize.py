"""``/tokenize`` and ``/detokenize`` request and response models, as vLLM's OpenAI server has them
(``vllm/entrypoints/serve/tokenize/protocol.py``): the same fields, names and defaults, with our
size caps (``protocol.py``). A tokenize body with ``messages`` is the chat form, else the
completion form."""

from typing import Annotated

from pydantic import AfterValidator, Discriminator, Field, Tag, ValidationInfo, field_validator

from llmloop.serve.protocol import (
    MAX_MESSAGES,
    MAX_PROMPT_TOKEN_IDS,
    MAX_TEXT_CHARS,
    ChatMessage,
    OpenAIModel,
    check_messages_size,
)
from llmloop.serve.protocol_tools import MAX_TOOLS, ChatCompletionTool

_ModelName = Annotated[str, Field(max_length=256)]


class TokenizeCompletionRequest(OpenAIModel):
    model: _ModelName | None = None
    """A served name (the base model or a loaded adapter); default: the base model."""
    prompt: Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
    add_special_tokens: bool = True
    """Add the tokenizer's special tokens (e.g. BOS), as a completion's prompt gets them."""
    return_token_strs: bool | None = False
    """Also return each token decoded on its own (``token_strs``)."""


class TokenizeChatRequest(OpenAIModel):
    model: _ModelName | None = None
    """A served name (the base model or a loaded adapter); default: the base model."""
    messages: Annotated[
        list[ChatMessage],
        Field(min_length=1, max_length=MAX_MESSAGES),
        AfterValidator(check_messages_size),
    ]
    add_generation_prompt: bool = True
    """End with the template's assistant header, as a chat completion's prompt does."""
    return_token_strs: bool | None = False
    """Also return each token decoded on its own (``token_strs``)."""
    continue_final_message: bool = False
    """Leave the last message open (no end-of-turn) so the model would continue it; needs
    ``add_generation_prompt`` false."""
    add_special_tokens: bool = False
    """Special tokens on top of the template's own (which already has them for most models)."""
    tools: Annotated[list[ChatCompletionTool], Field(max_length=MAX_TOOLS)] | None = None
    """Tools the model is shown, as a chat completion with tool_choice "auto" shows them."""

    @field_validator("continue_final_message")
    @classmethod
    def _check_generation_prompt(cls, continue_final_message: bool, info: ValidationInfo) -> bool:
        if continue_final_message and info.data.get("add_generation_prompt"):
            raise ValueError(
                "cannot be used with add_generation_prompt (true by default): set "
                "add_generation_prompt to false"
            )
        return continue_final_message


def _form(body) -> str:
    if isinstance(body, dict):
        return "chat form" if "messages" in body else "completion form"
    return "chat form" if isinstance(body, TokenizeChatRequest) else "completion form"


# Tags are not identifiers, so a 400 names ``messages[0].content``, not the form it was read as.
TokenizeRequest = Annotated[
    Annotated[TokenizeChatRequest, Tag("chat form")]
    | Annotated[TokenizeCompletionRequest, Tag("completion form")],
    Discriminator(_form),
]


class TokenizeResponse(OpenAIModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(OpenAIModel):
    model: _ModelName | None = None
    """A served name (the base model or a loaded adapter); default: the base model."""
    tokens: Annotated[list[int], Field(max_length=MAX_PROMPT_TOKEN_IDS)]
    """Token ids of this model's vocabulary (checked against it by the route: 400 otherwise)."""


class DetokenizeResponse(OpenAIModel):
    prompt: str
