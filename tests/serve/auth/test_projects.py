"""Projects: conversations carry the project of the key that made them; a label key sees and
labels its project's only, an infer key rates its own answers only; others' ids are 404."""

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def _chat(client, headers) -> str:
    response = client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def _flush(client) -> None:
    """Wait until the log's writer has stored what the server returned."""
    assert client.portal.call(client.app.state.request_log.flush)


def _rate(client, headers, completion_id: str):
    return client.post(
        "/v1/feedback", json={"completion_id": completion_id, "rating": 1}, headers=headers
    )


def test_a_label_key_sees_and_labels_its_project_only(keyed) -> None:
    client, make_key = keyed
    support_app = make_key("support-app", "infer", project="support")
    sales_app = make_key("sales-app", "infer", project="sales")
    support_labeller = make_key("support-labeller", "label", project="support")
    client.app.state.keyring.refresh()
    ours, theirs = _chat(client, support_app), _chat(client, sales_app)
    _flush(client)

    listed = client.get("/ui/api/conversations", headers=support_labeller).json()["data"]
    assert [row["id"] for row in listed] == [ours]
    assert (
        client.get(f"/ui/api/conversations/{theirs}", headers=support_labeller).status_code == 404
    )
    assert (
        client.get(f"/ui/api/conversations/{ours}", headers=support_labeller).json()["project"]
        == "support"
    )
    assert _rate(client, support_labeller, theirs).status_code == 404
    assert _rate(client, support_labeller, ours).status_code == 200
    everything = client.get("/ui/api/conversations", headers=client.admin).json()["data"]
    assert {row["id"] for row in everything} == {ours, theirs}


def test_an_infer_key_rates_its_own_answers_only(keyed) -> None:
    client, make_key = keyed
    alice, bob = make_key("alice", "infer"), make_key("bob", "infer")
    client.app.state.keyring.refresh()
    alices = _chat(client, alice)
    _flush(client)
    assert _rate(client, bob, alices).status_code == 404  # as if it did not exist
    rated = _rate(client, alice, alices)
    assert rated.status_code == 200
    row = client.get(f"/ui/api/conversations/{alices}", headers=client.admin).json()
    assert row["labelled_by"] == rated.json()["api_key_id"]
