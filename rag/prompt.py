"""Put retrieved chunks into a chat request as numbered sources, within a token budget."""

from collections.abc import Callable

from llmloop.rag.layout import list_indexes
from llmloop.rag.retrieve import Hit

__all__ = ["augment_messages", "format_source", "list_indexes"]

INSTRUCTIONS = (
    "Answer using the numbered sources below when they are relevant, and cite them as [n]. "
    "If they do not contain the answer, say so."
)


def augment_messages(
    messages: list[dict],
    hits: list[Hit],
    count_tokens: Callable[[str], int],
    budget_tokens: int,
) -> tuple[list[dict], list[Hit]]:
    """(messages with the sources in the system message, the hits used: the citations).

    Hits are taken best first while the sources block fits ``budget_tokens`` (counted with
    ``count_tokens``, the chat model's tokenizer); a hit that does not fit is dropped, later
    (shorter) ones may still fit. The sources are merged into an existing first system message,
    else a new system message is put first. ``messages`` is not modified."""
    used: list[Hit] = []
    block = INSTRUCTIONS
    for hit in hits:
        candidate = block + "\n\n" + format_source(len(used) + 1, hit)
        if count_tokens(candidate) <= budget_tokens:
            block, used = candidate, [*used, hit]
    if not used:
        return list(messages), []
    messages = [dict(m) for m in messages]
    if (
        messages
        and messages[0].get("role") == "system"
        and isinstance(messages[0].get("content"), str)
    ):
        messages[0]["content"] = messages[0]["content"].rstrip() + "\n\n" + block
    else:
        messages.insert(0, {"role": "system", "content": block})
    return messages, used


def format_source(number: int, hit: Hit) -> str:
    heading = " > ".join(part for part in (hit.title, hit.section) if part)
    return f"[{number}] {hit.source}" + (f" ({heading})" if heading else "") + f"\n{hit.text}"
