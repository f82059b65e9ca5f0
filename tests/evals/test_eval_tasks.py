import json

import pytest
import yaml

from llmloop.evals.cli import main
from llmloop.evals.errors import TaskConfigError
from llmloop.evals.tasks import TASK_TYPES, builtin_task_names, load_samples, load_task


def test_every_builtin_task_loads_with_provenance_and_data():
    names = builtin_task_names()
    tasks = [load_task(name) for name in names]
    assert {t.type for t in tasks} == set(TASK_TYPES)
    for task in tasks:
        assert task.provenance and task.description
        samples = load_samples(task)
        assert len(samples) >= 10
        if task.type == "multiple_choice":
            assert all(0 <= s.row["label"] < len(s.row["choices"]) for s in samples)


def test_rag_task_sources_exist():
    task = load_task("planets_rag")
    docs = task.path.parent / "rag_docs"
    assert {s.row["source"] for s in load_samples(task)} <= {p.name for p in docs.iterdir()}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": "essay", "dataset": "d.jsonl"}, "type must be one of"),
        ({"type": "generation"}, "missing `dataset:`"),
        ({"type": "generation", "dataset": "d.jsonl", "metrics": ["bleurt"]}, "unknown metrics"),
        ({"type": "generation", "dataset": "d.jsonl", "metrics": ["regex"]}, "needs a `regex:`"),
        ({"type": "generation", "dataset": "d.jsonl", "shots": 3}, "unknown keys"),
        ({"type": "generation", "dataset": "missing.jsonl"}, "does not exist"),
    ],
)
def test_bad_task_files_say_what_to_change(tmp_path, config, message):
    (tmp_path / "d.jsonl").write_text(json.dumps({"prompt": "hi", "answer": "x"}) + "\n")
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(TaskConfigError, match=message):
        load_samples(load_task(path))


def test_unknown_task_lists_builtins():
    with pytest.raises(TaskConfigError, match="capitals"):
        load_task("no-such-task")


def test_cli_help_and_list(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    assert "resume" in capsys.readouterr().out
    assert main(["list"]) == 0
    assert "science_mc" in capsys.readouterr().out
