"""``llmloop deploy``: route the model names clients send to registry versions, with a weighted
split, a canary judged on live metrics, a shadow, promote and rollback. Every server on the same
log database applies a change within 5 s."""

import argparse
import json

from llmloop.feedback.db import create_db_engine
from llmloop.feedback.monitor.timespec import parse_duration
from llmloop.feedback.routes import RouteStore
from llmloop.paths import DB_FLAG_HELP, db_url
from llmloop.serve.routing import commands

ACTOR = "cli"
EPILOG = """\
examples:
  llmloop models register ./my-lora --name support          # -> support@1
  llmloop deploy set support support@1                       # all users on support@1
  llmloop deploy set support support@1=90 support@2=10 --shadow support@3:0.05
  llmloop deploy canary support --candidate support@4 --weight 10 --max-error-rate 0.02
  llmloop deploy status support
  llmloop deploy promote support                             # the canary takes all users
  llmloop deploy rollback support --reason "users complain"  # end the canary, else undo
  llmloop deploy compare support --since 24h                 # shadow vs primary, 95% CIs

Clients send the route's name as `model`; the response's `model` is the version that answered
(support@4). A user (OpenAI's `user`, else the API key) keeps their version while the weights
hold. A canary that breaches a threshold after --min-requests is rolled back by the servers.
"""


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    engine = create_db_engine(db_url(args.db))
    try:
        store = RouteStore(engine)
        store.migrate()
        return args.run(store, args)
    finally:
        engine.dispose()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmloop deploy",
        description="Route model names to versions: split, canary, shadow, promote, rollback.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--db",
        help=DB_FLAG_HELP,
    )
    commands_ = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    set_ = commands_.add_parser(
        "set",
        help="Create a route or replace its split (ends a running canary).",
        description="Point ROUTE at one or more versions, weighted. A bare NAME pins the newest "
        "NAME@V in the registry; a prepared base model's name serves it without an adapter.",
    )
    set_.add_argument("route", help="The model name clients send (no '@').")
    set_.add_argument(
        "versions",
        nargs="+",
        metavar="NAME@V=WEIGHT",
        help="A version and its relative weight (default 100): support@3=90 support@4=10.",
    )
    set_.add_argument(
        "--shadow",
        metavar="NAME@V[:FRACTION]",
        help="Also run this fraction of requests (default 0.1) on a shadow version; its answers "
        "are logged for `deploy compare`, never returned.",
    )
    set_.set_defaults(run=_set)

    canary = commands_.add_parser(
        "canary",
        help="Send a percent of users to a candidate, judged on live metrics.",
        description="Start a canary: --weight percent of the route's users (sticky) go to the "
        "candidate. Once it has --min-requests in the window, the servers roll it back on the "
        "first threshold it breaches.",
    )
    canary.add_argument("route")
    canary.add_argument("--candidate", required=True, metavar="NAME@V", help="The new version.")
    canary.add_argument(
        "--weight", type=float, required=True, metavar="PCT", help="Percent of users, 0-100."
    )
    canary.add_argument(
        "--min-requests", type=int, metavar="N", help="Before any threshold is judged (50)."
    )
    canary.add_argument(
        "--max-error-rate", type=float, metavar="R", help="Errors per request (0.05)."
    )
    canary.add_argument(
        "--max-negative-feedback-rate",
        type=float,
        metavar="R",
        help="Thumbs-down ratings per request (0.2).",
    )
    canary.add_argument(
        "--max-refusal-rate",
        type=float,
        metavar="R",
        help="Answers the output filter stopped, per request (0.1).",
    )
    canary.add_argument(
        "--max-latency-ratio",
        type=float,
        metavar="X",
        help="Its median latency over the stable versions' (2.0).",
    )
    canary.add_argument(
        "--window",
        metavar="DURATION",
        help="The sliding window the metrics are taken over: 15m, 1h, ... (15m).",
    )
    canary.add_argument(
        "--promote-after",
        type=int,
        metavar="N",
        help="Promote on its own after N requests with no breach (default: never).",
    )
    canary.set_defaults(run=_canary)

    promote = commands_.add_parser("promote", help="The canary takes all the route's users.")
    promote.add_argument("route")
    promote.set_defaults(run=_promote)

    rollback = commands_.add_parser(
        "rollback",
        help="End the canary; without one, restore the split before the last set or promote.",
    )
    rollback.add_argument("route")
    rollback.add_argument("--reason", help="Why, for `deploy status` and the log.")
    rollback.set_defaults(run=_rollback)

    status = commands_.add_parser(
        "status", help="Versions and shares, canary health vs thresholds, recent events."
    )
    status.add_argument("route", nargs="?", help="One route (default: every route).")
    status.add_argument("--json", action="store_true", help="One JSON object per route and line.")
    status.set_defaults(run=_status)

    compare = commands_.add_parser(
        "compare",
        help="Shadow vs primary on the same requests, with bootstrap 95%% CIs.",
        description="Pair each shadow answer with the primary answer to the same request and "
        "compare them as `llmloop eval compare` compares runs (paired bootstrap).",
    )
    compare.add_argument("route")
    compare.add_argument(
        "--since",
        default="7d",
        help="ISO 8601 time, unix seconds, or a duration ago like 24h (default: 7d).",
    )
    compare.add_argument("--json", action="store_true", help="One JSON object.")
    compare.set_defaults(run=_compare)

    delete = commands_.add_parser("delete", help="Remove a route (its events stay).")
    delete.add_argument("route")
    delete.set_defaults(run=_delete)
    return parser


