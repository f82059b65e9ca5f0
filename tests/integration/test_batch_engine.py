"""The Files and Batches API on the real engine, driven by the official openai client: a batch
end to end, a server killed mid-batch and restarted, cancel mid-batch, a malformed input file,
objects of another key (two servers sharing one PostgreSQL database: test_batch_postgres_engine)."""

import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import select

from llmloop.feedback.db import create_db_engine
from llmloop.feedback.schema import completions
from llmloop.serve.auth.keys import KeyStore
from tests.servers import ServerProcess, start_server

MODEL = "smollm2-135m-instruct"
ENDPOINT = "/v1/chat/completions"
pytestmark = pytest.mark.engine
SMALL_KV_CACHE = 512 << 20
"""The servers these tests start beside the session's: a few short sequences need no more, and
with the default 2 GiB each, four engines at once ran a 24 GiB machine out of memory."""


# -- helpers -----------------------------------------------------------------------------------


def chat_line(i: int, max_tokens: int = 8, **body) -> dict:
    return {
        "custom_id": f"req-{i:03d}",
        "method": "POST",
        "url": ENDPOINT,
        "body": {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"Say the number {i} in words."}],
            "max_tokens": max_tokens,
            "temperature": 0,
            **body,
        },
    }


def jsonl(lines: list[dict | str]) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()


def submit(client: openai.OpenAI, lines: list[dict | str]):
    uploaded = client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(jsonl(lines))
    return client.batches.create(
        input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h"
    )


def wait_for(
    server: ServerProcess,
    batch_id: str,
    done: Callable,
    timeout_s: float,
    what: str,
    client: openai.OpenAI | None = None,
):
    """The batch once ``done(batch)`` holds; fails naming ``what`` with the batch and the log."""
    client = client or server.client
    deadline = time.monotonic() + timeout_s
    batch = None
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        if batch.status in ("failed", "expired") or server.process.poll() is not None:
            break
        time.sleep(0.5)
    pytest.fail(f"{what}: not reached in {timeout_s}s; batch: {batch}\nserver log:\n{server.log()}")


def is_final(batch) -> bool:
    return batch.status in ("completed", "failed", "expired", "cancelled")


def read_jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines() if line]


def results(client: openai.OpenAI, batch) -> tuple[list[dict], list[dict]]:
    """(output lines, error lines) of a finished batch."""
    return read_jsonl(client, batch.output_file_id), read_jsonl(client, batch.error_file_id)


def assert_each_once(lines: list[dict], outputs: list[dict], errors: list[dict]) -> None:
    answered = [line["custom_id"] for line in outputs + errors]
    duplicates = sorted({c for c in answered if answered.count(c) > 1})
    assert not duplicates, f"answered more than once: {duplicates}"
    assert sorted(answered) == sorted(line["custom_id"] for line in lines)


def assert_succeeded(outputs: list[dict], errors: list[dict]) -> None:
    assert not errors, errors[:3]
    for line in outputs:
        assert line["error"] is None, line
        assert line["response"]["status_code"] == 200, line
        body = line["response"]["body"]
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
        assert line["response"]["request_id"] == body["id"]


def lines_completed(server: ServerProcess) -> float:
    """This server's ``llmloop:batch_lines_total{outcome="completed"}``."""
    with server.http() as http:
        text = http.get("/metrics").text
    match = re.search(r'^llmloop:batch_lines_total\{outcome="completed"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def chat_works(server: ServerProcess) -> None:
    response = server.client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=8,
        temperature=0,
    )
    assert response.choices[0].message.content


# -- on the session's shared server ----------------------------------------------------------


