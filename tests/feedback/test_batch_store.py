"""BatchStore on real SQLite and real PostgreSQL: lines are claimed by one worker at a time,
answered only while their lease holds, and counted once; batch-level work is leased the same
way. The last test runs two OS processes against one PostgreSQL database."""

import json
import multiprocessing
import threading
import time
import uuid

import pytest

from llmloop.feedback.batches import BatchStore
from llmloop.feedback.db import create_db_engine

FAR = 3600.0  # a lease that does not run out during a test
GONE = -1.0  # a lease that has already run out


@pytest.fixture
def store(db_url):
    store = BatchStore(create_db_engine(db_url))
    store.migrate()
    yield store
    store.engine.dispose()


def make_batch(
    store: BatchStore,
    num_lines: int = 0,
    *,
    key: str | None = None,
    expires_in: float = FAR,
    created: float | None = None,
    batch_id: str | None = None,
) -> str:
    """A batch; with ``num_lines``, validated and running (its lines pending)."""
    batch_id = batch_id or f"batch_{uuid.uuid4().hex[:24]}"
    now = time.time() if created is None else created
    store.create_batch(
        id=batch_id,
        created=now,
        api_key_id=key,
        project=None,
        endpoint="/v1/chat/completions",
        input_file_id="file-x",
        completion_window="24h",
        expires_at=time.time() + expires_in,
        user_metadata=None,
    )
    if num_lines:
        work = store.claim_batch("validator", FAR)
        assert work is not None and work.action == "validate" and work.batch.id == batch_id
        lines = [(f"req-{i}", json.dumps({"i": i})) for i in range(num_lines)]
        assert store.start_batch(batch_id, "validator", lines)
    return batch_id


def add_file(store: BatchStore, file_id: str, created: float, key: str | None = None) -> None:
    store.add_file(
        id=file_id,
        created=created,
        bytes=10,
        filename=f"{file_id}.jsonl",
        purpose="batch",
        expires_at=None,
        api_key_id=key,
        project=None,
    )


def finish(store: BatchStore, line, worker: str, ok: bool = True, usage=(0, 0)) -> bool:
    result = json.dumps({"custom_id": line.custom_id, "worker": worker})
    return store.finish_line(line, worker, result, ok, usage)


# -- lines ----------------------------------------------------------------------------------------


def test_lines_are_shared_out_between_running_batches(store):
    big = make_batch(store, 50, created=time.time() - 10)
    small = make_batch(store, 3)
    claimed = store.claim_lines("w", 4, FAR)
    assert sorted(line.batch_id for line in claimed) == sorted([big, big, small, small])
    # what one batch cannot use goes to the others, oldest first
    claimed = store.claim_lines("w", 4, FAR)
    assert sorted(line.batch_id for line in claimed) == sorted([big, big, big, small])


def test_a_batch_excluded_after_a_failed_job_is_not_claimed(store):
    first = make_batch(store, created=time.time() - 10)
    second = make_batch(store)
    work = store.claim_batch("w", FAR, exclude=[first])
    assert work is not None and work.batch.id == second


def test_claimed_lines_are_leased_to_one_worker_and_answered_once(store):
    batch_id = make_batch(store, 10)
    first = store.claim_lines("a", 4, FAR)
    second = store.claim_lines("b", 100, FAR)
    assert [line.custom_id for line in first] == [f"req-{i}" for i in range(4)]
    assert [line.custom_id for line in second] == [f"req-{i}" for i in range(4, 10)]
    assert all(line.attempts == 1 and line.batch_id == batch_id for line in first + second)
    assert store.claim_lines("c", 100, FAR) == []  # nothing left, nothing expired
    assert json.loads(first[0].body) == {"i": 0}

    assert finish(store, first[0], "a", ok=True, usage=(5, 3))
    assert finish(store, first[1], "a", ok=False)
    assert not finish(store, first[0], "a")  # already answered
    assert not finish(store, first[2], "b")  # not b's line
    batch = store.get_batch(batch_id)
    assert (batch.request_total, batch.request_completed, batch.request_failed) == (10, 1, 1)
    assert (batch.input_tokens, batch.output_tokens) == (5, 3)
    assert store.queue_depth() == 8


