"""Logprobs and truncated answers say no more than the screened text: tokens of a redacted span
are dropped, their neighbours lose their alternatives, a blocked choice has none, a stream sends
a token only with its text; an answer cut inside a PII value ends in a placeholder."""

import re

import pytest

from llmloop.serve.guardrails import CONTENT_FILTER, REFUSAL
from tests.serve.fakes import FakeEngine
from tests.serve.test_pipeline import (
    EMAIL,
    ENDPOINTS,
    HARMFUL_ANSWER,
    WHOLE_AND_STREAMED,
    answer,
    guarded,  # noqa: F401 (a fixture)
    post,
)
from tests.serve.test_protocol import sse_events

CARD = "4111 1111 1111 1111"
PLACEHOLDER = re.compile(r"<[A-Z_]+?(?:_\d+)?>")


def logprob_request(endpoint: str) -> dict:
    return {"logprobs": True, "top_logprobs": 2} if endpoint == "chat" else {"logprobs": 2}


def choice_logprobs(client, endpoint: str, stream: bool, reply_prompt="hi", **body):
    """(the choice's text, [(token, its alternatives, its text_offset or None)]) whole or
    streamed, plus every streamed (text so far, tokens so far) to check that tokens never run
    ahead of the text."""
    response = post(
        client, endpoint, reply_prompt, stream=stream, **logprob_request(endpoint), **body
    )
    assert response.status_code == 200, response.text
    choices = (
        [c for event in sse_events(response) for c in event["choices"]]
        if stream
        else response.json()["choices"]
    )
    text, entries, steps = "", [], []
    for choice in choices:
        if endpoint == "chat":
            text += ((choice.get("message") or choice.get("delta"))["content"]) or ""
            for lp in (choice["logprobs"] or {}).get("content") or []:
                top = [t["token"] for t in lp["top_logprobs"] if t["token"] != lp["token"]]
                entries.append((lp["token"], top, None))
        else:
            text += choice["text"]
            logprobs = choice["logprobs"] or {"tokens": [], "top_logprobs": [], "text_offset": []}
            for token, top, offset in zip(
                logprobs["tokens"], logprobs["top_logprobs"], logprobs["text_offset"], strict=True
            ):
                entries.append((token, [t for t in top if t != token], offset))
        steps.append((text, "".join(token for token, _, _ in entries)))
    return text, entries, steps


@pytest.mark.parametrize("stream", WHOLE_AND_STREAMED)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_logprobs_drop_the_tokens_of_a_redacted_span(guarded, endpoint, stream):  # noqa: F811
    client = guarded(FakeEngine(reply=f"Write to {EMAIL} today."))
    text, entries, _ = choice_logprobs(client, endpoint, stream)
    assert text == "Write to <EMAIL_1> today."
    tokens = [token for token, _, _ in entries]
    assert "".join(tokens) == "Write to  today."
    # the neighbours of the span keep their own logprob but not their alternatives
    neighbours = [i for i, (token, _, _) in enumerate(entries) if token == " "][1:3]
    for i, (token, alternatives, offset) in enumerate(entries):
        assert alternatives == ([] if i in neighbours else ["?"]), (i, token)
        if offset is not None:  # completions: offsets point into the text sent
            assert text[offset : offset + len(token)] == token


@pytest.mark.parametrize("stream", WHOLE_AND_STREAMED)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_blocked_answer_sends_no_logprobs_of_what_it_withheld(guarded, endpoint, stream):  # noqa: F811
    client = guarded(FakeEngine(reply=HARMFUL_ANSWER))
    text, entries, _ = choice_logprobs(client, endpoint, stream, max_tokens=200)
    assert text.endswith(REFUSAL)
    sent = text.removesuffix(REFUSAL)
    assert sent.startswith("".join(token for token, _, _ in entries))  # "" for a whole answer


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_streamed_token_goes_out_with_its_text_never_before(guarded, endpoint):  # noqa: F811
    # the digits are held back until the guard knows they are no card number
    client = guarded(FakeEngine(reply="Rooms 12 34 56 and 78 are open today."))
    text, entries, steps = choice_logprobs(client, endpoint, stream=True)
    assert text == "Rooms 12 34 56 and 78 are open today."
    for text_so_far, tokens_so_far in steps:
        assert text_so_far.startswith(tokens_so_far)
    assert "".join(token for token, _, _ in entries) == text