def test_a_batch_of_chat_requests_runs_to_completion(llmloop_server):
    client = llmloop_server.client
    lines = [chat_line(i) for i in range(48)]
    batch = submit(client, lines)
    assert batch.status == "validating" and batch.request_counts.total == 0
    batch = wait_for(llmloop_server, batch.id, is_final, 300, "48 short lines completed")

    assert batch.status == "completed", batch
    assert batch.request_counts.total == 48
    assert batch.request_counts.completed == 48 and batch.request_counts.failed == 0
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    outputs, errors = results(client, batch)
    assert_each_once(lines, outputs, errors)
    assert_succeeded(outputs, errors)
    assert batch.error_file_id is None
    output_file = client.files.retrieve(batch.output_file_id)
    assert output_file.purpose == "batch_output"

    bodies = [line["response"]["body"] for line in outputs]
    prompt_tokens = sum(b["usage"]["prompt_tokens"] for b in bodies)
    completion_tokens = sum(b["usage"]["completion_tokens"] for b in bodies)
    assert all(0 < b["usage"]["completion_tokens"] <= 8 for b in bodies)
    assert batch.usage.input_tokens == prompt_tokens
    assert batch.usage.output_tokens == completion_tokens
    assert batch.usage.total_tokens == prompt_tokens + completion_tokens
    # at temperature 0 a line answers as the same request sent interactively
    first = next(line for line in outputs if line["custom_id"] == "req-000")
    direct = client.chat.completions.create(**chat_line(0)["body"])
    assert first["response"]["body"]["choices"][0]["message"]["content"] == (
        direct.choices[0].message.content
    )

    # each line is in the request log, as an interactive request is
    db_url = os.environ.get("LLMLOOP_DB") or f"sqlite:///{llmloop_server.home / 'llmloop.db'}"
    engine = create_db_engine(db_url)
    try:
        ids = [body["id"] for body in bodies]
        query = select(completions.c.id, completions.c.output).where(completions.c.id.in_(ids))
        deadline = time.monotonic() + 30
        while True:
            with engine.connect() as conn:
                logged = dict(conn.execute(query).tuples().all())
            if len(logged) == len(ids) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(logged) == len(ids), f"{len(ids) - len(logged)} lines are not in the log"
        for body in bodies:
            assert logged[body["id"]] == body["choices"][0]["message"]["content"]
    finally:
        engine.dispose()


def test_a_malformed_input_file_fails_the_batch_naming_its_lines(llmloop_server):
    client = llmloop_server.client
    lines = [
        chat_line(0),
        "{this is not json",
        chat_line(1),
        chat_line(0),  # line 4: custom_id req-000 again
        {**chat_line(2), "url": "/v1/embeddings"},
    ]
    batch = submit(client, lines)
    batch = wait_for(llmloop_server, batch.id, is_final, 60, "validation")

    assert batch.status == "failed", batch
    assert batch.failed_at and batch.output_file_id is None and batch.error_file_id is None
    errors = {(e.line, e.code) for e in batch.errors.data}
    assert errors == {(2, "invalid_json_line"), (4, "duplicate_custom_id"), (5, "invalid_url")}
    assert any("req-000" in e.message for e in batch.errors.data)
    assert batch.request_counts.total == 0


# -- on a server of this module's own (SQLite, keys, short leases) -------------------------------


