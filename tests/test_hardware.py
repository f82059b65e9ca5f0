"""Host-chosen defaults: decided from /proc/cpuinfo text, the environment and a core count."""

from llmloop.hardware import cpu_dtype, cpu_model_name, native_bf16_flags, vllm_cpu_thread_env

# Trimmed /proc/cpuinfo of an AVX2-only AMD EPYC (Zen 2), where bf16 is emulated
EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7R32
flags\t\t: fpu vme sse sse2 avx f16c fma avx2 bmi2
"""
# ... and of the machines with native bf16: AMD EPYC (Zen 4), Intel Sapphire Rapids
EPYC_AVX512_BF16 = EPYC_AVX2.replace("bmi2", "bmi2 avx512f avx512_bf16")
SAPPHIRE_RAPIDS = EPYC_AVX2.replace("bmi2", "bmi2 avx512f avx512_bf16 amx_bf16 amx_tile")


def test_bf16_where_the_cpu_has_native_bf16_else_fp32():
    assert native_bf16_flags(EPYC_AVX2) == []
    assert cpu_dtype(EPYC_AVX2)[0] == "float32"
    assert native_bf16_flags(EPYC_AVX512_BF16) == ["avx512_bf16"]
    assert cpu_dtype(EPYC_AVX512_BF16) == ("bfloat16", "the CPU has avx512_bf16 (native bf16)")
    assert native_bf16_flags(SAPPHIRE_RAPIDS) == ["avx512_bf16", "amx_bf16"]
    assert cpu_dtype(SAPPHIRE_RAPIDS)[0] == "bfloat16"


def test_no_cpuinfo_means_fp32_and_a_reason():
    dtype, reason = cpu_dtype("")
    assert dtype == "float32"
    assert "avx512_bf16" in reason


def test_a_flag_is_a_whole_word():
    assert native_bf16_flags(EPYC_AVX2.replace("avx2", "avx512_bf16x")) == []


def test_cpu_model_name():
    assert cpu_model_name(EPYC_AVX2) == "AMD EPYC 7R32"
    assert cpu_model_name("") == "unknown CPU"


def test_small_host_gets_every_core_no_binding_and_no_spinning():
    assert vllm_cpu_thread_env({}, num_cores=2) == {
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_WAIT_POLICY": "PASSIVE",
    }


def test_what_the_user_set_is_kept():
    environ = {"VLLM_CPU_OMP_THREADS_BIND": "0-1", "OMP_WAIT_POLICY": "ACTIVE", "PATH": "/bin"}
    assert vllm_cpu_thread_env(environ, num_cores=2) == {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    environ = {
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "auto",
        "GOMP_SPINCOUNT": "10000",  # libgomp's waiting, tuned by hand
    }
    assert vllm_cpu_thread_env(environ, num_cores=4) == {}


def test_big_host_keeps_vllm_defaults():
    assert vllm_cpu_thread_env({}, num_cores=5) == {}
