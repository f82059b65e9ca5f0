"""/v1/files and /v1/batches through the app on a fake engine: the official SDK end to end, input
validation, per-line errors, cancel, expiry, keys and their scopes, limits, the separate batch
rate-limit pool, metrics, and a batch that survives the server restarting under it."""

import json
import time
from collections.abc import Callable

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient

from llmloop.models import DEFAULT_EMBEDDER
from llmloop.serve.auth.keys import KeyLimits, KeyStore
from llmloop.serve.batch import runner as batch_runner
from tests.serve.fakes import FakeEngine, FakeRetrieval

CHAT = "/v1/chat/completions"
FINAL = ("completed", "failed", "expired", "cancelled")


def chat_body(content: str, max_tokens: int = 12, **extra) -> dict:
    return {
        "model": "fake-model",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        **extra,
    }


def line(custom_id: str, body, url: str = CHAT, method: str = "POST") -> dict:
    return {"custom_id": custom_id, "method": method, "url": url, "body": body}


def jsonl(lines: list) -> bytes:
    return b"".join(
        (ln if isinstance(ln, bytes) else json.dumps(ln).encode()) + b"\n" for ln in lines
    )


def upload(client: TestClient, data: bytes, headers: dict | None = None, purpose: str = "batch"):
    return client.post(
        "/v1/files",
        files={"file": ("input.jsonl", data, "application/jsonl")},
        data={"purpose": purpose},
        headers=headers or {},
    )


def start_batch(
    client: TestClient,
    lines: list,
    headers: dict | None = None,
    endpoint: str = CHAT,
    window: str = "24h",
) -> dict:
    uploaded = upload(client, jsonl(lines), headers)
    assert uploaded.status_code == 200, uploaded.text
    created = client.post(
        "/v1/batches",
        json={
            "input_file_id": uploaded.json()["id"],
            "endpoint": endpoint,
            "completion_window": window,
        },
        headers=headers or {},
    )
    assert created.status_code == 200, created.text
    return created.json()


def wait_for(
    client: TestClient,
    batch_id: str,
    done: Callable[[dict], bool] = lambda b: b["status"] in FINAL,
    headers: dict | None = None,
    timeout_s: float = 15.0,
) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.get(f"/v1/batches/{batch_id}", headers=headers or {}).json()
        if done(batch):
            return batch
        assert time.monotonic() < deadline, f"batch stuck: {batch}"
        time.sleep(0.05)


def answers(client: TestClient, batch: dict, headers: dict | None = None) -> dict[str, dict]:
    """custom_id → its output line, from the output and error files; each id exactly once."""
    lines = []
    for kind in ("output_file_id", "error_file_id"):
        if batch[kind] is not None:
            content = client.get(f"/v1/files/{batch[kind]}/content", headers=headers or {})
            assert content.status_code == 200, content.text
            lines += [(kind, json.loads(ln)) for ln in content.text.splitlines()]
    by_id = {}
    for kind, answer in lines:
        assert answer["custom_id"] not in by_id, f"{answer['custom_id']} answered twice"
        answer["file"] = kind
        by_id[answer["custom_id"]] = answer
    return by_id


@pytest.fixture
def keys(tmp_path):
    """(db_url, make_key): ``make_key(name, *scopes, **options)`` → (key id, bearer header)."""
    db_url = f"sqlite:///{tmp_path / 'keys.db'}"
    store = KeyStore(db_url)

    def make_key(name: str, *scopes: str, **options) -> tuple[str, dict]:
        key, secret = store.create(name, list(scopes), **options)
        return key.id, {"Authorization": f"Bearer {secret}"}

    yield db_url, make_key
    store.close()


# -- end to end -----------------------------------------------------------------------------------


