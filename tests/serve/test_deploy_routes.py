"""Admin ``/v1/routes`` on the fake engine: a route's versions answer as themselves, sticky per
user; canary, promote, rollback and delete apply at once; bad bodies are 400s, never 500s."""

import json
from collections import Counter
from pathlib import Path

import pytest

from llmloop import registry
from llmloop.serve.auth.keys import KeyStore

ROUTES = "/v1/routes"


def chat(client, model: str, user: str | None = None, headers: dict | None = None) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    if user is not None:
        body["user"] = user
    response = client.post("/v1/chat/completions", json=body, headers=headers or {})
    assert response.status_code == 200, response.text
    return response.json()


def register_adapter(home: Path, name: str, content: str) -> str:
    """A registered (fake) PEFT adapter; its ``NAME@V``."""
    path = home / "adapters" / name / content
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "b"}))
    artifact = registry.register(name, path, "adapter", base="fake-model")
    return f"{name}@{artifact.version}"


@pytest.fixture
def versions(isolated_home: Path) -> tuple[str, str]:
    return register_adapter(isolated_home, "support", "a"), register_adapter(
        isolated_home, "support", "b"
    )


def test_a_route_answers_as_its_version_and_lists_in_models(client, versions) -> None:
    v1, _ = versions
    response = client.put(f"{ROUTES}/support", json={"versions": [{"ref": v1}]})
    assert response.status_code == 200, response.text
    status = response.json()
    assert status["id"] == "support" and status["versions"] == [
        {"ref": v1, "weight": 100.0, "share": 1.0}
    ]
    assert status["events"][0]["kind"] == "set"
    assert chat(client, "support")["model"] == v1
    models = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert "support" in models
    listed = client.get(ROUTES).json()
    assert listed["object"] == "list" and [r["id"] for r in listed["data"]] == ["support"]


def test_a_bare_name_pins_the_newest_version(client, versions) -> None:
    _, v2 = versions
    status = client.put(f"{ROUTES}/support", json={"versions": [{"ref": "support"}]}).json()
    assert status["versions"][0]["ref"] == v2 == "support@2"
    served = client.put(f"{ROUTES}/plain", json={"versions": [{"ref": "fake-model"}]})
    assert served.status_code == 200, served.text
    assert chat(client, "plain")["model"] == "fake-model"


def test_canary_split_is_sticky_and_near_its_weight(client, versions) -> None:
    v1, v2 = versions
    client.put(f"{ROUTES}/support", json={"versions": [{"ref": v1}]})
    response = client.post(f"{ROUTES}/support/canary", json={"candidate": v2, "weight": 25})
    assert response.status_code == 200, response.text
    assert response.json()["canary"]["ref"] == v2
    assert response.json()["canary"]["share"] == pytest.approx(0.25)
    served = {f"user-{i}": chat(client, "support", f"user-{i}")["model"] for i in range(400)}
    counts = Counter(served.values())
    assert set(counts) == {v1, v2}
    assert 0.17 < counts[v2] / 400 < 0.33  # 25% +- 3.7 standard deviations
    for user in list(served)[:20]:  # one user keeps their version
        assert chat(client, "support", user)["model"] == served[user]

    promoted = client.post(f"{ROUTES}/support/promote").json()
    assert promoted["canary"] is None and promoted["versions"][0]["ref"] == v2
    assert {chat(client, "support", f"user-{i}")["model"] for i in range(30)} == {v2}

    back = client.post(f"{ROUTES}/support/rollback", json={"reason": "too chatty"})
    assert back.status_code == 200, back.text
    assert back.json()["versions"][0]["ref"] == v1
    assert back.json()["events"][0] | {"created": None} == {
        "kind": "rollback",
        "created": None,
        "actor": "admin",
        "reason": "too chatty",
    }
    assert {chat(client, "support", f"user-{i}")["model"] for i in range(30)} == {v1}


def test_rollback_of_a_canary_ends_it(client, versions) -> None:
    v1, v2 = versions
    client.put(f"{ROUTES}/support", json={"versions": [{"ref": v1}]})
    client.post(f"{ROUTES}/support/canary", json={"candidate": v2, "weight": 50})
    status = client.post(f"{ROUTES}/support/rollback").json()
    assert status["canary"] is None and status["versions"][0]["ref"] == v1
    assert {chat(client, "support", f"u{i}")["model"] for i in range(30)} == {v1}


