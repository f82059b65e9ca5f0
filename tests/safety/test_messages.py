"""A value split across the messages of one conversation is still found, in each message."""

import re

import pytest

from llmloop.safety.guard import Guard
from llmloop.safety.messages import _merged, detect_messages
from llmloop.safety.pii import Finding, detect
from llmloop.safety.policy import load_policy
from tests.safety.fakes import fake_classifier

SPLITS = {  # name -> the messages, with the value's part in each between [ and ]
    "card at a space": ["Pay with [4111 1111]", "[1111 1111] thanks"],
    "card mid-group": ["card [4111 11]", "[11 1111 1111] ok"],
    "email mid-word": ["mail [john.doe@exa]", "[mple.com] today"],
    "ssn at a separator": ["ssn [536-22]", "[1234] ok"],
    "phone": ["call [+1 415]", "[555 2671]"],
    "kr rrn": ["rrn [900101-]", "[1234568]"],
    "iban": ["iban [DE89 3704 0044 05]", "[32 0130 00] please"],
    "over three messages": ["[4111]", "[1111 1111]", "[1111] is mine"],
}


@pytest.mark.parametrize("name", SPLITS)
def test_a_value_split_across_messages_is_found_in_each(name: str) -> None:
    marked = SPLITS[name]
    texts = [m.replace("[", "").replace("]", "") for m in marked]
    parts = [(m.index("["), m.index("]") - 1) for m in marked]  # [start, end) in each text
    assert not any(covered(detect(t), span) for t, span in zip(texts, parts, strict=True))
    found = detect_messages(texts)
    for text, findings, span in zip(texts, found, parts, strict=True):
        assert covered(findings, span), (text, findings)
        assert all(text[f.start : f.end] == f.text for f in findings)


def covered(findings: list[Finding], span: tuple[int, int]) -> bool:
    return any(f.start <= span[0] and span[1] <= f.end for f in findings)


def test_guard_redacts_every_part_of_a_split_value() -> None:
    guard = Guard(load_policy(None), classifier=fake_classifier())
    texts = ["my card is 4111 1111", "1111 1111, and mail a@b.co"]
    verdicts = guard.judge_messages(texts, "input", None, [None, None])
    assert [v.action for v in verdicts] == ["redact", "redact"]
    assert verdicts[0].text == "my card is <CREDIT_CARD_1>"
    assert verdicts[1].text.startswith("<CREDIT_CARD_2>, and mail <EMAIL_1>")
    assert not re.search(r"\d{2}", "".join(v.text for v in verdicts))


def test_a_split_part_absorbs_the_findings_it_overlaps() -> None:
    text = "0123456789 abcdef"
    findings = [Finding("PHONE", 0, 4, "0123", 0.9), Finding("EMAIL", 11, 13, "ab", 1.0)]
    merged = _merged(findings, Finding("CREDIT_CARD", 2, 8, text[2:8], 1.0), text)
    assert [(f.type, f.start, f.end) for f in merged] == [("CREDIT_CARD", 0, 8), ("EMAIL", 11, 13)]
    assert _merged(merged, Finding("CREDIT_CARD", 1, 3, text[1:3], 1.0), text) == merged


def test_messages_without_a_split_value_are_detected_alone() -> None:
    texts = ["mail a@b.co", "call 010-1234-5678", "nothing here"]
    assert detect_messages(texts) == [detect(text) for text in texts]
    assert detect_messages(["one 4111 1111 1111 1111"]) == [detect("one 4111 1111 1111 1111")]
    assert detect_messages([]) == []
