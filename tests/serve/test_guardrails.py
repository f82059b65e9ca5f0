"""How a streamed answer is screened, delta by delta (the safety package's StreamGuard faked)."""

from serve.guardrails import CONTENT_FILTER, REFUSAL, Guardrails
from serve.metrics import ServerMetrics


class FakeStream:
    """Passes deltas through; blocks on a delta containing "BAD", or in finish() if told to."""

    def __init__(self, block_on_finish: bool = False):
        self.blocked, self.blocked_categories = False, []
        self.block_on_finish = block_on_finish

    def feed(self, delta: str) -> str:
        if "BAD" in delta:
            self.blocked, self.blocked_categories = True, ["hate"]
            return ""
        return delta

    def finish(self) -> str:
        if self.block_on_finish:
            self.blocked, self.blocked_categories = True, ["self_harm"]
            return ""
        return "<tail>"


def guardrails() -> Guardrails:
    return Guardrails(guard=None, metrics=ServerMetrics())


def test_deltas_pass_and_the_last_one_gets_the_held_back_tail():
    g, stream = guardrails(), FakeStream()
    assert g.screen_delta(stream, "Hello", None) == ("Hello", None)
    assert g.screen_delta(stream, " world", "stop") == (" world<tail>", "stop")


def test_a_blocked_delta_ends_the_choice_with_the_refusal_and_is_counted():
    g = guardrails()
    assert g.screen_delta(FakeStream(), "BAD", None) == (REFUSAL, CONTENT_FILTER)
    metrics = g.metrics.render().decode()
    assert (
        'llmloop:safety_actions_total{action="block",category="hate",direction="output"} 1.0'
        in metrics
    )


def test_a_block_in_the_final_check_also_ends_with_content_filter():
    assert guardrails().screen_delta(FakeStream(block_on_finish=True), "ok", "stop") == (
        REFUSAL,
        CONTENT_FILTER,
    )
