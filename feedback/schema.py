"""The log's tables, the same on SQLite and PostgreSQL, and the migrations that build them.

A completion row keeps the latest rating and correction beside the full feedback history, so the
UI's filters (rating, unlabelled) and the export read one indexed table even at 100k+ rows.
"""

from collections.abc import Callable

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    inspect,
    select,
)

metadata = MetaData()

BATCH_EVENTS = (
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
)
"""A batch's timestamps: ``{event}_at`` columns, as OpenAI's Batch object names them."""
BATCH_STATUSES = ("validating", *BATCH_EVENTS)

completions = Table(
    "completions",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("created", Float, nullable=False),  # unix seconds
    Column("endpoint", String(32), nullable=False),
    Column("model", String(256), nullable=False),
    Column("base_model", String(512), nullable=False),
    Column("adapter", String(256)),
    Column("adapter_version", Integer),
    Column("messages", JSON),
    Column("prompt", Text),
    Column("citations", JSON, nullable=False),
    Column("sampling_params", JSON, nullable=False),
    Column("choices", JSON, nullable=False),
    Column("output", Text, nullable=False),  # choices[0].text, for search and the list view
    Column("finish_reason", String(32)),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("latency_s", Float, nullable=False),
    Column("api_key_id", String(64)),
    Column("user", String(256)),
    Column("prompt_hash", String(64), nullable=False),
    Column("search_text", Text, nullable=False),  # lower-cased prompt + output
    Column("prompt_preview", String(256), nullable=False),  # the last user turn, for the list
    # the latest feedback, denormalised from `feedback` for fast filters
    Column("rating", Integer),
    Column("correction", Text),
    Column("num_feedback", Integer, nullable=False, server_default="0"),
    Column("project", String(128)),  # the project of the key that made the request
    Column("labelled_by", String(64)),  # the key id behind the latest feedback
    Column("tools", JSON),  # the request's tool definitions (OpenAI's shape); null: none
    Column("trace_id", String(32)),  # OpenTelemetry's, 32 hex digits; null: not traced
    Column("route", String(256)),  # the route the client asked for; `model` is its version
    Index("ix_completions_created", "created", "id"),
    Index("ix_completions_model_created", "model", "created"),
    Index("ix_completions_rating_created", "rating", "created"),
    Index("ix_completions_labelled_created", "num_feedback", "created"),
    Index("ix_completions_prompt_hash", "prompt_hash"),
    Index("ix_completions_route_created", "route", "created"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("completion_id", String(128), ForeignKey("completions.id"), nullable=False),
    Column("created", Float, nullable=False),
    Column("rating", Integer),
    Column("correction", Text),
    Column("comment", Text),
    Column("preferred_over", String(128), ForeignKey("completions.id")),
    Column("api_key_id", String(64)),  # who labelled
    Column("project", String(128)),
    Index("ix_feedback_completion_id", "completion_id"),
    Index("ix_feedback_preferred_over", "preferred_over"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),  # "key-" + the hash's first 12 hex digits
    Column("name", String(128), nullable=False, unique=True),
    Column("secret_sha256", String(64), nullable=False, unique=True),  # never the secret
    Column("scopes", String(64), nullable=False),  # "infer,label"
    Column("project", String(128)),
    Column("rpm", Integer),
    Column("tpm", Integer),
    Column("max_concurrent", Integer),
    Column("models", JSON),  # null: every model
    Column("created", Float, nullable=False),
    Column("revoked", Float),
)

files = Table(
    "files",
    metadata,
    Column("id", String(64), primary_key=True),  # "file-" + 24 hex digits
    Column("created", Float, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("filename", String(256), nullable=False),
    Column("purpose", String(32), nullable=False),  # batch | batch_output
    Column("expires_at", Float),
    Column("api_key_id", String(64)),  # the owner; null on a server without keys
    Column("project", String(128)),
    Index("ix_files_created", "created", "id"),
)

batches = Table(
    "batches",
    metadata,
    Column("id", String(64), primary_key=True),  # "batch_" + 24 hex digits
    Column("created", Float, nullable=False),
    Column("api_key_id", String(64)),
    Column("project", String(128)),
    Column("endpoint", String(64), nullable=False),
    Column("input_file_id", String(64), nullable=False),
    Column("completion_window", String(16), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("status", String(16), nullable=False),  # one of BATCH_STATUSES
    Column("user_metadata", JSON),  # the client's `metadata`
    Column("errors", JSON),  # validation errors: [{code, message, param, line}]
    Column("output_file_id", String(64)),
    Column("error_file_id", String(64)),
    Column("request_total", Integer, nullable=False, server_default="0"),
    Column("request_completed", Integer, nullable=False, server_default="0"),
    Column("request_failed", Integer, nullable=False, server_default="0"),
    Column("input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("output_tokens", BigInteger, nullable=False, server_default="0"),
    *(Column(f"{event}_at", Float) for event in BATCH_EVENTS),
    # the server validating or finalizing it, until lease_until (unix seconds)
    Column("owner", String(128)),
    Column("lease_until", Float),
    Index("ix_batches_created", "created", "id"),
    Index("ix_batches_status", "status"),
)

batch_lines = Table(
    "batch_lines",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("batch_id", String(64), ForeignKey("batches.id"), nullable=False),
    Column("line", Integer, nullable=False),  # 1-based, in the input file
    Column("custom_id", String(512), nullable=False),
    Column("body", Text, nullable=False),  # the request body, JSON text
    Column("status", String(16), nullable=False),  # pending | running | done
    Column("owner", String(128)),  # the server running it, until lease_until
    Column("lease_until", Float),
    Column("not_before", Float, nullable=False, server_default="0"),  # retry after a 429/503
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("succeeded", Boolean),  # once done: answered with a 2xx
    Column("result", Text),  # once done: the output line, JSON text
    Index("ix_batch_lines_batch_status", "batch_id", "status", "id"),
    Index("ix_batch_lines_status_id", "status", "id"),
    UniqueConstraint("batch_id", "custom_id", name="uq_batch_lines_custom_id"),
)

routes = Table(
    "routes",
    metadata,
    Column("name", String(256), primary_key=True),  # the model name clients send
    Column("versions", JSON, nullable=False),  # [{"ref": "support@3", "weight": 100}, ...]
    Column("canary", JSON),  # {"ref", "weight", "started", thresholds...}; null: none
    Column("shadow", JSON),  # {"ref", "fraction"}; null: none
    Column("revision", Integer, nullable=False),  # +1 on every change (compare-and-set)
    Column("updated", Float, nullable=False),
)

route_events = Table(
    "route_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("route", String(256), nullable=False),
    Column("created", Float, nullable=False),
    Column("kind", String(32), nullable=False),  # set | canary | promote | rollback | loop ...
    Column("actor", String(128)),  # a key id, "cli", or the server that acted on its own
    Column("reason", Text),
    Column("before", JSON),  # the route as it was (rollback restores it)
    Column("after", JSON),
    Column("detail", JSON),  # what an event that changes nothing records (a loop's cut-off...)
    Index("ix_route_events_route_created", "route", "created"),
)

shadow_completions = Table(
    "shadow_completions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("completion_id", String(128), nullable=False),  # the primary's answer
    Column("route", String(256), nullable=False),
    Column("model", String(256), nullable=False),  # the shadow version, NAME@V
    Column("created", Float, nullable=False),
    Column("output", Text, nullable=False),  # redacted as the primary's
    Column("finish_reason", String(32)),
    Column("completion_tokens", Integer, nullable=False),
    Column("latency_s", Float, nullable=False),
    Index("ix_shadow_completions_route_created", "route", "created"),
    Index("ix_shadow_completions_completion_id", "completion_id"),
)

ui_sessions = Table(
    "ui_sessions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),  # creation order
    Column("token_sha256", String(64), nullable=False, unique=True),  # never the token itself
    Column("api_key_id", String(64), nullable=False),
    Column("created", Float, nullable=False),  # unix seconds
    Column("expires", Float, nullable=False),
    Index("ix_ui_sessions_expires", "expires"),
)

rate_limit_usage = Table(
    "rate_limit_usage",
    metadata,
    # one row per server process (replica), key and pool: what it admitted since it started
    Column("replica", String(64), primary_key=True),
    Column("api_key_id", String(64), primary_key=True),
    Column("pool", String(16), primary_key=True),  # interactive | batch
    Column("requests", BigInteger, nullable=False),
    Column("tokens", BigInteger, nullable=False),
    Column("in_flight", Integer, nullable=False),
    Column("started", Float, nullable=False),  # the replica's start, unix seconds
    Column("updated", Float, nullable=False),
    Index("ix_rate_limit_usage_updated", "updated"),
)

schema_version = Table(
    "llmloop_schema_version",
    MetaData(),
    Column("version", Integer, primary_key=True),
)


def _v1_initial(op: Operations) -> None:
    metadata.create_all(op.get_bind())


def _v2_keys_and_projects(op: Operations) -> None:
    """Scoped API keys; conversations and feedback tagged with the key's project; who labelled."""
    bind = op.get_bind()
    api_keys.create(bind, checkfirst=True)  # a fresh database got it from _v1_initial
    new_columns = {
        "completions": [Column("project", String(128)), Column("labelled_by", String(64))],
        "feedback": [Column("project", String(128))],
    }
    for table, columns in new_columns.items():
        existing = {c["name"] for c in inspect(bind).get_columns(table)}
        for column in columns:
            if column.name not in existing:
                op.add_column(table, column)
    op.create_index("ix_completions_project_created", "completions", ["project", "created"])


def _v3_tools(op: Operations) -> None:
    """The request's tool definitions, so a tool-calling conversation exports with them."""
    existing = {c["name"] for c in inspect(op.get_bind()).get_columns("completions")}
    if "tools" not in existing:  # a fresh database got it from _v1_initial
        op.add_column("completions", Column("tools", JSON))


def _v4_batches(op: Operations) -> None:
    """The Files and Batches API: uploaded files, batches, and each batch line's progress."""
    for table in (files, batches, batch_lines):
        table.create(op.get_bind(), checkfirst=True)  # a fresh database got them from _v1


def _v5_trace_id(op: Operations) -> None:
    """The request's OpenTelemetry trace id, to find its spans from the log (and back)."""
    existing = {c["name"] for c in inspect(op.get_bind()).get_columns("completions")}
    if "trace_id" not in existing:  # a fresh database got it from _v1_initial
        op.add_column("completions", Column("trace_id", String(32)))


def _v6_routes(op: Operations) -> None:
    """Versioned routes (canary, shadow, rollback), their events, and shadow answers."""
    bind = op.get_bind()
    for table in (routes, route_events, shadow_completions):
        table.create(bind, checkfirst=True)  # a fresh database got them from _v1_initial
    existing = {c["name"] for c in inspect(bind).get_columns("completions")}
    if "route" not in existing:
        op.add_column("completions", Column("route", String(256)))
        op.create_index("ix_completions_route_created", "completions", ["route", "created"])


def _v7_shared_sessions_and_quotas(op: Operations) -> None:
    """The UI's sessions and each replica's rate-limit counters, so replicas on one database
    share logins and quotas."""
    for table in (ui_sessions, rate_limit_usage):
        table.create(op.get_bind(), checkfirst=True)  # a fresh database got them from _v1_initial


# Append-only: each entry upgrades the schema by one version with Alembic operations
# (op.add_column, op.create_index, ...); released entries are never edited. _v1_initial builds
# today's tables, so later entries must tolerate what it already made.
MIGRATIONS: list[Callable[[Operations], None]] = [
    _v1_initial,
    _v2_keys_and_projects,
    _v3_tools,
    _v4_batches,
    _v5_trace_id,
    _v6_routes,
    _v7_shared_sessions_and_quotas,
]


def migrate(conn: Connection) -> int:
    """Bring the schema to the latest version inside ``conn``'s transaction; returns that version."""
    schema_version.create(conn, checkfirst=True)
    current = conn.execute(select(schema_version.c.version)).scalar() or 0
    op = Operations(MigrationContext.configure(conn))
    for version, upgrade in enumerate(MIGRATIONS[current:], start=current + 1):
        upgrade(op)
        conn.execute(schema_version.delete())
        conn.execute(insert(schema_version).values(version=version))
    return len(MIGRATIONS)
