"""/tokenize and /detokenize on the real server: the count a client budgets with is the count a
chat completion is charged, and token ids turn back into the text they came from."""

MODEL = "smollm2-135m-instruct"
MESSAGES = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "What is the capital of France?"},
]


def test_tokenize_counts_a_chat_prompt_as_the_chat_completion_does(llmloop_server):
    with llmloop_server.http() as http:
        tokenized = http.post("/tokenize", json={"model": MODEL, "messages": MESSAGES}).json()
        as_adapter = http.post("/tokenize", json={"model": "test-lora", "messages": MESSAGES})
    chat = llmloop_server.client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=1, temperature=0
    )
    assert tokenized["count"] == chat.usage.prompt_tokens == len(tokenized["tokens"])
    assert tokenized["max_model_len"] == 4096
    assert as_adapter.json()["tokens"] == tokenized["tokens"]  # adapters share the tokenizer


def test_detokenize_inverts_tokenize(llmloop_server):
    text = "Paris, naïvely: 東京 ✓ 42"
    with llmloop_server.http() as http:
        tokenized = http.post("/tokenize", json={"prompt": text, "return_token_strs": True}).json()
        back = http.post("/detokenize", json={"model": MODEL, "tokens": tokenized["tokens"]})
        too_big = http.post("/detokenize", json={"tokens": [tokenized["count"], 10**9]})
    assert back.json() == {"prompt": text}
    assert len(tokenized["token_strs"]) == tokenized["count"]
    assert too_big.status_code == 400 and too_big.json()["error"]["param"] == "tokens"
