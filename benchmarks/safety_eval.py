"""Score llmloop's safety package on the shipped labelled sets, next to Presidio.

    .venv/bin/python benchmarks/safety_eval.py [--out results.json]

PII (``benchmarks/data/safety/pii_eval.jsonl``): precision / recall / F1 per type and overall
(micro), for ``llmloop.safety.pii.detect`` and for Presidio's analyzer with its pattern recognizers only
(no spaCy NER model: nothing is downloaded), the phone recognizer given the same regions (US, KR)
and the KR RRN recognizer added. A prediction counts when it overlaps a gold span of the same
type; Presidio entities outside our types (DATE_TIME, URL, ...) are ignored, not counted wrong.

Harm (``benchmarks/data/safety/harm_eval.jsonl``, held out from training): recall on harmful
prompts, false-positive rate on benign ones (look-alikes included), and category accuracy, for
both shipped heads: the fp32 one that screens input and the int8 one that screens output.
Latency (``--latency``): ``detect`` and ``Guard.check`` on a short prompt, and
``StreamGuard.feed`` per 4-character delta over a 1080-character answer, with and without harm
checks. Prints markdown tables; ``--out`` also writes the figures as JSON.
"""

import argparse
import json
import logging
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

DATA_DIR = Path(__file__).parent / "data" / "safety"
PRESIDIO_TYPES = {
    "EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN", "US_SSN": "US_SSN", "KR_RRN": "KR_RRN", "IP_ADDRESS": "IP_ADDRESS",
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    parser.add_argument("--latency", action="store_true", help="also time detect/check/feed")
    args = parser.parse_args()
    # Presidio's email validator asks tldextract for the public suffix list; offline, it falls
    # back to its bundled snapshot after logging a traceback per attempt
    logging.getLogger("tldextract").setLevel(logging.CRITICAL)
    results = {"pii": evaluate_pii(), "harm": evaluate_harm()}
    if args.latency:
        results["latency_ms"] = measure_latency()
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


# --- PII ------------------------------------------------------------------------------------


def evaluate_pii() -> dict:
    from llmloop.safety.pii import PII_TYPES, detect

    rows = [json.loads(line) for line in (DATA_DIR / "pii_eval.jsonl").open()]
    presidio = presidio_detector()
    systems = {
        "llmloop": lambda text: [(f.type, f.start, f.end) for f in detect(text)],
        "presidio": presidio,
    }
    results = {}
    for name, predict in systems.items():
        counts: dict[str, Counter] = {t: Counter() for t in PII_TYPES}
        started = time.perf_counter()
        for row in tqdm(rows, desc=f"pii {name}", leave=False):
            gold = [(s["type"], s["start"], s["end"]) for s in row["spans"]]
            score_spans(gold, predict(row["text"]), counts)
        seconds = time.perf_counter() - started
        results[name] = summarize(counts) | {"ms_per_text": round(1000 * seconds / len(rows), 3)}
    print_pii_table(results, len(rows))
    return results


def presidio_detector():
    from presidio_analyzer import RecognizerRegistry
    from presidio_analyzer.predefined_recognizers import KrRrnRecognizer, PhoneRecognizer

    registry = RecognizerRegistry()
    registry.load_predefined_recognizers()
    recognizers = [
        r
        for r in registry.recognizers
        if r.__class__.__name__ not in ("SpacyRecognizer", "PhoneRecognizer")
    ]
    recognizers.append(PhoneRecognizer(supported_regions=("US", "KR")))
    recognizers.append(KrRrnRecognizer(supported_language="en"))

    def predict(text: str) -> list[tuple[str, int, int]]:
        found = []
        for recognizer in recognizers:
            for result in recognizer.analyze(text, recognizer.supported_entities, None) or []:
                if result.entity_type in PRESIDIO_TYPES and result.score >= 0.3:
                    found.append((PRESIDIO_TYPES[result.entity_type], result.start, result.end))
        return found

    return predict


def score_spans(gold: list, predicted: list, counts: dict[str, Counter]) -> None:
    def overlaps(a, b) -> bool:
        return a[0] == b[0] and a[1] < b[2] and b[1] < a[2]

    for g in gold:
        counts[g[0]]["tp" if any(overlaps(g, p) for p in predicted) else "fn"] += 1
    for p in set(predicted):
        if not any(overlaps(p, g) for g in gold):
            counts[p[0]]["fp"] += 1


def summarize(counts: dict[str, Counter]) -> dict:
    per_type = {t: prf(c) for t, c in counts.items()}
    return {"overall": prf(sum(counts.values(), Counter())), "per_type": per_type}


def prf(c: Counter) -> dict:
    precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
    recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 3), "recall": round(recall, 3), "f1": round(f1, 3)} | {
        k: c[k] for k in ("tp", "fp", "fn")
    }


