"""In-process stand-ins for the server's heavy objects, for fast tests.

``FakeEngine`` fakes ``llmloop.serve.engine_api.Engine``: it "generates" by echoing the prompt's
characters back (one token per character), which makes outputs predictable: deltas, stops,
lengths, logprobs and n all have known values. ``keyword_guardrails`` is the real safety layer
over a keyword harm classifier; ``FakeRetrieval`` answers every query with fixed hits."""

import asyncio
import json
import re
import time

from llmloop.rag.retrieve import Hit
from llmloop.safety.guard import Guard
from llmloop.safety.policy import load_policy
from llmloop.serve.engine_api import (
    EngineOutput,
    EngineOverloadedError,
    LoadedAdapter,
    ParsedToolCall,
    SamplingOptions,
    SequenceOutput,
    StructuredOutputs,
    TokenLogprob,
    ToolCallDelta,
)
from llmloop.serve.guardrails import Guardrails
from llmloop.serve.metrics import ServerMetrics
from llmloop.serve.retrieval import Retrieval
from tests.safety.fakes import fake_classifier


class CharTokenizer:
    """One token per character (code point + 3); ids 0..2 are special."""

    eos_token_id = 2
    chat_template = "fake"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) + 3 for c in text]

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(t - 3) for t in token_ids if t >= 3)

    def apply_chat_template(
        self, conversation, tokenize=False, add_generation_prompt=True, **kwargs
    ) -> str:
        if any(m["role"] in ("tool", "developer") for m in conversation):
            raise ValueError("this template has no tool or developer role")
        return "".join(f"<{m['role']}>{m['content']}" for m in conversation) + "<assistant>"


class FakeToolCalling:
    """The Hermes format (``<tool_call>{"name": ..., "arguments": ...}</tool_call>``) read by a
    regex; forcing a call is recorded as a structural tag naming the tools, not enforced."""

    name = "hermes"

    def constraint(self, tools, tool_choice, parallel_tool_calls) -> StructuredOutputs | None:
        if tool_choice == "auto":
            return None
        return StructuredOutputs(structural_tag=json.dumps({"tools": tools, "choice": tool_choice}))

    def parser(self) -> "FakeToolCallParser":
        return FakeToolCallParser()


class FakeToolCallParser:
    CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)

    def __init__(self):
        self.text = ""
        self.num_sent = 0
        """Characters of ``text`` already answered for."""

    def parse(self, text: str) -> tuple[str | None, list[ParsedToolCall]]:
        calls = [json.loads(m) for m in self.CALL.findall(text)]
        if not calls:
            return text, []
        content = text[: text.index("<tool_call>")] or None
        return content, [ParsedToolCall(c["name"], json.dumps(c["arguments"])) for c in calls]

    def parse_delta(self, delta_text: str, final: bool = False):
        """Content up to a call's start; each call whole once its end tag arrives."""
        self.text += delta_text
        if "<tool_call>" not in self.text:
            keep = 0 if final else len("<tool_call>")
            content = self.text[self.num_sent : max(self.num_sent, len(self.text) - keep)]
            self.num_sent += len(content)
            return content or None, []
        content = self.text[self.num_sent : self.text.index("<tool_call>")]
        self.num_sent += len(content)
        done = self.CALL.findall(self.text)
        pieces = []
        for i, call in enumerate(
            done[getattr(self, "num_calls", 0) :], getattr(self, "num_calls", 0)
        ):
            parsed = json.loads(call)
            pieces.append(ToolCallDelta(i, parsed["name"], json.dumps(parsed["arguments"])))
        self.num_calls = len(done)
        return content or None, pieces


