from llmloop.safety import validators


def test_luhn() -> None:
    assert validators.luhn_ok("4111111111111111")
    assert not validators.luhn_ok("4111111111111112")


def test_credit_card_needs_issuer_prefix_and_length() -> None:
    assert validators.is_credit_card("4111 1111 1111 1111")
    assert validators.is_credit_card("3530111333300000")  # JCB
    assert not validators.is_credit_card("1234567812345670")  # Luhn-valid, no issuer
    assert not validators.is_credit_card("4111 1111")


def test_iban_mod_97_and_country_length() -> None:
    assert validators.is_iban("DE89370400440532013000")
    assert not validators.is_iban("DE89370400440532013001")
    assert not validators.is_iban("DE8937040044053201300")  # one short for DE
    assert not validators.is_iban("XX89370400440532013000")


def test_us_ssn_ranges() -> None:
    assert validators.is_us_ssn("536-22-1234")
    for bad in ("000-12-3456", "666-12-3456", "912-12-3456", "536-00-1234", "536-22-0000"):
        assert not validators.is_us_ssn(bad)
    assert not validators.is_us_ssn("078-05-1120")  # the Woolworth wallet card


def test_kr_rrn_checksum_and_date() -> None:
    assert validators.is_kr_rrn("900101-1234568")
    assert not validators.is_kr_rrn("900101-1234567")
    assert not validators.is_kr_rrn("900132-1234568")
    assert not validators.is_kr_rrn("900101-9234568")


def test_ip_address() -> None:
    assert validators.is_ip_address("10.0.0.1")
    assert validators.is_ip_address("::1")
    assert not validators.is_ip_address("256.1.1.1")
    assert not validators.is_ip_address("0.0.0.0")


def test_entropy() -> None:
    assert validators.shannon_entropy("aaaa") == 0.0
    assert validators.shannon_entropy("abcd") == 2.0
