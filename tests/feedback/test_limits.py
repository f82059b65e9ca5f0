"""Records are made storable before they are queued: no NUL or lone surrogate, no column too long."""

import dataclasses
import json
import math

from llmloop.feedback import limits
from llmloop.feedback.limits import COLUMN_CHARS, REPLACEMENT, fit_record
from llmloop.feedback.schema import completions


def test_unstorable_characters_become_the_replacement_character(make_record):
    record = dataclasses.replace(
        make_record(1, prompt="a\x00b \ud800c", output="x\x00y"),
        sampling_params={"stop": ["\x00"], "k\x00": 1},
        user="u\x00",
    )
    fitted = fit_record(record)
    assert fitted.messages == [{"role": "user", "content": f"a{REPLACEMENT}b {REPLACEMENT}c"}]
    assert fitted.choices[0]["text"] == f"x{REPLACEMENT}y"  # one for one: offsets are kept
    assert fitted.sampling_params == {"stop": [REPLACEMENT], f"k{REPLACEMENT}": 1}
    assert fitted.user == f"u{REPLACEMENT}"
    fitted.to_json().encode()  # the spool can write it (a lone surrogate cannot be UTF-8)


def test_json_postgresql_refuses_becomes_json_it_accepts(make_record):
    record = dataclasses.replace(
        make_record(1), sampling_params={"temperature": math.nan, "top_p": math.inf, "x": object}
    )
    params = fit_record(record).sampling_params
    assert params["temperature"] == "NaN" and params["top_p"] == "Infinity"
    assert params["x"] == str(object)
    json.dumps(params, allow_nan=False)


def test_over_long_columns_are_cut_and_stay_distinct(make_record):
    a, b = (dataclasses.replace(make_record(1), user="u" * 300 + tail) for tail in "ab")
    users = fit_record(a).user, fit_record(b).user
    assert [len(u) for u in users] == [limits.MAX_USER_CHARS] * 2
    assert users[0] != users[1] and users[0].startswith("u" * 200)
    model = fit_record(dataclasses.replace(make_record(1), model="m" * 1000)).model
    assert len(model) == COLUMN_CHARS["model"] == 256


def test_every_short_column_a_record_fills_is_capped(make_record):
    assert limits.MAX_USER_CHARS == 256
    assert {"endpoint", "model", "base_model", "adapter", "api_key_id", "user"} <= set(COLUMN_CHARS)
    long = {name: "x" * 1000 for name in COLUMN_CHARS}
    fitted = fit_record(dataclasses.replace(make_record(1), **long))
    for name, max_chars in COLUMN_CHARS.items():
        assert len(getattr(fitted, name)) == max_chars == completions.c[name].type.length


def test_json_over_the_cap_cuts_only_the_longest_strings(make_record, monkeypatch):
    monkeypatch.setattr(limits, "MAX_JSON_CHARS", 1000)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "q" * 3000},
        {"role": "assistant", "content": "a" * 600},
        {"role": "user", "content": "Why?"},
    ]
    fitted = fit_record(dataclasses.replace(make_record(1), messages=messages)).messages
    assert [m["role"] for m in fitted] == ["system", "user", "assistant", "user"]
    assert (fitted[0]["content"], fitted[3]["content"]) == ("Be brief.", "Why?")
    # the two long ones share what the short strings (keys included) leave of the budget
    short = ["role", "content"] * 4 + ["system", "Be brief.", "user", "assistant", "user", "Why?"]
    each = (1000 - sum(map(len, short))) // 2
    assert fitted[1]["content"] == "q" * each + f"…[{3000 - each} characters cut]"
    assert fitted[2]["content"] == "a" * each + f"…[{600 - each} characters cut]"


def test_fill_limit_is_the_largest_that_fits():
    for lengths, budget in [([5, 5, 5], 9), ([100, 3, 1], 10), ([7], 3), ([4, 4], 100), ([9], 0)]:
        limit = limits._fill_limit(lengths, budget)
        assert sum(min(n, limit) for n in lengths) <= budget
        assert limit >= max(lengths) or sum(min(n, limit + 1) for n in lengths) > budget


def test_a_clean_record_is_not_copied(make_record):
    record = make_record(1, prompt="Bonjour ¿qué tal? 你好")
    assert fit_record(record) is record
