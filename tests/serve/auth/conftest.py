"""A server on a log database with keys (fake engine)."""

import pytest

from llmloop.serve.auth.keys import KeyStore


@pytest.fixture
def keyed(make_client, tmp_path):
    """(client, make_key): a server on a log database with keys; ``make_key(name, *scopes,
    **options)`` creates one in the database and returns its bearer header."""
    db_url = f"sqlite:///{tmp_path / 'keyed.db'}"
    store = KeyStore(db_url)
    secrets = {}

    def make_key(name: str, *scopes: str, **options) -> dict:
        _, secrets[name] = store.create(name, list(scopes), **options)
        return {"Authorization": f"Bearer {secrets[name]}"}

    admin = make_key("ops", "admin")
    client = make_client(db_url=db_url)
    client.admin = admin
    yield client, make_key
    store.close()
