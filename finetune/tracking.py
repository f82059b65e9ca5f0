"""``--report-to``: loss and learning rate to TensorBoard, MLflow or Trackio through Accelerate's
trackers (``Accelerator(log_with=...)``, ``accelerator.log``), logs under ``OUTPUT/runs``."""

import importlib.util
from pathlib import Path
from typing import Any

from llmloop.finetune.config import SFTConfig
from llmloop.finetune.errors import ConfigError

TRACKER_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "trackio": "trackio"}
LOGS_DIR = "runs"


def check_trackers(trackers: list[str]) -> None:
    """Fail before loading any model when --report-to names a tracker that is not installed."""
    for tracker in trackers:
        package = TRACKER_PACKAGES[tracker]
        if importlib.util.find_spec(package) is None:
            raise ConfigError(f"--report-to {tracker} needs {package}: pip install {package}")


def tracker_settings(config: SFTConfig, output_dir: Path) -> dict[str, Any]:
    """``Accelerator`` keyword arguments for the trackers --report-to names (none: nothing)."""
    if not config.train.trackers:
        return {}
    return {"log_with": config.train.trackers, "project_dir": output_dir / LOGS_DIR}


def start_trackers(accelerator, config: SFTConfig) -> None:
    """The trackers get the resolved settings as hyperparameters (flat, scalars only)."""
    if not config.train.trackers:
        return
    flat = {
        f"{section}/{name}": value
        for section, values in config.to_dict().items()
        for name, value in values.items()
        if isinstance(value, int | float | str | bool)
    }
    accelerator.init_trackers(config.output.artifact_name, config=flat)
