from pathlib import Path

import pytest

from llmloop.rag.errors import UnreadableFileError
from llmloop.rag.loaders import find_files, load


def test_find_files_recurses_and_skips_hidden_and_unsupported(corpus: Path) -> None:
    (corpus / ".git").mkdir()
    (corpus / ".git" / "notes.md").write_text("# hidden")
    (corpus / "image.png").write_bytes(b"\x89PNG")
    names = [p.name for p in find_files([corpus])]
    assert names == ["octopus.html", "tides.md", "baking.txt", "volcanoes.md"]


def test_find_files_names_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(UnreadableFileError, match="no such file"):
        find_files([tmp_path / "nope"])


def test_markdown_title_and_headings(corpus: Path) -> None:
    doc = load(corpus / "volcanoes.md")
    assert doc.title == "Volcanoes"
    assert "## Eruptions" in doc.text
    assert len(doc.content_hash) == 64


def test_text_with_underlined_title(corpus: Path) -> None:
    assert load(corpus / "baking.txt").title == "Bread baking"


def test_html_keeps_headings_and_drops_scripts(corpus: Path) -> None:
    doc = load(corpus / "animals" / "octopus.html")
    assert doc.title == "Octopus"
    assert doc.text.startswith("# The octopus")
    assert "three hearts" in doc.text
    assert "tracking" not in doc.text


def test_pdf_text_is_extracted(tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(minimal_pdf("Glaciers carve valleys over thousands of years."))
    doc = load(path)
    assert "Glaciers carve valleys" in doc.text
    assert doc.title == "report"


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.md", b"", "holds no text"),
        ("blank.txt", b"\n\n   \n", "holds no text"),
        ("binary.txt", b"\x00\x01\x02garbage", "binary"),
        ("broken.pdf", b"%PDF-1.4 this is not a pdf", "cannot be read"),
    ],
)
def test_unreadable_files_raise_with_the_path(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableFileError, match=reason) as raised:
        load(path)
    assert name in str(raised.value)


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF showing ``text`` in Helvetica, with a correct cross-reference table."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