def test_concurrent_claims_never_share_a_line(store):
    make_batch(store, 200)
    claims: dict[str, list[int]] = {f"w{i}": [] for i in range(4)}
    errors: list[BaseException] = []

    def work(worker: str) -> None:
        try:
            while lines := store.claim_lines(worker, 7, FAR):
                claims[worker].extend(line.id for line in lines)
                for line in lines:
                    assert finish(store, line, worker)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(w,)) for w in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    every = [line_id for ids in claims.values() for line_id in ids]
    assert len(every) == len(set(every)) == 200


def test_an_answer_after_the_lease_ran_out_and_was_retaken_is_dropped(store):
    batch_id = make_batch(store, 3)
    stale = store.claim_lines("a", 1, GONE)
    assert len(stale) == 1
    retaken = store.claim_lines("b", 1, FAR)
    assert [line.id for line in retaken] == [stale[0].id]  # the expired line comes first
    assert retaken[0].attempts == 2
    assert not finish(store, stale[0], "a")
    batch = store.get_batch(batch_id)
    assert (batch.request_completed, batch.request_failed) == (0, 0)
    assert finish(store, retaken[0], "b")
    assert store.get_batch(batch_id).request_completed == 1
    answers = {line.custom_id: line.result for line in store.answered_lines(batch_id)}
    assert json.loads(answers[stale[0].custom_id])["worker"] == "b"


def test_only_renewed_leases_hold(store):
    make_batch(store, 3)
    held = store.claim_lines("a", 3, GONE)
    store.renew_leases("b", [line.id for line in held], FAR)  # not b's: nothing renewed
    store.renew_leases("a", [held[0].id, held[1].id], FAR)  # held[2]'s run died
    assert [line.id for line in store.claim_lines("b", 3, FAR)] == [held[2].id]
    assert finish(store, held[0], "a") and finish(store, held[1], "a")
    assert not finish(store, held[2], "a")


def test_retry_line_waits_for_not_before(store):
    batch_id = make_batch(store, 1)
    (line,) = store.claim_lines("a", 1, FAR)
    store.retry_line(line, "b", time.time() - 1)  # not b's: ignored
    assert store.claim_lines("b", 1, FAR) == []
    store.retry_line(line, "a", time.time() + 1.0)
    assert store.claim_lines("b", 1, FAR) == []
    assert not finish(store, line, "a")  # handed back: no longer a's
    deadline = time.monotonic() + 5
    while not (again := store.claim_lines("b", 1, FAR)):
        assert time.monotonic() < deadline, "the retried line was never claimable"
        time.sleep(0.05)
    assert again[0].id == line.id and again[0].attempts == 2
    assert finish(store, again[0], "b")
    assert store.get_batch(batch_id).request_completed == 1


def test_lines_of_a_batch_that_is_not_running_are_not_claimed(store):
    batch_id = make_batch(store, 3)
    store.cancel_batch(batch_id, None)
    assert store.claim_lines("a", 10, FAR) == []
    assert store.queue_depth() == 0


def test_release_hands_back_lines_and_batches(store):
    batch_id = make_batch(store, 3)
    held = store.claim_lines("a", 2, FAR)
    other = store.claim_lines("b", 1, FAR)
    waiting = make_batch(store)
    assert store.claim_batch("a", FAR).batch.id == waiting
    store.release("a")
    assert store.get_batch(waiting).owner is None
    assert store.claim_batch("c", FAR).batch.id == waiting  # free at once, no lease to wait out
    assert not finish(store, held[0], "a")
    retaken = store.claim_lines("c", 10, FAR)
    assert sorted(line.id for line in retaken) == sorted(line.id for line in held)
    assert finish(store, other[0], "b")  # b's line was not touched
    assert all(finish(store, line, "c") for line in retaken)
    assert store.get_batch(batch_id).request_completed == 3


# -- batch-level work -----------------------------------------------------------------------------


def test_validate_is_claimed_once_and_again_after_its_lease(store):
    batch_id = make_batch(store)
    work = store.claim_batch("a", GONE)
    assert (work.action, work.batch.id, work.batch.status) == ("validate", batch_id, "validating")
    taken = store.claim_batch("b", FAR)
    assert taken is not None and taken.action == "validate"  # a's lease ran out
    assert store.claim_batch("c", FAR) is None
    assert not store.start_batch(batch_id, "a", [("x", "{}")])  # a lost it: nothing written
    assert store.get_batch(batch_id).status == "validating"
    store.fail_batch(batch_id, "a", [{"code": "x", "message": "m", "param": None, "line": 1}])
    assert store.get_batch(batch_id).status == "validating"  # not a's to fail either
    errors = [{"code": "invalid_json_line", "message": "m", "param": None, "line": 2}]
    store.fail_batch(batch_id, "b", errors)
    batch = store.get_batch(batch_id)
    assert (batch.status, batch.errors, batch.owner) == ("failed", errors, None)
    assert batch.failed_at is not None
    assert store.claim_batch("c", FAR) is None


