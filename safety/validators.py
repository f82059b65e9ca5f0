"""Checksums and range rules that turn a pattern match into a finding (or reject it).

Each validator takes the matched characters (separators included) and answers True only for
values that could really be issued: a Luhn-valid card with a known issuer prefix, an IBAN whose
mod-97 remainder is 1, an SSN outside the never-assigned ranges, a KR resident number whose
birth date and check digit agree.
"""

import ipaddress
import math
from collections import Counter

# ISO 13616 IBAN lengths per country (SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip

# Issuer prefixes (IIN ranges) of the card networks: Visa, Mastercard, Amex, Discover, JCB,
# Diners, UnionPay, Maestro. A Luhn-valid number outside them is more likely an ID of some kind.
_CARD_PREFIXES = (
    ("4",), tuple(str(p) for p in range(51, 56)), tuple(str(p) for p in range(2221, 2721)),
    ("34", "37"), ("6011", "65", *(str(p) for p in range(644, 650))),
    tuple(str(p) for p in range(3528, 3590)), ("300", "301", "302", "303", "304", "305", "36", "38"),
    ("62",), ("50", "56", "57", "58", "63", "67"),
)  # fmt: skip
CARD_PREFIXES: tuple[str, ...] = tuple(p for group in _CARD_PREFIXES for p in group)


def digits_of(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def is_credit_card(text: str) -> bool:
    digits = digits_of(text)
    return (
        13 <= len(digits) <= 19
        and digits.startswith(CARD_PREFIXES)
        and _network_length_ok(digits)
        and luhn_ok(digits)
    )


def _network_length_ok(digits: str) -> bool:
    if digits.startswith(("34", "37")):  # American Express
        return len(digits) == 15
    if digits.startswith("4"):  # Visa
        return len(digits) in (13, 16, 19)
    if digits.startswith(("5", "2")) and not digits.startswith(("50", "56", "57", "58")):
        return len(digits) == 16  # Mastercard
    return len(digits) >= 14


def is_iban(compact: str) -> bool:
    """``compact``: the IBAN without spaces, upper case."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    return int(rearranged.translate(_IBAN_LETTER_DIGITS)) % 97 == 1


# ISO 13616: A is 10, B is 11, ... Z is 35
_IBAN_LETTER_DIGITS = str.maketrans(
    {chr(c): str(c - ord("A") + 10) for c in range(ord("A"), ord("Z") + 1)}
)


def is_us_ssn(text: str) -> bool:
    digits = digits_of(text)
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if len(digits) != 9 or area in ("000", "666") or area >= "900":
        return False
    if group == "00" or serial == "0000":
        return False
    # publicly known sample numbers (Woolworth wallet card, SSA advertising) and 1-9 runs
    return (
        digits not in ("078051120", "219099999", "123456789", "987654321") and len(set(digits)) > 1
    )


def is_kr_rrn(text: str) -> bool:
    """Resident registration number YYMMDD-GNNNNNC: a real birth date, gender/century digit
    1-8, and the weighted mod-11 check digit."""
    digits = digits_of(text)
    if len(digits) != 13:
        return False
    month, day, gender = int(digits[2:4]), int(digits[4:6]), digits[6]
    if not (1 <= month <= 12 and 1 <= day <= 31) or gender not in "12345678":
        return False
    weights = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
    total = sum(int(d) * w for d, w in zip(digits[:12], weights, strict=True))
    return (11 - total % 11) % 10 == int(digits[12])


def is_ip_address(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    # 0.0.0.0 and :: are placeholders, not anyone's address
    return not address.is_unspecified


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text``'s own character distribution."""
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())