class OwnServer:
    """A server on a log database of its own, with two infer keys; ``restart`` starts another on
    the same home and database."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.db_url = f"sqlite:///{tmp / 'batches.db'}"
        keys = KeyStore(self.db_url)
        try:
            self.secrets = {name: keys.create(name, ["infer"])[1] for name in ("alice", "bob")}
        finally:
            keys.close()
        self.starts = 0
        self.server = self._start()

    def _start(self) -> ServerProcess:
        self.starts += 1
        args = ["--db", self.db_url, "--batch-lease", "3", "--max-num-seqs", "8"]
        args += ["--max-model-len", "1024", "--no-safety"]  # batches, not the safety layer
        args += ["--kv-cache-memory-bytes", str(SMALL_KV_CACHE)]
        return start_server(args, self.tmp / f"serve-{self.starts}.log")

    def restart(self) -> ServerProcess:
        self.server = self._start()
        return self.server

    def client_of(self, name: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.server.base_url}/v1", api_key=self.secrets[name], max_retries=0
        )


@pytest.fixture(scope="module")
def own(default_model_dir, tmp_path_factory):
    own = OwnServer(tmp_path_factory.mktemp("batch-server"))
    yield own
    own.server.stop()


def test_another_keys_batch_and_files_are_404(own):
    alice, bob = own.client_of("alice"), own.client_of("bob")
    lines = [chat_line(i, max_tokens=4) for i in range(3)]
    batch = submit(alice, lines)
    batch = wait_for(own.server, batch.id, is_final, 120, "alice's batch", client=alice)
    assert batch.status == "completed", batch

    with pytest.raises(openai.NotFoundError):
        bob.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        bob.batches.cancel(batch.id)
    for file_id in (batch.input_file_id, batch.output_file_id):
        with pytest.raises(openai.NotFoundError):
            bob.files.retrieve(file_id)
        with pytest.raises(openai.NotFoundError):
            bob.files.content(file_id)
        with pytest.raises(openai.NotFoundError):
            bob.files.delete(file_id)
    with pytest.raises(openai.NotFoundError):  # nor may bob run a batch on alice's file
        bob.batches.create(
            input_file_id=batch.input_file_id, endpoint=ENDPOINT, completion_window="24h"
        )
    assert batch.id not in [b.id for b in bob.batches.list()]
    assert batch.input_file_id not in [f.id for f in bob.files.list()]

    with pytest.raises(openai.ConflictError):  # alice may not cancel a completed batch either
        alice.batches.cancel(batch.id)
    # alice still has everything, and the admin key sees it too
    outputs, errors = results(alice, batch)
    assert_each_once(lines, outputs, errors)
    assert own.server.client.batches.retrieve(batch.id).status == "completed"


def test_cancel_mid_batch_answers_every_line_once(own):
    server = own.server
    client = server.client
    lines = [chat_line(i, max_tokens=48, ignore_eos=True) for i in range(40)]
    batch = submit(client, lines)
    wait_for(
        server,
        batch.id,
        lambda b: b.request_counts.completed > 0 or is_final(b),
        180,
        "a first line answered",
    )
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling", cancelling
    assert cancelling.cancelling_at
    batch = wait_for(server, batch.id, is_final, 60, "cancelled")

    assert batch.status == "cancelled", batch
    assert batch.cancelled_at
    outputs, errors = results(client, batch)
    assert_each_once(lines, outputs, errors)
    assert errors, "the batch ran to its end before it was cancelled"
    assert all(line["response"]["status_code"] == 200 for line in outputs)
    for line in errors:
        assert line["response"] is None and line["error"]["code"] == "batch_cancelled", line
    counts = batch.request_counts
    assert counts.total == 40 and counts.completed == len(outputs) and counts.failed == 0
    assert client.batches.cancel(batch.id).status == "cancelled"  # cancelling again changes nothing
    chat_works(server)  # aborting the lines in flight left the engine healthy


def test_a_server_killed_mid_batch_resumes_on_restart(own):
    server = own.server
    lines = [chat_line(i, max_tokens=48, ignore_eos=True) for i in range(40)]
    batch = submit(server.client, lines)
    running = wait_for(
        server,
        batch.id,
        lambda b: b.request_counts.completed > 0 or is_final(b),
        180,
        "a first line answered",
    )
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(30)
    assert running.status == "in_progress", running
    assert running.request_counts.completed < 40, "nothing left to resume"

    server = own.restart()  # same home, same database
    batch = wait_for(server, batch.id, is_final, 300, "completion after the restart")
    assert batch.status == "completed", batch
    outputs, errors = results(server.client, batch)
    assert_each_once(lines, outputs, errors)
    assert_succeeded(outputs, errors)
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (40, 40, 0)
    assert all(line["response"]["body"]["usage"]["completion_tokens"] == 48 for line in outputs)
    assert batch.usage.output_tokens == 40 * 48
    assert lines_completed(server) > 0  # the restarted server answered what was left


def test_metrics_name_batches(llmloop_server):
    """The shared server's /metrics has the batch series (after the batches above)."""
    with httpx.Client(base_url=llmloop_server.base_url, timeout=30) as http:
        text = http.get("/metrics", headers=llmloop_server.auth_headers).text
    assert "llmloop:batch_queue_depth" in text and 'llmloop:batches{status="completed"}' in text
