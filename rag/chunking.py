"""Split a Document into chunks that follow its headings and paragraphs, within a token budget.

A heading always starts a new chunk, and each chunk remembers its section (the heading path).
Inside a section, sentences are packed up to ``chunk_tokens``; a chunk prefers to end at a
paragraph break once it is half full, and the next chunk repeats the previous chunk's trailing
sentences up to ``overlap_tokens`` so a fact cut by a boundary is still whole in one chunk.
Tokens are counted with the embedder's tokenizer (wordpieces), so chunks fit its 256-token window.
"""

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from llmloop.rag.errors import IndexConfigError
from llmloop.rag.loaders import Document

CHUNKER_VERSION = 1
"""Bumped whenever chunking changes its output: indexes built before are re-chunked in full."""

CountTokens = Callable[[list[str]], list[int]]
"""Token counts of a batch of texts, e.g. ``Embedder.count_tokens``."""


@dataclass(frozen=True)
class ChunkingConfig:
    chunk_tokens: int = 200
    """Most embedder tokens in one chunk (all-MiniLM-L6-v2 reads at most 256, title included)."""
    overlap_tokens: int = 32
    """Tokens of trailing sentences repeated at the start of the next chunk of the same section."""

    def __post_init__(self) -> None:
        if not 16 <= self.chunk_tokens <= 8192:
            raise IndexConfigError(f"--chunk-tokens {self.chunk_tokens}: choose 16 to 8192")
        if not 0 <= self.overlap_tokens <= self.chunk_tokens // 2:
            raise IndexConfigError(
                f"--overlap-tokens {self.overlap_tokens}: choose 0 to half of --chunk-tokens "
                f"({self.chunk_tokens // 2})"
            )


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    """Stable id: changes only when the file's path or content changes."""
    source: str
    title: str
    section: str
    """Heading path inside the document, ``"Part > Chapter"``; '' before the first heading."""
    position: int
    """0-based order of the chunk within its document."""
    text: str

    def embedding_text(self) -> str:
        """What is embedded and BM25-indexed: the text with its title and section for context."""
        context = " > ".join(part for part in (self.title, self.section) if part)
        return f"{context}\n{self.text}" if context else self.text


@dataclass(frozen=True)
class _Piece:
    text: str
    num_tokens: int
    paragraph_tokens: int
    """Tokens of the whole paragraph when this piece starts one, else 0."""
    joiner: str = " "
    """What joins it to the previous piece of its paragraph: a space, or a newline in code."""


def chunk_document(doc: Document, config: ChunkingConfig, count_tokens: CountTokens) -> list[Chunk]:
    """The document's chunks, in reading order."""
    texts: list[tuple[str, str]] = []  # (section, chunk text)
    for section, paragraphs in parse_sections(doc.text):
        section = _without_title(section, doc.title)
        pieces = _pieces(paragraphs, config.chunk_tokens, count_tokens)
        texts.extend((section, text) for text in _pack(pieces, config))
    key = hashlib.sha256(f"{doc.source}\0{doc.content_hash}".encode()).hexdigest()[:16]
    return [
        Chunk(f"{key}-{i}", doc.source, doc.title, section, i, text)
        for i, (section, text) in enumerate(texts)
    ]


def parse_sections(text: str) -> list[tuple[str, list[str]]]:
    """``[(heading path, paragraphs)]``; headings are ``# x`` lines or underlined lines (rst)."""
    sections: list[tuple[str, list[str]]] = []
    stack: list[tuple[int, str]] = []  # (level, heading) of the open headings
    underline_levels: list[str] = []  # rst: levels follow the order underline styles first appear
    paragraphs: list[str] = []

    def close_section() -> None:
        if paragraphs:
            sections.append((" > ".join(h for _, h in stack), list(paragraphs)))
            paragraphs.clear()

    for block in re.split(r"\n\s*\n", text):
        lines = block.strip("\n").splitlines()
        heading, level, rest = _heading(lines, underline_levels)
        if heading is not None:
            close_section()
            stack = [(lv, h) for lv, h in stack if lv < level] + [(level, heading)]
            lines = rest
        body = "\n".join(lines).strip("\n")
        if body.strip():
            paragraphs.append(body)
    close_section()
    return sections


