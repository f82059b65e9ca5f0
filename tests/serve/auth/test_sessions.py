"""The labelling UI's login session, CSRF checks on cookie-authenticated writes, and the security
headers every response carries (real app, fake engine)."""

import pytest

from llmloop.serve.auth.keys import KeyStore
from llmloop.serve.auth.sessions import SessionStore

ADMIN = "sk-operator-admin"
ORIGIN = {"Origin": "http://testserver"}  # what a browser sends from the server's own page
FEEDBACK = {"completion_id": "chatcmpl-nope", "rating": 1}  # 404 once past auth


@pytest.fixture
def keyed(make_client, tmp_path):
    """(client, make_key): ``make_key(name, *scopes)`` creates a key and returns its secret."""
    db_url = f"sqlite:///{tmp_path / 'keyed.db'}"
    store = KeyStore(db_url)
    client = make_client(db_url=db_url, api_keys=(ADMIN,))

    def make_key(name: str, *scopes: str) -> str:
        _, secret = store.create(name, list(scopes))
        client.app.state.keyring.refresh()
        return secret

    yield client, make_key
    store.close()


def login(client, secret: str):
    return client.post("/ui/api/session", headers={"Authorization": f"Bearer {secret}"})


def test_login_sets_an_httponly_strict_session_cookie_that_is_not_the_key(keyed) -> None:
    client, make_key = keyed
    secret = make_key("labeller", "label")
    response = login(client, secret)
    assert response.status_code == 200, response.text
    cookie = response.headers["set-cookie"]
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/ui"):
        assert attribute.lower() in cookie.lower(), cookie
    assert "secure" not in cookie.lower()  # plain http: a Secure cookie would never come back
    assert secret not in cookie
    assert client.get("/ui/api/models").status_code == 200  # the cookie alone authenticates


def test_login_over_https_sets_a_secure_cookie(keyed) -> None:
    client, _ = keyed
    response = client.post(
        "https://testserver/ui/api/session", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert response.status_code == 200
    assert "secure" in response.headers["set-cookie"].lower()


def test_login_takes_the_key_in_a_json_body_too(keyed) -> None:
    client, make_key = keyed
    secret = make_key("labeller", "label")
    assert client.post("/ui/api/session", json={"api_key": secret}).status_code == 200
    assert client.get("/ui/api/models").status_code == 200


def test_login_needs_a_label_or_admin_key(keyed) -> None:
    client, make_key = keyed
    assert login(client, make_key("app", "infer")).status_code == 403
    assert login(client, "sk-wrong").status_code == 401
    assert client.post("/ui/api/session").status_code == 401
    assert "set-cookie" not in login(client, "sk-wrong").headers


def test_the_old_key_cookie_no_longer_authenticates(keyed) -> None:
    client, make_key = keyed
    client.cookies.set("llmloop_api_key", make_key("labeller", "label"))
    assert client.get("/ui/api/models").status_code == 401


def test_a_session_reaches_label_routes_only_even_for_an_admin_key(keyed) -> None:
    client, _ = keyed
    token = login(client, ADMIN).cookies["llmloop_session"]
    client.cookies.clear()
    session = {"Cookie": f"llmloop_session={token}"}  # sent to any path, unlike a browser would
    assert client.get("/ui/api/conversations", headers=session).status_code == 200
    for method, path in [
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/load_lora_adapter"),
        ("GET", "/v1/models"),
    ]:
        response = client.request(method, path, headers=session | ORIGIN, json={})
        assert response.status_code == 403, (path, response.text)


def test_logout_ends_the_session(keyed) -> None:
    client, make_key = keyed
    login(client, make_key("labeller", "label"))
    assert client.delete("/ui/api/session", headers=ORIGIN).status_code == 204
    assert client.get("/ui/api/models").status_code == 401


def test_a_revoked_key_ends_its_sessions(keyed, tmp_path) -> None:
    client, make_key = keyed
    login(client, make_key("labeller", "label"))
    KeyStore(f"sqlite:///{tmp_path / 'keyed.db'}").revoke("labeller")
    client.app.state.keyring.refresh()
    assert client.get("/ui/api/models").status_code == 401


@pytest.mark.parametrize("path", ["/v1/feedback", "/ui/api/feedback"])
def test_cookie_writes_need_json_and_the_servers_own_origin(keyed, path: str) -> None:
    client, make_key = keyed
    token = login(client, make_key("labeller", "label")).cookies["llmloop_session"]
    client.cookies.clear()  # sent by hand: a browser sends it to /ui only (its Path)
    json_type = {"Content-Type": "application/json", "Cookie": f"llmloop_session={token}"}
    body = '{"completion_id": "chatcmpl-nope", "rating": 1}'
    refused = [
        json_type | {"Content-Type": "text/plain"} | ORIGIN,  # what a cross-site <form> sends
        json_type,  # no Origin, no Referer
        json_type | {"Origin": "https://evil.example"},
        json_type | {"Origin": "null"},
        json_type | {"Referer": "https://evil.example/x"},
        json_type | {"Origin": "http://testserver.evil.example"},
    ]
    for headers in refused:
        response = client.post(path, content=body, headers=headers)
        assert response.status_code == 403, (headers, response.text)
        assert response.json()["error"]["code"] == "csrf_check_failed"
    assert client.post(path, content=body, headers=json_type | ORIGIN).status_code == 404
    referer = {"Referer": "http://testserver/ui/"}
    assert client.post(path, content=body, headers=json_type | referer).status_code == 404


def test_bearer_writes_need_neither_json_nor_origin(keyed) -> None:
    client, make_key = keyed
    secret = make_key("labeller", "label")
    response = client.post(
        "/v1/feedback",
        content=b'{"completion_id": "chatcmpl-nope", "rating": 1}',
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "text/plain"},
    )
    assert response.status_code == 404, response.text


def test_sessions_are_bounded_and_expire() -> None:
    now = [1000.0]
    sessions = SessionStore(max_sessions=2, ttl_s=60, clock=lambda: now[0])
    first, second, third = (sessions.create(f"key-{i}") for i in range(3))
    assert sessions.key_id(first) is None  # the oldest made room
    assert (sessions.key_id(second), sessions.key_id(third)) == ("key-1", "key-2")
    now[0] += 61
    assert sessions.key_id(third) is None
    assert len(sessions) == 0


def test_every_response_says_nosniff(keyed) -> None:
    client, _ = keyed
    for path in ["/health", "/v1/models", "/ui/", "/ui/app.js", "/nowhere"]:
        assert client.get(path).headers.get("x-content-type-options") == "nosniff", path


def test_the_ui_cannot_be_framed_or_run_foreign_scripts(keyed) -> None:
    client, _ = keyed
    for path in ["/ui/", "/ui/app.js", "/ui/api/models"]:
        headers = client.get(path).headers
        assert headers["content-security-policy"] == "default-src 'self'; frame-ancestors 'none'"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
    page = client.get("/ui/").text
    assert "<script>" not in page and "<style" not in page and "style=" not in page
