"""``llmloop batch run`` as a user runs it: a subprocess on the real vLLM engine and default model."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.engine
MODEL = "smollm2-135m-instruct"
QUESTIONS = [
    "What is the capital of France?",
    "Name a primary color.",
    "What is 2 + 2?",
    "Say hello in Spanish.",
    "What do bees make?",
    "Name a planet.",
    "What is the opposite of hot?",
    "What animal says moo?",
]


def batch_run(input_path, output_path, tmp_path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "llmloop.cli", "batch", "run", str(input_path)]
    command += ["-o", str(output_path), "--max-model-len", "1024", "--max-num-seqs", "8"]
    command += ["--no-safety", "--db", f"sqlite:///{tmp_path}/log.db"]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def test_batch_run_answers_each_line_once_and_resumes(tmp_path, default_model_dir):
    lines = [
        {
            "custom_id": f"q{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": MODEL,
                "messages": [{"role": "user", "content": question}],
                "max_tokens": 16,
                "temperature": 0,
            },
        }
        for i, question in enumerate(QUESTIONS)
    ]
    too_long = {"model": MODEL, "prompt": "word " * 2000, "max_tokens": 4}
    lines.append(
        {"custom_id": "too-long", "method": "POST", "url": "/v1/completions", "body": too_long}
    )
    input_path, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    input_path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    result = batch_run(input_path, output, tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    answers = {a["custom_id"]: a for a in map(json.loads, output.read_text().splitlines())}
    assert len(output.read_text().splitlines()) == len(lines) == len(answers)
    for i in range(len(QUESTIONS)):
        response = answers[f"q{i}"]["response"]
        assert response["status_code"] == 200, response
        assert response["body"]["choices"][0]["message"]["content"].strip()
        assert response["body"]["usage"]["completion_tokens"] > 0
    assert "Paris" in answers["q0"]["response"]["body"]["choices"][0]["message"]["content"]
    assert answers["too-long"]["response"]["status_code"] == 400

    again = batch_run(input_path, output, tmp_path)  # every line answered: the engine never starts
    assert again.returncode == 0 and "all 9 lines are answered already" in again.stderr
    assert len(output.read_text().splitlines()) == len(lines)