def test_echoed_prompt_logprobs_are_of_the_redacted_prompt(guarded):  # noqa: F811
    body = post(guarded(), "completions", f"mail {EMAIL}", max_tokens=2, echo=True, logprobs=1)
    (choice,) = body.json()["choices"]
    assert choice["text"] == "mail <EMAIL_1>ma"
    assert "".join(choice["logprobs"]["tokens"]) == "mail <EMAIL_1>ma"
    assert EMAIL not in body.text


# -- truncated answers ---------------------------------------------------------------------------


def digits_revealed(text: str) -> int:
    return sum(ch.isdigit() for ch in PLACEHOLDER.sub("", text))


@pytest.mark.parametrize("stream", WHOLE_AND_STREAMED)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_stepping_max_tokens_never_reveals_a_card_number(guarded, endpoint, stream):  # noqa: F811
    prefix = "My card is "
    client = guarded(FakeEngine(reply=f"{prefix}{CARD} thanks"))
    for size in range(1, len(CARD) + 1):
        text, finish_reason, _ = answer(
            client, endpoint, "hi", stream, max_tokens=len(prefix) + size
        )
        assert finish_reason == "length"
        assert text.startswith(prefix)
        assert digits_revealed(text) <= 3, (size, text)


@pytest.mark.parametrize("stream", WHOLE_AND_STREAMED)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_an_answer_cut_by_a_stop_string_inside_a_card_hides_it(guarded, endpoint, stream):  # noqa: F811
    client = guarded(FakeEngine(reply=f"Pay with {CARD} please"))
    text, finish_reason, _ = answer(client, endpoint, "hi", stream, stop=["1111 please"])
    assert finish_reason == "stop"
    assert digits_revealed(text) == 0 and text.startswith("Pay with <")


@pytest.mark.parametrize("stream", WHOLE_AND_STREAMED)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("cut", ["john.smith@", "john.smith@exam"])
def test_an_email_cut_after_the_at_sign_is_hidden(guarded, endpoint, stream, cut):  # noqa: F811
    client = guarded(FakeEngine(reply="Mail john.smith@example.com now"))
    text, _, _ = answer(client, endpoint, "hi", stream, max_tokens=len("Mail ") + len(cut))
    assert "john" not in text and "smith" not in text
    assert text.startswith("Mail <")


@pytest.mark.parametrize("stream", WHOLE_AND_STREAMED)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("reply", ["It happened in 2024", "Now do step 3", "Room 12 of 40"])
def test_a_benign_answer_ending_in_a_short_number_is_kept(guarded, endpoint, stream, reply):  # noqa: F811
    client = guarded(FakeEngine(reply=reply))
    for max_tokens in (len(reply), 64):  # cut right at its end, and ended by itself
        text, finish_reason, _ = answer(client, endpoint, "hi", stream, max_tokens=max_tokens)
        assert text == reply and finish_reason != CONTENT_FILTER


@pytest.mark.parametrize("stream", WHOLE_AND_STREAMED)
def test_logprobs_of_a_truncated_card_are_dropped(guarded, stream):  # noqa: F811
    prefix = "My card is "
    client = guarded(FakeEngine(reply=f"{prefix}{CARD} thanks"))
    text, entries, _ = choice_logprobs(client, "completions", stream, max_tokens=len(prefix) + 9)
    assert digits_revealed(text) == 0
    assert not any(ch.isdigit() for token, _, _ in entries for ch in token)
