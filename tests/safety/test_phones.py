"""The phone detector's gate never hides a number: on valid numbers of many regions, types and
formats mixed with look-alikes, it finds what phonenumbers' matcher finds in the whole text."""

import random
import time

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from llmloop.safety.phones import _DATE_LIKE, PHONE_REGIONS, phone_spans
from llmloop.safety.pii import detect

REGIONS = ("US", "KR", "GB", "DE", "FR", "JP", "CA", "AU", "IN", "NU", "SH", "BR")
TYPES = (
    PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST, PhoneNumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER, PhoneNumberType.UAN,
)  # fmt: skip
LOOK_ALIKES = (
    "1 1 1 1 1 1 1 1", "2024-05-01", "order 123456789012", "v1.2.3.4", "10.0.0.1", "3/10/2011",
    "12:30", "1-2-3-4-5-6-7-8", "ext. 12", "(", "/", " - ", "+", "page 211-227 (2003)",
    "4111 1111 1111 1111", "tel:", "#5", "room 310",
)  # fmt: skip


def whole_text_matches(text: str) -> set[tuple[int, int]]:
    """What the detector did before the gate: the matcher over the whole text."""
    return {
        (m.start, m.end)
        for region in PHONE_REGIONS
        for m in phonenumbers.PhoneNumberMatcher(text, region, phonenumbers.Leniency.VALID)
        if not _DATE_LIKE.match(m.raw_string)
    }


def random_number(rng: random.Random) -> str:
    example = phonenumbers.example_number_for_type(rng.choice(REGIONS), rng.choice(TYPES))
    if example is None:
        return "555"
    digits = str(example.national_number)
    for _ in range(20):  # other valid numbers of that type: vary the last digits
        k = rng.randint(0, min(4, len(digits)))
        varied = digits[: len(digits) - k] + "".join(rng.choice("0123456789") for _ in range(k))
        number = phonenumbers.PhoneNumber(example.country_code, int(varied))
        if phonenumbers.is_valid_number(number):
            example = number
            break
    style = rng.choice(["national", "international", "e164", "", ".", " "])
    if style in ("national", "international", "e164"):
        return phonenumbers.format_number(example, getattr(PhoneNumberFormat, style.upper()))
    formats = (PhoneNumberFormat.E164, PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.NATIONAL)
    written = phonenumbers.format_number(example, rng.choice(formats))
    digits = "".join(ch for ch in written if ch.isdigit() or ch == "+")
    groups, i = [], 0
    while i < len(digits):
        size = rng.randint(1, 4)
        groups.append(digits[i : i + size])
        i += size
    return style.join(groups)  # regrouped: "+4 420 79 4609 58", "41.555.52.671"


@pytest.mark.parametrize("seed", range(10))
def test_the_gate_finds_what_the_whole_text_matcher_finds(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(30):
        pieces = [
            random_number(rng) if rng.random() < 0.5 else rng.choice(LOOK_ALIKES)
            for _ in range(rng.randint(1, 8))
        ]
        joiners = [" ", "", ", ", " / ", "\n", " or ", ":", "  "]
        text = "".join(piece + rng.choice(joiners) for piece in pieces)
        assert set(phone_spans(text)) == whole_text_matches(text), text


def test_lists_of_numbers_in_one_long_run_are_found_as_before() -> None:
    for text in (
        "(415) 555-2671 (212) 555-1234 (312) 555-9876 (617) 555-0199 (646) 555-0134",
        "212-555-1234 212-555-9876 617-555-0199 646-555-0134 206-555-0100 312-555-9876",
        "+82 10-1234-5678 / +44 20 7946 0958 / +1 415 555 2671 / 010-2345-6789 / 02-312-3456",
    ):
        assert set(phone_spans(text)) == whole_text_matches(text) != set()


def test_a_number_after_a_long_junk_prefix_is_found() -> None:
    # the matcher alone gives up after 65,535 candidates that do not parse
    text = "2 " * 300_000 + "call +1 415 555 2671 now"
    assert [(f.type, f.text) for f in detect(text)] == [("PHONE", "+1 415 555 2671")]


@pytest.mark.slow
def test_digit_soup_costs_the_matcher_linear_time() -> None:
    """Random digits between spaces could hold a number anywhere, so the matcher parses it
    all: the slowest input left (about 9 s per MB), but linear."""
    rng = random.Random(0)
    soup = " ".join(rng.choice("0123456789") for _ in range(1 << 17))
    seconds = []
    for size in (1 << 15, 1 << 17):
        started = time.process_time()
        detect(soup[:size])
        seconds.append(time.process_time() - started)
    assert seconds[1] < 8 * seconds[0]  # 4x the text; quadratic would be 16x
