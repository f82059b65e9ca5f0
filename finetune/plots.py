"""The loss curve of a run as ``loss.png`` in its artifact dir (shown in the model card)."""

from pathlib import Path
from typing import Any

LOSS_PLOT = "loss.png"


def write_loss_plot(output_dir: Path, metrics: dict[str, Any]) -> Path | None:
    """Train loss per optimizer step and eval loss where measured; None when nothing was logged."""
    train = [(e["step"], e["loss"]) for e in metrics.get("log_history", []) if _has(e, "loss")]
    evals = [
        (e["step"], e["eval_loss"]) for e in metrics.get("eval_history", []) if _has(e, "eval_loss")
    ]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a file only
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    axes.plot(*zip(*train, strict=True), label="train loss", linewidth=1.5)
    if evals:
        axes.plot(*zip(*evals, strict=True), "o-", label="eval loss", linewidth=1.5)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = output_dir / LOSS_PLOT
    figure.savefig(path)
    plt.close(figure)
    return path


def _has(entry: dict[str, Any], key: str) -> bool:
    return "step" in entry and isinstance(entry.get(key), int | float)
