"""Keys in the log database, the server's keyring over them, and the per-key rate limiter."""

from collections.abc import Iterator

import pytest

from llmloop.serve.auth.keyring import KeyRing
from llmloop.serve.auth.keys import ApiKey, ApiKeyError, KeyLimits, KeyStore, hash_secret
from llmloop.serve.auth.ratelimit import RateLimiter
from llmloop.serve.errors import RateLimitError


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'keys.db'}"


@pytest.fixture
def store(db_url) -> Iterator[KeyStore]:
    store = KeyStore(db_url)
    yield store
    store.close()


def test_only_the_hash_is_stored_and_the_secret_authenticates(store, db_url, tmp_path) -> None:
    key, secret = store.create("app", ["infer"], project="support", limits=KeyLimits(rpm=10))
    assert secret.startswith("sk-") and len(secret) > 40
    assert secret.encode() not in (tmp_path / "keys.db").read_bytes()
    assert store.active_by_hash() == ({hash_secret(secret): key}, True)
    ring = KeyRing(db_url=db_url)
    ring.refresh()
    assert ring.authenticate(secret) == key
    assert ring.authenticate(secret + "x") is None


def test_revoked_keys_stop_working_at_the_next_refresh(store, db_url) -> None:
    _, secret = store.create("app", ["infer"])
    ring = KeyRing(db_url=db_url)
    ring.refresh()
    store.revoke("app")
    assert ring.authenticate(secret) is not None  # until the refresh
    ring.refresh()
    assert ring.authenticate(secret) is None
    assert ring.enabled  # revoking the last key does not open the server


def test_a_ring_is_open_only_when_no_key_exists_anywhere(store, db_url) -> None:
    unread = KeyRing(db_url=db_url)
    assert unread.enabled  # the database has not answered: fail closed
    unread.refresh()
    assert not unread.enabled
    assert KeyRing(("operator-secret",)).enabled
    assert KeyRing(("operator-secret",)).authenticate("operator-secret").allows("admin")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.create("a b", ["infer"]), "key name"),
        (lambda s: s.create("a", ["root"]), "--scope"),
        (lambda s: s.create("a", []), "--scope"),
        (lambda s: s.revoke("nobody"), "no active key"),
        (lambda s: KeyLimits(rpm=0), "--rpm"),
        (lambda s: KeyLimits(tpm=10**12), "--tpm must be between 1 and 2147483647"),
    ],
)
def test_bad_requests_say_what_to_change(store: KeyStore, call, message: str) -> None:
    with pytest.raises(ApiKeyError, match=message):
        call(store)


def test_duplicate_names_are_refused(store: KeyStore) -> None:
    store.create("app", ["infer"])
    with pytest.raises(ApiKeyError, match="exists"):
        store.create("app", ["label"])


def test_scopes() -> None:
    infer = ApiKey(id="k", name="k", scopes=frozenset({"infer"}))
    admin = ApiKey(id="a", name="a", scopes=frozenset({"admin"}))
    assert infer.allows("infer") and not infer.allows("label") and not infer.allows("admin")
    assert all(admin.allows(s) for s in ("infer", "label", "admin"))


def _limited(**limits) -> ApiKey:
    return ApiKey(id="key-1", name="app", scopes=frozenset({"infer"}), limits=KeyLimits(**limits))


def test_requests_per_minute_then_429_with_openai_headers() -> None:
    limiter, key = RateLimiter(), _limited(rpm=3)
    headers = [limiter.admit(key) for _ in range(3)]
    assert [h["x-ratelimit-remaining-requests"] for h in headers] == ["2", "1", "0"]
    assert headers[0]["x-ratelimit-limit-requests"] == "3"
    with pytest.raises(RateLimitError) as error:
        limiter.admit(key)
    assert error.value.status_code == 429 and error.value.code == "rate_limit_exceeded"
    assert int(error.value.headers["retry-after"]) >= 1
    assert error.value.headers["x-ratelimit-remaining-requests"] == "0"


def test_tokens_are_charged_when_done_and_a_key_in_debt_waits() -> None:
    limiter, key = RateLimiter(), _limited(tpm=100)
    limiter.admit(key)
    limiter.release(key, num_tokens=150)
    with pytest.raises(RateLimitError, match="tokens"):
        limiter.admit(key)


def test_concurrent_requests_are_capped_and_freed() -> None:
    limiter, key = RateLimiter(), _limited(max_concurrent=2)
    limiter.admit(key)
    limiter.admit(key)
    with pytest.raises(RateLimitError, match="concurrent"):
        limiter.admit(key)
    limiter.release(key, num_tokens=0)
    limiter.admit(key)
