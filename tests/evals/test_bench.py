import json

import pytest

from llmloop.evals.bench import BenchConfig, format_table, main, run_benchmark, synthetic_prompts
from llmloop.evals.bench_metrics import BenchResult, calculate_metrics
from llmloop.evals.bench_requests import RequestOutput
from llmloop.evals.errors import EvalError


def _output(ttft, itl, output_tokens, prompt_tokens=10):
    return RequestOutput(
        success=True,
        ttft=ttft,
        itl=itl,
        latency=ttft + sum(itl),
        output_tokens=output_tokens,
        prompt_tokens=prompt_tokens,
    )


def test_metrics_match_hand_computed_values():
    outputs = [
        _output(0.1, [0.02, 0.02, 0.02], 4),  # tpot = 0.06 / 3 = 0.02
        _output(0.3, [0.05], 2),  # tpot = 0.05 / 1
        _output(0.2, [], 1),  # one token: no TPOT sample
        RequestOutput(success=False, error="boom"),
    ]
    result = calculate_metrics(outputs, duration_s=2.0)
    assert (result.completed, result.failed) == (3, 1)
    assert result.total_output_tokens == 7
    assert result.total_input_tokens == 30
    assert result.request_throughput == pytest.approx(1.5)
    assert result.output_throughput == pytest.approx(3.5)
    assert result.total_token_throughput == pytest.approx(18.5)
    assert result.ttft.mean_ms == pytest.approx(200.0)
    assert result.ttft.median_ms == pytest.approx(200.0)
    assert result.ttft.percentiles_ms["p90"] == pytest.approx(280.0)  # 200 + 0.8 * 100
    assert result.tpot.mean_ms == pytest.approx(35.0)
    assert result.itl.mean_ms == pytest.approx(27.5)  # pooled gaps: 20, 20, 20, 50
    assert result.itl.percentiles_ms["p50"] == pytest.approx(20.0)
    assert result.e2el.mean_ms == pytest.approx((160 + 350 + 200) / 3)
    assert result.errors == ["boom"]


def test_result_json_round_trips_with_vllm_key_names():
    result = calculate_metrics([_output(0.1, [0.01], 2)], duration_s=1.0)
    data = result.to_dict()
    for key in ("median_ttft_ms", "p99_tpot_ms", "p90_itl_ms", "mean_e2el_ms", "output_throughput"):
        assert key in data
    assert BenchResult.from_dict(json.loads(json.dumps(data))) == result


def test_synthetic_prompts_are_deterministic_and_distinct():
    assert synthetic_prompts(4, 16, seed=1) == synthetic_prompts(4, 16, seed=1)
    assert synthetic_prompts(4, 16, seed=1) != synthetic_prompts(4, 16, seed=2)
    prompts = synthetic_prompts(4, 16, seed=1)
    assert len(set(prompts)) == 4 and all(len(p.split()) == 15 for p in prompts)


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_benchmark_against_a_streaming_server(fake_server, endpoint):
    fake_server.state.answer = lambda prompt: " one two three four five"
    config = BenchConfig(
        base_url=fake_server.base_url + "/v1",
        model="m",
        concurrency=3,
        num_requests=9,
        max_tokens=5,
        ignore_eos=True,
        endpoint=endpoint,
    )
    result = run_benchmark(config)
    assert (result.completed, result.failed) == (9, 0)
    assert result.total_output_tokens == 45  # from usage.completion_tokens
    assert result.ttft.mean_ms > 0 and result.itl.mean_ms > 0
    sent = fake_server.state.requests
    assert len(sent) == 10  # the untimed test request, then the run
    assert all(r["stream"] and r["stream_options"] == {"include_usage": True} for r in sent)
    assert all(r["ignore_eos"] for r in sent)
    assert fake_server.state.max_in_flight <= 3


def test_concurrency_limit_is_reached_and_respected(fake_server):
    fake_server.state.delay_s = 0.05
    run_benchmark(BenchConfig(fake_server.base_url, "m", concurrency=4, num_requests=12))
    assert fake_server.state.max_in_flight == 4


def test_cli_prints_table_and_writes_json(fake_server, tmp_path, capsys):
    out = tmp_path / "r.json"
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hello"}\n{"prompt": "bye"}\n')
    argv = ["serve", "--base-url", fake_server.base_url, "--model", "m", "--num-requests", "4"]
    assert main([*argv, "--prompts", str(prompts), "--result-json", str(out)]) == 0
    assert "Median TTFT (ms):" in capsys.readouterr().out
    assert json.loads(out.read_text())["completed"] == 4
    sent = [r["messages"][0]["content"] for r in fake_server.state.requests[1:]]
    assert sorted(sent) == ["bye", "bye", "hello", "hello"]


def test_bad_input_names_the_flag(fake_server, tmp_path):
    with pytest.raises(EvalError, match="--concurrency"):
        BenchConfig(fake_server.base_url, "m", concurrency=0)
    bad = tmp_path / "p.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(EvalError, match="line 1"):
        run_benchmark(BenchConfig(fake_server.base_url, "m", prompts=str(bad)))
    fake_server.state.fail_first = 1
    with pytest.raises(EvalError, match="--base-url"):
        run_benchmark(BenchConfig(fake_server.base_url, "m"))


def test_table_lists_every_metric():
    table = format_table(calculate_metrics([_output(0.1, [0.01], 2)], 1.0))
    for label in ("TTFT", "TPOT", "ITL", "E2EL"):
        assert f"P99 {label} (ms):" in table


@pytest.mark.engine
def test_benchmark_against_the_real_server(llmloop_server):
    model = llmloop_server.client.models.list().data[0].id
    config = BenchConfig(
        llmloop_server.base_url,
        model,
        concurrency=4,
        num_requests=8,
        max_tokens=16,
        prompt_len=32,
        ignore_eos=True,
        api_key=llmloop_server.api_key,
    )
    result = run_benchmark(config)
    assert (result.completed, result.failed) == (8, 0)
    assert result.total_output_tokens == 8 * 16
    assert result.tpot.mean_ms > 0 and result.ttft.mean_ms > 0
    assert result.itl.percentiles_ms["p99"] >= result.itl.percentiles_ms["p50"]
