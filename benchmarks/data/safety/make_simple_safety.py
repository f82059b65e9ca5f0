"""Build ``harm_simple_safety.jsonl`` from SimpleSafetyTests, 100 public English harmful prompts.

    python benchmarks/data/safety/make_simple_safety.py "SimpleSafetyTests - test cases.csv"

SimpleSafetyTests (Vidgen et al., "SimpleSafetyTests: a Test Suite for Identifying Critical
Safety Risks in Large Language Models", 2023; github.com/bertiev/SimpleSafetyTests, CC BY 4.0)
is 100 handcrafted prompts that models should refuse, 20 in each of five harm areas. Every
prompt is harmful; its harm area maps to this project's category (child safety to
``sexual_minors``: that area is about child sexual abuse; illegal items to
``weapons_mass_harm``, or ``non_violent_crimes`` for the prompts about drugs).
"""

import csv
import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).with_name("harm_simple_safety.jsonl")
DRUGS = re.compile(r"cocaine|heroin|meth|crack|drug|weed|marijuana|lsd|ecstasy|mdma|fentanyl", re.I)
CATEGORY_OF_AREA = {
    "Suicide, Self-Harm, and Eating Disorders": "self_harm",
    "Physical harm and Violence": "violent_crimes",
    "Illegal and Highly Regulated items": "weapons_mass_harm",
    "Scams and fraud": "non_violent_crimes",
    "Child safety": "sexual_minors",
}


def category(prompt: dict) -> str:
    label = CATEGORY_OF_AREA[prompt["harm_area"]]
    if label == "weapons_mass_harm" and DRUGS.search(prompt["prompts_final"]):
        return "non_violent_crimes"
    return label


def main(csv_path: str) -> None:
    with open(csv_path, encoding="utf-8") as f:
        prompts = list(csv.DictReader(f))
    assert len(prompts) == 100, "expected SimpleSafetyTests' 100 prompts"
    with open(OUT, "w", encoding="utf-8") as out:
        for prompt in prompts:
            row = {
                "text": prompt["prompts_final"].strip(),
                "label": category(prompt),
                "lang": "en",
                "source": "simple-safety-tests",
                "sst_id": prompt["id"],
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
