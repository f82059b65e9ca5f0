"""What answers without a key: /health always; /metrics, /version and the API docs only on a
server without keys, or when --public-metrics / --public-docs say so."""

import pytest

KEY = "sk-operator"
METRICS_ROUTES = ["/metrics", "/version"]
DOCS_ROUTES = ["/openapi.json", "/docs", "/redoc"]


@pytest.mark.parametrize("path", METRICS_ROUTES + DOCS_ROUTES)
def test_behind_a_key_once_the_server_has_keys(make_client, path: str) -> None:
    client = make_client(api_keys=(KEY,))
    response = client.get(path)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert client.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert client.get("/health").status_code == 200


def test_public_metrics_opens_metrics_and_version_only(make_client) -> None:
    client = make_client(api_keys=(KEY,), public_metrics=True)
    for path in METRICS_ROUTES:
        assert client.get(path).status_code == 200, path
    for path in DOCS_ROUTES:
        assert client.get(path).status_code == 401, path


def test_public_docs_opens_the_api_docs_only(make_client) -> None:
    client = make_client(api_keys=(KEY,), public_docs=True)
    for path in DOCS_ROUTES:
        assert client.get(path).status_code == 200, path
    assert client.get("/openapi.json").json()["info"]["title"] == "llmloop"
    assert client.get("/metrics").status_code == 401


def test_a_server_without_keys_answers_them_all(make_client) -> None:
    client = make_client()
    for path in METRICS_ROUTES + DOCS_ROUTES:
        assert client.get(path).status_code == 200, path
