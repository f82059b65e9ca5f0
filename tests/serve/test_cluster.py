"""``llmloop cluster`` with fake replicas (a few lines of http.server) behind the real vLLM router:
the state file, the router in front, ``status``, ``restart`` and ``down`` leaving nothing behind."""

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from llmloop.serve import cluster

FAKE_REPLICA = textwrap.dedent(
    """
    import json, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    port = int(sys.argv[sys.argv.index("--port") + 1])
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def _send(self, body):
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        def do_GET(self):
            self._send({"port": port, "argv": sys.argv[1:]})
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._send({"port": port, "auth": self.headers.get("Authorization")})
    ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


@pytest.fixture
def fake_serve(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake_replica.py"
    script.write_text(FAKE_REPLICA)
    return [sys.executable, str(script)]


@pytest.fixture
def no_router_needed(monkeypatch):
    try:
        cluster.router_command()
    except cluster.ClusterError:
        pytest.skip("vllm-router not installed (the router extra)")


def test_state_round_trips_and_redacts_the_password():
    state = cluster.ClusterState(
        db_url="postgresql://u:secret@h/db",
        policy="cache_aware",
        router=cluster.Proc("router", 1, 2, "http://127.0.0.1:2", "r.log", ["x"]),
        replicas=[cluster.Proc("replica-0", 3, 4, "http://127.0.0.1:4", "0.log")],
    )
    assert cluster.ClusterState.from_json(state.to_json()) == state
    lines = cluster.status_lines(state)
    assert "secret" not in "\n".join(lines)
    assert any("any replica (http://127.0.0.1:4)" in line for line in lines)


def test_up_needs_a_shared_database(isolated_home):
    with pytest.raises(cluster.ClusterError, match="--db URL or --postgres"):
        cluster.up(2)
    assert cluster.main(["down"]) == 1  # nothing recorded


def test_down_stops_a_process_group_that_ignores_sigterm(isolated_home):
    process = subprocess.Popen(
        [sys.executable, "-c", "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "time.sleep(600)"],
        start_new_session=True,
    )  # fmt: skip
    time.sleep(0.5)
    started = time.monotonic()
    cluster.stop_pid(process.pid, grace_s=1)
    process.wait(5)  # stop_pid may have reaped it already
    assert not cluster.alive(process.pid)
    assert time.monotonic() - started < 10


def test_up_status_restart_down_with_fake_replicas(isolated_home, fake_serve, no_router_needed):
    port = cluster.free_port()
    lines: list[str] = []
    state = cluster.up(
        2,
        db_url="sqlite:///x.db",
        policy="round_robin",
        port=port,
        serve_args=["--api-key", "k"],
        command=fake_serve,
        progress=lines.append,
    )
    try:
        assert [line.split()[0] for line in lines] == ["replica-0", "replica-1", "router"]
        saved = json.loads((isolated_home / "cluster" / "state.json").read_text())
        assert saved["router"]["port"] == port and len(saved["replicas"]) == 2
        assert saved["replicas"][0]["argv"][-2:] == ["--api-key", "k"]
        replica_ports = {r.port for r in state.replicas}

        def answered_by(n: int) -> list[int]:
            got = []
            for _ in range(n):
                r = httpx.post(
                    f"{state.url}/v1/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"Authorization": "Bearer k"},
                    timeout=10,
                )
                assert r.status_code == 200, r.text
                assert r.json()["auth"] == "Bearer k"  # the router forwards the key
                got.append(r.json()["port"])
            return got

        assert set(answered_by(6)) == replica_ports
        assert cluster.main(["status"]) == 0

        # a killed replica: the router retries on the other one, then takes it back
        victim = state.replicas[1]
        cluster.stop_pid(victim.pid, grace_s=0)
        assert set(answered_by(4)) == {state.replicas[0].port}
        cluster.restart_replica(1, progress=lines.append)
        deadline = time.monotonic() + 20
        while victim.port not in answered_by(2):
            assert time.monotonic() < deadline, "the restarted replica got no traffic in 20 s"
        pids = [p.pid for p in cluster.load_state().replicas] + [state.router.pid]  # type: ignore[union-attr]
    finally:
        assert cluster.down(progress=lines.append)
    assert not (isolated_home / "cluster" / "state.json").exists()
    assert not any(cluster.alive(pid) for pid in pids)
