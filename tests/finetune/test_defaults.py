"""The defaults that depend on the base model's size and the data: the rule, what a set value
keeps, the small-data held-out rule and its warning, and where the resolved values are written."""

import pytest

from llmloop.finetune.config import SFTConfig
from llmloop.finetune.defaults import (
    MAX_EPOCHS,
    MIN_EPOCHS,
    SMALL_DATA_ROWS,
    epochs_for,
    eval_fraction_for,
    held_out_warning,
    learning_rate_for,
    lora_rank_for,
    print_resolved,
    resolve_preference_config,
    resolve_sft_config,
)

SMOLLM2_135M = 134_515_008
"""model.num_parameters() of the default model."""


def config(**settings) -> SFTConfig:
    return SFTConfig.from_flat({"data": "d.jsonl", "output": "out", **settings})


@pytest.mark.parametrize(
    ("num_params", "learning_rate", "r"),
    [(SMOLLM2_135M, 1.5e-3, 16), (1.7e9, 4.3e-4, 16), (8e9, 2e-4, 16), (70e9, 6.8e-5, 16)],
)
def test_learning_rate_and_rank_scale_with_the_model(num_params, learning_rate, r):
    assert learning_rate_for(num_params) == pytest.approx(learning_rate)
    assert lora_rank_for(num_params) == r


def test_unset_values_are_resolved_with_a_reason():
    resolved, why = resolve_sft_config(config(), SMOLLM2_135M, num_rows=40)
    lora, train = resolved.lora, resolved.train
    assert (lora.r, lora.lora_alpha, train.learning_rate) == (16, 32, 1.5e-3)
    assert resolved.data.eval_fraction == 0.0  # 40 rows: every row trains
    assert resolved.data.replay_rows == 40  # as many as the rows
    # 20 epochs of (40 rows + 40 replay rows) / 8 = 200 steps; warmup 10 % of them
    assert train.epochs == 20 and train.warmup_steps == 20
    assert set(why) == {
        "replay_rows",
        "r",
        "lora_alpha",
        "learning_rate",
        "epochs",
        "warmup_steps",
        "eval_fraction",
    }
    assert "under 1000 rows" in why["eval_fraction"] and "sqrt" in why["learning_rate"]


def test_values_given_by_hand_are_kept():
    given = config(
        r=8,
        lora_alpha=8,
        learning_rate=1e-4,
        epochs=2,
        warmup_steps=3,
        eval_fraction=0.2,
        replay_rows=0,
        replay_loss="tokens",
    )
    resolved, why = resolve_sft_config(given, SMOLLM2_135M, num_rows=40)
    assert resolved == given and why == {}


def test_max_steps_decides_when_given_and_warmup_is_a_ratio_of_it():
    resolved, why = resolve_sft_config(config(max_steps=300, warmup_ratio=0.05), SMOLLM2_135M, 40)
    assert resolved.train.max_steps == 300 and "epochs" not in why
    assert resolved.train.warmup_steps == 15


@pytest.mark.parametrize(
    ("num_rows", "epochs"),
    [(1, MAX_EPOCHS), (40, 20), (400, 10), (999, 5), (2000, MIN_EPOCHS), (10**6, MIN_EPOCHS)],
)
def test_small_sets_get_more_passes(num_rows, epochs):
    assert epochs_for(num_rows) == epochs


def test_steps_count_the_effective_batch_and_the_replay_rows():
    resolved, _ = resolve_sft_config(
        config(batch_size=4, gradient_accumulation_steps=2, warmup_ratio=0.5),
        SMOLLM2_135M,
        num_rows=400,
    )
    assert resolved.train.epochs == 10  # passes are counted over the user's 400 rows
    # (400 rows + 100 replay rows) / 8 per step = 63 steps per epoch
    assert resolved.data.replay_rows == 100 and resolved.train.warmup_steps == 315


@pytest.mark.parametrize(("num_rows", "replay"), [(10, 10), (400, 100), (SMALL_DATA_ROWS, 0)])
def test_replay_rows_follow_the_data_size(num_rows, replay):
    resolved, why = resolve_sft_config(config(), SMOLLM2_135M, num_rows=num_rows)
    assert resolved.data.replay_rows == replay and str(replay) in why["replay_rows"]


@pytest.mark.parametrize(
    ("num_rows", "fraction"), [(40, 0.0), (999, 0.0), (SMALL_DATA_ROWS, 0.1), (50_000, 0.02)]
)
def test_no_held_out_split_for_small_data(num_rows, fraction):
    assert eval_fraction_for(num_rows) == pytest.approx(fraction)


def test_held_out_rows_of_a_small_set_are_warned_about():
    warning = held_out_warning(40, 0.1)
    assert "holds out 4 of 40 rows" in warning and "--eval-fraction 0" in warning
    assert held_out_warning(40, None) is None  # auto: no split, nothing lost
    assert held_out_warning(40, 0.0) is None
    assert held_out_warning(SMALL_DATA_ROWS, 0.1) is None


def test_resolved_values_are_printed(capsys):
    resolved, why = resolve_sft_config(config(), SMOLLM2_135M, num_rows=40)
    print_resolved(resolved, why)
    err = capsys.readouterr().err
    assert "learning_rate=0.0015" in err and "r=16" in err and "epochs=20" in err
    assert "  eval_fraction = 0.0: no held-out split" in err
    assert "replay_rows=40 replay_loss=kl" in err


def test_preference_tuning_takes_a_tenth_of_the_rate_and_one_epoch():
    from llmloop.finetune.config import PreferenceRunConfig

    given = PreferenceRunConfig.from_flat({"data": "d", "output": "o"})
    resolved, why = resolve_preference_config(given, SMOLLM2_135M, num_rows=100)
    assert resolved.train.learning_rate == pytest.approx(1.5e-4)
    assert resolved.train.epochs == 1 and isinstance(resolved, PreferenceRunConfig)
    assert "tenth" in why["learning_rate"]


def test_preference_tuning_refuses_replay_it_would_not_do():
    from llmloop.finetune.config import PreferenceRunConfig
    from llmloop.finetune.errors import ConfigError

    for flag in ({"replay_rows": 10}, {"replay_loss": "tokens"}, {"replay_loss": "kl"}):
        given = PreferenceRunConfig.from_flat({"data": "d", "output": "o", **flag})
        with pytest.raises(ConfigError, match="`finetune sft` only"):
            resolve_preference_config(given, SMOLLM2_135M, num_rows=100)
    resolved, _ = resolve_preference_config(
        PreferenceRunConfig.from_flat({"data": "d", "output": "o"}), SMOLLM2_135M, num_rows=100
    )
    assert resolved.data.replay_rows == 0
