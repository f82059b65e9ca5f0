import hashlib

import pytest

from llmloop.safety.pii import detect
from llmloop.safety.redact import Redactor

TEXT = "Mail a@b.co or A@B.CO, call +1 415 555 2671, then mail c@d.io"


def test_placeholders_are_typed_and_stable_within_a_conversation() -> None:
    redactor = Redactor()
    first = redactor.redact(TEXT, detect(TEXT))
    assert first == "Mail <EMAIL_1> or <EMAIL_1>, call <PHONE_1>, then mail <EMAIL_2>"
    later = "Reply to c@d.io and a@b.co"
    assert redactor.redact(later, detect(later)) == "Reply to <EMAIL_2> and <EMAIL_1>"


def test_a_new_redactor_starts_numbering_again() -> None:
    text = "c@d.io"
    assert Redactor().redact(text, detect(text)) == "<EMAIL_1>"


def test_mask_keeps_the_shape() -> None:
    text = "ssn 536-22-1234"
    assert Redactor("mask").redact(text, detect(text)) == "ssn ***-**-****"


def test_hash_is_a_keyed_hmac_made_once_per_home(isolated_home, monkeypatch) -> None:
    text = "card 4111 1111 1111 1111"
    hashed = Redactor("hash").redact(text, detect(text))
    assert hashed.startswith("card <CREDIT_CARD:") and "4111" not in hashed
    assert Redactor("hash").redact(text, detect(text)) == hashed  # the same key, kept in the home
    key_file = isolated_home / "redaction.key"
    assert len(key_file.read_bytes()) == 32 and key_file.stat().st_mode & 0o077 == 0
    # without the key, the digest is not sha256 of the value: trying every card number fails
    plain = hashlib.sha256(b"4111111111111111").hexdigest()[:12]
    assert plain not in hashed
    monkeypatch.setenv("LLMLOOP_REDACTION_KEY", "shared-by-every-replica")
    assert Redactor("hash").redact(text, detect(text)) != hashed
    assert Redactor("hash", key=b"k").redact(text, detect(text)) != hashed


def test_the_same_value_written_differently_is_one_placeholder() -> None:
    text = "4111 1111 1111 1111 or 4111-1111-1111-1111"
    assert Redactor().redact(text, detect(text)) == "<CREDIT_CARD_1> or <CREDIT_CARD_1>"


def test_unknown_operator() -> None:
    with pytest.raises(ValueError, match="operator"):
        Redactor("shred")  # type: ignore[arg-type]
