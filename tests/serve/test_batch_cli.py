"""``llmloop batch``: ``run`` offline on a fake engine (resume included), and the server
subcommands against an app on a fake engine through the openai client."""

import json
import time

import openai
import pytest

from llmloop.feedback.batches import BatchStore
from llmloop.feedback.db import create_db_engine
from llmloop.serve.auth.keys import KeyStore
from llmloop.serve.batch import cli as batch_cli
from tests.serve.fakes import FakeEngine

MODEL = "fake-model"


def chat_line(custom_id: str, text: str, **body) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": MODEL, "messages": [{"role": "user", "content": text}]} | body,
    }


def completion_line(custom_id: str, prompt: str) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/completions",
        "body": {"model": MODEL, "prompt": prompt, "max_tokens": 8},
    }


def write_jsonl(path, lines: list[dict]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- batch run ----------------------------------------------------------------------------


@pytest.fixture
def fake_engine(monkeypatch) -> FakeEngine:
    """The engine ``batch run`` starts: a fake, with no sampling defaults."""
    engine = FakeEngine()

    async def start():
        return engine

    monkeypatch.setattr(batch_cli, "engine_for", lambda engine_config: (start, {}))
    return engine


@pytest.fixture
def run_batch(tmp_path, isolated_home, fake_engine):
    model_dir = tmp_path / "model"
    model_dir.mkdir()

    def run(input_path, output_path, *flags: str) -> int:
        argv = ["run", str(input_path), "-o", str(output_path), "--model", str(model_dir)]
        return batch_cli.main(
            [*argv, "--no-safety", "--db", f"sqlite:///{tmp_path}/log.db", *flags]
        )

    return run


def test_run_answers_every_line_once_errors_included(tmp_path, run_batch, fake_engine):
    lines = [chat_line(f"chat-{i}", f"hello {i}", max_tokens=4) for i in range(6)]
    lines += [completion_line("completion", "The sky is")]
    lines += [chat_line("bad", "hi", max_tokens=-1)]  # the endpoint refuses it: a 400 answer
    write_jsonl(input_path := tmp_path / "in.jsonl", lines)

    output = tmp_path / "out.jsonl"
    assert run_batch(input_path, output, "--concurrency", "3") == 0

    answers = {a["custom_id"]: a for a in read_jsonl(output)}
    assert sorted(answers) == sorted(line["custom_id"] for line in lines)
    assert len(read_jsonl(output)) == len(lines)
    assert answers["chat-0"]["response"]["status_code"] == 200
    assert answers["chat-0"]["response"]["body"]["object"] == "chat.completion"
    assert answers["completion"]["response"]["body"]["choices"][0]["text"]
    assert answers["bad"]["response"]["status_code"] == 400
    assert answers["bad"]["response"]["body"]["error"]["param"] == "max_tokens"
    assert all(a["id"].startswith("batch_req_") and a["error"] is None for a in answers.values())
    assert len(fake_engine.requests) == 7


def test_run_on_a_servers_database_needs_no_key_and_leaves_its_batches(tmp_path, run_batch):
    """An offline run on a server's database answers its own lines, never the server's, and
    needs none of the keys the server requires."""
    keys = KeyStore(db_url := f"sqlite:///{tmp_path}/log.db")
    keys.create("app", ["infer"])
    keys.close()
    store = BatchStore(create_db_engine(db_url))
    store.migrate()
    now = time.time()
    store.create_batch(
        id="batch_server",
        created=now,
        api_key_id=None,
        project=None,
        endpoint="/v1/chat/completions",
        input_file_id="file-gone",  # a worker would fail it at once
        completion_window="24h",
        expires_at=now + 86400,
        user_metadata=None,
    )
    write_jsonl(input_path := tmp_path / "in.jsonl", [chat_line("a", "hi", max_tokens=2)])

    output = tmp_path / "out.jsonl"
    assert run_batch(input_path, output) == 0

    assert read_jsonl(output)[0]["response"]["status_code"] == 200
    assert store.get_batch("batch_server").status == "validating"
    store.engine.dispose()


def test_run_resumes_after_a_partial_output(tmp_path, run_batch, fake_engine):
    lines = [chat_line(f"q{i}", f"question {i}", max_tokens=4) for i in range(8)]
    write_jsonl(input_path := tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    earlier = [
        {"id": f"batch_req_{i}", "custom_id": f"q{i}", "response": None, "error": None}
        for i in (0, 3, 5)
    ]
    # a run killed in the middle of writing q6's answer
    output.write_text("".join(json.dumps(a) + "\n" for a in earlier) + '{"id": "batch_req_6", "cus')

    assert run_batch(input_path, output) == 0

    answers = read_jsonl(output)
    assert [a["custom_id"] for a in answers[:3]] == ["q0", "q3", "q5"]
    assert sorted(a["custom_id"] for a in answers) == sorted(f"q{i}" for i in range(8))
    prompts = [FakeEngine().tokenizer.decode(ids) for ids, _, _ in fake_engine.requests]
    assert len(prompts) == 5 and not any(f"question {i}" in p for p in prompts for i in (0, 3, 5))

    assert run_batch(input_path, output) == 0  # all answered: nothing runs, nothing is added
    assert len(read_jsonl(output)) == 8 and len(fake_engine.requests) == 5


def test_run_retries_a_line_refused_for_capacity_instead_of_writing_it(
    tmp_path, run_batch, fake_engine
):
    fake_engine.max_running, fake_engine.token_delay_s = 1, 0.02  # the others get 503 + Retry-After
    write_jsonl(input_path := tmp_path / "in.jsonl", [chat_line(f"q{i}", "hi") for i in range(3)])
    output = tmp_path / "out.jsonl"

    assert run_batch(input_path, output, "--concurrency", "3") == 0

    answers = read_jsonl(output)
    assert sorted(a["custom_id"] for a in answers) == ["q0", "q1", "q2"]
    assert all(a["response"]["status_code"] == 200 for a in answers)


def test_run_refuses_a_malformed_file_naming_its_lines(tmp_path, run_batch, fake_engine, capsys):
    good = json.dumps(chat_line("a", "hi"))
    no_id = json.dumps(chat_line("", "hi"))
    (input_path := tmp_path / "in.jsonl").write_text(f"{good}\n{{not json\n\n{no_id}\n")

    output = tmp_path / "out.jsonl"
    assert run_batch(input_path, output) == 1

    err = capsys.readouterr().err
    assert f"{input_path}:2: invalid_json_line" in err
    assert f"{input_path}:4: missing_required_parameter" in err
    assert not output.exists() and not fake_engine.requests


def test_run_refuses_an_output_file_that_is_not_answers(tmp_path, run_batch, capsys):
    write_jsonl(input_path := tmp_path / "in.jsonl", [chat_line("a", "hi")])
    (output := tmp_path / "out.jsonl").write_text("some notes\n")
    assert run_batch(input_path, output) == 1
    assert f"{output}:1: not an answer line" in capsys.readouterr().err


def test_run_fails_clearly_when_the_engine_does_not_start(tmp_path, run_batch, monkeypatch, capsys):
    async def broken():
        raise RuntimeError("no memory for the KV cache")

    monkeypatch.setattr(batch_cli, "engine_for", lambda engine_config: (broken, {}))
    write_jsonl(input_path := tmp_path / "in.jsonl", [chat_line("a", "hi")])
    assert run_batch(input_path, tmp_path / "out.jsonl") == 1
    assert "the engine failed to start: no memory for the KV cache" in capsys.readouterr().err


def test_run_stops_without_writing_when_the_engine_dies(tmp_path, run_batch, fake_engine, capsys):
    async def dead_generate(*args, **kwargs):
        raise RuntimeError("EngineCore died")
        yield

    async def dead_health():
        raise RuntimeError("EngineCore died")

    fake_engine.generate, fake_engine.check_health = dead_generate, dead_health
    write_jsonl(input_path := tmp_path / "in.jsonl", [chat_line(f"q{i}", "hi") for i in range(3)])

    output = tmp_path / "out.jsonl"
    assert run_batch(input_path, output) == 1

    assert "the engine stopped (RuntimeError: EngineCore died)" in capsys.readouterr().err
    assert output.read_text() == ""  # nothing answered: a later run does every line


# -- submit, status, list, cancel, download on a server ---------------------------------------


@pytest.fixture
def server(isolated_home, make_client) -> openai.OpenAI:
    """An openai client on an app with a fake engine (and its batch worker)."""
    app_client = make_client()
    return openai.OpenAI(base_url="http://testserver/v1", api_key="none", http_client=app_client)


def test_submit_follow_and_download(tmp_path, server, capsys):
    lines = [chat_line(f"q{i}", f"question {i}", max_tokens=4) for i in range(5)]
    lines.append(chat_line("bad", "hi", max_tokens=-1))
    write_jsonl(input_path := tmp_path / "in.jsonl", lines)

    assert batch_cli.main(["submit", str(input_path)], client=server) == 0
    batch_id = capsys.readouterr().out.split()[-1]
    assert batch_id.startswith("batch_")

    assert batch_cli.main(["status", batch_id, "--poll-interval", "0.02"], client=server) == 0
    out = capsys.readouterr().out
    assert f"{batch_id}: completed" in out and "requests: 6, completed 5, failed 1" in out
    assert batch_cli.main(["status", batch_id, "--json"], client=server) == 0
    counts = json.loads(capsys.readouterr().out)["request_counts"]
    assert counts == {"total": 6, "completed": 5, "failed": 1}
    assert batch_cli.main(["list"], client=server) == 0
    assert batch_id in capsys.readouterr().out

    download = ["download", batch_id, "-o", str(everything := tmp_path / "all.jsonl")]
    assert batch_cli.main(download, client=server) == 0
    assert sorted(a["custom_id"] for a in read_jsonl(everything)) == sorted(
        line["custom_id"] for line in lines
    )
    download = ["download", batch_id, "-o", str(answers := tmp_path / "answers.jsonl")]
    assert (
        batch_cli.main(
            [*download, "--errors", str(errors := tmp_path / "errors.jsonl")], client=server
        )
        == 0
    )
    assert len(read_jsonl(answers)) == 5
    assert [a["custom_id"] for a in read_jsonl(errors)] == ["bad"]


def test_submit_wait_ends_with_the_batch(tmp_path, server, capsys):
    write_jsonl(input_path := tmp_path / "in.jsonl", [completion_line("c", "Once upon")])
    argv = ["submit", str(input_path), "--wait", "--poll-interval", "0.02", "--metadata", "run=7"]

    assert batch_cli.main(argv, client=server) == 0

    out, err = capsys.readouterr()
    batch = server.batches.retrieve(out.split()[-1])
    assert batch.status == "completed" and batch.endpoint == "/v1/completions"
    assert batch.metadata == {"run": "7"} and f"{batch.id}: completed" in err


def test_submit_checks_the_file_before_uploading_it(tmp_path, server, capsys):
    write_jsonl(
        input_path := tmp_path / "in.jsonl", [chat_line("a", "hi"), completion_line("b", "x")]
    )
    assert batch_cli.main(["submit", str(input_path)], client=server) == 1
    assert f"{input_path}:2: invalid_url" in capsys.readouterr().err
    assert server.files.list().data == []


def test_server_errors_are_one_line_not_a_traceback(tmp_path, server, capsys):
    assert batch_cli.main(["status", "batch_missing"], client=server) == 1
    err = capsys.readouterr().err
    assert err.startswith("llmloop batch status: error: the server answered 404: No such Batch")
    assert "Traceback" not in err

    write_jsonl(input_path := tmp_path / "in.jsonl", [chat_line("a", "hi", max_tokens=2)])
    argv = ["submit", str(input_path), "--wait", "--poll-interval", "0.02"]
    assert batch_cli.main(argv, client=server) == 0
    batch_id = capsys.readouterr().out.split()[-1]
    assert batch_cli.main(["cancel", batch_id], client=server) == 1
    assert "409" in capsys.readouterr().err  # a completed batch cannot be cancelled
