"""Unbounded work per request: every list and text a request carries has a cap, refused with a
400 naming the param before anything is tokenized; oversized lists are refused without being
validated item by item."""

import json
import time

import pytest

from llmloop.serve.protocol import (
    MAX_BEAM_WIDTH,
    MAX_CHOICES,
    MAX_MESSAGES,
    MAX_PROMPTS,
    MAX_TEXT_CHARS,
)
from tests.serve.test_errors import assert_openai_error

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
OK_CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
OK_COMPLETION = {"model": "fake-model", "prompt": "hi"}
BIG = "x" * (MAX_TEXT_CHARS + 1)
HALF = "x" * (MAX_TEXT_CHARS // 2 + 1)


@pytest.mark.parametrize(
    ("url", "body", "param"),
    [
        (CHAT, OK_CHAT | {"messages": [{"role": "user", "content": BIG}]}, "messages[0].content"),
        (
            CHAT,
            OK_CHAT
            | {"messages": [{"role": "user", "content": [{"type": "text", "text": HALF}] * 2}]},
            "messages[0]",
        ),
        (CHAT, OK_CHAT | {"messages": [{"role": "user", "content": HALF[:-2]}] * 5}, "messages"),
        (
            CHAT,
            OK_CHAT | {"messages": [{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1)},
            "messages",
        ),
        (CHAT, OK_CHAT | {"n": 2 * MAX_BEAM_WIDTH, "use_beam_search": True}, "use_beam_search"),
        (COMPLETIONS, OK_COMPLETION | {"prompt": BIG}, "prompt"),
        (COMPLETIONS, OK_COMPLETION | {"prompt": [HALF[:-2]] * 5}, "prompt"),
        (COMPLETIONS, OK_COMPLETION | {"prompt": ["x"] * (MAX_PROMPTS + 1)}, "prompt"),
        (COMPLETIONS, OK_COMPLETION | {"prompt": ["x"] * (MAX_CHOICES // 8 + 1), "n": 8}, "prompt"),
        (COMPLETIONS, OK_COMPLETION | {"prompt": [1, "x", [1]]}, "prompt"),
    ],
)
def test_oversized_requests_are_400_naming_the_param(client, url, body, param):
    assert_openai_error(client.post(url, json=body), 400, param)
    assert not client.engine.requests


@pytest.mark.parametrize(
    ("url", "field", "items"),
    [
        (COMPLETIONS, "prompt", ["x"] * 2_000_000),  # 8 MB: the largest body of these that fits
        (COMPLETIONS, "prompt", [1] * 1_000_000),
        (COMPLETIONS, "prompt", [[1, 2]] * 1_000_000),
        (CHAT, "messages", [{"role": "user", "content": "x"}] * 250_000),
        (CHAT, "messages", [{}] * 1_000_000),
    ],
)
def test_million_item_lists_are_refused_fast(client, url, field, items):
    body = json.dumps({"model": "fake-model", field: items}, separators=(",", ":")).encode()
    # What the server pays for any body this size: the transfer, and the JSON parse.
    padding = json.dumps({"model": "fake-model", "user": 7, "pad": "x" * len(body)}).encode()
    transfer_s = _time(lambda: _post(client, url, padding))
    parse_s = _time(lambda: json.loads(body))
    elapsed = _time(lambda: assert_openai_error(_post(client, url, body), 400, field))
    # Validating item by item took seconds (4.5 s for 4M token ids, 2.5 s for 200k strings);
    # now a scan at most. Bounded relative to the unavoidable costs, as the CPU is shared in CI.
    assert elapsed < 0.5 + 3 * (transfer_s + parse_s), (elapsed, transfer_s, parse_s)


def _post(client, url: str, body: bytes):
    return client.post(url, content=body, headers={"content-type": "application/json"})


def _time(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started
