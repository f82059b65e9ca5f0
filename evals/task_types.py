"""How each task type asks the server and scores one sample, and how it sums a run up.

``score_sample`` returns a JSON-able record (written to ``samples.jsonl``); ``aggregate`` turns a
list of records into the run's metrics. ``aggregate`` is also what ``compare`` bootstraps.
"""

import math
import statistics

from llmloop.evals.client import EvalClient, Reply
from llmloop.evals.errors import ContentFilteredError
from llmloop.evals.metrics import (
    GENERATION_METRICS,
    best_over_references,
    contains,
    is_refusal,
    multiple_choice_scores,
    perplexities,
    regex_match,
    token_f1,
)
from llmloop.evals.tasks import (
    Sample,
    TaskConfig,
    example_answer,
    fewshot_examples,
    references,
    render_prompt,
)

FEWSHOT_DELIMITER = "\n\n"  # lm-evaluation-harness's default between examples


def score_sample(
    task: TaskConfig, sample: Sample, client: EvalClient, pool: list[dict], seed: int
) -> dict:
    examples = fewshot_examples(task, sample, pool, seed)
    scorer = {
        "generation": _score_generation,
        "multiple_choice": _score_multiple_choice,
        "perplexity": _score_perplexity,
        "safety": _score_safety,
        "rag": _score_rag,
    }[task.type]
    try:
        record = scorer(task, sample, client, examples, seed)
    except ContentFilteredError:
        # A server with an input filter may refuse to score a text (no logprobs come back):
        # the sample is reported as blocked and left out of the metrics, not failed.
        record = {"blocked": True, "metrics": {}}
    return {"index": sample.index, "id": sample.row.get("id", sample.index), **record}


def aggregate(task_type: str, records: list[dict]) -> dict[str, float]:
    """The run's metrics from its per-sample records (blocked samples counted apart)."""
    scored = [r for r in records if not r.get("blocked")]
    metrics = _aggregate_scored(task_type, scored) if scored else {}
    if len(scored) < len(records):
        metrics["blocked_fraction"] = 1 - len(scored) / len(records)
    return metrics


def _aggregate_scored(task_type: str, records: list[dict]) -> dict[str, float]:
    if task_type == "perplexity":
        totals = {k: sum(r["metrics"][k] for r in records) for k in records[0]["metrics"]}
        return perplexities(
            totals["logprob"], totals["num_tokens"], totals["num_words"], totals["num_bytes"]
        )
    if task_type == "safety":
        harmful = [r["metrics"]["refused"] for r in records if r["harmful"]]
        benign = [r["metrics"]["refused"] for r in records if not r["harmful"]]
        result = {}
        if harmful:
            result["refusal_rate"] = statistics.fmean(harmful)
        if benign:
            result["false_refusal_rate"] = statistics.fmean(benign)
        return result
    names = records[0]["metrics"].keys()
    return {name: statistics.fmean(r["metrics"][name] for r in records) for name in names}


LOWER_IS_BETTER = {
    "token_perplexity",
    "word_perplexity",
    "bits_per_byte",
    "false_refusal_rate",
    "blocked_fraction",
}


def _score_generation(task, sample, client, examples, seed) -> dict:
    reply = _ask(task, client, sample, examples, seed)
    refs = references(task, sample.row)
    metrics = {}
    for name in task.metrics:
        if name == "regex":
            metrics[name] = max(regex_match(reply.text, task.regex, r) for r in refs)
        else:
            metrics[name] = best_over_references(GENERATION_METRICS[name], reply.text, refs)
    return _reply_record(reply, refs) | {"metrics": metrics}


def _score_multiple_choice(task, sample, client, examples, seed) -> dict:
    context = _fewshot_text(task, examples) + render_prompt(task, sample.row)
    choices = [str(c) for c in sample.row[task.choices]]
    lls = [_continuation_logprob(client, context, " " + c) for c in choices]
    label = int(sample.row[task.label])
    return {
        "context": context,
        "choices": choices,
        "label": label,
        "loglikelihoods": lls,
        "metrics": multiple_choice_scores(lls, choices, label),
    }


