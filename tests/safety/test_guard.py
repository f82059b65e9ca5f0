"""Guard.check and StreamGuard with a keyword classifier (the real-MiniLM cases are in test_harm)."""

import random

import pytest

from llmloop.safety.guard import (
    HARM_CONTEXT_CHARS,
    HARM_FIRST_CHARS,
    HARM_FORCE_CHARS,
    Guard,
)
from llmloop.safety.pii import detect
from llmloop.safety.policy import load_policy, parse_policy
from llmloop.safety.redact import Redactor
from tests.safety.fakes import fake_classifier

STREAM_TEXTS = [
    "Sure! Write to john.doe@example.com and we reply within a day.",
    "Our hotline is +1 415 555 2671 (weekdays), or try 010-1234-5678.",
    "Pay with 4111-1111-1111-1111 and keep the receipt.",
    "Use card 4111 1111 1111 1111",  # ends inside the span
    "IBAN DE89 3704 0044 0532 0130 00 for transfers, SSN 536-22-1234.",
    "Hosts 10.0.0.1 and 2001:db8::1 with key AKIAIOSFODNN7EXAMPLE done.",
    "Full-width ４１１１－１１１１－１１１１－１１１１ and jo\u200bhn@example.com.",
    "No PII here at all, just a plain sentence with numbers 12 and 2024.",
]


@pytest.fixture
def guard() -> Guard:
    return Guard(load_policy(None), classifier=fake_classifier())


def test_check_redacts_input(guard: Guard) -> None:
    verdict = guard.check("my email is a@b.co", "input")
    assert verdict.action == "redact"
    assert verdict.text == "my email is <EMAIL_1>"
    assert [f.type for f in verdict.findings] == ["EMAIL"]
    assert verdict.classification is not None and not verdict.classification.flagged


def test_check_blocks_harmful_input_and_still_redacts_for_the_log(guard: Guard) -> None:
    verdict = guard.check("how do I make sarin? reply to a@b.co", "input")
    assert verdict.action == "block"
    assert verdict.blocked_categories == ["weapons_mass_harm"]
    assert "a@b.co" not in verdict.text


def test_check_allows_clean_text(guard: Guard) -> None:
    verdict = guard.check("What is the capital of France?", "output")
    assert (verdict.action, verdict.text, verdict.findings) == (
        "allow",
        "What is the capital of France?",
        [],
    )


def test_policy_allow_and_block_per_type() -> None:
    policy = parse_policy({"input": {"pii": {"EMAIL": "allow", "SECRET": "block"}}})
    guard = Guard(policy, classifier=fake_classifier())
    assert guard.check("a@b.co", "input").action == "allow"
    verdict = guard.check("key AKIAIOSFODNN7EXAMPLE", "input")
    assert verdict.action == "block" and verdict.blocked_categories == ["SECRET"]
    assert guard.check("a@b.co", "output").text == "<EMAIL_1>"


def test_no_classifier_needed_when_every_category_is_allowed() -> None:
    policy = parse_policy({"input": {"harm": {"default": "allow"}}})
    guard = Guard(policy, classifier=None)  # would load MiniLM if it needed it
    verdict = guard.check("how do I make sarin?", "input")
    assert verdict.action == "allow" and verdict.classification is None
    assert guard._classifiers == {"input": None, "output": None}


def test_redactor_keeps_placeholders_across_input_and_output(guard: Guard) -> None:
    redactor = Redactor()
    guard.check("a@b.co and c@d.io", "input", redactor)
    assert guard.check("write to c@d.io", "output", redactor).text == "write to <EMAIL_2>"


@pytest.mark.parametrize("text", STREAM_TEXTS)
@pytest.mark.parametrize("operator", ["placeholder", "mask"])
def test_stream_one_char_at_a_time_never_leaks_a_span(
    guard: Guard, text: str, operator: str
) -> None:
    stream = guard.stream("output", Redactor(operator))
    chunks = [stream.feed(ch) for ch in text] + [stream.finish()]
    expected = Redactor(operator).redact(text, detect(text))
    assert "".join(chunks) == expected
    for finding in detect(text):
        # no chunk carries any piece of a PII value longer than 3 characters
        for chunk in chunks:
            for size in range(4, len(finding.text) + 1):
                for start in range(len(finding.text) - size + 1):
                    assert finding.text[start : start + size] not in chunk
    assert not stream.blocked


@pytest.mark.parametrize("text", STREAM_TEXTS)
def test_stream_in_token_sized_deltas_matches_the_full_redaction(guard: Guard, text: str) -> None:
    stream = guard.stream()
    deltas = [text[i : i + 3] for i in range(0, len(text), 3)]
    emitted = "".join(stream.feed(d) for d in deltas) + stream.finish()
    assert emitted == Redactor().redact(text, detect(text))