def _set(store: RouteStore, args: argparse.Namespace) -> int:
    versions = [commands.parse_version(spec) for spec in args.versions]
    shadow = commands.parse_shadow(args.shadow) if args.shadow else None
    route = commands.set_route(store, args.route, versions, shadow, ACTOR)
    print(f"{route.name}: {_split(route)} (revision {route.revision})")
    return 0


def _canary(store: RouteStore, args: argparse.Namespace) -> int:
    thresholds = commands.build_thresholds(
        min_requests=args.min_requests,
        max_error_rate=args.max_error_rate,
        max_refusal_rate=args.max_refusal_rate,
        max_negative_feedback_rate=args.max_negative_feedback_rate,
        max_latency_ratio=args.max_latency_ratio,
        window_s=parse_duration(args.window, name="--window") if args.window else None,
        promote_after=args.promote_after,
    )
    route = commands.start_canary(store, args.route, args.candidate, args.weight, thresholds, ACTOR)
    assert route.canary is not None
    print(
        f"{route.name}: canary {route.canary.ref} on {route.canary.weight:g}% of users "
        f"(revision {route.revision})"
    )
    return 0


def _promote(store: RouteStore, args: argparse.Namespace) -> int:
    route = commands.promote(store, args.route, ACTOR)
    print(f"{route.name}: promoted; {_split(route)} (revision {route.revision})")
    return 0


def _rollback(store: RouteStore, args: argparse.Namespace) -> int:
    route = commands.rollback(store, args.route, ACTOR, args.reason)
    print(f"{route.name}: rolled back; {_split(route)} (revision {route.revision})")
    return 0


def _delete(store: RouteStore, args: argparse.Namespace) -> int:
    commands.delete(store, args.route, ACTOR)
    print(f"{args.route}: deleted")
    return 0


def _status(store: RouteStore, args: argparse.Namespace) -> int:
    statuses = commands.status(store, args.route)
    if args.json:
        for status in statuses:
            print(json.dumps(status))
        return 0
    if not statuses:
        print("No routes yet: `llmloop deploy set ROUTE NAME@V` creates one.")
    print("\n\n".join(format_status(status) for status in statuses))
    return 0


def _compare(store: RouteStore, args: argparse.Namespace) -> int:
    from llmloop.serve.routing.compare import run_compare  # numpy and the eval harness

    return run_compare(store.engine, args.route, args.since, as_json=args.json)


def _split(route) -> str:
    return ", ".join(f"{v.ref}={v.weight:g}" for v in route.versions)


def format_status(status: dict) -> str:
    lines = [f"route {status['id']}  (revision {status['revision']}, updated {status['updated']})"]
    lines.append(f"  {'version':<32} {'weight':>8} {'users':>7}")
    for version in status["versions"]:
        lines.append(f"  {version['ref']:<32} {version['weight']:>8g} {version['share']:>7.1%}")
    if canary := status["canary"]:
        lines.append(
            f"  {canary['ref'] + ' (canary)':<32} {canary['weight']:>7g}% {canary['share']:>7.1%}"
        )
        lines += _format_health(canary)
    if shadow := status["shadow"]:
        lines.append(f"  shadow {shadow['ref']} on {shadow['fraction']:.1%} of requests")
    if status["events"]:
        lines.append("  recent events:")
        for event in status["events"]:
            reason = f": {event['reason']}" if event["reason"] else ""
            lines.append(f"    {event['created']}  {event['kind']:<14} {event['actor']}{reason}")
    return "\n".join(lines)


def _format_health(canary: dict) -> list[str]:
    t = canary["thresholds"]
    own = canary["health"] or {}
    stable = canary["stable"]
    lines = [
        f"  canary health since {canary['window_start']} "
        f"(judged after {t['min_requests']} requests):",
        f"    {'metric':<24} {'canary':>9} {'stable':>9} {'limit':>9}",
        f"    {'requests':<24} {own.get('requests', 0):>9} {stable['requests']:>9} "
        f"{t['min_requests']:>9}",
    ]
    for metric, limit in (
        ("error_rate", t["max_error_rate"]),
        ("refusal_rate", t["max_refusal_rate"]),
        ("negative_feedback_rate", t["max_negative_feedback_rate"]),
    ):
        lines.append(
            f"    {metric:<24} {own.get(metric, 0.0):>9.3f} {stable[metric]:>9.3f} {limit:>9g}"
        )
    lines.append(
        f"    {'latency_p50_s':<24} {_seconds(own.get('latency_p50_s')):>9} "
        f"{_seconds(stable['latency_p50_s']):>9} {'x' + format(t['max_latency_ratio'], 'g'):>9}"
    )
    found = "; ".join(breach["message"] for breach in canary["breaches"])
    lines.append(f"  breaches: {found or 'none'}")
    return lines


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
