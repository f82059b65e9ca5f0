"""The harness against the real ``llmloop serve`` (vLLM, default model), and agreement with
lm-evaluation-harness run against the same server."""

import json
import math
from pathlib import Path

import pytest
import yaml

from llmloop.evals.runner import RunConfig, run_eval
from llmloop.evals.tasks import BUILTIN_TASKS_DIR, load_task

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def base_model(server) -> str:
    return next(m.id for m in server.client.models.list().data if not getattr(m, "parent", None))


def our_run(server, task_name: str, out_dir: Path, limit: int | None = None):
    config = RunConfig(server.base_url, base_model(server), out_dir, api_key=server.api_key)
    return run_eval(load_task(task_name, limit=limit), config)


def test_generation_task_on_the_real_server(llmloop_server, tmp_path):
    run = our_run(llmloop_server, "capitals", tmp_path / "capitals", limit=12)
    assert set(run.metrics) == {"exact_match", "contains", "f1", "rouge_l", "chrf"}
    assert run.metrics["contains"] > 0  # the 135M model knows some capitals (Paris, at least)
    rerun = our_run(llmloop_server, "capitals", tmp_path / "capitals", limit=12)
    assert rerun.num_cached == 12 and rerun.metrics == run.metrics


def test_safety_task_on_the_real_server(llmloop_server, tmp_path):
    safety = our_run(llmloop_server, "safety_refusals", tmp_path / "safety")
    assert set(safety.metrics) == {"refusal_rate", "false_refusal_rate"}


def test_perplexity_task_on_the_real_server(llmloop_server, tmp_path):
    ppl = our_run(llmloop_server, "public_domain_ppl", tmp_path / "ppl")
    assert 1 < ppl.metrics["token_perplexity"] < 1000
    assert math.isfinite(ppl.metrics["bits_per_byte"])


def test_multiple_choice_agrees_with_lm_eval_local_completions(
    llmloop_server, default_model_dir, tmp_path, monkeypatch
):
    ours = our_run(llmloop_server, "science_mc", tmp_path / "ours")

    monkeypatch.setenv("OPENAI_API_KEY", llmloop_server.api_key)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    theirs = run_lm_eval(
        "local-completions",
        "llmloop_science_mc",
        tmp_path,
        model_args={
            "model": base_model(llmloop_server),
            "base_url": f"{llmloop_server.base_url}/v1/completions",
            "tokenizer": str(default_model_dir),
            "tokenizer_backend": "huggingface",
            "tokenized_requests": False,
            "num_concurrent": 4,
            "max_retries": 3,
        },
    )
    print(json.dumps({"ours": ours.metrics, "lm_eval": theirs}))
    assert ours.metrics["acc"] == pytest.approx(theirs["acc,none"])
    assert ours.metrics["acc_norm"] == pytest.approx(theirs["acc_norm,none"])


def test_lm_eval_local_chat_completions_generates(llmloop_server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", llmloop_server.api_key)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    theirs = run_lm_eval(
        "local-chat-completions",
        "llmloop_capitals",
        tmp_path,
        model_args={
            "model": base_model(llmloop_server),
            "base_url": f"{llmloop_server.base_url}/v1/chat/completions",
            "num_concurrent": 4,
            "max_retries": 3,
        },
        limit=8,
        apply_chat_template=True,
    )
    assert 0.0 <= theirs["exact_match,none"] <= 1.0


def run_lm_eval(model: str, task: str, tmp_path: Path, model_args: dict, **kwargs) -> dict:
    """lm-eval's own entry point on our shipped task YAML, its data path made absolute."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    config = yaml.safe_load((BUILTIN_TASKS_DIR / "lm_eval" / f"{task}.yaml").read_text())
    files = config["dataset_kwargs"]["data_files"]
    files["test"] = str(BUILTIN_TASKS_DIR.parents[1] / files["test"])
    include = tmp_path / "lm_eval_tasks"
    include.mkdir(exist_ok=True)
    (include / f"{task}.yaml").write_text(yaml.safe_dump(config))
    results = lm_eval.simple_evaluate(
        model=model,
        model_args=",".join(f"{k}={v}" for k, v in model_args.items()),
        tasks=[task],
        task_manager=TaskManager(include_path=str(include)),
        batch_size=1,
        **kwargs,
    )
    return results["results"][task]
