"""/tokenize and /detokenize (vLLM's shapes) on the fake engine: one character, one token."""

import asyncio

import pytest

from llmloop.serve.auth.keys import KeyStore
from llmloop.serve.protocol import MAX_MESSAGES, MAX_PROMPT_TOKEN_IDS, MAX_TEXT_CHARS
from tests.serve.fakes import CharTokenizer, FakeEngine

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


class TemplateOptionsTokenizer(CharTokenizer):
    """Honours the options a real template does: BOS (id 1) with ``add_special_tokens``, the
    assistant header only with ``add_generation_prompt``."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [1] * add_special_tokens + super().encode(text)

    def apply_chat_template(self, conversation, add_generation_prompt=True, **kwargs) -> str:
        text = super().apply_chat_template(conversation)
        return text if add_generation_prompt else text.removesuffix("<assistant>")


@pytest.fixture
def options_client(make_client):
    engine = FakeEngine()
    engine.tokenizer = TemplateOptionsTokenizer()
    return make_client(engine)


def test_tokenize_then_detokenize_round_trips(client) -> None:
    body = client.post("/tokenize", json={"model": "fake-model", "prompt": "héllo"}).json()
    assert body == {
        "count": 5,
        "max_model_len": 256,
        "tokens": [ord(c) + 3 for c in "héllo"],
        "token_strs": None,
    }
    back = client.post("/detokenize", json={"model": "fake-model", "tokens": body["tokens"]})
    assert back.json() == {"prompt": "héllo"}
    assert client.post("/detokenize", json={"tokens": []}).json() == {"prompt": ""}


def test_chat_form_counts_what_a_chat_completion_sends_the_engine(client) -> None:
    body = client.post("/tokenize", json={"messages": MESSAGES}).json()
    chat = client.post(
        "/v1/chat/completions", json={"model": "fake-model", "messages": MESSAGES, "max_tokens": 1}
    ).json()
    assert body["tokens"] == client.engine.requests[-1][0]
    assert body["count"] == chat["usage"]["prompt_tokens"] == len(body["tokens"])


def test_return_token_strs(client) -> None:
    body = client.post("/tokenize", json={"prompt": "a b", "return_token_strs": True}).json()
    assert body["token_strs"] == ["a", " ", "b"]
    chat = {"messages": [{"role": "user", "content": "x"}], "return_token_strs": True}
    assert "".join(client.post("/tokenize", json=chat).json()["token_strs"]) == "<user>x<assistant>"


def test_each_form_has_vllms_defaults_and_passes_its_options(options_client) -> None:
    def tokens(**body) -> list[int]:
        response = options_client.post("/tokenize", json=body)
        assert response.status_code == 200, response.text
        return response.json()["tokens"]

    assert tokens(prompt="x") == [1, ord("x") + 3]  # completion form: special tokens by default
    assert tokens(prompt="x", add_special_tokens=False) == [ord("x") + 3]
    templated = options_client.engine.tokenizer.encode("<user>hi<assistant>", False)
    assert tokens(messages=MESSAGES[1:]) == templated  # chat form: the template's only
    assert tokens(messages=MESSAGES[1:], add_special_tokens=True) == [1, *templated]
    open_turn = tokens(messages=MESSAGES[1:], add_generation_prompt=False)
    assert open_turn == tokens(
        messages=MESSAGES[1:], add_generation_prompt=False, continue_final_message=True
    )
    assert open_turn == templated[: -len("<assistant>")]


def test_continue_final_message_needs_add_generation_prompt_off(client) -> None:
    response = client.post("/tokenize", json={"messages": MESSAGES, "continue_final_message": True})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "continue_final_message"


def test_a_loaded_adapter_is_a_model_and_an_unknown_name_is_404(make_client) -> None:
    engine = FakeEngine()
    asyncio.run(engine.add_lora("my-adapter", "/adapters/my-adapter"))
    client = make_client(engine)
    assert client.post("/tokenize", json={"model": "my-adapter", "prompt": "x"}).status_code == 200
    for path, body in [("/tokenize", {"prompt": "x"}), ("/detokenize", {"tokens": [100]})]:
        response = client.post(path, json=body | {"model": "gpt-4o"})
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "model_not_found"


def test_token_ids_outside_the_vocabulary_are_400_naming_tokens(client) -> None:
    for token_id in [-1, FakeEngine.vocab_size, 2**64]:
        response = client.post("/detokenize", json={"tokens": [100, token_id]})
        assert response.status_code == 400, token_id
        error = response.json()["error"]
        assert error["param"] == "tokens" and error["message"].startswith("tokens[1]:")


OVERSIZE = [
    ("/tokenize", {"prompt": "x" * (MAX_TEXT_CHARS + 1)}, "prompt"),
    ("/tokenize", {"prompt": "x" * (MAX_PROMPT_TOKEN_IDS + 1)}, "prompt"),  # as many tokens
    ("/tokenize", {"messages": [{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1)}, "messages"),
    ("/tokenize", {"messages": []}, "messages"),
    ("/tokenize", {"prompt": "x", "model": "m" * 257}, "model"),
    ("/detokenize", {"tokens": [100] * (MAX_PROMPT_TOKEN_IDS + 1)}, "tokens"),
]  # fmt: skip


def test_oversize_input_is_400(client) -> None:
    for path, body, param in OVERSIZE:
        response = client.post(path, json=body)
        assert response.status_code == 400, param
        assert response.json()["error"]["param"] == param


def test_a_lone_surrogate_is_400_never_reaching_the_tokenizer(client) -> None:
    # JSON can escape one ("\\ud800"); no tokenizer can encode it (a real one raises TypeError)
    for body, param in [
        ('{"prompt": "x\\ud800"}', "prompt"),
        ('{"messages": [{"role": "user", "content": "\\udfff"}]}', "messages[0].content"),
        ('{"prompt": "x", "model": "\\ud800"}', "model"),
    ]:
        response = client.post(
            "/tokenize", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, body
        assert response.json()["error"]["param"] == param


def test_both_routes_need_the_infer_scope(make_client, tmp_path) -> None:
    db_url = f"sqlite:///{tmp_path / 'keys.db'}"
    store = KeyStore(db_url)
    keys = {scope: store.create(scope, [scope])[1] for scope in ("infer", "label")}
    client = make_client(db_url=db_url)
    for path, body in [("/tokenize", {"prompt": "x"}), ("/detokenize", {"tokens": [100]})]:
        assert client.post(path, json=body).status_code == 401
        for scope, status in [("infer", 200), ("label", 403)]:
            headers = {"Authorization": f"Bearer {keys[scope]}"}
            assert client.post(path, json=body, headers=headers).status_code == status, scope
    store.close()
