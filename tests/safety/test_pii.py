"""Each detector on values it must find and on look-alikes it must leave alone."""

import pytest

from llmloop.safety.pii import detect


def found(text: str) -> list[tuple[str, str]]:
    return [(f.type, f.text) for f in detect(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail john.doe+news@example.co.uk today", ("EMAIL", "john.doe+news@example.co.uk")),
        ("call +1 415-555-2671 now", ("PHONE", "+1 415-555-2671")),
        ("call (415) 555-2671", ("PHONE", "(415) 555-2671")),
        ("US 415.555.2671.", ("PHONE", "415.555.2671")),
        ("KR mobile 010-1234-5678", ("PHONE", "010-1234-5678")),
        ("Seoul office 02-312-3456", ("PHONE", "02-312-3456")),
        ("intl +82 10 1234 5678", ("PHONE", "+82 10 1234 5678")),
        ("UK +44 20 7946 0958", ("PHONE", "+44 20 7946 0958")),
        ("visa 4111 1111 1111 1111", ("CREDIT_CARD", "4111 1111 1111 1111")),
        ("mc 5500-0000-0000-0004 ok", ("CREDIT_CARD", "5500-0000-0000-0004")),
        ("mixed 4111-1111 1111-1111", ("CREDIT_CARD", "4111-1111 1111-1111")),
        ("amex 378282246310005", ("CREDIT_CARD", "378282246310005")),
        ("dots 4111.1111.1111.1111", ("CREDIT_CARD", "4111.1111.1111.1111")),
        ("wide 4111  1111  1111  1111", ("CREDIT_CARD", "4111  1111  1111  1111")),
        ("lower de89 3704 0044 0532 0130 00", ("IBAN", "de89 3704 0044 0532 0130 00")),
        ("dashed DE89-3704-0044-0532-0130-00", ("IBAN", "DE89-3704-0044-0532-0130-00")),
        ("mixed ssn 536-22 1234", ("US_SSN", "536-22 1234")),
        ("iban DE89 3704 0044 0532 0130 00 please", ("IBAN", "DE89 3704 0044 0532 0130 00")),
        ("GB82WEST12345698765432", ("IBAN", "GB82WEST12345698765432")),
        ("ssn 536-22-1234", ("US_SSN", "536-22-1234")),
        ("ssn 536 22 1234", ("US_SSN", "536 22 1234")),
        ("rrn 900101-1234568", ("KR_RRN", "900101-1234568")),
        ("host 192.168.1.20 down", ("IP_ADDRESS", "192.168.1.20")),
        ("v6 2001:db8::8a2e:370:7334 up", ("IP_ADDRESS", "2001:db8::8a2e:370:7334")),
        ("link-local fe80::1", ("IP_ADDRESS", "fe80::1")),
        ("key AKIAIOSFODNN7EXAMPLE", ("SECRET", "AKIAIOSFODNN7EXAMPLE")),
        ("gh ghp_" + "a1B2" * 9, ("SECRET", "ghp_" + "a1B2" * 9)),
        ("openai sk-proj-Ab12Cd34Ef56Gh78Ij90Kl", ("SECRET", "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl")),
        ("api_key=s3cr3tValue99", ("SECRET", "s3cr3tValue99")),
        ("token Zx8Qw2Er5Ty7Ui9Op1As3Df6Gh4Jk", ("SECRET", "Zx8Qw2Er5Ty7Ui9Op1As3Df6Gh4Jk")),
    ],
)
def test_detects(text: str, expected: tuple[str, str]) -> None:
    assert found(text) == [expected]


def test_private_key_block_is_one_secret() -> None:
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"
    assert found(f"here:\n{key}\nthanks") == [("SECRET", key)]


@pytest.mark.parametrize(
    "text",
    [
        "order number 123-456-7890 shipped",  # not a valid US number (area code 123)
        "order #4111111111111112 shipped",  # Luhn fails
        "card 4111 1111 1111 1112",  # Luhn fails
        "invoice 1234567890123",  # Luhn-valid-looking IDs without an issuer prefix
        "born 2024-01-15, released 15/01/2024",
        "iban DE89 3704 0044 0532 0130 01",  # mod-97 fails
        "ssn 666-12-3456 and 900-12-3456 and 123-00-4567",  # never-assigned ranges
        "rrn 900101-1234567",  # checksum fails
        "rrn 901301-1234568",  # month 13
        "version 1.2.3.4, build 10.0.19041.1, v2.10.3",
        "Python 3.11.4 on 999.1.1.1",
        "ISBN 978-3-16-148410-0",
        "UUID 123e4567-e89b-12d3-a456-426614174000",
        "sha 3f786850e387550fdab836ed7e6dc881de23001b",
        "meet at 12:30:45 then std::vector<int>",
        "call me at 555-0123",  # 7 digits, no area code
        "the function calculate_total_price_with_tax_and_discount",
        "price $1,234,567.89 and 3.14159265358979",
        "email me at john at example dot com",
        "0.0.0.0 binds every interface",
    ],
)
def test_ignores_look_alikes(text: str) -> None:
    assert found(text) == []


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("mail jo\u200bhn@exa\u200dmple.com", "EMAIL"),  # zero-width characters
        (
            "card ４１１１　１１１１　１１１１　１１１１",
            "CREDIT_CARD",
        ),  # full-width digits, ideographic space
        ("phone ０１０－１２３４－５６７８", "PHONE"),  # full-width digits and hyphen
        ("ssn 536\u201322\u20131234", "US_SSN"),  # en dashes
        ("card 4111\u00a01111-1111\u200b 1111", "CREDIT_CARD"),  # nbsp, dash, zero-width
        ("mail john＠example．com", "EMAIL"),  # full-width @ and .
        ("ip ١٩٢.١٦٨.١.٢٠", "IP_ADDRESS"),  # Arabic-Indic digits
    ],
)
def test_unicode_tricks_are_seen_through(text: str, kind: str) -> None:
    findings = detect(text)
    assert [f.type for f in findings] == [kind]
    finding = findings[0]
    # offsets point into the original text, tricks included
    assert text[finding.start : finding.end] == finding.text
    assert finding.text == text.split(" ", 1)[1]


def test_offsets_are_into_the_original_text() -> None:
    text = "é\u200b mail a@b.co and 4111 1111 1111 1111"
    for finding in detect(text):
        assert text[finding.start : finding.end] == finding.text
    assert [f.type for f in detect(text)] == ["EMAIL", "CREDIT_CARD"]


def test_two_ibans_in_a_row_are_both_found() -> None:
    text = "iban:de89 3704 0044 0532 0130 00 hello GB82 WEST 1234 5698 7654 32"
    assert [f.type for f in detect(text)] == ["IBAN", "IBAN"]


def test_card_number_is_not_also_a_phone() -> None:
    assert found("pay 4111-1111-1111-1111") == [("CREDIT_CARD", "4111-1111-1111-1111")]


def test_scores_are_probabilities() -> None:
    for finding in detect("a@b.co 192.168.0.1 536-22-1234 api_key=abcdefgh12"):
        assert 0.0 < finding.score <= 1.0


def test_empty_and_plain_text() -> None:
    assert detect("") == []
    assert detect("Hello, how are you today?") == []
