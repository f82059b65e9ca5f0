"""--max-queue-time: a request that could not start within the bound gets 503 + Retry-After at
once, estimated from the measured finish rate and the queue ahead; one admitted that still has
no place in the engine when the bound passes is aborted with the same 503."""

import json
import time

import pytest

from llmloop.serve.admission import Admission
from llmloop.serve.errors import OverloadedError
from tests.serve.fakes import FakeEngine
from tests.serve.test_errors import assert_openai_error

CHAT = "/v1/chat/completions"
OK_CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def slow_engine_admission(max_queue_time_s: float) -> Admission:
    """One sequence at a time, finishing one a second, with 10 queued behind the running one."""
    clock = Clock()
    admission = Admission(max_queue_time_s, max_num_seqs=1, clock=clock)
    for _ in range(5):
        admission.enter(1)
        clock.now += 1.0
        admission.leave(1)
    for _ in range(11):
        admission.enter(1)
    return admission


def test_the_wait_is_estimated_from_the_finish_rate_and_the_queue_ahead():
    admission = slow_engine_admission(max_queue_time_s=5)
    assert admission.finish_interval_s == pytest.approx(1.0)
    assert admission.estimated_wait_s(1) == pytest.approx(11.0)
    with pytest.raises(OverloadedError) as refused:
        admission.check(1)
    assert refused.value.headers["Retry-After"] == "6"  # when the wait is back under 5 s
    slow_engine_admission(max_queue_time_s=60).check(1)


def test_nothing_is_refused_before_the_engine_was_ever_full():
    admission = Admission(5, max_num_seqs=4, clock=Clock())
    for _ in range(100):
        admission.enter(1)
    admission.check(1)


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_that_cannot_start_in_time_gets_503_at_once(make_client, stream):
    engine = FakeEngine()
    engine.max_num_seqs = 1
    client = make_client(engine, max_queue_time_s=5)
    client.app.state.admission = slow_engine_admission(max_queue_time_s=5)
    started = time.perf_counter()
    response = client.post(CHAT, json=OK_CHAT | {"stream": stream})
    assert time.perf_counter() - started < 2.0
    assert assert_openai_error(response, 503)["code"] == "server_overloaded"
    assert response.headers["Retry-After"] == "6"
    assert engine.requests == []


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_still_queued_after_max_queue_time_is_aborted_with_503(make_client, stream):
    engine = FakeEngine(reply="x" * 200, token_delay_s=0.02)  # 4 s per request
    engine.max_num_seqs = 1
    client = make_client(engine, max_queue_time_s=0.5)
    with client.stream("POST", CHAT, json=OK_CHAT | {"stream": True}) as running:
        lines = running.iter_lines()
        while '"content":"x' not in next(lines):  # the first request holds the only place
            pass
        started = time.perf_counter()
        queued = client.post(CHAT, json=OK_CHAT | {"stream": stream})
        elapsed = time.perf_counter() - started
    assert elapsed < 3.0, elapsed
    if stream:
        assert queued.status_code == 200
        events = [json.loads(line[6:]) for line in queued.text.splitlines() if line[6:7] == "{"]
        assert events[-1]["error"]["code"] == "queue_timeout"
    else:
        assert assert_openai_error(queued, 503)["code"] == "queue_timeout"
        assert int(queued.headers["Retry-After"]) >= 1
    assert len(engine.aborted) >= 1