def test_a_chat_batch_end_to_end_through_the_sdk(isolated_home, make_client):
    client = make_client()
    sdk = openai.OpenAI(
        base_url="http://testserver/v1", api_key="x", http_client=client, max_retries=0
    )
    prompts = {f"req-{i}": f"q{i}" for i in range(40)}
    data = jsonl([line(custom_id, chat_body(q)) for custom_id, q in prompts.items()])
    file = sdk.files.create(file=("requests.jsonl", data), purpose="batch")
    assert (file.purpose, file.bytes, file.filename) == ("batch", len(data), "requests.jsonl")
    assert sdk.files.retrieve(file.id).id == file.id
    assert sdk.files.content(file.id).content == data

    batch = sdk.batches.create(
        input_file_id=file.id,
        endpoint=CHAT,
        completion_window="24h",
        metadata={"job": "nightly", "owner": "tests"},
    )
    assert batch.status == "validating" and batch.metadata == {"job": "nightly", "owner": "tests"}
    deadline = time.monotonic() + 20
    while (batch := sdk.batches.retrieve(batch.id)).status not in FINAL:
        assert time.monotonic() < deadline, batch
        time.sleep(0.05)
    assert batch.status == "completed", batch.errors
    assert batch.request_counts.model_dump() == {"total": 40, "completed": 40, "failed": 0}
    assert batch.error_file_id is None
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    assert batch.expires_at - batch.created_at == 86400
    assert batch.metadata == {"job": "nightly", "owner": "tests"}

    output = sdk.files.content(batch.output_file_id).text.splitlines()
    results = [json.loads(ln) for ln in output]
    assert sorted(r["custom_id"] for r in results) == sorted(prompts)
    prompt_tokens = completion_tokens = 0
    for result in results:
        assert result["id"].startswith("batch_req_") and result["error"] is None
        response = result["response"]
        assert response["status_code"] == 200
        body = response["body"]
        assert response["request_id"] == body["id"]
        expected = f"<user>{prompts[result['custom_id']]}<assistant>"[:12]  # the echo
        assert body["choices"][0]["message"]["content"] == expected
        prompt_tokens += body["usage"]["prompt_tokens"]
        completion_tokens += body["usage"]["completion_tokens"]
    assert batch.usage.input_tokens == prompt_tokens > 0
    assert batch.usage.output_tokens == completion_tokens == 40 * 12
    assert batch.usage.total_tokens == prompt_tokens + completion_tokens

    out_file = sdk.files.retrieve(batch.output_file_id)
    assert out_file.purpose == "batch_output" and out_file.expires_at
    assert batch.output_file_id in {f.id for f in sdk.files.list(purpose="batch_output")}
    assert [b.id for b in sdk.batches.list()] == [batch.id]
    with pytest.raises(openai.ConflictError):
        sdk.batches.cancel(batch.id)  # completed: nothing to cancel
    assert sdk.files.delete(file.id).deleted
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(file.id)


def test_a_completions_batch(isolated_home, make_client):
    client = make_client()
    lines = [
        line(
            f"c{i}", {"model": "fake-model", "prompt": f"p{i}", "max_tokens": 2}, "/v1/completions"
        )
        for i in range(5)
    ]
    batch = wait_for(client, start_batch(client, lines, endpoint="/v1/completions")["id"])
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 5, "completed": 5, "failed": 0}
    results = answers(client, batch)
    for i in range(5):
        body = results[f"c{i}"]["response"]["body"]
        assert body["object"] == "text_completion"
        assert body["choices"][0]["text"] == f"p{i}"


class FakeEmbedder:
    name = DEFAULT_EMBEDDER
    dim = 4

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.array([[len(t), 0, 0, 0] for t in texts], dtype=np.float32)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(t) for t in texts]


class EmbeddingRetrieval(FakeRetrieval):
    def __init__(self):
        super().__init__([])

    def embedder(self) -> FakeEmbedder:
        return FakeEmbedder()


def test_an_embeddings_batch(isolated_home, make_client):
    client = make_client(retrieval=EmbeddingRetrieval())
    url = "/v1/embeddings"
    lines = [
        line("e1", {"model": DEFAULT_EMBEDDER, "input": "abc"}, url),
        line("e2", {"model": DEFAULT_EMBEDDER, "input": ["a", "bcde"]}, url),
        line("e3", {"model": "text-embedding-3-small", "input": "x"}, url),
    ]
    batch = wait_for(client, start_batch(client, lines, endpoint=url)["id"])
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    assert batch["usage"]["input_tokens"] == 3 + 5 and batch["usage"]["output_tokens"] == 0
    results = answers(client, batch)
    assert results["e1"]["response"]["body"]["data"][0]["embedding"] == [3.0, 0.0, 0.0, 0.0]
    assert len(results["e2"]["response"]["body"]["data"]) == 2
    assert results["e3"]["file"] == "error_file_id"
    assert results["e3"]["response"]["status_code"] == 404