def _heading(lines: list[str], underline_levels: list[str]) -> tuple[str | None, int, list[str]]:
    if not lines:
        return None, 0, lines
    atx = re.match(r"^(#{1,6})\s+(.+?)\s*#*\s*$", lines[0])
    if atx:
        return atx.group(2), len(atx.group(1)), lines[1:]
    if len(lines) >= 2 and lines[0].strip():
        underline = re.match(r"^([=*\-~^#+])\1{2,}\s*$", lines[1])
        if underline and len(lines[1].strip()) >= len(lines[0].strip()) // 2:
            style = underline.group(1)
            if style not in underline_levels:
                underline_levels.append(style)
            return lines[0].strip(), underline_levels.index(style) + 1, lines[2:]
    return None, 0, lines


def _pieces(paragraphs: list[str], budget: int, count_tokens: CountTokens) -> list[_Piece]:
    """Sentences (code lines for code blocks; word windows at worst), each within the budget."""
    pieces: list[_Piece] = []
    for paragraph, paragraph_tokens in zip(paragraphs, count_tokens(paragraphs), strict=True):
        is_code = _is_code(paragraph)
        if paragraph_tokens <= budget and is_code:
            parts = [paragraph]
        elif is_code:  # code splits between lines, never inside one unless it is too long
            parts = _split_lines(paragraph.splitlines(), budget, count_tokens)
        else:
            parts = _split(paragraph, budget, count_tokens)
        counts = [paragraph_tokens] if len(parts) == 1 else count_tokens(parts)
        joiner = "\n" if is_code else " "
        for i, (part, num_tokens) in enumerate(zip(parts, counts, strict=True)):
            pieces.append(_Piece(part, num_tokens, paragraph_tokens if i == 0 else 0, joiner))
    return pieces


def _split(text: str, budget: int, count_tokens: CountTokens) -> list[str]:
    """Sentences of ``text``; any still over budget split into lines, then word windows."""
    sentences = [s for s in re.split(r"(?<=[.!?:;])\s+(?=\S)", text) if s.strip()]
    result: list[str] = []
    for sentence, num_tokens in zip(sentences, count_tokens(sentences), strict=True):
        if num_tokens <= budget:
            result.append(sentence)
            continue
        result.extend(_split_lines(sentence.splitlines(), budget, count_tokens))
    return result


def _split_lines(lines: list[str], budget: int, count_tokens: CountTokens) -> list[str]:
    lines = [line for line in lines if line.strip()]
    result: list[str] = []
    for line, num_tokens in zip(lines, count_tokens(lines), strict=True):
        result.extend([line] if num_tokens <= budget else _windows(line, num_tokens, budget))
    return result


def _windows(text: str, num_tokens: int, budget: int) -> list[str]:
    words = text.split()
    # wordpieces per word vary; size windows from this text's own ratio, with 10% headroom
    per_window = max(1, int(len(words) * budget * 0.9 / num_tokens))
    return [" ".join(words[i : i + per_window]) for i in range(0, len(words), per_window)]


def _pack(pieces: list[_Piece], config: ChunkingConfig) -> list[str]:
    budget, chunks = config.chunk_tokens, []
    current: list[_Piece] = []
    for piece in pieces:
        used = sum(p.num_tokens for p in current)
        paragraph_overflows = piece.paragraph_tokens and used + piece.paragraph_tokens > budget
        if current and (
            used + piece.num_tokens > budget or (paragraph_overflows and used >= budget // 2)
        ):
            chunks.append(_join(current))
            current = _overlap(current, config.overlap_tokens)
            if sum(p.num_tokens for p in current) + piece.num_tokens > budget:
                current = []
        current.append(piece)
    if current:
        chunks.append(_join(current))
    return chunks


def _overlap(pieces: list[_Piece], overlap_tokens: int) -> list[_Piece]:
    """Trailing pieces of a chunk that fit ``overlap_tokens``, to repeat in the next chunk."""
    tail: list[_Piece] = []
    for piece in reversed(pieces):
        if sum(p.num_tokens for p in tail) + piece.num_tokens > overlap_tokens:
            break
        tail.insert(0, piece)
    return tail


def _join(pieces: list[_Piece]) -> str:
    text = ""
    for i, piece in enumerate(pieces):
        separator = "" if i == 0 else "\n\n" if piece.paragraph_tokens else piece.joiner
        text += separator + piece.text
    return text


def _without_title(section: str, title: str) -> str:
    """The heading path without a leading heading that merely repeats the document title."""
    if section == title:
        return ""
    return section.removeprefix(f"{title} > ") if title else section


def _is_code(paragraph: str) -> bool:
    return any(line.startswith(("   ", "\t")) for line in paragraph.splitlines())
