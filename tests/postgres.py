"""A real PostgreSQL server for tests: a private throwaway cluster from Debian's binaries, one per
test session (the ``postgres`` fixture, registered in tests/conftest.py)."""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

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