# -- validation and per-line errors ---------------------------------------------------------------


def test_a_malformed_input_file_fails_the_batch_naming_each_line(isolated_home, make_client):
    client = make_client()
    good = chat_body("hi")
    lines = [
        line("a", good),  # 1
        b'{"custom_id": "b", "method": "POST",',  # 2: malformed JSON
        line("a", good),  # 3: duplicate custom_id
        line("c", good, url="/v1/embeddings"),  # 4: not the batch's endpoint
        line("d", good, method="GET"),  # 5
        line("e", "not an object"),  # 6
        line("f", chat_body("hi", stream=True)),  # 7
        b"",  # 8: blank lines are skipped
        line("g", good),  # 9
        {"method": "POST", "url": CHAT, "body": good},  # 10: no custom_id
        b"[1, 2]",  # 11
        line("nul\u0000id", good),  # 12
    ]
    batch = wait_for(client, start_batch(client, lines)["id"])
    assert batch["status"] == "failed" and batch["failed_at"]
    assert batch["output_file_id"] is None and batch["error_file_id"] is None
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    errors = {e["line"]: e for e in batch["errors"]["data"]}
    assert sorted(errors) == [2, 3, 4, 5, 6, 7, 10, 11, 12]
    assert errors[2]["code"] == "invalid_json_line"
    assert errors[3]["code"] == "duplicate_custom_id"
    assert errors[4]["code"] == "invalid_url" and errors[4]["param"] == "url"
    assert errors[5]["param"] == "method"
    assert errors[6]["param"] == "body"
    assert errors[7]["param"] == "body.stream"
    assert errors[10]["param"] == "custom_id"
    assert errors[11]["code"] == "invalid_json_line"
    assert errors[12]["param"] == "custom_id"
    assert all(e["message"] for e in errors.values())


def test_an_empty_input_file(isolated_home, make_client):
    client = make_client()
    empty = upload(client, b"")
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "file"
    batch = wait_for(client, start_batch(client, [b"", b"  "])["id"])
    assert batch["status"] == "failed"
    (error,) = batch["errors"]["data"]
    assert error["code"] == "invalid_file" and error["line"] is None


def test_bodies_the_endpoint_refuses_go_to_the_error_file(isolated_home, make_client):
    client = make_client()
    lines = [
        line("ok", chat_body("hello")),
        line("bad-temperature", chat_body("hello", temperature=7)),
        line("no-messages", {"model": "fake-model"}),
        line("refused-field", chat_body("hello", audio={"voice": "alloy"})),
        line("unknown-model", {**chat_body("hello"), "model": "no-such-model"}),
        line("ok-too", chat_body("again")),
    ]
    batch = wait_for(client, start_batch(client, lines)["id"])
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 6, "completed": 2, "failed": 4}
    results = answers(client, batch)
    assert {cid for cid, r in results.items() if r["file"] == "output_file_id"} == {"ok", "ok-too"}
    for custom_id in ("bad-temperature", "no-messages", "refused-field"):
        response = results[custom_id]["response"]
        assert response["status_code"] == 400, (custom_id, response)
        assert response["body"]["error"]["type"] == "invalid_request_error"
    assert results["unknown-model"]["response"]["status_code"] == 404
    assert client.get("/health").status_code == 200  # nothing crashed


# -- cancel and expiry ----------------------------------------------------------------------------


def slow_lines(n: int) -> list[dict]:
    return [line(f"s{i}", chat_body(f"slow {i}", max_tokens=40)) for i in range(n)]


