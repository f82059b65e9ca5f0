"""Invisible and look-alike characters inside a value do not hide it, and redaction leaves none
of it behind: the span covers the invisible characters too."""

import re

import pytest

from llmloop.safety.normalize import normalize
from llmloop.safety.pii import detect
from llmloop.safety.redact import Redactor

ZWSP, ZWJ, WORD_JOINER, SOFT_HYPHEN = "\u200b", "\u200d", "\u2060", "\u00ad"
CGJ, VS16 = "\u034f", "\ufe0f"  # combining grapheme joiner, variation selector-16
TAG_A = "\U000e0041"  # TAG LATIN CAPITAL LETTER A: invisible


def tags(text: str) -> str:
    """``text`` spelled in tag characters: invisible, yet a model reads it."""
    return "".join(chr(0xE0000 + ord(ch)) for ch in text)


DISGUISED = {  # name -> (type, the value as written); each test puts it inside a sentence
    "zero-width in an email": ("EMAIL", f"jo{ZWSP}hn.d{ZWJ}oe@exam{ZWSP}ple.com"),
    "zero-width in a card": ("CREDIT_CARD", f"4111{ZWSP} 1111 11{ZWSP}11 1111"),
    "zero-width in a phone": ("PHONE", f"010-12{ZWSP}34-5678"),
    "zero-width in a KR RRN": ("KR_RRN", f"900101-12{ZWSP}34568"),
    "full-width digits": ("CREDIT_CARD", "４１１１ １１１１ １１１１ １１１１"),
    "full-width phone": ("PHONE", "０１０－１２３４－５６７８"),
    "mathematical digits": ("CREDIT_CARD", "𝟒𝟏𝟏𝟏 𝟏𝟏𝟏𝟏 𝟏𝟏𝟏𝟏 𝟏𝟏𝟏𝟏"),
    "tag character inside": ("CREDIT_CARD", f"4111{TAG_A} 1111 1111 1111"),
    "card in tag characters": ("CREDIT_CARD", tags("4111 1111 1111 1111")),
    "email in tag characters": ("EMAIL", tags("john.doe@example.com")),
    "variation selector": ("CREDIT_CARD", f"4{VS16}111 1111 1111 1111"),
    "variation selector 17": ("CREDIT_CARD", "4111\U000e0100 1111 1111 1111"),
    "soft hyphen": ("US_SSN", f"536-2{SOFT_HYPHEN}2-1234"),
    "word joiner": ("PHONE", f"+1 415{WORD_JOINER} 555 2671"),
    "grapheme joiner": ("KR_RRN", f"9001{CGJ}01-1234568"),
    "direction marks": ("EMAIL", "a\u202eb@c\u200f.co"),
    "combining marks": ("CREDIT_CARD", "4\u03351\u03351\u03351\u0335 1111 1111 1111"),
    "hangul filler": ("CREDIT_CARD", "4111\u3164 1111 1111 1111"),
    "ideographic dots": ("EMAIL", "john\u3002doe\uff20example\uff61com"),
    "middle dots": ("CREDIT_CARD", "4111\u00b71111\u00b71111\u00b71111"),
    "unicode dashes": ("US_SSN", "536\u201122\u20131234"),
}
NO_TRACE = {  # what a replacement may be: nothing of the value's characters survives
    "placeholder": re.compile(r"<[A-Z_]+_\d+>"),
    "hash": re.compile(r"<[A-Z_]+:[0-9a-f]{12}>"),
    "mask": re.compile(r"[*\-. @()+]+"),
}


@pytest.mark.parametrize("name", DISGUISED)
def test_disguised_value_is_found_and_redacted_without_trace(name: str) -> None:
    kind, value = DISGUISED[name]
    before, after = "see ", " please"
    text = before + value + after
    assert [(f.type, f.text) for f in detect(text)] == [(kind, value)]
    for operator, replacement in NO_TRACE.items():
        redacted = Redactor(operator).redact(text, detect(text))
        assert redacted.startswith(before) and redacted.endswith(after)
        assert replacement.fullmatch(redacted[len(before) : -len(after)]), (operator, redacted)


def test_offsets_map_back_across_dropped_and_expanded_characters() -> None:
    text = f"㎏ a{ZWSP}{ZWSP}b ４２ {tags('x')}c"
    normalized = normalize(text)
    assert normalized.text == "kg ab 42 c"
    assert [normalized.span(i, i + 1) for i in range(len(normalized.text))] == [
        (0, 1), (0, 1), (1, 2), (2, 3), (5, 6), (6, 7), (7, 8), (8, 9), (9, 10), (11, 12),
    ]  # fmt: skip
    assert normalized.span(3, 5) == (2, 6)  # "ab" covers the zero-width spaces between
    assert normalize(text, decode_tags=True).text == "kg ab 42 xc"


def test_plain_text_is_unchanged() -> None:
    for text in ("plain ascii", "한국어 문장과 日本語", "Ünïcödé café"):
        assert normalize(text).text == text
