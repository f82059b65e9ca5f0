"""The harm classifier's data: every row labelled and sourced, held-out sets kept out of training."""

import json
from pathlib import Path

import pytest

from llmloop.safety.harm import BENIGN, CATEGORIES
from llmloop.safety.train_harm import TRAIN_PATH

EVAL_DIR = Path(__file__).parents[2] / "benchmarks" / "data" / "safety"
EVAL_SETS = sorted(EVAL_DIR.glob("harm_*.jsonl"))


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("path", [TRAIN_PATH, *EVAL_SETS], ids=lambda p: p.name)
def test_every_row_has_a_label_a_language_and_a_source(path: Path) -> None:
    for row in rows(path):
        assert row["label"] in (BENIGN, *CATEGORIES), row
        assert row["text"].strip() and row["lang"] and row["source"], row


def test_no_held_out_text_is_trained_on() -> None:
    trained = {row["text"].strip().lower() for row in rows(TRAIN_PATH)}
    for path in EVAL_SETS:
        assert not trained & {row["text"].strip().lower() for row in rows(path)}, path.name


def test_the_public_sets_are_there_and_whole() -> None:
    multijail = rows(EVAL_DIR / "harm_multijail.jsonl")
    assert {row["lang"] for row in multijail} == {
        "en", "ko", "zh", "it", "vi", "ar", "th", "bn", "sw", "jv"
    }  # fmt: skip
    assert len(multijail) == 10 * len({row["multijail_id"] for row in multijail})
    xstest = rows(EVAL_DIR / "harm_xstest.jsonl")
    assert len(xstest) == 450
    assert sum(row["label"] == BENIGN for row in xstest) == 250
    simple_safety = rows(EVAL_DIR / "harm_simple_safety.jsonl")
    assert len(simple_safety) == 100 and BENIGN not in {row["label"] for row in simple_safety}
