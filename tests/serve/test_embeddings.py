"""/v1/embeddings with the real shipped embedder (all-MiniLM-L6-v2)."""

import base64

import numpy as np
import pytest

pytestmark = pytest.mark.slow
MODEL = "all-MiniLM-L6-v2"


def test_embeddings_float_and_base64_agree_and_rank_sensibly(client):
    texts = [
        "How do I reset my password?",
        "Steps to change a forgotten password",
        "Best pizza in Naples",
    ]
    body = client.post("/v1/embeddings", json={"model": MODEL, "input": texts}).json()
    assert body["object"] == "list" and body["model"] == MODEL
    vectors = np.array([d["embedding"] for d in body["data"]])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert (
        body["usage"]["prompt_tokens"] > 0
        and body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"]
    )

    encoded = client.post(
        "/v1/embeddings", json={"model": MODEL, "input": texts[0], "encoding_format": "base64"}
    ).json()
    decoded = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vectors[0], atol=1e-5)


def test_embeddings_errors(client):
    assert (
        client.post(
            "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}
        ).status_code
        == 404
    )
    assert client.post("/v1/embeddings", json={"model": MODEL, "input": ""}).status_code == 400
    assert client.post("/v1/embeddings", json={"model": MODEL, "input": []}).status_code == 400
    assert (
        client.post(
            "/v1/embeddings", json={"model": MODEL, "input": "x", "dimensions": 8}
        ).status_code
        == 400
    )
