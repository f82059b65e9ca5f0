"""``llmloop cluster``: N ``llmloop serve`` replicas on one log database behind vLLM's router, on
one machine (development and tests).

``up`` starts PostgreSQL if asked (``--postgres``: a cluster of its own under
``$LLMLOOP_HOME/cluster/pg``), then N replicas on free ports sharing the database and
``$LLMLOOP_HOME``, waits for each ``/health``, then starts ``vllm-router`` (the ``router`` extra)
in front on ``--port``, and writes ``$LLMLOOP_HOME/cluster/state.json`` so that ``down`` and
``status`` find the processes. Every process runs in its own session (vLLM's workers die with
their replica's process group).

The router proxies the inference paths (``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``, ``/v1/models``) with the Authorization header and streams. Its catch-all for
other paths drops the Authorization header and the query string and accepts JSON bodies only, so
files, batches, feedback, keys, routes and the UI go to any replica directly: their state is all
in the database, so any replica answers them the same. ``up`` and ``status`` print those URLs.
"""

import argparse
import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from llmloop.errors import LLMLoopError
from llmloop.paths import llmloop_home

POLICIES = ("cache_aware", "consistent_hash", "round_robin", "power_of_two", "random")
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
REPLICA_STARTUP_S = 900.0  # engines load one after another on a small machine
ROUTER_STARTUP_S = 60.0
STOP_GRACE_S = 30.0
# Health probes often enough that a replica back from a crash gets traffic within seconds; the
# router retries a request that failed before any byte came back on another replica.
ROUTER_DEFAULT_ARGS = [
    "--health-check-interval-secs", "2",
    "--health-failure-threshold", "2",
    "--health-success-threshold", "1",
    "--health-check-timeout-secs", "2",
    "--cb-timeout-duration-secs", "5",
    "--retry-max-retries", "3",
    "--request-timeout-secs", "600",
    "--log-level", "warning",
]  # fmt: skip


class ClusterError(LLMLoopError):
    pass


@dataclass
class Proc:
    name: str
    pid: int
    port: int
    url: str
    log: str
    argv: list[str] = field(default_factory=list)


@dataclass
class Postgres:
    bin_dir: str
    data_dir: str
    port: int
    url: str


@dataclass
class ClusterState:
    db_url: str
    policy: str
    router: Proc | None
    replicas: list[Proc]
    postgres: Postgres | None = None

    @property
    def url(self) -> str:
        return self.router.url if self.router else ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "ClusterState":
        raw = json.loads(text)
        return cls(
            db_url=raw["db_url"],
            policy=raw["policy"],
            router=Proc(**raw["router"]) if raw.get("router") else None,
            replicas=[Proc(**r) for r in raw["replicas"]],
            postgres=Postgres(**raw["postgres"]) if raw.get("postgres") else None,
        )


def cluster_dir() -> Path:
    return llmloop_home() / "cluster"


def state_path() -> Path:
    return cluster_dir() / "state.json"


def load_state() -> ClusterState | None:
    path = state_path()
    return ClusterState.from_json(path.read_text()) if path.exists() else None


def save_state(state: ClusterState) -> None:
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.to_json())
    tmp.replace(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie child of ours is dead
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def router_command() -> list[str]:
    """The ``vllm-router`` console script of this interpreter's environment (the router extra)."""
    local = Path(sys.executable).parent / "vllm-router"
    found = str(local) if local.exists() else shutil.which("vllm-router")
    if not found:
        raise ClusterError(
            "vllm-router is not installed: pip install 'llmloop[router]' (vllm-router==0.1.17)"
        )
    return [found]


def serve_command() -> list[str]:
    return [sys.executable, "-m", "llmloop.cli", "serve"]


def spawn(name: str, argv: list[str], log: Path, port: int) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: down stops vLLM's workers too
            env=os.environ.copy(),
        )
    return Proc(name, process.pid, port, f"http://127.0.0.1:{port}", str(log), argv)