class FakeEngine:
    model_name = "fake-model"
    max_model_len = 256
    vocab_size = 70_000
    max_num_seqs = 64

    def __init__(
        self, reply: str | None = None, token_delay_s: float = 0.0, max_running: int | None = None
    ):
        self.tokenizer = CharTokenizer()
        self.tool_calling = FakeToolCalling()
        self.reply = reply
        """Fixed text to generate; None: echo the prompt."""
        self.token_delay_s = token_delay_s
        self.max_running = max_running
        self.running: set[str] = set()
        self.generating = asyncio.Event()
        """Set once a request reaches the engine."""
        self.aborted: list[str] = []
        self._places: asyncio.Semaphore | None = None
        """``max_num_seqs`` requests run at once, the others wait, as in vLLM (per request here)."""
        self.requests: list[tuple[list[int], SamplingOptions, str | None]] = []
        self._adapters: dict[str, LoadedAdapter] = {}

    async def generate(
        self, prompt_token_ids, options: SamplingOptions, request_id: str, lora_name=None
    ):
        if self.max_running is not None and len(self.running) >= self.max_running:
            raise EngineOverloadedError("queue full")
        self.requests.append((prompt_token_ids, options, lora_name))
        self.running.add(request_id)
        self.generating.set()
        self._places = self._places or asyncio.Semaphore(self.max_num_seqs)
        try:
            async with self._places:
                async for output in self._generate(prompt_token_ids, options, request_id):
                    yield output
        except asyncio.CancelledError:
            self.aborted.append(request_id)
            raise
        except GeneratorExit:
            self.aborted.append(request_id)
            raise
        finally:
            self.running.discard(request_id)

    async def _generate(self, prompt_token_ids, options: SamplingOptions, request_id: str):
        """The outputs of one request that has its place."""
        source = self.reply if self.reply is not None else self.tokenizer.decode(prompt_token_ids)
        target = self.tokenizer.encode(source)[: options.max_tokens]
        finish = "length" if len(target) == options.max_tokens else "stop"
        for stop in options.stop:
            text = self.tokenizer.decode(target)
            if stop in text:
                target = self.tokenizer.encode(text[: text.index(stop)])
                finish = "stop"
        prompt_logprobs = None
        if options.prompt_logprobs is not None:
            prompt_logprobs = [None] + [self._logprob(t) for t in prompt_token_ids[1:]]
        if not options.stream:
            for _ in target:
                await asyncio.sleep(self.token_delay_s)
            yield self._output(
                request_id, prompt_token_ids, options, target, finish, prompt_logprobs, True
            )
            return
        for i, token in enumerate(target):
            await asyncio.sleep(self.token_delay_s)
            last = i == len(target) - 1
            yield self._output(
                request_id,
                prompt_token_ids,
                options,
                [token],
                finish if last else None,
                prompt_logprobs if i == 0 else None,
                last,
            )

    def _output(
        self, request_id, prompt, options, tokens, finish, prompt_logprobs, finished
    ) -> EngineOutput:
        return EngineOutput(
            request_id=request_id,
            outputs=[
                SequenceOutput(
                    index=i,
                    text=self.tokenizer.decode(tokens),
                    token_ids=list(tokens),
                    logprobs=[self._logprob(t) for t in tokens]
                    if options.logprobs is not None
                    else None,
                    finish_reason=finish,
                )
                for i in range(options.n)
            ],
            finished=finished,
            num_prompt_tokens=len(prompt),
            prompt_logprobs=prompt_logprobs,
        )

    def _logprob(self, token_id: int) -> TokenLogprob:
        token = self.tokenizer.decode([token_id])
        return TokenLogprob(
            token=token,
            logprob=-0.5,
            top_logprobs=((token, -0.5), ("?", -2.0)),
            token_id=token_id,
            rank=1,
            top_token_ids=(token_id, ord("?") + 3),
        )

    async def add_lora(self, name: str, path: str) -> LoadedAdapter:
        self._adapters[name] = LoadedAdapter(name=name, path=path, created=int(time.time()))
        return self._adapters[name]

    async def remove_lora(self, name: str) -> None:
        del self._adapters[name]

    def list_loras(self) -> list[LoadedAdapter]:
        return list(self._adapters.values())

    async def check_health(self) -> None:
        return None

    def shutdown(self) -> None:
        return None


def keyword_guardrails(metrics: ServerMetrics | None = None) -> Guardrails:
    """The default policy over a harm classifier that knows a few keywords ("sarin", "slur"):
    harmful text is blocked and PII redacted as in production, with no model to load."""
    return Guardrails(Guard(load_policy(None), fake_classifier()), metrics or ServerMetrics())


class FakeRetrieval(Retrieval):
    """``llmloop.serve.retrieval.Retrieval`` with the same ``hits`` for every query."""

    def __init__(
        self,
        hits: list[Hit],
        default_index: str | None = None,
        metrics: ServerMetrics | None = None,
    ):
        super().__init__(default_index, metrics)
        self.hits = hits
        self.searches: list[tuple[str, str, int]] = []
        """(index, query, top_k) of every search."""

    def _search(self, index: str, query: str, top_k: int) -> list[Hit]:
        self.searches.append((index, query, top_k))
        return self.hits[:top_k]
