"""Attacks on a real server, where the engine matters: what the model says must not leak through
logprobs or a truncated answer, and one adversarial body must not stall everyone else.

The server lets PII through on input and redacts it on output, so the model can be asked to say a
value back: the output side is what is under attack here."""

import json
import threading
import time

import httpx
import pytest

from tests.servers import start_server

MODEL = "smollm2-135m-instruct"
EMAIL = "jane.roe@example.com"
CARD = "4111 1111 1111 1111"
# Small models copy a pattern well: the continuation of these prompts is the value again.
SAY_EMAIL = f"Email: {EMAIL}\nEmail: {EMAIL}\nEmail:"
SAY_CARD = f"Card: {CARD}\nCard: {CARD}\nCard:"
pytestmark = pytest.mark.engine

OUTPUT_ONLY_POLICY = """\
operator: placeholder
input:
  pii: {default: allow}
  harm: {default: block}
output:
  pii: {default: redact}
  harm: {default: block}
"""


@pytest.fixture(scope="module")
def server(default_model_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("attacks")
    policy = work / "policy.yaml"
    policy.write_text(OUTPUT_ONLY_POLICY)
    args = ["--safety", str(policy), "--no-store", "--max-model-len", "1024"]
    server = start_server(args, work / "serve.log")
    yield server
    server.stop()


def test_the_model_really_says_the_value(server):
    """Else the tests below prove nothing: the answer holds the placeholder, not the value."""
    text = _complete(server, SAY_EMAIL, max_tokens=16)["choices"][0]["text"]
    assert "<EMAIL_" in text and EMAIL not in text, text


@pytest.mark.parametrize("stream", [False, True])
def test_logprobs_never_spell_a_redacted_value(server, stream):
    tokens = _logprob_tokens(server, SAY_EMAIL, stream=stream)
    assert tokens, "no logprobs came back"
    spelled = "".join(tokens)
    assert "jane.roe" not in spelled and "example.com" not in spelled, spelled


def test_stepping_max_tokens_never_reveals_a_card(server):
    """Cut after every token, the answer shows at most the card's first 3 digits."""
    texts = [_complete(server, SAY_CARD, max_tokens=n)["choices"][0]["text"] for n in range(1, 14)]
    for text in texts:
        digits = "".join(ch for ch in text if ch.isdigit())
        assert len(digits) <= 3, texts
    assert any("<" in text for text in texts), f"the model never said the card: {texts}"


def test_an_adversarial_megabyte_does_not_stall_health(server):
    """1 MiB of repeated private-key headers (a quadratic pattern once) in one message: /health
    stays fast while the server takes it in (it is refused as longer than the context before any
    detector runs; tests/safety/test_redos.py times the detectors themselves at 1 MB)."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "-----BEGIN PRIVATE KEY-----" * 38_000}],
        "max_tokens": 1,
    }
    result = {}

    def attack() -> None:
        with server.http() as http:
            result["status"] = http.post("/v1/chat/completions", json=body).status_code

    attacker = threading.Thread(target=attack)
    attacker.start()
    latencies = []
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        while attacker.is_alive() or not latencies:
            start = time.monotonic()
            assert client.get("/health").status_code == 200
            latencies.append(time.monotonic() - start)
            time.sleep(0.05)
    attacker.join()
    assert result["status"] in (200, 400), result  # screened (or refused as too long), never 5xx
    assert max(latencies) < 1.0, f"/health took {max(latencies):.2f} s during the attack"


def _complete(server, prompt: str, **extra) -> dict:
    body = {"model": MODEL, "prompt": prompt, "temperature": 0, "max_tokens": 16}
    with server.http() as http:
        response = http.post("/v1/completions", json=body | extra)
    assert response.status_code == 200, response.text
    return response.json()


def _logprob_tokens(server, prompt: str, stream: bool) -> list[str]:
    """Every token string in ``logprobs.tokens`` and its ``top_logprobs``, streamed or not."""
    body = {"model": MODEL, "prompt": prompt, "temperature": 0, "max_tokens": 16, "logprobs": 5}
    choices = []
    with server.http() as http:
        if not stream:
            choices = http.post("/v1/completions", json=body).json()["choices"]
        else:
            with http.stream("POST", "/v1/completions", json=body | {"stream": True}) as response:
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        choices += json.loads(line[6:]).get("choices", [])
    tokens = []
    for choice in choices:
        logprobs = choice.get("logprobs") or {}
        tokens += logprobs.get("tokens") or []
        tokens += [t for top in logprobs.get("top_logprobs") or [] for t in (top or {})]
    return tokens
