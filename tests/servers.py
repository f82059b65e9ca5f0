"""Start ``llmloop serve`` as a real subprocess (the real vLLM engine) for integration tests."""

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai

STARTUP_TIMEOUT_S = 600  # two cores shared with other work: the engine may take minutes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    process: subprocess.Popen
    base_url: str
    """``http://127.0.0.1:PORT`` (the OpenAI API is under ``/v1``)."""
    api_key: str
    log_path: Path
    client: openai.OpenAI = field(init=False)

    def __post_init__(self):
        self.client = openai.OpenAI(
            base_url=f"{self.base_url}/v1", api_key=self.api_key, max_retries=0
        )

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.base_url}/v1", api_key=self.api_key, max_retries=0
        )

    @property
    def home(self) -> Path:
        """The LLMLOOP_HOME the server was started with (a test's isolated_home may have changed
        this process's since); run-time adapters load from its ``adapters/``."""
        environ = Path(f"/proc/{self.process.pid}/environ").read_bytes().split(b"\0")
        prefix = b"LLMLOOP_HOME="
        return Path(next(e[len(prefix) :].decode() for e in environ if e.startswith(prefix)))

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.auth_headers, timeout=120)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self, timeout_s: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    args: list[str], log_path: Path, api_key: str = "llmloop-test-key"
) -> ServerProcess:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llmloop.cli",
        "serve",
        "--port",
        str(port),
        "--api-key",
        api_key,
        *args,
    ]
    log = open(log_path, "w")  # noqa: SIM115  (owned by the process for its lifetime)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    server = ServerProcess(process, f"http://127.0.0.1:{port}", api_key, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"llmloop serve exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                f"llmloop serve not ready after {STARTUP_TIMEOUT_S}s:\n{server.log()}"
            )
        time.sleep(0.5)


def make_random_lora(base_model_dir: Path, out_dir: Path, r: int = 8) -> Path:
    """A PEFT LoRA adapter with large random weights: it certainly changes answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if (out_dir / "adapter_config.json").exists():
        return out_dir
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    config = LoraConfig(
        r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # PEFT's random init is too gentle to move a confident greedy answer
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(std=0.3)
    peft_model.save_pretrained(out_dir)
    return out_dir
