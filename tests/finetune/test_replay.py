"""Replay rows: the base model's own finished answers to general prompts become training examples
(loss on the answer only), cut answers are dropped, the prompts file is validated by line, and
with ``--replay-loss kl`` they pull toward the base's distribution along the answer."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from llmloop.finetune.data import IGNORE_INDEX, Example, collate
from llmloop.finetune.errors import DataError
from llmloop.finetune.replay import MAX_NEW_TOKENS, anchored_loss, read_prompts, replay_examples
from llmloop.finetune.sft import base_logits


class ScriptedModel(torch.nn.Module):
    """Answers "Answer N." then end-of-turn to prompts with an even N, rambles past
    MAX_NEW_TOKENS without ending to odd ones, like a model that does not stop."""

    def __init__(self, tokenizer):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer = tokenizer

    def generate(self, input_ids, attention_mask, max_new_tokens, do_sample, pad_token_id):
        assert not self.training and not do_sample and max_new_tokens == MAX_NEW_TOKENS
        assert self.tokenizer.padding_side == "left"
        rows = []
        for ids in input_ids.tolist():
            prompt = self.tokenizer.decode(ids, skip_special_tokens=True)
            number = int(prompt.split("number ")[-1].split("?")[0])
            if number % 2:
                answer = self.tokenizer(" la" * max_new_tokens, add_special_tokens=False)
                new = answer["input_ids"][:max_new_tokens]
            else:
                new = self.tokenizer(f"Answer {number}.", add_special_tokens=False)["input_ids"]
                new += [self.tokenizer.eos_token_id]
            rows.append(ids + new + [pad_token_id] * (max_new_tokens - len(new)))
        return torch.tensor(rows)


def test_finished_answers_become_examples_with_loss_on_the_answer(tokenizer):
    model = ScriptedModel(tokenizer).train()
    prompts = [f"What is number {i}?" for i in range(20)]
    examples = replay_examples(model, tokenizer, prompts, 20, seed=0, max_seq_length=256)
    assert model.training and tokenizer.padding_side == "right"  # both put back
    assert len(examples) == 10  # the odd ones never ended
    for example in examples:
        text = tokenizer.decode(example.input_ids)
        trained = tokenizer.decode([t for t in example.labels if t != IGNORE_INDEX])
        number = int(text.split("number ")[-1].split("?")[0])
        assert trained.startswith(f"Answer {number}.") and number % 2 == 0
        assert "What is number" not in trained


def test_the_sample_of_prompts_is_seeded_and_capped(tokenizer):
    model = ScriptedModel(tokenizer)
    prompts = [f"What is number {2 * i}?" for i in range(30)]
    first = replay_examples(model, tokenizer, prompts, 8, seed=1, max_seq_length=256)
    again = replay_examples(model, tokenizer, prompts, 8, seed=1, max_seq_length=256)
    other = replay_examples(model, tokenizer, prompts, 8, seed=2, max_seq_length=256)
    assert len(first) == 8 and [e.input_ids for e in first] == [e.input_ids for e in again]
    assert [e.input_ids for e in first] != [e.input_ids for e in other]
    assert len(replay_examples(model, tokenizer, prompts, 100, 0, 256)) == 30


def test_the_shipped_prompts_leave_the_eval_tasks_alone():
    _, prompts = read_prompts(None)
    assert len(prompts) >= 100 and len(set(prompts)) == len(prompts)
    tasks = Path(__file__).parents[2] / "evals" / "tasks" / "data"
    science = [
        json.loads(line)["question"]
        for line in (tasks / "science_mc.jsonl").read_text().splitlines()
    ]
    assert not set(prompts) & set(science)
    assert not any("capital" in p.lower() for p in prompts)


def test_a_bad_prompts_file_names_its_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "fine"}\n\n{"text": "no prompt"}\n')
    with pytest.raises(DataError, match=r"p.jsonl:3: expected"):
        read_prompts(path)
    with pytest.raises(DataError, match="no such file"):
        read_prompts(tmp_path / "missing.jsonl")


def tiny_lm(seed: int, attention_dropout: float = 0.0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        attention_dropout=attention_dropout,
    )
    return LlamaForCausalLM(config)


USER = Example([1, 5, 6, 7, 8], [IGNORE_INDEX, IGNORE_INDEX, 6, 7, 8], "rows.jsonl:1")
REPLAY = Example([1, 9, 10, 11], [IGNORE_INDEX, IGNORE_INDEX, 10, 11], "replay:0", anchor=True)


def test_collate_marks_the_anchor_rows_tokens_and_only_them():
    assert "anchor" not in collate([USER], packing=True, pad_token_id=0)
    for packing in (True, False):
        batch = collate([USER, REPLAY], packing=packing, pad_token_id=0)
        anchored = batch["input_ids"][batch["anchor"]].tolist()
        assert sorted(anchored) == sorted(REPLAY.input_ids)


def test_the_anchored_loss_is_cross_entropy_on_rows_and_kl_to_the_base_on_replay():
    model = tiny_lm(seed=0)
    batch = collate([USER, REPLAY], packing=True, pad_token_id=0)
    user_only = collate([USER, dataclasses.replace(REPLAY, labels=[IGNORE_INDEX] * 4)], True, 0)
    user_only.pop("anchor")
    num_user, num_replay = USER.num_trained_tokens, REPLAY.num_trained_tokens
    user_loss = model(**user_only).loss

    # the model is still the base: no divergence, the user rows' cross-entropy alone
    same = anchored_loss(model, lambda inputs: model(**inputs).logits, batch)
    assert same.item() == pytest.approx(user_loss.item() * num_user / (num_user + num_replay))

    # another base: the replay tokens add KL(base || model), which has a gradient
    base = tiny_lm(seed=1)
    loss = anchored_loss(model, lambda inputs: base(**inputs).logits, batch)
    assert loss.item() > same.item()
    loss.backward()
    assert all(p.grad is None for p in base.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_base_logits_are_the_model_without_its_adapter_as_it_answers():
    from accelerate import Accelerator
    from peft import LoraConfig, get_peft_model

    base = tiny_lm(seed=0, attention_dropout=0.5).eval()
    inputs = {"input_ids": torch.tensor([REPLAY.input_ids])}
    with torch.no_grad():
        expected = base(**inputs).logits
        model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear"))
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)  # a trained adapter: B is no longer zero
        adapted = model(**inputs).logits
        assert not torch.allclose(adapted, expected)
        model.train()  # as in training: dropout on
        logits = base_logits(Accelerator(cpu=True), model)(inputs)
        assert model.training  # put back
        model.eval()
        assert torch.allclose(model(**inputs).logits, adapted)  # the adapter is on again
    assert torch.allclose(logits, expected, atol=1e-6)  # no adapter, no dropout


def test_every_process_makes_the_base_pass_where_any_one_needs_it():
    from llmloop.finetune.sft import StepPlan, base_pass_needed

    train = [USER] * 7 + [REPLAY]
    plan = StepPlan(len(train), 1, 2, 2, 0, 0.0, True, 40, 2)  # 2 processes, 2 micro-batches
    anchors_by_process = []
    for step in range(1, 41):
        needed = base_pass_needed(train, plan, step)
        local = [
            [any(train[j].anchor for j in micro) for micro in plan.micro_batches(step, p)]
            for p in range(2)
        ]
        assert needed == [a or b for a, b in zip(*local, strict=True)]
        anchors_by_process += [tuple(place) for place in zip(*local, strict=True)]
    assert (False, True) in anchors_by_process  # process 0 alone would have skipped it
