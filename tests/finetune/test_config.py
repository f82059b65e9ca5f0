from pathlib import Path

import pytest

from llmloop.config_docs import field_docs
from llmloop.finetune.config import SECTIONS, SFTConfig, load_recipe
from llmloop.finetune.errors import ConfigError
from llmloop.finetune.modeling import peft_lora_config

RECIPES = sorted((Path(__file__).parents[2] / "finetune" / "recipes").glob("*.yaml"))


def test_every_field_has_a_docstring():
    for cls in SECTIONS.values():
        docs = field_docs(cls)
        for name in cls.__dataclass_fields__:
            assert docs.get(name), f"{cls.__name__}.{name} has no docstring"


def test_flat_and_sectioned_settings_build_the_same_config():
    flat = SFTConfig.from_flat({"data": "d.jsonl", "output": "out", "r": 8, "learning_rate": 1e-3})
    nested = SFTConfig.from_flat(
        {
            "data": {"data": "d.jsonl"},
            "output": {"output": "out"},
            "lora": {"r": 8},
            "train": {"learning-rate": 1e-3},
        }
    )
    assert flat == nested
    assert flat.lora.r == 8 and flat.train.learning_rate == 1e-3
    assert flat.model.base == "smollm2-135m-instruct" and flat.lora.target_modules == "all-linear"


@pytest.mark.parametrize(
    ("target_modules", "expected"),
    [("all-linear", "all-linear"), (" q_proj, v_proj ,", {"q_proj", "v_proj"})],
)
def test_lora_settings_become_peft_names(target_modules, expected):
    lora = SFTConfig.from_flat(
        {"data": "d", "output": "o", "r": 4, "lora_alpha": 8, "target_modules": target_modules}
    ).lora
    peft_config = peft_lora_config(lora)
    assert (peft_config.r, peft_config.lora_alpha, peft_config.lora_dropout) == (4, 8, 0.05)
    assert peft_config.target_modules == expected and peft_config.task_type == "CAUSAL_LM"


@pytest.mark.parametrize(
    ("settings", "flag"),
    [
        ({"output": "o"}, "--data"),
        ({"data": "d"}, "--output"),
        ({"data": "d", "output": "o", "method": "full"}, "--method"),
        ({"data": "d", "output": "o", "bad_rows": "ignore"}, "--bad-rows"),
        ({"data": "d", "output": "o", "replay_loss": "mse"}, "--replay-loss"),
        ({"data": "d", "output": "o", "learning_rate": 0}, "--learning-rate"),
        ({"data": "d", "output": "o", "lr": 1}, "unknown setting"),
    ],
)
def test_bad_settings_name_the_flag_to_change(settings, flag):
    with pytest.raises(ConfigError, match=flag):
        SFTConfig.from_flat(settings)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_are_valid(recipe):
    values = load_recipe(recipe)
    SFTConfig.from_flat({"data": "d.jsonl", "output": "out", **values})


def test_shipped_recipes_exist():
    assert {p.name for p in RECIPES} >= {"smollm2-135m-lora.yaml", "smollm2-135m-qlora.yaml"}


def test_recipe_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        load_recipe(bad)
    with pytest.raises(ConfigError, match="no such file"):
        load_recipe(tmp_path / "missing.yaml")


def test_hugging_face_names_are_aliases():
    hf = SFTConfig.from_flat(
        {
            "model_name_or_path": "smollm2-135m-instruct",
            "output_dir": "out",
            "data": "d.jsonl",
            "num_train_epochs": 3,
            "per_device_train_batch_size": 4,
            "lora_r": 8,
            "train": {"max_length": 512},
        }
    )
    ours = SFTConfig.from_flat(
        {"base": "smollm2-135m-instruct", "output": "out", "data": "d.jsonl", "epochs": 3}
        | {"batch_size": 4, "r": 8, "max_seq_length": 512}
    )
    assert hf == ours


def test_a_field_and_its_alias_together_is_an_error():
    with pytest.raises(ConfigError, match="--epochs and --num-train-epochs set the same thing"):
        SFTConfig.from_flat({"data": "d", "output": "o", "epochs": 1, "num_train_epochs": 2})


def test_report_to_names_known_trackers():
    assert SFTConfig.from_flat({"data": "d", "output": "o"}).train.trackers == []
    train = SFTConfig.from_flat({"data": "d", "output": "o", "report_to": "tensorboard,mlflow"})
    assert train.train.trackers == ["tensorboard", "mlflow"]
    with pytest.raises(ConfigError, match="--report-to must be one of"):
        SFTConfig.from_flat({"data": "d", "output": "o", "report_to": "wandb"})
