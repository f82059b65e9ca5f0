"""Fuzz every operation of /openapi.json: bad input is a 4xx in OpenAI's shape, never a 5xx."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from llmloop.safety.harm import Classification
from llmloop.serve.admission import Admission
from llmloop.serve.app import create_app
from llmloop.serve.auth.keyring import KeyRing
from llmloop.serve.config import ServerConfig
from tests.serve.fakes import FakeEngine

pytestmark = pytest.mark.slow


class StubClassifier:
    def classify(self, texts: list[str]) -> list[Classification]:
        return [Classification(False, {"hate": False}, {"hate": 0.0}) for _ in texts]


ADMIN_KEY = "sk-fuzz-admin"
REQUEST_TIMEOUT_S = 60
"""Schemathesis gives up on a response after 10 s; a busy CI machine can take that long on a
large fuzzed body, which is slowness, not a server error."""
AS_ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def make_app(keyring: KeyRing):
    """The app with its engine already in place; the lifespan (which would start and stop an
    engine around every fuzzed call) is answered without running it."""
    app = create_app(
        ServerConfig(safety=False, store_requests=False), engine_factory=None, keyring=keyring
    )
    app.state.engine = FakeEngine()
    app.state.harm_classifier = StubClassifier()  # the real one: tests/serve/test_moderations.py
    app.state.tokenizer_executor = ThreadPoolExecutor(1)  # what the lifespan would start
    app.state.admission = Admission(60.0, app.state.engine.max_num_seqs)  # and this

    async def without_lifespan(scope, receive, send):
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

    without_lifespan.openapi = app.openapi
    return without_lifespan


# An open server (no keys), and one with keys where every call carries an admin key: the same
# operations, fuzzed past authentication.
open_schema = schemathesis.openapi.from_asgi("/openapi.json", make_app(KeyRing()))
keyed_schema = schemathesis.openapi.from_asgi(
    "/openapi.json", make_app(KeyRing((ADMIN_KEY,))), headers=AS_ADMIN
)


@open_schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    check(case.call(timeout=REQUEST_TIMEOUT_S))


@keyed_schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_with_keys_on(case):
    response = case.call(headers=AS_ADMIN, timeout=REQUEST_TIMEOUT_S)
    assert response.status_code != 401, "the admin key was refused"
    check(response)


def check(response) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    content_type = (response.headers.get("content-type") or [""])[0]
    if response.status_code >= 400 and content_type.startswith("application/json"):
        assert set(response.json()) == {"error"}, response.text[:300]
