"""Start a server process for a benchmark, wait for ``/health``, stop it with its workers."""

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True)
class RunningServer:
    base_url: str
    pid: int

    def cpu_seconds(self) -> tuple[float, float]:
        """(user + system CPU seconds of the server process, of its children: vLLM's engine)."""
        import psutil

        def used(process: psutil.Process) -> float:
            times = process.cpu_times()
            return times.user + times.system

        server = psutil.Process(self.pid)
        return used(server), sum(used(child) for child in server.children(recursive=True))


@contextlib.contextmanager
def running_server(
    name: str, command: list[str], port: int, startup_timeout: float, extra_env: dict[str, str]
) -> Iterator[RunningServer]:
    """Run a server process until the block ends; yields it once /health is 200."""
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.NamedTemporaryFile("w+", prefix=f"{name}-", suffix=".log", delete=False) as log:
        print(f"[{name}] starting: {' '.join(command)} (log: {log.name})", flush=True)
        env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"} | extra_env
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            _wait_healthy(name, process, base_url, startup_timeout, Path(log.name))
            yield RunningServer(base_url, process.pid)
        finally:
            _stop(process)


def _wait_healthy(
    name: str, process: subprocess.Popen, base_url: str, timeout: float, log: Path
) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            raise SystemExit(
                f"[{name}] exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                print(f"[{name}] ready after {time.monotonic() - start:.0f} s", flush=True)
                return
        time.sleep(1)  # polling a process we do not control; no event to wait on
    raise SystemExit(f"[{name}] not healthy after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    """SIGINT the server's process group (vLLM's workers too), then kill what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