def test_delete_removes_the_route(client, versions) -> None:
    client.put(f"{ROUTES}/support", json={"versions": [{"ref": versions[0]}]})
    response = client.delete(f"{ROUTES}/support")
    assert response.json() == {"id": "support", "object": "route", "deleted": True}
    assert client.get(f"{ROUTES}/support").status_code == 404
    missing = client.post("/v1/chat/completions", json={"model": "support", "messages": []})
    assert missing.status_code in (400, 404)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("get", "/nope", None, 404),
        ("post", "/nope/promote", None, 404),
        ("post", "/nope/rollback", {"reason": "x"}, 404),
        ("delete", "/nope", None, 404),
        ("post", "/nope/canary", {"candidate": "support@1", "weight": 5}, 404),
        ("put", "/support", {"versions": []}, 400),
        ("put", "/support", {"versions": [{"ref": "support@9"}]}, 400),
        ("put", "/support", {"versions": [{"ref": "unknown"}]}, 400),
        ("put", "/support", {"versions": [{"ref": "support@1", "weight": -1}]}, 400),
        ("put", "/support", {"versions": [{"ref": "support@1", "weight": 2e6}]}, 400),
        ("put", "/support", {"versions": [{"ref": "support@1", "weight": 0}]}, 400),
        ("put", "/support", {"versions": [{"ref": "support@1"}], "extra": 1}, 400),
        ("put", "/support", {"versions": [{"ref": "support@1", "wieght": 5}]}, 400),
        ("put", "/support", {"versions": [{"ref": "x" * 200}]}, 400),
        ("put", "/support", {"versions": [{"ref": "support@1"}] * 9}, 400),
        ("put", "/support", {"versions": [{"ref": "support@1"}, {"ref": "support@1"}]}, 400),
        ("put", "/bad@name", {"versions": [{"ref": "support@1"}]}, 400),
        ("put", "/" + "r" * 300, {"versions": [{"ref": "support@1"}]}, 400),
        (
            "put",
            "/support",
            {"versions": [{"ref": "support@1"}], "shadow": {"ref": "support@1"}},
            400,
        ),
        (
            "put",
            "/support",
            {"versions": [{"ref": "support@1"}], "shadow": {"ref": "support@2", "fraction": 0}},
            400,
        ),
        ("put", "/support", "not json", 400),
        ("put", "/support", [1, 2], 400),
        ("post", "/support/canary", {"candidate": "support@2", "weight": 100}, 400),
        ("post", "/support/canary", {"candidate": "support@2", "weight": 0}, 400),
        ("post", "/support/canary", {"candidate": "support@1", "weight": 5}, 400),
        (
            "post",
            "/support/canary",
            {"candidate": "support@2", "weight": 5, "max_error_rate": -1},
            400,
        ),
        ("post", "/support/canary", {"candidate": "support@2", "weight": 5, "window_s": 0}, 400),
        (
            "post",
            "/support/canary",
            {"candidate": "support@2", "weight": 5, "promote_after": 0},
            400,
        ),
        ("post", "/support/canary", {"candidate": "support@2"}, 400),
        ("post", "/support/promote", None, 400),  # no canary to promote
        ("post", "/support/rollback", None, 400),  # no canary, nothing before the route
        ("post", "/support/rollback", {"reason": "x" * 2000}, 400),
        ("post", "/support/rollback", {"why": "x"}, 400),
    ],
)
def test_bad_requests_are_400_or_404_in_openai_shape(
    client, versions, method: str, path: str, body, status: int
) -> None:
    client.put(f"{ROUTES}/support", json={"versions": [{"ref": versions[0]}]})
    kwargs = {}
    if isinstance(body, str):
        kwargs = {"content": body, "headers": {"content-type": "application/json"}}
    elif body is not None:
        kwargs = {"json": body}
    response = client.request(method.upper(), ROUTES + path, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"] in ("invalid_request_error", "not_found_error")


def test_the_shadow_is_stored_and_shown(client, versions) -> None:
    v1, v2 = versions
    body = {"versions": [{"ref": v1, "weight": 1}], "shadow": {"ref": v2, "fraction": 0.5}}
    status = client.put(f"{ROUTES}/support", json=body).json()
    assert status["shadow"] == {"ref": v2, "fraction": 0.5}
    assert chat(client, "support")["model"] == v1  # the shadow never answers


def test_routes_need_the_admin_scope(make_client, tmp_path, versions) -> None:
    db_url = f"sqlite:///{tmp_path / 'keyed.db'}"
    keys = KeyStore(db_url)
    try:
        _, admin_secret = keys.create("ops", ["admin"])
        _, infer_secret = keys.create("app", ["infer"])
        client = make_client(db_url=db_url)
        infer = {"Authorization": f"Bearer {infer_secret}"}
        admin = {"Authorization": f"Bearer {admin_secret}"}
        assert client.get(ROUTES).status_code == 401
        for method, path in [("GET", ""), ("PUT", "/support"), ("POST", "/support/rollback")]:
            response = client.request(method, ROUTES + path, headers=infer)
            assert response.status_code == 403, path
        body = {"versions": [{"ref": versions[0]}]}
        response = client.put(f"{ROUTES}/support", json=body, headers=admin)
        assert response.status_code == 200, response.text
        ops = next(key for key in keys.list() if key.name == "ops")
        assert response.json()["events"][0]["actor"] == ops.id
        assert chat(client, "support", headers=infer)["model"] == versions[0]
    finally:
        keys.close()
