"""``llmloop safety scan|classify``: JSONL in (one ``{"text": ...}`` per line), one JSON line out.

Without a file, the whole of stdin is one text. A line that is not a JSON object with a string
``text`` stops the run with an error naming ``FILE:LINE`` (nothing is skipped silently, so the
output lines always match the input lines one to one).
"""

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from llmloop.safety.errors import InputLineError

BATCH_SIZE = 64  # texts classified per encoder call


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmloop safety",
        description="Find PII in text and classify harmful content, offline, on CPU.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    scan = commands.add_parser(
        "scan",
        help="Find PII (email, phone, card, IBAN, SSN, KR RRN, IP, secrets).",
        description=(
            'Find PII in each text. Input: a JSONL file with one {"text": ...} object per line, '
            "or stdin read as one text. Output: one JSON line per text, "
            '{"findings": [{"type", "start", "end", "text", "score"}]} with character offsets '
            "into the text."
        ),
    )
    scan.add_argument("file", nargs="?", type=Path, metavar="FILE.jsonl", help="default: stdin")
    scan.add_argument(
        "--redact",
        action="store_true",
        help='also output "redacted": the text with each finding replaced by <TYPE_n>',
    )
    scan.add_argument(
        "--operator",
        choices=("placeholder", "mask", "hash"),
        default="placeholder",
        help="how --redact replaces a finding (default: placeholder, e.g. <EMAIL_1>)",
    )
    scan.set_defaults(run=run_scan)
    classify = commands.add_parser(
        "classify",
        help="Classify harmful content (violence, weapons, self-harm, hate, ...).",
        description=(
            "Classify each text for harmful content with the shipped classifier (English: "
            "MiniLM head; other languages: multilingual-e5 head). "
            'Input: a JSONL file with one {"text": ...} object per line, or stdin read as one '
            'text. Output: one JSON line per text, {"flagged", "categories": {name: bool}, '
            '"category_scores": {name: float}}.'
        ),
    )
    classify.add_argument("file", nargs="?", type=Path, metavar="FILE.jsonl", help="default: stdin")
    classify.set_defaults(run=run_classify)
    return parser


def run_scan(args: argparse.Namespace) -> int:
    from llmloop.safety.pii import detect
    from llmloop.safety.redact import Redactor

    for text in _progress(read_texts(args.file), args.file):
        findings = detect(text)
        row: dict = {"findings": [_finding_json(f) for f in findings]}
        if args.redact:
            row["redacted"] = Redactor(args.operator).redact(text, findings)
        print(json.dumps(row, ensure_ascii=False), flush=args.file is None)
    return 0


def run_classify(args: argparse.Namespace) -> int:
    from llmloop.safety.multilingual import load_classifier

    texts = list(read_texts(args.file))  # read (and validate) everything before loading encoders
    classifier = load_classifier()
    for batch in _progress(_batches(texts), args.file, total=-(-len(texts) // BATCH_SIZE)):
        for result in classifier.classify(batch):
            row = {
                "flagged": result.flagged,
                "categories": result.categories,
                "category_scores": result.category_scores,
            }
            print(json.dumps(row))
    return 0


def read_texts(path: Path | None) -> Iterator[str]:
    """Texts from a JSONL file (``{"text": ...}`` per line), or all of stdin as one text."""
    if path is None:
        yield sys.stdin.read()
        return
    try:
        lines = path.open(encoding="utf-8")
    except OSError as e:
        raise InputLineError(f"cannot read {path}: {e.strerror}") from e
    with lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                yield _text_of(line, f"{path}:{number}")


def _text_of(line: str, where: str) -> str:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputLineError(
            f'{where}: not JSON ({e.msg}); each line must be {{"text": ...}}'
        ) from e
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise InputLineError(
            f'{where}: expected an object with a string "text", got {line.strip()[:80]}'
        )
    return row["text"]


def _batches(texts: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(texts), BATCH_SIZE):
        yield texts[start : start + BATCH_SIZE]


def _progress(items, path: Path | None, total: int | None = None):
    """A tqdm bar on stderr for file input on a terminal; plain iteration otherwise."""
    if path is None or not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=f"safety {path.name}", unit="batch" if total else "line")


def _finding_json(finding) -> dict:
    return {
        "type": finding.type,
        "start": finding.start,
        "end": finding.end,
        "text": finding.text,
        "score": finding.score,
    }