def test_finalize_comes_once_every_line_is_answered(store):
    batch_id = make_batch(store, 2)
    assert store.get_batch(batch_id).status == "in_progress"
    lines = store.claim_lines("w", 2, FAR)
    assert store.claim_batch("a", FAR) is None  # lines running
    assert finish(store, lines[0], "w")
    assert store.claim_batch("a", FAR) is None  # one left
    assert finish(store, lines[1], "w", ok=False)
    work = store.claim_batch("a", GONE)
    assert work.action == "finalize" and work.batch.status == "finalizing"
    assert work.batch.finalizing_at is not None
    # a's lease ran out mid-finalization: b takes it over, a can no longer finish it
    again = store.claim_batch("b", FAR)
    assert again.action == "finalize" and again.batch.id == batch_id
    assert store.claim_batch("c", FAR) is None
    output = {
        "id": "file-output",
        "created": time.time(),
        "bytes": 10,
        "filename": "out.jsonl",
        "purpose": "batch_output",
        "expires_at": None,
        "api_key_id": None,
        "project": None,
    }
    assert not store.finish_batch(batch_id, "a", "completed", {"output": output})
    assert store.get_file("file-output", None) is None
    assert store.finish_batch(batch_id, "b", "completed", {"output": output})
    assert store.finish_batch(batch_id, "b", "completed", {"output": output}) is False
    batch = store.get_batch(batch_id)
    assert (batch.status, batch.output_file_id, batch.error_file_id) == (
        "completed",
        "file-output",
        None,
    )
    assert batch.completed_at is not None and batch.owner is None
    assert (batch.request_completed, batch.request_failed) == (1, 1)
    assert store.claim_batch("a", FAR) is None


def test_cancel_closes_the_unanswered_lines(store):
    batch_id = make_batch(store, 4)
    running = store.claim_lines("w", 2, FAR)
    assert finish(store, running[0], "w")
    assert store.cancel_batch(batch_id, None).status == "cancelling"
    work = store.claim_batch("a", FAR)
    assert (work.action, work.batch.id) == ("cancel", batch_id)
    assert store.close_lines(batch_id, "someone-else") == 0
    assert store.close_lines(batch_id, "a") == 3
    assert not finish(store, running[1], "w")  # its answer comes too late
    answered = list(store.answered_lines(batch_id))
    assert [line.line for line in answered] == [1, 2, 3, 4]
    assert [line.succeeded for line in answered] == [True, False, False, False]
    assert [line.result is None for line in answered] == [False, True, True, True]
    batch = store.get_batch(batch_id)
    assert (batch.request_completed, batch.request_failed) == (1, 0)
    assert store.finish_batch(batch_id, "a", "cancelled", {})
    assert store.get_batch(batch_id).cancelled_at is not None
    # a finished batch cannot be cancelled again
    assert store.cancel_batch(batch_id, None).status == "cancelled"


def test_a_validating_batch_can_be_cancelled(store):
    batch_id = make_batch(store)
    assert store.cancel_batch(batch_id, None).status == "cancelling"
    assert store.claim_batch("a", FAR).action == "cancel"


def test_an_expired_batch_is_claimed_for_expiry(store):
    batch_id = make_batch(store, 3, expires_in=1.0)
    assert store.claim_batch("a", FAR) is None
    deadline = time.monotonic() + 5
    while (work := store.claim_batch("a", FAR)) is None:
        assert time.monotonic() < deadline, "the batch never expired"
        time.sleep(0.05)
    assert (work.action, work.batch.id) == ("expire", batch_id)
    assert store.close_lines(batch_id, "a") == 3
    assert store.finish_batch(batch_id, "a", "expired", {})
    assert store.get_batch(batch_id).status == "expired"


# -- listing and visibility -----------------------------------------------------------------------


