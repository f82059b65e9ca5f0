"""Overload and shutdown on a small real server of its own (it is stopped by the last test)."""

import asyncio
import signal
import threading

import httpx
import pytest

from tests.servers import start_server

MODEL = "smollm2-135m-instruct"
pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def small_server(default_model_dir, tmp_path_factory):
    # 2 running + 1 waiting: the 4th concurrent request is over the bound.
    server = start_server(
        [
            "--max-num-seqs",
            "2",
            "--max-waiting-requests",
            "1",
            "--no-safety",  # overload and shutdown are about the engine, not the filter
            "--max-model-len",
            "1024",
        ],
        tmp_path_factory.mktemp("small") / "serve.log",
    )
    yield server
    server.stop()


def test_more_waiting_requests_than_the_bound_get_503_with_retry_after(small_server):
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 48, "ignore_eos": True}

    async def run() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {small_server.api_key}"}
        async with httpx.AsyncClient(
            base_url=small_server.base_url, headers=headers, timeout=300
        ) as http:
            return await asyncio.gather(
                *(http.post("/v1/completions", json=body) for _ in range(8))
            )

    responses = asyncio.run(run())
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 503}, statuses
    assert statuses.count(200) >= 3
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "service_unavailable_error"


def test_loading_an_adapter_without_lora_enabled_is_a_clear_400(small_server, test_lora_dir):
    with small_server.http() as http:
        response = http.post(
            "/v1/load_lora_adapter", json={"lora_name": "a", "lora_path": str(test_lora_dir)}
        )
    assert response.status_code == 400
    assert "--enable-lora" in response.json()["error"]["message"]


def test_sigterm_drains_in_flight_requests_then_exits(small_server):
    result: dict = {}

    def stream() -> None:
        body = {
            "model": MODEL,
            "prompt": "Once",
            "max_tokens": 40,
            "ignore_eos": True,
            "stream": True,
        }
        headers = {"Authorization": f"Bearer {small_server.api_key}"}
        with httpx.stream(
            "POST",
            f"{small_server.base_url}/v1/completions",
            json=body,
            headers=headers,
            timeout=300,
        ) as r:
            lines = []
            for line in r.iter_lines():
                lines.append(line)
                if len(lines) == 1:
                    started.set()
            result["lines"] = [line for line in lines if line]

    started = threading.Event()
    thread = threading.Thread(target=stream)
    thread.start()
    assert started.wait(120), "the stream never started"
    small_server.process.send_signal(signal.SIGTERM)
    thread.join(300)
    assert result["lines"][-1] == "data: [DONE]"
    assert len(result["lines"]) >= 40  # every token arrived although SIGTERM came after the first
    # uvicorn re-raises the signal once shut down, so the exit status says "terminated by SIGTERM"
    assert small_server.process.wait(120) in (0, -signal.SIGTERM)
    log = small_server.log_path.read_text()
    assert "Waiting for application shutdown" in log and "Application shutdown complete" in log
