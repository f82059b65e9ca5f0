"""Run-time adapters: only from the artifact store (or the registry), and a name in use is
replaced only when asked (``load_inplace``). The admin scope is checked in tests/serve/auth."""

from pathlib import Path

import pytest

from llmloop import registry


def _adapter(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    return path


def _load(client, name: str, path: str, **extra):
    return client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path} | extra)


def test_a_peft_dir_outside_the_store_is_refused(client, isolated_home, tmp_path) -> None:
    outside = _adapter(tmp_path / "elsewhere")
    response = _load(client, "a", str(outside))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "lora_path"
    assert "$LLMLOOP_HOME/adapters" in response.json()["error"]["message"]


@pytest.mark.parametrize("trick", ["symlink", "dotdot"])
def test_paths_that_leave_the_store_are_refused(client, isolated_home, tmp_path, trick) -> None:
    outside = _adapter(tmp_path / "elsewhere")
    store = isolated_home / "adapters"
    store.mkdir(parents=True)
    if trick == "symlink":
        (store / "link").symlink_to(outside)
        path = store / "link"
    else:
        path = store / ".." / ".." / "elsewhere"
    assert _load(client, "a", str(path)).status_code == 400


def test_a_registered_adapter_loads_by_name_and_version(client, isolated_home, tmp_path) -> None:
    trained = _adapter(tmp_path / "runs" / "support")  # fine-tunes write anywhere, then register
    registry.register("support", trained, "adapter")
    assert _load(client, "support", "support@1").status_code == 200
    assert _load(client, "support-2", str(trained)).status_code == 200  # its path, registered
    assert _load(client, "x", "support@2").status_code == 400  # no such version


def test_a_name_in_use_is_replaced_only_when_asked(client, isolated_home) -> None:
    first = _adapter(isolated_home / "adapters" / "v1")
    second = _adapter(isolated_home / "adapters" / "v2")
    assert _load(client, "prod", str(first)).status_code == 200
    taken = _load(client, "prod", str(second))
    assert taken.status_code == 400 and "load_inplace" in taken.json()["error"]["message"]
    assert _load(client, "prod", str(second), load_inplace=True).status_code == 200
    (served,) = [a for a in client.engine.list_loras() if a.name == "prod"]
    assert served.path == str(second)
    assert _load(client, "fake-model", str(second), load_inplace=True).status_code == 400


@pytest.mark.parametrize("field", ["lora_name", "lora_path"])
def test_a_nul_in_a_name_or_path_is_a_400(client, isolated_home, field) -> None:
    body = {"lora_name": "x", "lora_path": "x"} | {field: "a\u0000b"}
    response = client.post("/v1/load_lora_adapter", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == field