def test_file_pages_follow_after_in_both_orders_with_tied_created(store):
    ids = [f"file-{i:02d}" for i in range(7)]
    for i, file_id in enumerate(ids):
        add_file(store, file_id, created=1000.0 + i // 3)  # created ties in threes
    for order, expected in (("asc", ids), ("desc", ids[::-1])):
        seen, after = [], None
        while True:
            page = store.list_files(None, None, after, 2, order)
            seen += [row.id for row in page.rows]
            if not page.has_more:
                break
            after = page.rows[-1].id
        assert seen == expected, order
    assert store.list_files(None, None, "file-nope", 2, "asc").rows == []
    assert store.list_files(None, "batch_output", None, 10, "asc").rows == []


def test_batch_pages_are_newest_first_with_tied_created(store):
    ids = [make_batch(store, created=50.0 + i // 2, batch_id=f"batch_{i:02d}") for i in range(5)]
    seen, after = [], None
    while True:
        page = store.list_batches(None, after, 2)
        seen += [row.id for row in page.rows]
        if not page.has_more:
            break
        after = page.rows[-1].id
    assert seen == ids[::-1]


def test_objects_are_visible_to_their_key_only(store):
    add_file(store, "file-a", 1.0, key="key-a")
    add_file(store, "file-b", 2.0, key="key-b")
    batch_a = make_batch(store, key="key-a")
    make_batch(store, key="key-b")

    assert store.get_file("file-a", "key-b") is None
    assert store.get_file("file-a", "key-a").id == "file-a"
    assert store.get_file("file-a", None).id == "file-a"  # admin
    assert [row.id for row in store.list_files("key-b", None, None, 10, "asc").rows] == ["file-b"]
    assert len(store.list_files(None, None, None, 10, "asc").rows) == 2
    assert store.list_files("key-b", None, "file-a", 10, "asc").rows == []  # not its cursor
    assert store.get_batch(batch_a, "key-b") is None
    assert store.get_batch(batch_a, "key-a").id == batch_a
    assert [row.api_key_id for row in store.list_batches("key-b", None, 10).rows] == ["key-b"]
    assert len(store.list_batches(None, None, 10).rows) == 2
    assert store.cancel_batch(batch_a, "key-b") is None
    assert store.get_batch(batch_a).status == "validating"
    assert not store.delete_file("file-a", "key-b")
    assert store.stored_bytes("key-a") == 10
    assert store.delete_file("file-a", "key-a")
    assert store.stored_bytes("key-a") == 0 and store.stored_bytes("key-b") == 10


# -- two processes on one PostgreSQL database -----------------------------------------------------


def _process_worker(db_url: str, worker: str, start, results) -> None:
    """Claim and answer lines until none is left; report (claimed ids, answered ids)."""
    store = BatchStore(create_db_engine(db_url))
    claimed, answered = [], []
    start.wait(60)
    try:
        while lines := store.claim_lines(worker, 5, FAR):
            claimed += [line.id for line in lines]
            for line in lines:
                time.sleep(0.002)  # the other process gets its turn
                if finish(store, line, worker):
                    answered.append(line.id)
    finally:
        store.engine.dispose()
        results.put((worker, claimed, answered))


def test_two_processes_share_one_batch_and_answer_each_line_once(postgres):
    db_url = postgres.create_database()
    store = BatchStore(create_db_engine(db_url))
    store.migrate()
    batch_id = make_batch(store, 300)
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(2), context.Queue()
    processes = [
        context.Process(target=_process_worker, args=(db_url, f"proc-{i}", start, results))
        for i in range(2)
    ]
    for process in processes:
        process.start()
    try:
        reports = {}
        for _ in processes:
            worker, claimed, answered = results.get(timeout=120)
            reports[worker] = (claimed, answered)
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():  # pragma: no cover
                process.kill()
    assert all(process.exitcode == 0 for process in processes)
    claimed = [i for ids, _ in reports.values() for i in ids]
    answered = [i for _, ids in reports.values() for i in ids]
    assert len(claimed) == len(set(claimed)) == 300  # no line was claimed twice
    assert sorted(answered) == sorted(claimed)
    assert all(ids for _, ids in reports.values()), "one process answered nothing"
    lines = list(store.answered_lines(batch_id))
    assert len(lines) == 300 and len({line.custom_id for line in lines}) == 300
    by_worker = {json.loads(line.result)["worker"] for line in lines}
    assert by_worker == {"proc-0", "proc-1"}
    batch = store.get_batch(batch_id)
    assert (batch.request_completed, batch.request_failed) == (300, 0)
    assert store.queue_depth() == 0
    store.engine.dispose()
