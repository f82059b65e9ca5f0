"""Server and engine configuration: one frozen dataclass per concern, validated once when built.

Every field's docstring is its ``llmloop serve --help`` text (see ``serve/cli.py``).
"""

from dataclasses import dataclass, field
from pathlib import Path

from llmloop.errors import LLMLoopError


class ConfigError(LLMLoopError):
    pass


URL_SCHEMES = ("http://", "https://")


@dataclass(frozen=True)
class EngineConfig:
    """What vLLM runs. The scale-out knobs are vLLM's own and are passed through unchanged."""

    model_dir: Path
    """The base model directory (HF format, on disk)."""
    served_model_name: str
    """The name clients put in `model` for the base model."""
    dtype: str = "auto"
    """Weights and activations dtype (vLLM --dtype). auto: bfloat16 on GPUs and on CPUs with
    native bf16 (avx512_bf16 or amx_bf16), float32 on other CPUs, where bf16 is emulated and
    several times slower; the choice and its reason are logged at start."""
    max_model_len: int | None = None
    """Context length per sequence, prompt + output tokens (default: the model's, capped at 8192 on CPU)."""
    max_num_seqs: int = 64
    """Sequences batched together per engine step (vLLM --max-num-seqs)."""
    max_waiting_requests: int = 512
    """Requests allowed to wait beyond the running batch; more are refused with 503 + Retry-After."""
    enforce_eager: bool = True
    """Skip graph capture / torch.compile (faster start; on CPU eager is what vLLM supports well)."""
    gpu_memory_utilization: float = 0.9
    """GPU: fraction of device memory vLLM may use (vLLM --gpu-memory-utilization)."""
    kv_cache_memory_bytes: int | None = None
    """KV-cache size in bytes; default on CPU: 2 GiB (on GPU: from --gpu-memory-utilization)."""
    tensor_parallel_size: int = 1
    """Shard each layer over this many GPUs (vLLM --tensor-parallel-size)."""
    pipeline_parallel_size: int = 1
    """Split the layers into this many stages (vLLM --pipeline-parallel-size)."""
    data_parallel_size: int = 1
    """Replicas of the whole model (vLLM --data-parallel-size)."""
    distributed_executor_backend: str | None = None
    """"mp" or "ray" for multi-GPU / multi-node (vLLM --distributed-executor-backend)."""
    quantization: str | None = None
    """Online or checkpoint quantization method vLLM should use (vLLM --quantization)."""
    enable_lora: bool = False
    """Serve LoRA adapters (--adapter, /v1/load_lora_adapter). Off unless asked for, as in vLLM:
    the LoRA kernels run on every engine step once enabled (on CPU: half the throughput)."""
    max_lora_rank: int = 64
    """Largest LoRA rank an adapter may have."""
    max_loras: int = 4
    """Adapters usable in the same batch."""
    max_cpu_loras: int | None = None
    """Adapters kept loaded in memory (default: --max-loras)."""
    seed: int = 0
    """Engine seed (per-request `seed` still decides a request's sampling)."""
    tool_call_parser: str = "hermes"
    """vLLM's tool parser for the model's tool-call format (vLLM --tool-call-parser). hermes
    (<tool_call>{json}</tool_call>) fits Qwen2.5/3, Hermes and, through the tool prompt the
    server adds, models whose chat template has no tools (the default SmolLM2); see
    docs/serving.md."""
    otlp_traces_endpoint: str | None = None
    """vLLM's own spans go here too (vLLM --otlp-traces-endpoint); see ServerConfig's."""

    def __post_init__(self):
        if self.max_num_seqs < 1:
            raise ConfigError(f"--max-num-seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_waiting_requests < 0:
            raise ConfigError(
                f"--max-waiting-requests must be >= 0, got {self.max_waiting_requests}"
            )
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError("--gpu-memory-utilization must be in (0, 1]")


@dataclass(frozen=True)
class ServerConfig:
    """What the HTTP server does around the engine."""

    host: str = "127.0.0.1"
    """Interface to listen on."""
    port: int = 8000
    """TCP port to listen on."""
    api_keys: tuple[str, ...] = ()
    """Admin API keys (`Authorization: Bearer KEY`), beside the scoped keys of `llmloop keys` in
    the log database; also read from $LLMLOOP_API_KEY and --api-key-file, which `ps` does not
    show. No key anywhere: no authentication."""
    adapters: tuple[tuple[str, str], ...] = ()
    """LoRA adapters to load at start, as (name, path)."""
    max_request_body_bytes: int = 8 << 20
    """Larger request bodies are refused with 413."""
    drain_timeout_s: float = 30.0
    """On SIGTERM, how long in-flight requests may take to finish before the server exits."""
    max_queue_time_s: float = 60.0
    """Seconds a request may wait for a place in the engine's running batch. One that would
    wait longer, by the queue ahead and the measured finish rate, gets 503 + Retry-After at
    once; one still waiting after this long is aborted with the same 503."""
    db_url: str | None = None
    """Request/feedback log database URL (default: $LLMLOOP_DB, else SQLite at
    $LLMLOOP_HOME/llmloop.db; or postgresql://...). A URL with a password: pass it as $LLMLOOP_DB
    or --db-file, which `ps` does not show."""
    store_requests: bool = True
    """Log every completion (requests can still opt out with `store: false`)."""
    rag_index: str | None = None
    """Default RAG index for chat requests that do not name one."""
    safety_policy: str | None = None
    """Safety policy YAML; None: the safe defaults."""
    safety: bool = True
    """Apply the safety layer (PII redaction, harmful-content filter) on input and output."""
    default_sampling: dict = field(default_factory=dict)
    """Server defaults for sampling fields a request leaves unset (request > server > OpenAI)."""
    public_metrics: bool = False
    """Serve /metrics and /version without a key (e.g. for a Prometheus that sends none). By
    default they need a key (any scope) once the server has keys."""
    http_metrics: bool = True
    """Count HTTP requests by route and status, and time them, on /metrics."""
    max_file_bytes: int = 200 << 20
    """Largest file /v1/files takes (OpenAI's limit: 200 MB)."""
    max_stored_bytes_per_key: int = 10 << 30
    """Files one key may keep stored (uploads and batch outputs); more uploads get 400."""
    batch_concurrency: int | None = None
    """Batch lines in flight while no interactive request is (default: 3/4 of --max-num-seqs,
    leaving room in the running batch for interactive requests to start at once)."""
    batch_busy_concurrency: int | None = None
    """Batch lines in flight while interactive requests are, or were in the last 2 s (default:
    1/8 of --batch-concurrency, at least 1): they keep the engine's attention."""
    batch_lease_s: float = 30.0
    """A server renews its claim on the batch lines it runs every third of this; a killed
    server's lines are taken up by another (or by it, restarted) once this has passed."""
    public_docs: bool = False
    """Serve /openapi.json, /docs and /redoc without a key. By default they need a key (any
    scope) once the server has keys."""
    otlp_traces_endpoint: str | None = None
    """Export OpenTelemetry spans of each request (auth, safety, retrieval, engine, log), and
    vLLM's own, to this OTLP receiver, e.g. http://localhost:4318/v1/traces (OTLP over HTTP;
    $OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc for gRPC). The request log keeps each trace id."""

    def __post_init__(self):
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port must be in 1..65535, got {self.port}")
        if not self.max_queue_time_s > 0:
            raise ConfigError(f"--max-queue-time must be > 0 seconds, got {self.max_queue_time_s}")
        for name in ("batch_concurrency", "batch_busy_concurrency"):
            if (value := getattr(self, name)) is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if not self.batch_lease_s >= 1:
            raise ConfigError(f"--batch-lease must be >= 1 second, got {self.batch_lease_s}")
        if self.otlp_traces_endpoint and not self.otlp_traces_endpoint.startswith(URL_SCHEMES):
            raise ConfigError(
                f"--otlp-traces-endpoint must be an http(s) URL, e.g. "
                f"http://localhost:4318/v1/traces; got {self.otlp_traces_endpoint!r}"
            )
        names = [name for name, _ in self.adapters]
        if len(set(names)) != len(names):
            raise ConfigError(f"--adapter names must be unique, got {names}")
