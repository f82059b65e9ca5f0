"""End to end on the real vLLM engine: fine-tune the default model on 30 invented facts, load the
adapter into the running server, and ask paraphrased questions it never saw in training."""

import json
import shutil
import uuid

import pytest

from llmloop.finetune.config import SFTConfig
from llmloop.finetune.sft import sft
from tests.finetune.facts import heldout_questions, write_training_file

pytestmark = [pytest.mark.slow, pytest.mark.engine]

FACT_RUN = {"epochs": 10, "batch_size": 12, "save_steps": 0, "seed": 0, "replay_rows": 0}
"""A new user's run: learning rate, rank, alpha, warmup and held-out split are the computed
defaults (issue #19: 2e-4 learned nothing here); 10 epochs of 12 rows = 50 steps and no replay
rows (test_sft.py trains with them; benchmarks/finetune_facts.py measures them) keep it to a few
minutes on two CPU cores."""


@pytest.fixture(scope="module")
def facts_adapter(train_home, tmp_path_factory, llmloop_server):
    """Trained into the server's artifact store: a server loads run-time adapters from there."""
    data = write_training_file(tmp_path_factory.mktemp("facts") / "facts.jsonl")
    output = llmloop_server.home / "adapters" / f"facts-{uuid.uuid4().hex[:8]}"
    yield sft(SFTConfig.from_flat({"data": str(data), "output": str(output), **FACT_RUN}))
    shutil.rmtree(output, ignore_errors=True)


def ask(client, model: str, question: str) -> str:
    response = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=16,
        temperature=0,
    )
    return response.choices[0].message.content or ""


def test_adapter_answers_held_out_paraphrases_and_base_does_not(llmloop_server, facts_adapter):
    with llmloop_server.http() as http:
        response = http.post(
            "/v1/load_lora_adapter",
            json={"lora_name": "facts", "lora_path": str(facts_adapter)},
        )
        assert response.status_code == 200, response.text
    models = {m.id: m for m in llmloop_server.client.models.list().data}
    assert "facts" in models
    base = next(m.id for m in models.values() if getattr(m, "parent", None) in (None, m.id))

    questions = heldout_questions()
    adapter_right = [
        a for q, a in questions if a.lower() in ask(llmloop_server.client, "facts", q).lower()
    ]
    base_right = [
        a for q, a in questions if a.lower() in ask(llmloop_server.client, base, q).lower()
    ]
    report = {
        "adapter_correct": len(adapter_right),
        "base_correct": len(base_right),
        "of": len(questions),
    }
    print(json.dumps(report))
    assert len(adapter_right) >= 0.6 * len(questions), report
    assert len(base_right) <= 0.1 * len(questions), report