def test_cancel_aborts_lines_in_flight_and_answers_the_rest(isolated_home, make_client):
    engine = FakeEngine(token_delay_s=0.05)  # 2 s a line
    client = make_client(engine, batch_concurrency=2)
    batch = start_batch(client, slow_lines(8))
    wait_for(client, batch["id"], lambda b: b["status"] == "in_progress" and engine.running)
    cancelled = client.post(f"/v1/batches/{batch['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] in ("cancelling", "cancelled")
    assert cancelled.json()["cancelling_at"]
    batch = wait_for(client, batch["id"], timeout_s=5)
    assert batch["status"] == "cancelled" and batch["cancelled_at"]
    results = answers(client, batch)
    assert sorted(results) == sorted(f"s{i}" for i in range(8))
    closed = [r for r in results.values() if r["error"] is not None]
    assert len(closed) >= 6
    assert all(r["error"]["code"] == "batch_cancelled" and r["response"] is None for r in closed)
    assert all(r["file"] == "error_file_id" for r in closed)
    deadline = time.monotonic() + 3
    while engine.running:  # the lines in flight were aborted, not run to the end
        assert time.monotonic() < deadline, engine.running
        time.sleep(0.02)
    assert engine.aborted
    again = client.post(f"/v1/batches/{batch['id']}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


def test_a_completed_batch_cannot_be_cancelled(isolated_home, make_client):
    client = make_client()
    batch = wait_for(client, start_batch(client, [line("x", chat_body("hi"))])["id"])
    assert batch["status"] == "completed"
    refused = client.post(f"/v1/batches/{batch['id']}/cancel")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "batch_not_cancellable"
    assert client.get(f"/v1/batches/{batch['id']}").json()["status"] == "completed"
    assert client.post("/v1/batches/batch_nope/cancel").status_code == 404


def test_a_batch_past_its_window_expires(isolated_home, make_client):
    engine = FakeEngine(token_delay_s=0.05)
    client = make_client(engine, batch_concurrency=1)
    batch = start_batch(client, slow_lines(4), window="2s")
    assert batch["expires_at"] - batch["created_at"] == 2
    batch = wait_for(client, batch["id"], timeout_s=8)
    assert batch["status"] == "expired" and batch["expired_at"]
    results = answers(client, batch)
    assert sorted(results) == [f"s{i}" for i in range(4)]
    expired = [r for r in results.values() if r["error"] is not None]
    assert len(expired) >= 3
    assert all(r["error"]["code"] == "batch_expired" for r in expired)


# -- keys -----------------------------------------------------------------------------------------


def test_files_and_batches_belong_to_their_key(isolated_home, make_client, keys):
    db_url, make_key = keys
    _, admin = make_key("ops", "admin")
    _, key_a = make_key("team-a", "infer")
    _, key_b = make_key("team-b", "infer")
    _, label = make_key("labeller", "label")
    client = make_client(db_url=db_url)

    batch = start_batch(client, [line("x", chat_body("hi"))], key_a)
    file_id = batch["input_file_id"]
    batch = wait_for(client, batch["id"], headers=key_a)
    assert batch["status"] == "completed"
    own = start_batch(client, [line("y", chat_body("hi"))], key_b)

    for path in (
        f"/v1/files/{file_id}",
        f"/v1/files/{file_id}/content",
        f"/v1/files/{batch['output_file_id']}/content",
        f"/v1/batches/{batch['id']}",
    ):
        assert client.get(path, headers=key_b).status_code == 404, path
        assert client.get(path, headers=key_a).status_code == 200, path
        assert client.get(path, headers=admin).status_code == 200, path
    assert client.post(f"/v1/batches/{batch['id']}/cancel", headers=key_b).status_code == 404
    assert client.delete(f"/v1/files/{file_id}", headers=key_b).status_code == 404
    reuse = client.post(
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"},
        headers=key_b,
    )
    assert reuse.status_code == 404

    def listed(path: str, headers: dict) -> set[str]:
        return {obj["id"] for obj in client.get(path, headers=headers).json()["data"]}

    b_files = listed("/v1/files", key_b)
    assert file_id not in b_files and batch["output_file_id"] not in b_files
    assert own["input_file_id"] in b_files
    assert listed("/v1/batches", key_b) == {own["id"]}
    assert listed("/v1/batches", key_a) == {batch["id"]}
    assert listed("/v1/batches", admin) == {batch["id"], own["id"]}
    assert {file_id, own["input_file_id"], batch["output_file_id"]} <= listed("/v1/files", admin)

    assert upload(client, jsonl([line("z", chat_body("hi"))]), label).status_code == 403
    assert client.get("/v1/batches", headers=label).status_code == 403
    assert client.get(f"/v1/files/{file_id}", headers=label).status_code == 403
    assert client.get("/v1/batches").status_code == 401
    assert client.delete(f"/v1/files/{file_id}", headers=admin).status_code == 200
    assert client.get(f"/v1/files/{file_id}", headers=key_a).status_code == 404


def test_batch_lines_charge_the_batch_rate_limit_pool(isolated_home, make_client, keys):
    db_url, make_key = keys
    key_id, key = make_key("limited", "infer", limits=KeyLimits(rpm=12))
    client = make_client(db_url=db_url)

    # the upload and the batch's creation are two requests of the key's interactive pool
    batch = start_batch(client, [line(f"b{i}", chat_body("x")) for i in range(8)], key)
    batch = wait_for(client, batch["id"], headers=key)
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 8, "completed": 8, "failed": 0}
    # its 8 lines took 8 of the batch pool; the interactive pool still has the other 10
    statuses = [client.post(CHAT, json=chat_body("x"), headers=key).status_code for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    limiter = client.app.state.rate_limiter
    assert limiter._usage[key_id, "batch"].requests.level < 5  # 8 taken, slow refill


# -- limits ---------------------------------------------------------------------------------------


def test_an_upload_over_max_file_bytes_is_refused_and_not_stored(isolated_home, make_client):
    client = make_client(max_file_bytes=1000)
    too_big = upload(client, b"x" * 1001)
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "file_too_large"
    far_too_big = upload(client, b"x" * (1000 + (64 << 10) + 1))
    assert far_too_big.status_code == 413
    assert "--max-file-bytes" in far_too_big.json()["error"]["message"]
    files_dir = isolated_home / "files"
    assert not files_dir.exists() or list(files_dir.iterdir()) == []
    assert client.get("/v1/files").json()["data"] == []
    assert upload(client, b"x" * 1000).status_code == 200
    assert len(list(files_dir.iterdir())) == 1


def test_stored_bytes_per_key_are_capped(isolated_home, make_client):
    client = make_client(max_stored_bytes_per_key=1500)
    assert upload(client, b"a" * 1000).status_code == 200
    assert upload(client, b"b" * 600).status_code == 413  # 500 bytes of room left
    assert upload(client, b"c" * 500).status_code == 200
    full = upload(client, b"d")
    assert full.status_code == 400 and full.json()["error"]["code"] == "storage_limit_exceeded"
    first = client.get("/v1/files", params={"order": "asc"}).json()["data"][0]
    assert client.delete(f"/v1/files/{first['id']}").status_code == 200
    assert upload(client, b"e" * 1000).status_code == 200


def test_bad_create_requests_are_400(isolated_home, make_client):
    client = make_client()
    assert upload(client, b"{}\n", purpose="fine-tune").status_code == 400
    file_id = upload(client, jsonl([line("x", chat_body("hi"))])).json()["id"]

    def create(**fields):
        body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"} | fields
        return client.post("/v1/batches", json=body)

    assert create(completion_window="25x").status_code == 400
    assert create(completion_window="8d").status_code == 400
    assert create(endpoint="/v1/moderations").status_code == 400
    assert create(metadata={f"k{i}": "v" for i in range(17)}).status_code == 400
    assert create(metadata={"k": "v" * 513}).status_code == 400
    assert create(input_file_id="file-nope").status_code == 404
    assert client.get("/v1/batches").json()["data"] == []
    ok = create(metadata={f"k{i}": "v" for i in range(16)}, completion_window="90s")
    assert ok.status_code == 200
    batch = wait_for(client, ok.json()["id"])
    output = create(input_file_id=batch["output_file_id"])
    assert output.status_code == 400 and output.json()["error"]["param"] == "input_file_id"


def test_listing_pages_with_after(isolated_home, make_client):
    client = make_client()
    ids = [upload(client, jsonl([line("x", chat_body(str(i)))])).json()["id"] for i in range(5)]
    for order, expected in (("asc", ids), ("desc", ids[::-1])):
        seen, after = [], None
        while True:
            params = {"order": order, "limit": 2} | ({"after": after} if after else {})
            page = client.get("/v1/files", params=params).json()
            seen += [f["id"] for f in page["data"]]
            if not page["has_more"]:
                break
            after = page["last_id"]
        assert seen == expected, order


# -- metrics --------------------------------------------------------------------------------------


def test_metrics_count_batches_and_lines(isolated_home, make_client, monkeypatch):
    monkeypatch.setattr(batch_runner, "CENSUS_INTERVAL_S", 0.0)
    client = make_client()
    lines = [line("ok", chat_body("hi")), line("bad", chat_body("hi", temperature=7))]
    batch = wait_for(client, start_batch(client, lines)["id"])
    assert batch["status"] == "completed"
    deadline = time.monotonic() + 5
    while 'llmloop:batches{status="completed"} 1.0' not in (text := client.get("/metrics").text):
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
    assert 'llmloop:batches{status="in_progress"} 0.0' in text
    assert "llmloop:batch_queue_depth 0.0" in text
    assert 'llmloop:batch_lines_total{outcome="completed"} 1.0' in text
    assert 'llmloop:batch_lines_total{outcome="failed"} 1.0' in text
    assert "llmloop:batch_lines_running 0.0" in text


# -- restarts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shutdown", ["graceful", "killed"])
def test_a_batch_survives_the_server_restarting(isolated_home, make_client, tmp_path, shutdown):
    db_url = f"sqlite:///{tmp_path / 'shared.db'}"
    engine = FakeEngine(token_delay_s=0.02)  # 0.4 s a line
    first = make_client(engine, db_url=db_url, batch_concurrency=2, batch_lease_s=1)
    lines = [line(f"r{i}", chat_body(f"line {i}", max_tokens=20)) for i in range(8)]
    batch = start_batch(first, lines)
    wait_for(first, batch["id"], lambda b: b["request_counts"]["completed"] >= 2 and engine.running)
    if shutdown == "killed":  # no hand-back: the next server waits out the leases
        first.app.state.batches.store.release = lambda worker: None
    first.__exit__(None, None, None)  # the lines in flight are aborted

    second = make_client(FakeEngine(), db_url=db_url, batch_lease_s=1)
    batch = wait_for(second, batch["id"], timeout_s=10)
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 8, "completed": 8, "failed": 0}
    results = answers(second, batch)
    assert sorted(results) == sorted(f"r{i}" for i in range(8))
    assert all(r["response"]["status_code"] == 200 for r in results.values())


# -- a hostile input never holds up the others ------------------------------------------------------


def test_a_deeply_nested_line_fails_its_batch_and_others_still_run(isolated_home, make_client):
    client = make_client()
    poison = start_batch(client, [b"[" * 5000, line("ok", chat_body("x"))])
    innocent = start_batch(client, [line("a", chat_body("x"))])
    poison = wait_for(client, poison["id"])
    assert poison["status"] == "failed"
    assert poison["errors"]["data"][0]["line"] == 1
    assert wait_for(client, innocent["id"])["status"] == "completed"


def test_a_file_of_blank_lines_is_refused_without_reading_them_all(isolated_home, make_client):
    client = make_client()
    batch = wait_for(client, start_batch(client, [b"\n" * 300_000])["id"])
    assert batch["status"] == "failed"
    assert "at most" in batch["errors"]["data"][0]["message"]


def test_unfinished_batches_per_key_are_bounded(isolated_home, make_client, monkeypatch):
    from llmloop.serve.routes import batches

    monkeypatch.setattr(batches, "MAX_ACTIVE_BATCHES_PER_KEY", 2)
    client = make_client(engine=FakeEngine(token_delay_s=0.5))
    file_id = upload(client, jsonl([line("a", chat_body("x"))])).json()["id"]
    body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}
    created = [client.post("/v1/batches", json=body) for _ in range(3)]
    assert [r.status_code for r in created] == [200, 200, 429]
    assert created[2].json()["error"]["code"] == "batch_limit_exceeded"


def test_objects_validate_as_the_openai_sdk_types(isolated_home, make_client):
    client = make_client()
    batch = wait_for(client, start_batch(client, [line("a", chat_body("x"))])["id"])
    openai.types.Batch.model_validate(batch, strict=False)
    assert batch["usage"]["input_tokens_details"] == {"cached_tokens": 0}
    for file in client.get("/v1/files").json()["data"]:
        openai.types.FileObject.model_validate(file)


@pytest.mark.parametrize(
    "path", ["/v1/files?purpose=%00", "/v1/files?after=a%00", "/v1/batches/batch_%00"]
)
def test_a_nul_byte_in_a_query_or_path_is_a_400(isolated_home, make_client, path):
    assert make_client().get(path).status_code == 400


def test_a_window_with_a_trailing_newline_is_refused(isolated_home, make_client):
    client = make_client()
    file_id = upload(client, jsonl([line("a", chat_body("x"))])).json()["id"]
    body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h\n"}
    assert client.post("/v1/batches", json=body).status_code == 400
