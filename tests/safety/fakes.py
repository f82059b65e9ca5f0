"""A HarmClassifier whose encoder is a keyword lookup: the real head logic, no MiniLM."""

import numpy as np

from llmloop.safety.harm import BENIGN, CATEGORIES, HarmClassifier, HarmHead

CLASSES = (BENIGN, *CATEGORIES)
KEYWORDS = {"sarin": "weapons_mass_harm", "nerve agent": "weapons_mass_harm", "slur": "hate"}


def fake_encode(texts: list[str]) -> np.ndarray:
    """One-hot over CLASSES: the category of the first keyword in the text, else benign."""
    out = np.zeros((len(texts), len(CLASSES)), dtype=np.float32)
    for i, text in enumerate(texts):
        hits = [c for k, c in KEYWORDS.items() if k in text.lower()]
        out[i, CLASSES.index(hits[0]) if hits else 0] = 1.0
    return out


def fake_classifier() -> HarmClassifier:
    head = HarmHead(
        classes=CLASSES,
        coef=np.eye(len(CLASSES), dtype=np.float32) * 10.0,
        intercept=np.zeros(len(CLASSES), dtype=np.float32),
        threshold=0.5,
        metadata={},
    )
    return HarmClassifier(fake_encode, head)