def print_pii_table(results: dict, num_texts: int) -> None:
    print(f"\nPII ({num_texts} texts; P / R / F1; tp fp fn)\n")
    names = list(results)
    print("| type | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    types = [*results[names[0]]["per_type"], "overall"]
    for t in types:
        cells = []
        for n in names:
            m = results[n]["overall"] if t == "overall" else results[n]["per_type"][t]
            cells.append(
                f"{m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f} ({m['tp']} {m['fp']} {m['fn']})"
            )
        print(f"| {t} | " + " | ".join(cells) + " |")
    print("| ms per text | " + " | ".join(str(results[n]["ms_per_text"]) for n in names) + " |")


# --- harm -----------------------------------------------------------------------------------


def evaluate_harm() -> dict:
    from llmloop.safety.harm import HEAD_PATH, INT8_HEAD_PATH

    rows = [json.loads(line) for line in (DATA_DIR / "harm_eval.jsonl").open()]
    heads = {"input (fp32)": HEAD_PATH, "output (int8)": INT8_HEAD_PATH}
    return {name: evaluate_head(name, path, rows) for name, path in heads.items()}


def evaluate_head(name: str, head_path: Path, rows: list[dict]) -> dict:
    from llmloop.safety.harm import HarmClassifier

    classifier = HarmClassifier.load(head_path)
    texts = [r["text"] for r in rows]
    started = time.perf_counter()
    results = [
        res
        for start in tqdm(range(0, len(texts), 32), desc="harm", leave=False)
        for res in classifier.classify(texts[start : start + 32])
    ]
    ms_per_text = 1000 * (time.perf_counter() - started) / len(texts)
    harmful = [(r, res) for r, res in zip(rows, results, strict=True) if r["label"] != "benign"]
    benign = [(r, res) for r, res in zip(rows, results, strict=True) if r["label"] == "benign"]
    tp = sum(res.flagged for _, res in harmful)
    fp = sum(res.flagged for _, res in benign)
    per_category = {}
    for category in sorted({r["label"] for r, _ in harmful}):
        hits = [res for r, res in harmful if r["label"] == category]
        per_category[category] = {
            "n": len(hits),
            "recall": round(sum(res.flagged for res in hits) / len(hits), 3),
            "category_recall": round(sum(res.categories[category] for res in hits) / len(hits), 3),
        }
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / len(harmful)
    summary = {
        "num_harmful": len(harmful),
        "num_benign": len(benign),
        "recall": round(recall, 3),
        "benign_fpr": round(fp / len(benign), 3),
        "precision": round(precision, 3),
        "f1": round(2 * precision * recall / (precision + recall), 3) if tp else 0.0,
        "ms_per_text_batched": round(ms_per_text, 2),
        "per_category": per_category,
        "false_positives": [r["text"] for r, res in benign if res.flagged],
        "missed": [r["text"] for r, res in harmful if not res.flagged],
    }
    print(f"\nHarm, {name} head ({len(harmful)} harmful, {len(benign)} benign, held out)\n")
    print("| harmful recall | benign FPR | precision | F1 | ms/text (batch 32) |")
    print("|---|---|---|---|---|")
    print(
        f"| {summary['recall']:.3f} | {summary['benign_fpr']:.3f} | {summary['precision']:.3f} "
        f"| {summary['f1']:.3f} | {summary['ms_per_text_batched']} |"
    )
    print("\n| category | n | flagged | right category |\n|---|---|---|---|")
    for category, m in per_category.items():
        print(f"| {category} | {m['n']} | {m['recall']:.3f} | {m['category_recall']:.3f} |")
    print("\nbenign flagged:", *summary["false_positives"], sep="\n  ")
    print("harmful missed:", *summary["missed"], sep="\n  ")
    return summary


# --- latency --------------------------------------------------------------------------------

PROMPT = (
    "Hi! Can you help me write an email to my landlord about the broken heating? "
    "My number is 010-1234-5678."
)
ANSWER = (
    "The heating system in your flat is the landlord's duty. Write politely and include dates. "
)


def measure_latency() -> dict:
    from llmloop.safety.guard import Guard
    from llmloop.safety.pii import detect
    from llmloop.safety.policy import load_policy, parse_policy

    guard = Guard(load_policy(None))  # the shipped heads: fp32 on input, int8 on output
    guard.check(PROMPT, "input")  # warm-up
    guard.check(ANSWER, "output")
    figures = {
        "detect_prompt": median_ms(lambda: detect(PROMPT), 200),
        "check_prompt": median_ms(lambda: guard.check(PROMPT, "input"), 30),
    }
    deltas = [(ANSWER * 12)[i : i + 4] for i in range(0, len(ANSWER) * 12, 4)]
    pii_only = Guard(parse_policy({"output": {"harm": {"default": "allow"}}}))
    for name, g in (("feed_per_delta_pii_only", pii_only), ("feed_per_delta_with_harm", guard)):
        started = time.perf_counter()
        stream = g.stream()
        for delta in deltas:
            stream.feed(delta)
        stream.finish()
        figures[name] = round(1000 * (time.perf_counter() - started) / len(deltas), 4)
    print("\nLatency, ms (median; feed: mean per 4-char delta over a 1080-char answer)\n")
    print("| " + " | ".join(figures) + " |\n|" + "---|" * len(figures))
    print("| " + " | ".join(str(v) for v in figures.values()) + " |")
    return figures


def median_ms(call, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        timings.append(1000 * (time.perf_counter() - started))
    return round(sorted(timings)[len(timings) // 2], 3)


if __name__ == "__main__":
    main()
