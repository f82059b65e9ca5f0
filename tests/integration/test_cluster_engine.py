"""``llmloop cluster``: two real replicas on one PostgreSQL behind vLLM's router. Through the
router: chat with an API key; a canary gives each user one version whichever replica answers; a
key's rpm across the cluster; one replica SIGKILLed under 8 streams (every client ends: a whole
answer or a clean error, no hang; every finished answer is in the log), then restarted and given
traffic again."""

import concurrent.futures
import os
import signal
import time
from pathlib import Path

import httpx
import openai
import pytest

from llmloop import registry
from llmloop.feedback.db import create_db_engine
from llmloop.feedback.routes import Canary, RouteStore, Version
from llmloop.feedback.store import FeedbackStore
from llmloop.serve import cluster
from llmloop.serve.auth.keys import KeyLimits, KeyStore

pytestmark = [pytest.mark.engine, pytest.mark.postgres]

ADMIN_KEY = "llmloop-cluster-test-key"
BASE = "smollm2-135m-instruct"
SERVE_ARGS = [
    "--api-key",
    ADMIN_KEY,
    "--max-num-seqs",
    "4",
    "--kv-cache-memory-bytes",
    str(512 << 20),
]
SERVE_ARGS += ["--max-model-len", "1024", "--no-safety"]
CLIENT_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def up(postgres, default_model_dir, tmp_path_factory):
    """(cluster state, database URL); the state file and logs in a temp dir, not $LLMLOOP_HOME."""
    try:
        cluster.router_command()
    except cluster.ClusterError as e:
        pytest.skip(str(e))
    db_url = postgres.create_database()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cluster, "cluster_dir", lambda: tmp_path_factory.mktemp("cluster"))
        directory = cluster.cluster_dir()
        mp.setattr(cluster, "cluster_dir", lambda: directory)
        state = cluster.up(
            2,
            db_url=db_url,
            policy="round_robin",  # the kill test needs streams on both replicas
            port=cluster.free_port(),
            serve_args=["--model", str(default_model_dir), "--served-model-name", BASE,
                        *SERVE_ARGS],
        )  # fmt: skip
        try:
            yield state, db_url
        except BaseException:
            _print_logs(directory)
            raise
        finally:
            cluster.down()


def _print_logs(directory: Path) -> None:
    for log in sorted((directory / "logs").glob("*.log")):
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


def _client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=CLIENT_TIMEOUT_S)


def _new_key(
    state: cluster.ClusterState, db_url: str, name: str, limits: KeyLimits | None = None
) -> str:
    """A stored infer key, once every replica has read it (they re-read keys every 2 s)."""
    keys = KeyStore(db_url)
    try:
        _, secret = keys.create(name, ["infer"], limits=limits or KeyLimits())
    finally:
        keys.close()
    deadline = time.monotonic() + 10
    for replica in state.replicas:
        while (
            httpx.get(
                f"{replica.url}/v1/models", headers={"Authorization": f"Bearer {secret}"}
            ).status_code
            != 200
        ):
            assert time.monotonic() < deadline, "a replica did not see the new key in 10 s"
            time.sleep(0.2)
    return secret


def test_chat_through_the_router_with_an_api_key(up):
    state, db_url = up
    secret = _new_key(state, db_url, "cluster-app")
    client = _client(state.url, secret)
    for _ in range(2):  # round robin: each replica answers one
        answer = client.chat.completions.create(
            model=BASE, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8
        )
        assert answer.choices[0].message.content
    with pytest.raises(openai.AuthenticationError):
        _client(state.url, "not-a-key").chat.completions.create(
            model=BASE, messages=[{"role": "user", "content": "Hi"}], max_tokens=1
        )


def test_a_canary_gives_each_user_one_version_whichever_replica_answers(up, default_model_dir):
    state, db_url = up
    registered = registry.register(BASE, default_model_dir, "base")
    version = f"{BASE}@{registered.version}"
    engine = create_db_engine(db_url)
    try:
        store = RouteStore(engine)
        store.set("shared", [Version(BASE, 1)], None, actor="test")
        store.start_canary("shared", Canary(version, 50, started=time.time()), actor="test")
        deadline = time.monotonic() + 10
        for replica in state.replicas:
            while "shared" not in {m.id for m in _client(replica.url, ADMIN_KEY).models.list()}:
                assert time.monotonic() < deadline, "the route did not reach every replica"
                time.sleep(0.2)
        client = _client(state.url, ADMIN_KEY)

        def served(user: str) -> str:
            return client.completions.create(
                model="shared", prompt="Hi", max_tokens=1, user=user
            ).model

        users = [f"user-{i}" for i in range(12)]
        # round robin over two replicas: a user's two requests land on different replicas
        first = {user: served(user) for user in users}
        second = {user: served(user) for user in users}
        assert first == second
        assert set(first.values()) == {BASE, version}
    finally:
        RouteStore(engine).delete("shared", actor="test")
        engine.dispose()


