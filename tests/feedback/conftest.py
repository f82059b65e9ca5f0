"""Fixtures for the request log: a real PostgreSQL server (a private throwaway cluster from
Debian's binaries), a fresh database per test on SQLite and on PostgreSQL, and record factories."""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmloop.feedback.record import CompletionRecord

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


class PostgresServer:
    """A cluster of our own in a temp dir, on a free port; stop/start/kill for durability tests."""

    def __init__(self, bin_dir: Path, data_dir: Path):
        self.bin_dir, self.data_dir = bin_dir, data_dir
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0  # postgres refuses to run as root

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data_dir), "-o", options, "-w", "-l",
                  str(self.data_dir / "server.log"), "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``immediate`` is a crash: no shutdown checkpoint, clients cut off mid-transaction."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def create_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin_dir / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    bin_dirs = sorted(glob.glob(PG_BIN_GLOB))
    if not bin_dirs:
        pytest.skip(
            "PostgreSQL binaries not found (/usr/lib/postgresql/*/bin); "
            "run .ci/services.sh or `apt-get install postgresql`"
        )
    # not under pytest's tmp dir: that is private to root, and the server runs as postgres
    data_dir = Path(tempfile.mkdtemp(prefix="llmloop-pg-"))
    os.chmod(data_dir, 0o700)
    server = PostgresServer(Path(bin_dirs[-1]), data_dir)
    server.init()
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop("immediate")
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend; the same tests run against both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'llmloop.db'}"
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture
def make_record():
    """``make_record(i, prompt=..., output=..., model=..., created=...)`` -> a CompletionRecord."""
    return build_record


def build_record(
    i: int,
    *,
    prompt: str = "What is the capital of France?",
    output: str | None = None,
    model: str = "smollm2-135m-instruct",
    created: float | None = None,
    endpoint: str = "chat.completions",
) -> CompletionRecord:
    chat = endpoint == "chat.completions"
    return CompletionRecord(
        id=f"{'chatcmpl' if chat else 'cmpl'}-{i:08d}",
        created=created if created is not None else time.time(),
        endpoint=endpoint,
        model=model,
        base_model="smollm2-135m-instruct",
        adapter=None if model == "smollm2-135m-instruct" else model,
        adapter_version=None if model == "smollm2-135m-instruct" else 1,
        messages=[{"role": "user", "content": prompt}] if chat else None,
        prompt=None if chat else prompt,
        citations=[],
        sampling_params={"temperature": 0.0, "max_tokens": 16},
        choices=[{"index": 0, "text": output or f"answer {i}", "finish_reason": "stop"}],
        prompt_tokens=9,
        completion_tokens=3,
        latency_s=0.05,
        api_key_id=None,
        user=None,
    )


@pytest.fixture
def make_app(tmp_path: Path):
    """``make_app(db_url, api_keys=())`` -> the server's real app (fake engine) with the feedback
    router and a RequestLog on ``db_url``; its store is on ``app.state.request_log.store``."""
    from llmloop.feedback.log import RequestLog
    from llmloop.serve.app import create_app
    from llmloop.serve.config import ServerConfig
    from llmloop.serve.routes.feedback import router
    from tests.serve.fakes import FakeEngine

    async def engine_factory():
        return FakeEngine()

    def make(db_url: str, api_keys: tuple[str, ...] = ()):
        app = create_app(ServerConfig(api_keys=api_keys, db_url=db_url), engine_factory)
        if "/v1/feedback" not in {getattr(r, "path", None) for r in app.routes}:
            app.include_router(router)
        if getattr(app.state, "request_log", None) is None:
            app.state.request_log = RequestLog(db_url, spool_dir=tmp_path / "spool")
            app.state.request_log.store.migrate()
        return app

    return make
