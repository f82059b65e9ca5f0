"""Put retrieved chunks into a chat request as numbered sources, within a token budget."""

from collections.abc import Callable

from llmloop.rag.layout import list_indexes
from llmloop.rag.retrieve import Hit

__all__ = ["augment_messages", "document_order", "format_source", "list_indexes"]

INSTRUCTIONS = (
    "Answer using the numbered sources below when they are relevant, and cite them as [n]. "
    "If they do not contain the answer, say so."
)
NOT_IN_SOURCES = (
    "The document index was searched for this question and holds nothing relevant to it "
    "(no passage scored above the relevance threshold). If answering would need those "
    "documents, say that the answer is not in the sources."
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
    (shorter) ones may still fit; the ones taken are then numbered in ``document_order``. The
    sources are merged into an existing first system message, after the caller's own text (a
    stable prefix), else a new system message is put first. ``messages`` is not modified. No ``hits`` at all (the
    retriever found nothing above its threshold) puts ``NOT_IN_SOURCES`` there instead."""
    if not hits:
        return _with_system_note(messages, NOT_IN_SOURCES), []
    used: list[Hit] = []
    block = INSTRUCTIONS
    for hit in hits:
        candidate = block + "\n\n" + format_source(len(used) + 1, hit)
        if count_tokens(candidate) <= budget_tokens:
            block, used = candidate, [*used, hit]
    if not used:
        return list(messages), []
    ordered = sorted(used, key=document_order)
    ordered_block = sources_block(ordered)
    if ordered != used and count_tokens(ordered_block) <= budget_tokens:
        block, used = ordered_block, ordered
    return _with_system_note(messages, block), used


def document_order(hit: Hit) -> tuple[str, int, str]:
    """Sources are numbered in document order, not score order: the same chunks make the same
    prompt prefix whatever their scores were, so vLLM's prefix cache reuses it when a follow-up
    question (or another question) retrieves them again."""
    return hit.source, hit.position, hit.chunk_id


def sources_block(hits: list[Hit]) -> str:
    """The instructions, then ``hits`` numbered from 1."""
    return "\n\n".join([INSTRUCTIONS, *(format_source(n, hit) for n, hit in enumerate(hits, 1))])


def _with_system_note(messages: list[dict], note: str) -> list[dict]:
    messages = [dict(m) for m in messages]
    if (
        messages
        and messages[0].get("role") == "system"
        and isinstance(messages[0].get("content"), str)
    ):
        messages[0]["content"] = messages[0]["content"].rstrip() + "\n\n" + note
    else:
        messages.insert(0, {"role": "system", "content": note})
    return messages


def format_source(number: int, hit: Hit) -> str:
    heading = " > ".join(part for part in (hit.title, hit.section) if part)
    return f"[{number}] {hit.source}" + (f" ({heading})" if heading else "") + f"\n{hit.text}"