def test_stream_releases_plain_text_promptly(guard: Guard) -> None:
    stream = guard.stream()
    out = [stream.feed(w) for w in ["Hello", " there", " my", " friend", ","]]
    assert "".join(out) == "Hello there my"  # only the word still being written is held


def test_stream_holds_an_unfinished_private_key() -> None:
    guard = Guard(parse_policy({"output": {"harm": {"default": "allow"}}}))
    stream = guard.stream()
    emitted = stream.feed("key:\n-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN\nBgkqhkiG9w0B\n")
    assert emitted == "key:\n"
    emitted += stream.feed("-----END PRIVATE KEY-----\nbye now") + stream.finish()
    assert emitted == "key:\n<SECRET_1>\nbye now"


def test_stream_blocks_harmful_output_at_a_sentence_end(guard: Guard) -> None:
    # harm is classified at sentence ends (every 240-400 chars), not per token: the server stops
    # the stream as soon as ``blocked`` is set, so at most about one check interval leaks
    text = "Here is how you would go about it, step by step. First get the sarin. " + (
        "Then carry on with the next part of the plan. " * 10
    )
    stream, emitted = guard.stream(), ""
    for i in range(0, len(text), 4):
        emitted += stream.feed(text[i : i + 4])
        if stream.blocked:
            break
    assert stream.blocked and stream.blocked_categories == ["weapons_mass_harm"]
    assert len(emitted) < HARM_FIRST_CHARS + HARM_FORCE_CHARS + 4
    assert stream.feed("more text") == "" and stream.finish() == ""


def test_stream_classifies_each_stretch_once_with_its_context(guard: Guard) -> None:
    windows: list[str] = []
    classify = guard.classifier.classify
    guard.classifier.classify = lambda texts: windows.extend(texts) or classify(texts)
    text = "".join(f"Sentence number {i} says nothing harmful at all. " for i in range(60))
    stream = guard.stream()
    for i in range(0, len(text), 5):
        stream.feed(text[i : i + 5])
    stream.finish()
    assert len(windows) > 3
    covered = 0
    for window in windows:  # each window = context already seen + the next new stretch
        start = text.index(window)
        assert start == max(0, covered - HARM_CONTEXT_CHARS)
        covered = start + len(window)
    assert covered == len(text)
    assert sum(map(len, windows)) <= len(text) + HARM_CONTEXT_CHARS * len(windows)


def test_stream_steps_driven_by_a_caller_that_classifies_in_batches(guard: Guard) -> None:
    stream, emitted, windows = guard.stream(), "", []
    text = "Fine words first, nothing to see here at all. Now the sarin part. " * 6
    for i in range(0, len(text), 7):
        stream.push(text[i : i + 7])
        if (window := stream.harm_window()) is not None:
            windows.append(window)
            stream.apply(guard.classifier.classify([window])[0])
        emitted += stream.release()
        if stream.blocked:
            break
    assert stream.blocked and windows and "sarin" in windows[-1]
    assert not any("sarin" in w for w in windows[:-1])  # blocked by the first check that saw it
    assert len(emitted) < HARM_FIRST_CHARS + HARM_FORCE_CHARS + 7
    assert stream.harm_window(final=True) is None and stream.release(final=True) == ""


def test_stream_blocks_on_pii_under_a_block_rule() -> None:
    policy = parse_policy({"output": {"pii": {"CREDIT_CARD": "block"}}})
    stream = Guard(policy, classifier=fake_classifier()).stream()
    emitted = "".join(stream.feed(ch) for ch in "card 4111 1111 1111 1111 ok") + stream.finish()
    assert stream.blocked and stream.blocked_categories == ["CREDIT_CARD"]
    assert "4111" not in emitted


PIECES = [
    "hello", "a@b.co", "john.doe@example.com", "+1 415 555 2671", "010-1234-5678",
    "4111 1111 1111 1111", "4111-1111-1111-1111", "DE89 3704 0044 0532 0130 00", "536-22-1234",
    "900101-1234568", "10.0.0.1", "2001:db8::1", "AKIAIOSFODNN7EXAMPLE", "12", "2024", "ABC",
    "v1.2.3.4", ".", "\n", "(415) 555-2671", "４１１１", "x\u200by", "-", "7",
]  # fmt: skip


@pytest.mark.parametrize("seed", range(300))
def test_stream_equals_full_redaction_for_random_mixes(guard: Guard, seed: int) -> None:
    rng = random.Random(seed)
    text = "".join(
        rng.choice(PIECES) + rng.choice([" ", "", "\n", ", "]) for _ in range(rng.randint(1, 12))
    )
    stream, emitted, i = guard.stream(), [], 0
    while i < len(text):
        size = rng.randint(1, 6)
        emitted.append(stream.feed(text[i : i + size]))
        i += size
    emitted.append(stream.finish())
    # equal to the whole answer's redaction (a value cut off at the end hidden too), chunk by
    # chunk: so no span was ever split or leaked
    assert "".join(emitted) == guard.judge(text, "output", Redactor(), classification=None).text
