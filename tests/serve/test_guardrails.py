"""How the server screens text: inputs and streamed deltas through a real Guard (keyword
classifier), with every classification going through the shared batcher."""

import asyncio
import threading

from llmloop.safety.guard import HARM_FIRST_CHARS, Guard
from llmloop.safety.policy import load_policy
from llmloop.serve.guardrails import CONTENT_FILTER, REFUSAL, Blocked, Guardrails
from llmloop.serve.metrics import ServerMetrics
from tests.safety.fakes import fake_classifier

HARMLESS = "This sentence is perfectly harmless and rather long, as you can see. "


def guardrails() -> tuple[Guardrails, list[list[str]]]:
    """Guardrails over the keyword classifier, and the batches it classified (with the thread)."""
    classifier, batches = fake_classifier(), []
    classify = classifier.classify

    def recording(texts):
        batches.append((threading.current_thread().name, list(texts)))
        return classify(texts)

    classifier.classify = recording
    return Guardrails(Guard(load_policy(None), classifier), ServerMetrics()), batches


async def stream_through(g: Guardrails, deltas: list[str]) -> tuple[str, str | None]:
    stream, out, finish_reason = g.stream(g.redactor()), "", None
    for i, delta in enumerate(deltas):
        last = "stop" if i == len(deltas) - 1 else None
        text, finish_reason = await g.screen_delta(stream, delta, last)
        out += text
        if finish_reason:
            break
    return out, finish_reason


def test_deltas_pass_redacted_and_the_last_one_releases_the_held_back_tail():
    g, _ = guardrails()
    deltas = ["Hello", " world, mail", " me at jo", "hn@example.com"]
    assert asyncio.run(stream_through(g, deltas)) == ("Hello world, mail me at <EMAIL_1>", "stop")


def test_a_harmful_answer_ends_with_the_refusal_and_is_counted():
    g, _ = guardrails()
    deltas = [HARMLESS, "Now take the sarin. ", HARMLESS * 8]
    out, finish_reason = asyncio.run(stream_through(g, deltas))
    assert finish_reason == CONTENT_FILTER and out.endswith(REFUSAL)
    metrics = g.metrics.render().decode()
    assert (
        'llmloop:safety_actions_total{action="block",category="weapons_mass_harm",'
        'direction="output"} 1.0' in metrics
    )


def test_a_block_in_the_final_check_also_ends_with_content_filter():
    g, _ = guardrails()  # too short for a check before the end: the final check blocks it
    assert asyncio.run(stream_through(g, ["a slur"])) == (REFUSAL, CONTENT_FILTER)
    assert len("a slur") < HARM_FIRST_CHARS


def test_concurrent_streams_and_inputs_share_classifier_batches_off_the_event_loop():
    g, batches = guardrails()

    async def main():
        loop_thread = threading.current_thread().name
        streams = [stream_through(g, [HARMLESS] * 12) for _ in range(8)]
        inputs = [g.screen_input([f"question {i}", "and context"], g.redactor()) for i in range(8)]
        results = await asyncio.gather(*streams, *inputs)
        return loop_thread, results

    loop_thread, results = asyncio.run(main())
    assert all(r == (HARMLESS * 12, "stop") for r in results[:8])
    assert all(blocked is None for _, blocked in results[8:])
    windows = sum(len(texts) for _, texts in batches)
    assert len(batches) < windows / 2  # batched, not one call per check
    assert {thread for thread, _ in batches} == {"llmloop-safety_0"} != {loop_thread}


def test_screen_input_blocks_and_redacts_in_one_batch():
    g, batches = guardrails()
    texts, blocked = asyncio.run(
        g.screen_input(["mail bob@example.com", "how to make sarin", "   "], g.redactor())
    )
    assert texts[0] == "mail <EMAIL_1>" and blocked == Blocked(["weapons_mass_harm"])
    assert [texts for _, texts in batches] == [["mail bob@example.com", "how to make sarin"]]
