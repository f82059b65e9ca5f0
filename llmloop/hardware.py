"""What the host offers, where a default depends on it: usable cores and native bf16 on CPU.

The choices are pure functions of ``/proc/cpuinfo`` text, the environment and a core count, so
they are tested without the hardware; ``benchmarks/cpu_defaults.py`` measured them (docs/serving.md).
"""

import os
from collections.abc import Mapping
from pathlib import Path

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""x86 flags that make bf16 matmuls native. Without them PyTorch and vLLM emulate bf16 through
fp32 and lose: on an AVX2-only AMD EPYC, vLLM ran the default model at 20 tok/s in bf16 against
93 tok/s in fp32."""
SMALL_HOST_CORES = 4
"""At most this many usable cores: vLLM's one reserved scheduler core is too dear to give up."""
THREAD_VARIABLES = ("VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_CPU_OMP_THREADS_BIND", "OMP_WAIT_POLICY")
"""The variables ``vllm_cpu_thread_env`` may set (logged at start, whoever set them)."""


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask: what taskset and cgroups leave it)."""
    return len(os.sched_getaffinity(0))


def read_cpuinfo() -> str:
    path = Path("/proc/cpuinfo")
    return path.read_text() if path.is_file() else ""


def cpu_model_name(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown CPU"


def native_bf16_flags(cpuinfo: str) -> list[str]:
    """The flags of ``BF16_CPU_FLAGS`` on the first processor's ``flags`` line of ``cpuinfo``."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            return [flag for flag in BF16_CPU_FLAGS if flag in flags]
    return []


def cpu_dtype(cpuinfo: str) -> tuple[str, str]:
    """``(dtype, reason)`` for models run on this CPU: bfloat16 where it is native, else float32."""
    found = native_bf16_flags(cpuinfo)
    if found:
        return "bfloat16", f"the CPU has {' and '.join(found)} (native bf16)"
    return "float32", f"the CPU has neither {' nor '.join(BF16_CPU_FLAGS)} (bf16 would be emulated)"


def vllm_cpu_thread_env(environ: Mapping[str, str], num_cores: int) -> dict[str, str]:
    """Thread settings for vllm-cpu's engine processes to add to ``environ``; a variable already
    set there is the user's choice and kept. ``{}`` on hosts of more than ``SMALL_HOST_CORES``.

    vllm-cpu 0.32 (``vllm/utils/ompmultiprocessing.py``) by default binds the model's OpenMP
    threads to the cores of NUMA node 0 minus one core it reserves for the scheduler process
    (``VLLM_CPU_OMP_THREADS_BIND=auto``, ``VLLM_CPU_NUM_OF_RESERVED_CPU`` unset). On a small
    host that leaves the model one core of two: ~1.5x slower on a quiet machine. And the binding
    is by core id with no regard for other processes, so two servers on one host run their model
    threads on the same core and leave the other idle (the test suite runs two at once). On a
    small host we therefore
      - reserve no core: the scheduler and the HTTP server mostly wait, and the OS runs them
        on whichever core is free;
      - do not bind ("nobind"): vLLM then leaves OMP_NUM_THREADS unset, torch starts one
        thread per core of the affinity mask, and the OS spreads the threads of every server
        over all the cores. A binding (a list of core ids) cannot know of the other servers;
        pinning pays off on big multi-NUMA hosts, where vLLM's "auto" is left in place;
      - let an OpenMP thread that waits for another sleep at once (``OMP_WAIT_POLICY=PASSIVE``)
        instead of spinning first (libgomp's default): with more runnable threads than cores
        (another server, the tests) the spinning threads burnt the cores the others waited for,
        and decoding ran 7.7x slower than with vLLM's one bound thread; passive threads decoded
        as fast as spinning ones under a light load (docs/serving.md).
    """
    if num_cores > SMALL_HOST_CORES:
        return {}
    defaults = {
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    if "GOMP_SPINCOUNT" in environ:  # the user tuned libgomp's waiting themselves
        del defaults["OMP_WAIT_POLICY"]
    return {name: value for name, value in defaults.items() if name not in environ}