def _score_perplexity(task, sample, client, examples, seed) -> dict:
    text = str(sample.row[task.text])
    scored = client.prompt_logprobs(text)
    # The first token has no logprob (nothing precedes it); the generated token is not the text's.
    logprobs = [
        lp
        for lp, offset in zip(scored.token_logprobs, scored.text_offset, strict=True)
        if lp is not None and offset < len(text)
    ]
    metrics = {
        "logprob": math.fsum(logprobs),
        "num_tokens": len(logprobs),
        "num_words": len(text.split()),
        "num_bytes": len(text.encode()),
    }
    return {"metrics": metrics}


def _score_safety(task, sample, client, examples, seed) -> dict:
    reply = _ask(task, client, sample, examples, seed)
    harmful = bool(sample.row[task.harmful])
    refused = is_refusal(reply.text, reply.finish_reason)
    return _reply_record(reply, []) | {"harmful": harmful, "metrics": {"refused": float(refused)}}


def _score_rag(task, sample, client, examples, seed) -> dict:
    rag = {"index": task.rag_index, "top_k": task.rag_top_k}
    reply = _ask(task, client, sample, examples, seed, rag={k: v for k, v in rag.items() if v})
    refs = references(task, sample.row)
    expected = _source_name(str(sample.row[task.source]))
    cited = [_source_name(str(c.get("source", ""))) for c in reply.citations]
    metrics = {
        "citation_accuracy": float(expected in cited),
        "citation_top1": float(bool(cited) and cited[0] == expected),
        "answer_contains": best_over_references(contains, reply.text, refs),
        "answer_f1": best_over_references(token_f1, reply.text, refs),
    }
    return _reply_record(reply, refs) | {"cited": cited, "metrics": metrics}


def _ask(task: TaskConfig, client: EvalClient, sample: Sample, examples, seed, **extra) -> Reply:
    params = dict(max_tokens=task.max_tokens, temperature=task.temperature, seed=seed, **extra)
    if task.stop:
        params["stop"] = list(task.stop)
    prompt = render_prompt(task, sample.row)
    if task.api == "completions":
        return client.complete(_fewshot_text(task, examples) + prompt, **params)
    messages = [{"role": "system", "content": task.system_prompt}] if task.system_prompt else []
    for example in examples:
        messages.append({"role": "user", "content": render_prompt(task, example)})
        messages.append({"role": "assistant", "content": example_answer(task, example).strip()})
    messages.append({"role": "user", "content": prompt})
    return client.chat(messages, **params)


def _fewshot_text(task: TaskConfig, examples: list[dict]) -> str:
    shots = [render_prompt(task, ex) + example_answer(task, ex) for ex in examples]
    return "".join(shot + FEWSHOT_DELIMITER for shot in shots)


def _continuation_logprob(client: EvalClient, context: str, continuation: str) -> float:
    """Summed logprob of the tokens of ``continuation`` after ``context``, found by offset.

    As lm-eval's ``local-completions``: one echo request over context + continuation; the tokens
    starting at or after the context's end are the continuation's (BPE splits at the space that
    starts the continuation, so this equals lm-eval's split into context and continuation ids).
    """
    full = context + continuation
    scored = client.prompt_logprobs(full)
    return math.fsum(
        lp
        for lp, offset in zip(scored.token_logprobs, scored.text_offset, strict=True)
        if len(context) <= offset < len(full) and lp is not None
    )


def _reply_record(reply: Reply, refs: list[str]) -> dict:
    return {
        "response": reply.text,
        "references": refs,
        "finish_reason": reply.finish_reason,
        "latency_s": reply.latency_s,
        "completion_tokens": reply.completion_tokens,
    }


def _source_name(source: str) -> str:
    return source.replace("\\", "/").rsplit("/", 1)[-1]
