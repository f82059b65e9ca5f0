"""The loop on the real parts: the real server (vLLM, default model, safety) and its real SQLite log.

chat -> corrections through POST /v1/feedback -> export sft and dpo -> `llmloop finetune sft` for
a few steps -> serve the new adapter -> the corrected answers now come out; and the PII that was
in the prompts is in none of the log, the exports or the artifact.
"""

import json
import shutil
import time
import uuid

import pytest

from llmloop.cli import main as llmloop
from llmloop.feedback.store import FeedbackStore

MODEL = "smollm2-135m-instruct"
EMAIL, PHONE = "jane.doe@example.com", "+1 415 555 0199"
# (question, the answer a labeller writes, the word that proves the adapter learnt it)
LESSONS = [
    (
        f"I am {EMAIL}. What is the code name of project Alpha?",
        "Project Alpha's code name is Tangerine.",
        "Tangerine",
    ),
    (
        f"Call me on {PHONE}. Which team maintains the billing service?",
        "The billing service is maintained by the Falcon team.",
        "Falcon",
    ),
    (
        "Which port does the staging gateway listen on?",
        "The staging gateway listens on port 7311.",
        "7311",
    ),
    ("What colour is the llmloop logo?", "The llmloop logo is teal.", "teal"),
]


def server_db_url(server) -> str:
    """The log of the server under test: it runs with the default --db."""
    if getattr(server, "db_url", None):
        return server.db_url
    return f"sqlite:///{server.home / 'llmloop.db'}"


def ask(client, model: str, question: str) -> tuple[str, str]:
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=24,
        temperature=0,
    )
    return reply.id, reply.choices[0].message.content


@pytest.mark.slow
def test_corrections_teach_the_served_model(
    llmloop_server, default_model_dir, isolated_home, tmp_path
):
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1))
    client, db_url = llmloop_server.client, server_db_url(llmloop_server)

    ids = []
    with llmloop_server.http() as http:
        for question, correction, _ in LESSONS:
            completion_id, answer = ask(client, MODEL, question)
            assert answer and correction not in answer
            r = http.post(
                "/v1/feedback",
                json={"completion_id": completion_id, "rating": -1, "correction": correction},
            )
            assert r.status_code == 200, r.text
            ids.append(completion_id)
        assert (
            http.post(
                "/v1/feedback", json={"completion_id": "chatcmpl-nope", "rating": 1}
            ).status_code
            == 404
        )

    # the log holds the conversations, redacted
    store = FeedbackStore(db_url)
    rows = [store.get(i) for i in ids]
    store.close()
    assert all(row is not None and row["correction"] for row in rows)
    assert not _pii_in(json.dumps(rows, ensure_ascii=False))

    sft, dpo = tmp_path / "sft.jsonl", tmp_path / "dpo.jsonl"
    for fmt, out in (("sft", sft), ("dpo", dpo)):
        argv = ["feedback", "export", "--format", fmt, "--out", str(out), "--db", db_url]
        assert llmloop([*argv, "--since", since, "--model", MODEL]) == 0
        assert not _pii_in(out.read_text()) and out.read_text().count("\n") >= len(LESSONS)
    dpo_rows = [json.loads(line) for line in dpo.open()]
    assert {r["chosen"][0]["content"] for r in dpo_rows} >= {c for _, c, _ in LESSONS}

    # fine-tune on the exported corrections: a few steps, a learning rate that memorises them,
    # into the server's artifact store (a server loads run-time adapters from there only)
    artifact = llmloop_server.home / "adapters" / f"corrected-{uuid.uuid4().hex[:8]}"
    # (the loss is ~0.003 after a dozen steps on these four rows; short rows keep memory small
    # beside the running engine)
    argv = ["finetune", "sft", "--base", str(default_model_dir), "--data", str(sft)]
    argv += ["--output", str(artifact), "--max-steps", "12", "--learning-rate", "3e-3"]
    argv += ["--eval-fraction", "0", "--batch-size", "4", "--max-seq-length", "128"]
    argv += ["--save-steps", "0", "--seed", "0"]
    assert llmloop(argv) == 0
    artifact_text = "".join(
        p.read_text(errors="replace")
        for p in artifact.rglob("*")
        if p.suffix in (".json", ".md", ".yaml", ".jsonl", ".txt")
    )
    assert not _pii_in(artifact_text)

    with llmloop_server.http() as http:
        r = http.post(
            "/v1/load_lora_adapter", json={"lora_name": "corrected", "lora_path": str(artifact)}
        )
        assert r.status_code == 200, r.text
        try:
            learnt = [word in ask(client, "corrected", q)[1] for q, _, word in LESSONS]
        finally:
            http.post("/v1/unload_lora_adapter", json={"lora_name": "corrected"})
            shutil.rmtree(artifact, ignore_errors=True)
    assert sum(learnt) >= 3, learnt


def _pii_in(text: str) -> bool:
    digits = "".join(ch for ch in text if ch.isdigit())
    return EMAIL in text or PHONE in text or "4155550199" in digits
