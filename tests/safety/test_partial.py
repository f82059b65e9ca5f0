"""The start of a PII value at the end of an answer: found within the rule's bounds, hidden
the same way whole and streamed."""

import pytest

from llmloop.safety.guard import Guard
from llmloop.safety.partial import trailing_partial
from llmloop.safety.policy import load_policy, parse_policy
from tests.safety.fakes import fake_classifier

CUT = [
    ("My card is 4111", "4111"),
    ("card 4111 1111 1111 ", "4111 1111 1111 "),
    ("Tel (415) 555", "(415) 555"),
    ("RRN 900101-1", "900101-1"),
    ("Mail john.smith@", "john.smith@"),
    ("Mail john.smith@exam", "john.smith@exam"),
    ("IBAN DE89", "DE89"),
    ("iban de89 3704 00", "de89 3704 00"),
    ("key sk-", "sk-"),
    ("id AKIA", "AKIA"),
    ("x -----BEGIN RSA PRIVATE KEY-----\nMIIE", "-----BEGIN RSA PRIVATE KEY-----\nMIIE"),
]
KEPT = ["My card is 411", "in 2024", "in 2024.", "on 2024-05-01", "step 3", "Room 12 of 40",
        "v1.2.3.4", "in ASIA", "hello", ""]  # fmt: skip


@pytest.mark.parametrize(("text", "fragment"), CUT)
def test_a_trailing_fragment_is_found(text, fragment):
    partial = trailing_partial(text)
    assert partial is not None and partial.finding.text == fragment


@pytest.mark.parametrize("text", KEPT)
def test_short_numbers_years_and_words_are_not_fragments(text):
    assert trailing_partial(text) is None


@pytest.mark.parametrize(("text", "fragment"), CUT)
def test_stream_and_whole_answer_hide_it_alike(text, fragment):
    guard = Guard(load_policy(None), fake_classifier())
    whole = guard.check(text, "output").text
    stream = guard.stream()
    streamed = "".join(stream.feed(text[i : i + 3]) for i in range(0, len(text), 3))
    assert streamed + stream.finish() == whole == text.replace(fragment, "<PARTIAL_PII_1>")


def test_input_and_allowed_types_are_left_alone():
    guard = Guard(load_policy(None), fake_classifier())
    assert guard.check("my card 4111 1111", "input").action == "allow"
    policy = parse_policy({"output": {"pii": {"EMAIL": "allow"}, "harm": {"default": "allow"}}})
    assert Guard(policy).check("Mail john@", "output").text == "Mail john@"
