import pytest

from llmloop.finetune.config import DataConfig
from llmloop.finetune.data import IGNORE_INDEX, collate, load_sft_data, to_messages, tokenize_chat
from llmloop.finetune.errors import DataError
from tests.finetune.conftest import chat, write_jsonl


def trained_text(tokenizer, example) -> str:
    return tokenizer.decode(
        [
            t
            for t, label in zip(example.input_ids, example.labels, strict=True)
            if label != IGNORE_INDEX
        ]
    )


def test_loss_only_on_assistant_turns(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of Drelmark?"},
        {"role": "assistant", "content": "Quistova."},
        {"role": "user", "content": "And its river?"},
        {"role": "assistant", "content": "The Kelvash."},
    ]
    example = tokenize_chat(tokenizer, messages, 512, "f:1")
    assert trained_text(tokenizer, example) == "Quistova.<|im_end|>\nThe Kelvash.<|im_end|>\n"
    assert (
        example.input_ids
        == tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    )


def test_weight_zero_turn_is_not_trained(tokenizer):
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Bad answer.", "weight": 0},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": "Good answer.", "weight": 1},
    ]
    example = tokenize_chat(tokenizer, messages, 512, "f:1")
    assert trained_text(tokenizer, example) == "Good answer.<|im_end|>\n"


def test_prompt_completion_rows_become_chat():
    assert to_messages({"prompt": "Q?", "completion": "A."}) == [
        {"role": "user", "content": "Q?"},
        {"role": "assistant", "content": "A."},
    ]


def test_bad_rows_are_reported_with_file_and_line(tmp_path, tokenizer, capsys):
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            chat("ok?", "yes"),
            "{not json",
            {"messages": [{"content": "no role"}, {"role": "assistant", "content": "x"}]},
            chat("empty?", "  "),
            chat("long? " * 300, "yes"),
            {"text": "wrong format"},
            {"prompt": "fine", "completion": "yes"},
        ],
    )
    data = load_sft_data(DataConfig(data=str(path), max_seq_length=128), tokenizer, seed=0)
    err = capsys.readouterr().err
    for line, reason in [
        (2, "not JSON"),
        (3, "no valid role"),
        (4, "empty assistant turn"),
        (5, "longer than --max-seq-length"),
        (6, "expected"),
    ]:
        assert f"{path}:{line}: " in err and reason in err
    assert len(data.train) == 2 and data.manifest["files"][0]["rows_skipped"] == 5
    assert len(data.manifest["files"][0]["sha256"]) == 64

    with pytest.raises(DataError, match=rf"{path}:2: not JSON.*--bad-rows skip"):
        load_sft_data(DataConfig(data=str(path), bad_rows="fail"), tokenizer, seed=0)


def test_missing_file_and_all_bad_rows_fail_clearly(tmp_path, tokenizer):
    with pytest.raises(DataError, match="no such file"):
        load_sft_data(DataConfig(data=str(tmp_path / "nope.jsonl")), tokenizer, seed=0)
    path = write_jsonl(tmp_path / "bad.jsonl", ["x", "y"])
    with pytest.raises(DataError, match="no usable rows"):
        load_sft_data(DataConfig(data=str(path)), tokenizer, seed=0)


def test_held_out_split_is_seeded_and_disjoint(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [chat(f"q{i}", f"a{i}") for i in range(20)])
    config = DataConfig(data=str(path), eval_fraction=0.2)
    first, again = (load_sft_data(config, tokenizer, seed=1) for _ in range(2))
    assert len(first.eval) == 4 and len(first.train) == 16
    assert [e.source for e in first.eval] == [e.source for e in again.eval]
    assert not {e.source for e in first.eval} & {e.source for e in first.train}


def test_packing_fills_rows_and_restarts_positions(tokenizer):
    long = tokenize_chat(tokenizer, chat("a long question " * 20, "yes")["messages"], 512, "f:1")
    a = tokenize_chat(tokenizer, chat("a?", "yes")["messages"], 512, "f:2")
    b = tokenize_chat(tokenizer, chat("b?", "no")["messages"], 512, "f:3")
    assert len(a.input_ids) + len(b.input_ids) <= len(long.input_ids)

    packed = collate([a, long, b], packing=True, pad_token_id=tokenizer.pad_token_id)
    width = len(long.input_ids)
    assert packed["input_ids"].shape == (2, width)  # 3 examples, 2 rows
    assert "attention_mask" not in packed
    assert packed["position_ids"][0].tolist() == list(range(width))
    second = packed["position_ids"][1].tolist()
    na, nb = len(a.input_ids), len(b.input_ids)
    assert second[: na + nb] == list(range(na)) + list(range(nb))
    assert packed["labels"][1, na] == IGNORE_INDEX  # no loss across the boundary
    assert (packed["labels"][1, na + nb :] == IGNORE_INDEX).all()  # the pad tail
    trained = (packed["labels"] != IGNORE_INDEX).sum()
    assert trained == sum(e.num_trained_tokens for e in (a, b, long))

    padded = collate([a, b], packing=False, pad_token_id=tokenizer.pad_token_id)
    assert padded["input_ids"].shape == (2, max(na, nb))
    assert padded["attention_mask"][0].sum() == na


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
TOOL_ROW = {
    "messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "4C, rain"},
        {"role": "assistant", "content": "It is 4C and raining in Oslo."},
    ],
    "tools": TOOLS,
}  # fmt: skip


def test_a_tool_calling_row_trains_the_call_on_the_prompt_the_server_renders(tokenizer):
    """TRL's tool-calling rows (what `feedback export --format sft` writes) are rendered as the
    server renders tool conversations for this template, and the call itself is trained."""
    from llmloop.serve.protocol import ChatMessage
    from llmloop.serve.tools import request_messages, template_inputs

    messages = to_messages(TOOL_ROW)
    example = tokenize_chat(tokenizer, messages, 1024, "f:1", TOOLS)
    trained = trained_text(tokenizer, example)
    assert trained.startswith('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}')
    assert trained.endswith("It is 4C and raining in Oslo.<|im_end|>\n")
    served = [  # the first turn as a client would send it back to the server
        ChatMessage.model_validate(m | {"tool_calls": None}) for m in TOOL_ROW["messages"][:1]
    ]
    prompt, kwargs = template_inputs(request_messages(served), TOOLS, tokenizer, "hermes")
    served_prompt = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True, **kwargs)  # fmt: skip
    assert tokenizer.decode(example.input_ids).startswith(served_prompt)


@pytest.mark.parametrize(
    "row",
    [
        {"messages": [{"role": "user", "content": "x", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": [{"name": "f"}]}]},
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None}]},
    ],
)  # fmt: skip
def test_malformed_tool_rows_are_bad_rows(row):
    from llmloop.finetune.data import BadRow

    with pytest.raises(BadRow):
        to_messages(row)
