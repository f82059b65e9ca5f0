"""``llmloop feedback``: export labelled completions from the request log as training data."""

import argparse
from pathlib import Path

from sqlalchemy.exc import OperationalError

from llmloop.feedback.db import redact_url
from llmloop.feedback.errors import DatabaseUnavailableError, ExportArgumentError
from llmloop.feedback.export import FORMATS, export, manifest_path
from llmloop.feedback.store import ConversationFilter, FeedbackStore, parse_time
from llmloop.paths import default_db_url


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmloop feedback",
        description="Work with the request/feedback log that `llmloop serve` writes.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    exp = commands.add_parser(
        "export",
        help="Export rated, corrected and compared completions as SFT/DPO/KTO JSONL for TRL.",
        description=(
            "Export labelled completions as TRL's conversational datasets: "
            "sft = {messages} (corrections, and answers rated +1); "
            "dpo = {prompt, chosen, rejected} (a correction beats the original answer; a "
            "preference beats the other answer); kto = {prompt, completion, label} (ratings; "
            "a correction is a good completion). PII is redacted again, duplicates dropped, and "
            "FILE.manifest.json records counts, filters and the sha256. Exits 1 when nothing "
            "matches."
        ),
    )
    exp.add_argument("--format", required=True, choices=FORMATS, help="Which TRL dataset to write.")
    exp.add_argument("--out", required=True, type=Path, help="Output file, e.g. sft.jsonl.")
    exp.add_argument(
        "--since",
        help="Only completions logged at or after this date (YYYY-MM-DD or ISO time, UTC).",
    )
    exp.add_argument("--until", help="Only completions logged before this date (same formats).")
    exp.add_argument("--model", help="Only completions of this model or adapter name.")
    exp.add_argument(
        "--project", help="Only completions made with keys of this project (`llmloop keys`)."
    )
    exp.add_argument(
        "--db",
        default=None,
        help="The log's database URL, as given to `llmloop serve --db` "
        "(default: sqlite:///$LLMLOOP_HOME/llmloop.db).",
    )
    exp.set_defaults(run=_export)
    return parser


def _export(args: argparse.Namespace) -> int:
    db_url = args.db or default_db_url()
    filters = ConversationFilter(
        model=args.model,
        project=args.project,
        since=parse_time(args.since, name="--since") if args.since else None,
        until=parse_time(args.until, name="--until") if args.until else None,
    )
    if args.out.is_dir():
        raise ExportArgumentError(
            f"--out {args.out} is a directory; give a file name like sft.jsonl"
        )
    store = FeedbackStore(db_url)
    try:
        store.migrate()  # an empty or older log gets the current schema, then reports "nothing"
        manifest = export(store, args.format, args.out, filters)
    except OperationalError as e:
        raise DatabaseUnavailableError(
            f"cannot read the log at {redact_url(db_url)} ({str(e.orig).strip()}); "
            "check --db and that the database is running"
        ) from e
    finally:
        store.close()
    counts = manifest["counts"]
    print(
        f"wrote {manifest['rows']} {args.format} rows to {args.out} "
        f"({counts.get('duplicates_dropped', 0)} duplicates dropped, "
        f"{counts.get('pii_redacted', 0)} PII spans redacted); manifest: {manifest_path(args.out)}"
    )
    return 0