def wait_healthy(proc: Proc, timeout_s: float, path: str = "/health") -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if not alive(proc.pid):
            raise ClusterError(f"{proc.name} exited while starting; its log:\n{_tail(proc.log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(proc.url + path, timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise ClusterError(f"{proc.name} not ready after {timeout_s:.0f}s:\n{_tail(proc.log)}")
        time.sleep(0.5)


def start_replica(
    index: int, db_url: str, serve_args: list[str], command: list[str] | None = None
) -> Proc:
    port = free_port()
    argv = [*(command or serve_command()), "--port", str(port), "--db", db_url, *serve_args]
    return spawn(f"replica-{index}", argv, cluster_dir() / "logs" / f"replica-{index}.log", port)


def start_router(
    worker_urls: list[str],
    port: int,
    policy: str,
    host: str = "127.0.0.1",
    extra_args: list[str] | None = None,
) -> Proc:
    argv = [*router_command(), "--host", host, "--port", str(port), "--policy", policy]
    argv += ["--worker-urls", *worker_urls, "--prometheus-port", str(free_port())]
    argv += [*ROUTER_DEFAULT_ARGS, *(extra_args or [])]
    proc = spawn("router", argv, cluster_dir() / "logs" / "router.log", port)
    proc.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    return proc


def stop_pid(pid: int, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process group, wait up to ``grace_s``, then SIGKILL it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 10)
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        if not alive(pid):
            return


def up(
    replicas: int,
    db_url: str | None = None,
    postgres: bool = False,
    policy: str = "cache_aware",
    port: int = 8000,
    host: str = "127.0.0.1",
    serve_args: list[str] | None = None,
    router_args: list[str] | None = None,
    command: list[str] | None = None,
    progress=print,
) -> ClusterState:
    """Start the cluster; on any failure stop what was started and raise."""
    if replicas < 1:
        raise ClusterError("--replicas must be at least 1")
    previous = load_state()
    if previous and any(alive(p.pid) for p in _procs(previous)):
        raise ClusterError(f"a cluster is already up ({state_path()}); run `llmloop cluster down`")
    pg = None
    if postgres:
        if db_url:
            raise ClusterError("give --db or --postgres, not both")
        pg = start_postgres(cluster_dir() / "pg")
        db_url = pg.url
        progress(f"postgres      {pg.url}  (data {pg.data_dir})")
    elif not db_url:
        raise ClusterError("replicas must share a database: give --db URL or --postgres")
    state = ClusterState(db_url=db_url, policy=policy, router=None, replicas=[], postgres=pg)
    save_state(state)
    try:
        for i in range(replicas):
            state.replicas.append(start_replica(i, db_url, serve_args or [], command))
            save_state(state)
        for proc in state.replicas:  # started together, waited for together
            wait_healthy(proc, REPLICA_STARTUP_S)
            progress(f"{proc.name:<13} {proc.url}  pid {proc.pid}  log {proc.log}")
        state.router = start_router(
            [r.url for r in state.replicas], port, policy, host, router_args
        )
        save_state(state)
        wait_healthy(state.router, ROUTER_STARTUP_S)
        progress(f"router        {state.router.url}  pid {state.router.pid}  policy {policy}")
    except BaseException:
        down(progress=lambda _: None)
        raise
    return state


def down(progress=print) -> bool:
    """Stop the router, then the replicas, then PostgreSQL; False if no cluster was recorded."""
    state = load_state()
    if state is None:
        return False
    for proc in [*([state.router] if state.router else []), *state.replicas]:
        was_alive = alive(proc.pid)
        stop_pid(proc.pid)
        progress(f"{proc.name:<13} {'stopped' if was_alive else 'was not running'}")
    if state.postgres:
        stop_postgres(state.postgres)
        progress("postgres      stopped (its data stays under the cluster directory)")
    state_path().unlink(missing_ok=True)
    return True


def restart_replica(index: int, progress=print) -> Proc:
    """Start replica ``index`` again on its port with its command line (after a crash)."""
    state = load_state()
    if state is None or not 0 <= index < len(state.replicas):
        raise ClusterError(f"no replica {index} in {state_path()}")
    old = state.replicas[index]
    if alive(old.pid):
        stop_pid(old.pid)
    proc = spawn(old.name, old.argv, Path(old.log), old.port)
    state.replicas[index] = proc
    save_state(state)
    wait_healthy(proc, REPLICA_STARTUP_S)
    progress(f"{proc.name:<13} {proc.url}  pid {proc.pid}  restarted")
    return proc


def status_lines(state: ClusterState) -> list[str]:
    lines = [f"database      {_redact(state.db_url)}"]
    for proc in [*state.replicas, *([state.router] if state.router else [])]:
        lines.append(f"{proc.name:<13} {proc.url}  pid {proc.pid}  {_health(proc)}")
    if state.router:
        lines.append(
            f"inference     {state.router.url}/v1  (chat, completions, embeddings, models)"
        )
    if state.replicas:
        others = ", ".join(r.url for r in state.replicas)
        lines.append(f"files, batches, feedback, keys, routes, UI: any replica ({others})")
    return lines


# PostgreSQL of its own (``--postgres``), as tests/postgres.py does


def start_postgres(data_dir: Path) -> Postgres:
    bin_dirs = sorted(glob.glob(PG_BIN_GLOB))
    if not bin_dirs:
        raise ClusterError("PostgreSQL binaries not found (/usr/lib/postgresql/*/bin); use --db")
    pg = Postgres(bin_dirs[-1], str(data_dir), free_port(), "")
    pg.url = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    if not (data_dir / "PG_VERSION").exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(data_dir, user.pw_uid, user.pw_gid)
        _pg(pg, "initdb", "-D", str(data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    options = f"-p {pg.port} -k {data_dir} -c listen_addresses=127.0.0.1"
    _pg(pg, "pg_ctl", "-D", str(data_dir), "-o", options, "-w", "-l",
        str(data_dir / "server.log"), "start")  # fmt: skip
    return pg


def stop_postgres(pg: Postgres) -> None:
    with contextlib.suppress(ClusterError):
        _pg(pg, "pg_ctl", "-D", pg.data_dir, "-m", "fast", "-w", "stop")


def _pg(pg: Postgres, tool: str, *args: str) -> None:
    cmd = [str(Path(pg.bin_dir) / tool), *args]
    if os.geteuid() == 0:  # postgres refuses to run as root
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise ClusterError(f"{tool} failed: {done.stderr.strip() or done.stdout.strip()}")


def _procs(state: ClusterState) -> list[Proc]:
    return [*state.replicas, *([state.router] if state.router else [])]


def _health(proc: Proc) -> str:
    if not alive(proc.pid):
        return "not running"
    try:
        return "healthy" if httpx.get(proc.url + "/health", timeout=2).is_success else "unhealthy"
    except httpx.HTTPError:
        return "not answering"


def _redact(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url


def _tail(path: str, chars: int = 4000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmloop cluster",
        description="N `llmloop serve` replicas on one database behind vLLM's router, on this "
        "machine. State: $LLMLOOP_HOME/cluster/state.json; logs: $LLMLOOP_HOME/cluster/logs/.",
        epilog="Example: llmloop cluster up --replicas 2 --postgres -- --api-key KEY\n"
        "The router proxies /v1/chat/completions, /v1/completions, /v1/embeddings and "
        "/v1/models;\nfiles, batches, feedback, keys, routes and the UI go to any replica.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True)
    u = sub.add_parser("up", help="Start PostgreSQL (if asked), the replicas and the router.")
    u.add_argument("--replicas", type=int, default=2)
    db = u.add_mutually_exclusive_group()
    db.add_argument("--db", metavar="URL", help="The shared log database (PostgreSQL).")
    db.add_argument(
        "--postgres",
        action="store_true",
        help="Start a PostgreSQL of its own under $LLMLOOP_HOME/cluster/pg.",
    )
    u.add_argument("--policy", default="cache_aware", choices=POLICIES)
    u.add_argument("--port", type=int, default=8000, help="The router's port (default: 8000).")
    u.add_argument("--host", default="127.0.0.1", help="The router's address.")
    u.add_argument(
        "--router-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="Extra vllm-router argument (repeatable), e.g. --router-arg=--cache-threshold=0.5",
    )
    u.add_argument("serve_args", nargs=argparse.REMAINDER, help="-- then `llmloop serve` args")
    sub.add_parser("down", help="Stop the router, the replicas and the PostgreSQL it started.")
    sub.add_parser("status", help="Show the processes, their health and the URLs.")
    r = sub.add_parser("restart", help="Start a replica again (after a crash) on its port.")
    r.add_argument("replica", type=int, help="Its index (0-based, as `status` shows).")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.action == "up":
        serve_args = args.serve_args[1:] if args.serve_args[:1] == ["--"] else args.serve_args
        state = up(
            args.replicas,
            db_url=args.db,
            postgres=args.postgres,
            policy=args.policy,
            port=args.port,
            host=args.host,
            serve_args=serve_args,
            router_args=args.router_arg,
        )
        print("\n".join(status_lines(state)[-2:]))
        return 0
    if args.action == "down":
        if not down():
            print(f"no cluster recorded in {state_path()}", file=sys.stderr)
            return 1
        return 0
    if args.action == "restart":
        restart_replica(args.replica)
        return 0
    state = load_state()
    if state is None:
        print(f"no cluster recorded in {state_path()}", file=sys.stderr)
        return 1
    print("\n".join(status_lines(state)))
    return 0
