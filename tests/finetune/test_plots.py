"""The loss curve PNG and its place in the model card."""

from llmloop.finetune.artifact import model_card
from llmloop.finetune.config import SFTConfig
from llmloop.finetune.plots import LOSS_PLOT, write_loss_plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_loss_curve_is_a_png(tmp_path):
    metrics = {
        "log_history": [{"step": s, "loss": 3.0 / s} for s in range(1, 21)],
        "eval_history": [{"step": 10, "eval_loss": 0.5}, {"step": 20, "eval_loss": None}],
    }
    path = write_loss_plot(tmp_path, metrics)
    assert path == tmp_path / LOSS_PLOT
    assert path.read_bytes().startswith(PNG_SIGNATURE) and path.stat().st_size > 5000


def test_no_logged_loss_no_plot(tmp_path):
    assert write_loss_plot(tmp_path, {"log_history": [{"step": 1, "epoch": 1}]}) is None
    assert not (tmp_path / LOSS_PLOT).exists()


def test_model_card_shows_the_curve_and_the_computed_settings():
    config = SFTConfig.from_flat({"data": "d", "output": "out", "r": 16, "lora_alpha": 32})
    training_config = {
        "base_model": {"name": "base", "sha256": "0" * 64},
        "resolved_defaults": {"learning_rate": "0.0015: 0.0002 x sqrt(8B / 135M parameters)"},
    }
    manifest = {"files": [], "train_rows": 40, "eval_rows": 0}
    card = model_card(config, "sft", training_config, manifest, {"train_steps": 100}, True)
    assert f"![loss curve]({LOSS_PLOT})" in card
    assert "learning_rate = 0.0015: 0.0002 x sqrt(8B / 135M parameters)" in card
    assert "![loss" not in model_card(config, "sft", training_config, manifest, {}, False)
