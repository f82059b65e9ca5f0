"""Read txt, md, html and pdf files into plain text with markdown-style headings.

Every loader returns a ``Document`` whose ``text`` marks headings as ``# Heading`` lines and
paragraphs as blank-line-separated blocks, so one chunker handles every format.
"""

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from llmloop.rag.errors import UnreadableFileError

SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf")
"""File name endings the loaders read; other files in a directory are ignored."""


@dataclass(frozen=True)
class Document:
    source: str
    """Absolute path of the file."""
    title: str
    """The document's title: its first heading, HTML <title> or PDF title, else the file name."""
    text: str
    """Plain text; headings as ``#`` lines, paragraphs separated by blank lines."""
    content_hash: str
    """sha256 of the file's bytes: re-indexing skips files whose hash did not change."""


def find_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files to index under ``paths`` (directories recurse), absolute, sorted, without repeats.

    A path that does not exist raises UnreadableFileError; hidden files and directories are skipped.
    """
    found: set[Path] = set()
    for path in map(Path, paths):
        path = path.expanduser().resolve()
        if path.is_file():
            found.add(path)
        elif path.is_dir():
            found.update(_walk(path))
        else:
            raise UnreadableFileError(f"{path}: no such file or directory; check the PATH given")
    return sorted(found)


def load(path: Path) -> Document:
    """Read one file; UnreadableFileError when it cannot be parsed or holds no text."""
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise UnreadableFileError(f"{path}: unsupported file type (read: {', '.join(SUFFIXES)})")
    try:
        data = path.read_bytes()
        title, text = reader(path, data)
    except UnreadableFileError:
        raise
    except Exception as e:  # parsers raise many types on corrupt input
        raise UnreadableFileError(f"{path}: cannot be read ({type(e).__name__}: {e})") from e
    text = _tidy(text)
    if not text:
        raise UnreadableFileError(f"{path}: holds no text")
    return Document(
        source=str(path),
        title=title or path.stem,
        text=text,
        content_hash=hashlib.sha256(data).hexdigest(),
    )


def _walk(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
        if not hidden and path.is_file() and path.suffix.lower() in SUFFIXES:
            yield path


def _read_text(path: Path, data: bytes) -> tuple[str, str]:
    text = _decode(path, data)
    return _first_heading(text), text


def _read_html(path: Path, data: bytes) -> tuple[str, str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode(path, data), "html.parser")
    for hidden in soup(["script", "style", "noscript", "template", "nav", "footer"]):
        hidden.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    blocks = []
    for element in soup.find_all(["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "td"]):
        if element.find_parent(["p", "li", "pre", "td"]):
            continue  # already part of an enclosing block
        text = element.get_text("\n" if element.name == "pre" else " ", strip=True)
        if not text:
            continue
        if element.name.startswith("h"):
            text = "#" * int(element.name[1]) + " " + " ".join(text.split())
        blocks.append(text)
    if not blocks:  # no block elements: fall back to all visible text
        body = soup.body or soup
        blocks = [body.get_text("\n", strip=True)]
    text = "\n\n".join(blocks)
    return title or _first_heading(text), text


def _read_pdf(path: Path, data: bytes) -> tuple[str, str]:
    import io

    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted and not reader.decrypt(""):
        raise UnreadableFileError(f"{path}: the PDF is encrypted")
    pages = [page.extract_text() or "" for page in reader.pages]
    title = (reader.metadata.title if reader.metadata else None) or ""
    return str(title).strip(), "\n\n".join(pages)


_READERS = {
    ".txt": _read_text,
    ".md": _read_text,
    ".markdown": _read_text,
    ".html": _read_html,
    ".htm": _read_html,
    ".pdf": _read_pdf,
}


def _decode(path: Path, data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise UnreadableFileError(f"{path}: looks binary, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _first_heading(text: str) -> str:
    """The first markdown heading (``# x``) or underlined heading (``x\\n===``), else ''."""
    lines = text.lstrip().splitlines()[:40]
    for i, line in enumerate(lines):
        if re.match(r"^#{1,6}\s+\S", line):
            return line.lstrip("#").strip()
        if i + 1 < len(lines) and line.strip() and re.match(r"^([=*\-~^])\1{2,}\s*$", lines[i + 1]):
            return line.strip()
    return ""


def _tidy(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
