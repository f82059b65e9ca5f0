"""DPO and KTO through TRL write the same artifact dir as SFT."""

import json

import pytest

from llmloop.finetune.artifact import ARTIFACT_FILES
from llmloop.finetune.config import PreferenceRunConfig
from llmloop.finetune.errors import ConfigError
from llmloop.finetune.preference import train_preference
from tests.finetune.conftest import write_jsonl

pytestmark = pytest.mark.slow

DPO_ROWS = [
    {"prompt": "What is 2+2?", "chosen": "4.", "rejected": "5."},
    {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Berlin."},
    {"prompt": "only a prompt"},
]
KTO_ROWS = [
    {"prompt": "What is 2+2?", "completion": "4.", "label": True},
    {"prompt": "What is 2+2?", "completion": "5.", "label": False},
    {"prompt": "bad label", "completion": "x", "label": "yes"},
]


@pytest.mark.parametrize(("method", "rows"), [("dpo", DPO_ROWS), ("kto", KTO_ROWS)])
def test_preference_tuning_writes_a_complete_artifact(method, rows, train_home, tmp_path, capsys):
    data = write_jsonl(tmp_path / f"{method}.jsonl", rows)
    config = PreferenceRunConfig.from_flat(
        {
            "data": str(data),
            "output": str(tmp_path / method),
            "max_steps": 1,
            "batch_size": 2,
            "beta": 0.2,
            "save_steps": 0,
        }
    )
    output = train_preference(method, config)
    assert f"{data}:3:" in capsys.readouterr().err
    for name in ARTIFACT_FILES:
        assert (output / name).is_file(), name
    manifest = json.loads((output / "data_manifest.json").read_text())
    assert manifest["train_rows"] == 2 and manifest["files"][0]["rows_skipped"] == 1
    assert json.loads((output / "metrics.json").read_text())["train_steps"] == 1


def test_a_wrong_target_module_names_the_flag(train_home, tmp_path):
    data = write_jsonl(tmp_path / "dpo.jsonl", DPO_ROWS[:2])
    config = PreferenceRunConfig.from_flat(
        {"data": str(data), "output": str(tmp_path / "out"), "target_modules": "no_such_proj"}
    )
    with pytest.raises(ConfigError, match="--target-modules 'no_such_proj'"):
        train_preference("dpo", config)
