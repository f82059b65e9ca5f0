"""``POST /v1/feedback`` and the UI's JSON API on the server's real app (fake engine)."""

import pytest
from fastapi.testclient import TestClient

from llmloop.feedback.store import FeedbackStore

KEY = "sk-test-feedback"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def client(make_app, make_record, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'llmloop.db'}"
    app = make_app(db_url, api_keys=(KEY,))
    store = FeedbackStore(db_url)
    store.migrate()
    store.insert_records(
        [make_record(1), make_record(2), make_record(3, prompt="another question")]
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        client.store = store
        yield client
    store.close()


def post(client, body, headers=AUTH):
    return client.post("/v1/feedback", json=body, headers=headers)


def test_feedback_is_stored_with_the_key_id(client):
    r = post(client, {"completion_id": "chatcmpl-00000001", "rating": -1, "correction": "Paris."})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "feedback"
    row = client.store.get("chatcmpl-00000001")
    assert (row["rating"], row["correction"]) == (-1, "Paris.")
    assert row["feedback"][0]["api_key_id"] not in (None, KEY)  # a digest, never the key


def test_preference(client):
    r = post(client, {"completion_id": "chatcmpl-00000002", "preferred_over": "chatcmpl-00000001"})
    assert r.status_code == 200, r.text
    r = post(client, {"completion_id": "chatcmpl-00000002", "preferred_over": "chatcmpl-00000003"})
    assert r.status_code == 400 and "same prompt" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"completion_id": "chatcmpl-00000001", "rating": 5}, "rating"),
        ({"completion_id": "chatcmpl-00000001", "rating": "good"}, "rating"),
        ({"completion_id": "chatcmpl-00000001"}, None),  # says nothing
        ({"rating": 1}, "completion_id"),
        ({"completion_id": "chatcmpl-00000001", "rating": 1, "stars": 5}, "stars"),
        ({"completion_id": "chatcmpl-00000001", "correction": ""}, "correction"),
        ([1, 2], None),
    ],
)
def test_bad_bodies_are_400_in_openai_shape(client, body, param):
    r = post(client, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param


def test_invalid_json_is_400(client):
    r = client.post("/v1/feedback", content=b"{not json", headers=AUTH)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


def test_unknown_ids_are_404(client):
    r = post(client, {"completion_id": "chatcmpl-nope", "rating": 1})
    assert r.status_code == 404 and r.json()["error"]["param"] == "completion_id"
    r = post(client, {"completion_id": "chatcmpl-00000001", "preferred_over": "chatcmpl-nope"})
    assert r.status_code == 404
    assert client.get("/ui/api/conversations/chatcmpl-nope", headers=AUTH).status_code == 404


def test_the_api_needs_the_key_but_the_page_does_not(client):
    assert post(client, {"completion_id": "chatcmpl-00000001", "rating": 1}, {}).status_code == 401
    assert client.get("/ui/api/conversations").status_code == 401
    assert client.post("/ui/api/session", headers=AUTH).status_code == 200  # the UI's login form
    assert client.get("/ui/api/conversations").status_code == 200  # by its session cookie
    client.cookies.clear()
    page = client.get("/ui/")
    assert page.status_code == 200 and "login-form" in page.text
    assert client.get("/ui/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/ui/style.css").status_code == 200
    assert client.get("/ui/secrets.py").status_code == 404


def test_list_filters_and_detail(client):
    post(client, {"completion_id": "chatcmpl-00000001", "rating": 1})
    page = client.get("/ui/api/conversations", params={"unlabelled": "true"}, headers=AUTH).json()
    assert page["total"] == 2 and {r["id"] for r in page["data"]} == {
        "chatcmpl-00000002",
        "chatcmpl-00000003",
    }
    page = client.get("/ui/api/conversations", params={"rating": "1"}, headers=AUTH).json()
    assert [r["id"] for r in page["data"]] == ["chatcmpl-00000001"]
    page = client.get("/ui/api/conversations", params={"q": "another"}, headers=AUTH).json()
    assert [r["id"] for r in page["data"]] == ["chatcmpl-00000003"]
    page = client.get("/ui/api/conversations", params={"limit": 2}, headers=AUTH).json()
    rest = client.get(
        "/ui/api/conversations", params={"limit": 2, "cursor": page["next_cursor"]}, headers=AUTH
    ).json()
    assert len(page["data"]) + len(rest["data"]) == 3 and rest["next_cursor"] is None
    detail = client.get("/ui/api/conversations/chatcmpl-00000001", headers=AUTH).json()
    assert [s["id"] for s in detail["siblings"]] == ["chatcmpl-00000002"]
    assert detail["feedback"][0]["rating"] == 1
    assert client.get("/ui/api/models", headers=AUTH).json() == {"data": ["smollm2-135m-instruct"]}


@pytest.mark.parametrize(
    "params",
    [{"since": "yesterday"}, {"rating": "2"}, {"limit": "0"}, {"cursor": "!!"}],
)
def test_bad_list_parameters_are_400(client, params):
    r = client.get("/ui/api/conversations", params=params, headers=AUTH)
    assert r.status_code == 400, r.text


def test_feedback_right_after_the_answer_waits_for_the_writer(client, make_record):
    """The server submits the record as it answers; the client may rate it at once."""
    log = client.app.state.request_log
    record = make_record(42)
    client.portal.call(log.submit, record)  # on the app's event loop, as the chat route does
    r = post(client, {"completion_id": record.id, "rating": 1})
    assert r.status_code == 200, r.text
    assert client.store.get(record.id)["rating"] == 1
