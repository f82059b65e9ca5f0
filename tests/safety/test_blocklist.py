"""A policy's own block list: terms and regexes, per direction, whole texts and streams."""

import time

import pytest

from llmloop.safety.blocklist import REGEX_TIMEOUT_S, Blocklist, parse_blocklist
from llmloop.safety.errors import PolicyError
from llmloop.safety.guard import Guard
from llmloop.safety.policy import parse_policy
from tests.safety.fakes import fake_classifier

POLICY = {
    "input": {"blocklist": {"terms": ["project falcon", "내부 코드명", "ass"]}},
    "output": {"blocklist": {"regexes": [r"(?i)\bticket-\d{6}\b"]}},
}


@pytest.fixture
def guard() -> Guard:
    return Guard(parse_policy(POLICY), classifier=fake_classifier())


@pytest.mark.parametrize(
    "text",
    [
        "Tell me about Project Falcon.",
        "tell me about PROJECT  falcon".replace("  ", " "),
        "Ｐｒｏｊｅｃｔ Ｆａｌｃｏｎ status?",  # full-width
        "pro\u200bject falcon",  # a zero-width space inside
        "project falcon에 대해 알려줘",  # a Korean particle right after
        "이 문서의 내부 코드명은 뭐야?",  # a Korean term inside a longer word
        "you ass",
    ],
)
def test_terms_block_input(guard: Guard, text: str) -> None:
    verdict = guard.check(text, "input")
    assert verdict.action == "block" and verdict.blocked_categories == ["blocklist"]


@pytest.mark.parametrize(
    "text", ["a falcon project", "my class at school", "passage", "ticket-123456 please"]
)
def test_look_alikes_and_the_other_directions_rules_pass(guard: Guard, text: str) -> None:
    assert guard.check(text, "input").action == "allow"


def test_regexes_block_output_only(guard: Guard) -> None:
    assert guard.check("Your TICKET-123456 is open.", "output").blocked_categories == ["blocklist"]
    assert guard.check("Your ticket-12345 is open.", "output").action == "allow"
    assert guard.check("project falcon", "output").action == "allow"


def test_a_stream_stops_at_a_term_split_across_deltas() -> None:
    guard = Guard(parse_policy({"output": {"blocklist": {"terms": ["project falcon"]}}}))
    guard = Guard(guard.policy, classifier=fake_classifier())
    stream = guard.stream("output")
    sent = ""
    for delta in ["The answer is: pro", "ject fal", "con is ", "on track. More text follows."]:
        sent += stream.feed(delta)
        if stream.blocked:
            break
    sent += stream.finish()
    assert stream.blocked and stream.blocked_categories == ["blocklist"]
    assert "falcon" not in sent


def test_a_slow_regex_blocks_instead_of_stalling() -> None:
    blocklist = Blocklist(regexes=(r"(a|aa)+$",))
    started = time.perf_counter()
    match = blocklist.find("a" * 60 + "b")  # ~1e12 steps without the time limit
    assert match is not None and match.rule == "regex"
    # the limit is checked between steps: allow for a loaded machine, not for hours
    assert time.perf_counter() - started < 100 * REGEX_TIMEOUT_S


def test_match_offsets_point_into_the_original_text() -> None:
    text = "x pro\u200bject falcon y"
    match = Blocklist(terms=("project falcon",)).find(text)
    assert match is not None and text[match.start : match.end] == "pro\u200bject falcon"


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ({"term": ["x"]}, "'term'"),
        ({"terms": "x"}, r"input\.blocklist\.terms: expected a list"),
        ({"terms": [""]}, r"input\.blocklist\.terms\[0\]"),
        ({"terms": ["\u200b"]}, "empty once invisible"),
        ({"regexes": ["(unclosed"]}, r"input\.blocklist\.regexes\[0\]: not a valid regex"),
        ({"regexes": ["x" * 1001]}, "longer than"),
    ],
)
def test_bad_entries_name_the_key(data: dict, names: str) -> None:
    with pytest.raises(PolicyError, match=names):
        parse_policy({"input": {"blocklist": data}})


def test_no_blocklist_by_default() -> None:
    assert not parse_blocklist({}, "input.blocklist")
    assert not parse_policy({}).input.blocklist
