"""``llmloop keys``: create, list and revoke the API keys every server on a log database accepts."""

import argparse
import json

from llmloop.paths import DB_FLAG_HELP, db_url
from llmloop.serve.auth.keys import SCOPES, KeyLimits, KeyStore

EPILOG = """\
examples:
  llmloop keys create support-app --scope infer --project support --rpm 600 --tpm 200000
  llmloop keys create labeller-1 --scope label --project support
  llmloop keys create ops --scope admin
  llmloop keys list
  llmloop keys revoke support-app

The secret (sk-...) is printed once, as the last word of stdout; only its sha256 is stored.
Servers on the same database see created and revoked keys within 5 s, without a restart.
"""


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    store = KeyStore(db_url(args.db))
    try:
        return args.run(store, args)
    finally:
        store.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmloop keys",
        description="Scoped API keys (infer, label, admin), per project, with per-key limits.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--db",
        help=DB_FLAG_HELP,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    create = commands.add_parser("create", help="Create a key; prints its secret once.")
    create.add_argument("name", help="A unique name (letters, digits, '.', '_', '-').")
    create.add_argument(
        "--scope",
        action="append",
        choices=SCOPES,
        required=True,
        help="infer: completions, chat, embeddings, moderations, models, feedback on its own "
        "answers; label: the labelling UI, feedback and export of its project; admin: "
        "everything. Repeatable.",
    )
    create.add_argument("--project", help="Tag its conversations; a label key sees only these.")
    create.add_argument("--rpm", type=int, help="Requests per minute (default: unlimited).")
    create.add_argument("--tpm", type=int, help="Tokens per minute (default: unlimited).")
    create.add_argument(
        "--max-concurrent", type=int, help="Requests in flight at once (default: unlimited)."
    )
    create.add_argument(
        "--models", help="Comma-separated models the key may use (default: every model)."
    )
    create.set_defaults(run=_create)

    listing = commands.add_parser("list", help="List keys (never their secrets).")
    listing.add_argument("--all", action="store_true", help="Include revoked keys.")
    listing.add_argument("--json", action="store_true", help="One JSON object per line.")
    listing.set_defaults(run=_list)

    revoke = commands.add_parser("revoke", help="Revoke a key by name (servers drop it in 5 s).")
    revoke.add_argument("name")
    revoke.set_defaults(run=_revoke)
    return parser


def _create(store: KeyStore, args: argparse.Namespace) -> int:
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    limits = KeyLimits(rpm=args.rpm, tpm=args.tpm, max_concurrent=args.max_concurrent)
    key, secret = store.create(
        args.name, args.scope, project=args.project, limits=limits, models=models
    )
    print(f"created {key.name} ({key.id}, scopes {','.join(sorted(key.scopes))}); secret:")
    print(secret)
    return 0


def _list(store: KeyStore, args: argparse.Namespace) -> int:
    keys = store.list(include_revoked=args.all)
    if args.json:
        for key in keys:
            print(json.dumps(key.to_dict()))
        return 0
    print(f"{'name':<24} {'id':<16} {'scopes':<18} {'project':<14} rpm/tpm/concurrent  models")
    for key in keys:
        limits = "/".join(str(v or "-") for v in vars(key.limits).values())
        models = ",".join(sorted(key.models)) if key.models is not None else "*"
        revoked = "  (revoked)" if key.revoked else ""
        print(
            f"{key.name:<24} {key.id:<16} {','.join(sorted(key.scopes)):<18} "
            f"{key.project or '-':<14} {limits:<19} {models}{revoked}"
        )
    return 0


def _revoke(store: KeyStore, args: argparse.Namespace) -> int:
    key = store.revoke(args.name)
    print(f"revoked {key.name} ({key.id})")
    return 0