def test_a_keys_rpm_holds_across_replicas(up):
    """Six requests spread over both replicas spend the key's minute; once the replicas have
    synced their counters (every second), neither admits more, though each alone would."""
    state, db_url = up
    secret = _new_key(state, db_url, "cluster-rpm", KeyLimits(rpm=6))

    def send(n: int) -> list[int]:
        with httpx.Client(timeout=CLIENT_TIMEOUT_S) as http:
            return [
                http.post(
                    f"{state.url}/v1/completions",
                    headers={"Authorization": f"Bearer {secret}"},
                    json={"model": BASE, "prompt": "Hi", "max_tokens": 1},
                ).status_code
                for _ in range(n)
            ]

    first = send(6)  # round robin: three on each replica, each within its own bucket
    assert first == [200] * 6, first
    time.sleep(2.5)  # two syncs: each replica has counted the other's three
    later = send(10)
    assert set(later) <= {200, 429}, later  # a clean 429 through the router, never a 5xx
    assert later.count(200) <= 1, later  # at most what refills (6/min) while they are sent


def test_a_replica_killed_under_streams_loses_no_finished_answer_and_rejoins(up):
    state, db_url = up
    client = _client(state.url, ADMIN_KEY)
    victim = state.replicas[1]
    chunks_seen = [0] * 8

    def stream(i: int) -> tuple[str, str | None, str]:
        completion_id, text, finish = None, [], None
        try:
            for chunk in client.completions.create(
                model=BASE,
                prompt=f"Count to one hundred, {i}:",
                max_tokens=96,
                stream=True,
                extra_body={"ignore_eos": True},
            ):
                completion_id = chunk.id
                chunks_seen[i] += 1
                if chunk.choices:
                    text.append(chunk.choices[0].text or "")
                    finish = chunk.choices[0].finish_reason or finish
        except (openai.APIError, httpx.HTTPError) as e:
            return "error", completion_id, f"{type(e).__name__}: {e}"
        return ("complete" if finish else "truncated"), completion_id, "".join(text)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(stream, i) for i in range(8)]
        deadline = time.monotonic() + 120
        while sum(n > 2 for n in chunks_seen) < 6:  # most streams under way
            assert time.monotonic() < deadline, f"streams did not start: {chunks_seen}"
            time.sleep(0.1)
        os.killpg(victim.pid, signal.SIGKILL)  # the replica and its vLLM workers
        _, hung = concurrent.futures.wait(futures, timeout=CLIENT_TIMEOUT_S + 30)
    assert not hung, "a client of the router hung"
    outcomes = [f.result() for f in futures]
    print("outcomes:", [(kind, detail[:60]) for kind, _, detail in outcomes])
    complete = [cid for kind, cid, _ in outcomes if kind == "complete"]
    assert len(complete) >= 4, outcomes  # the survivor's streams finish
    assert all(kind in ("complete", "error", "truncated") for kind, _, _ in outcomes)

    store = FeedbackStore(db_url)
    try:
        deadline = time.monotonic() + 15
        missing = list(complete)
        while missing and time.monotonic() < deadline:
            missing = [cid for cid in missing if store.get(cid) is None]
            time.sleep(0.5)
        assert not missing, f"finished answers missing from the log: {missing}"
    finally:
        store.close()

    # with one replica down the router answers every new request (retry, health check)
    for _ in range(4):
        assert client.completions.create(model=BASE, prompt="Hi", max_tokens=1).choices

    restarted = cluster.restart_replica(1)
    before = _requests_served(restarted.url)
    deadline = time.monotonic() + 60
    while _requests_served(restarted.url) == before:
        assert time.monotonic() < deadline, "the restarted replica got no traffic in 60 s"
        client.completions.create(model=BASE, prompt="Hi", max_tokens=1)


def _requests_served(url: str) -> float:
    text = httpx.get(
        f"{url}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
    ).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:request_success_total")
    )
