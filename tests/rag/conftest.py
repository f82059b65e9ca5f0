"""Fakes and fixtures for the rag tests: a bag-of-words embedder, a small corpus, a real embedder."""

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

DIM = 64


class FakeEmbedder:
    """Hashing-trick bag of words: texts sharing words get similar unit vectors; instant."""

    name = "fake-bow"
    dim = DIM
    batch_size = 16

    def __init__(self) -> None:
        self.num_encoded = 0

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        self.num_encoded += len(texts)
        vectors = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                vectors[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % DIM] += 1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-9)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(text.split()) for text in texts]


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture(scope="session")
def real_embedder():
    """The shipped all-MiniLM-L6-v2, loaded once for the session."""
    from llmloop.rag.embed import Embedder

    return Embedder()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Four small documents in three formats, one in a sub-directory."""
    root = tmp_path / "docs"
    (root / "animals").mkdir(parents=True)
    (root / "volcanoes.md").write_text(
        "# Volcanoes\n\nA volcano is a rupture in the crust of a planet where lava, ash and gases "
        "escape from a magma chamber below the surface.\n\n## Eruptions\n\nAn eruption happens "
        "when pressure in the magma chamber rises until magma breaks through the rock above.\n"
    )
    (root / "baking.txt").write_text(
        "Bread baking\n============\n\nYeast ferments the sugars in flour and releases carbon "
        "dioxide, which makes the dough rise before it goes into a hot oven.\n"
    )
    (root / "animals" / "octopus.html").write_text(
        "<html><head><title>Octopus</title></head><body><h1>The octopus</h1>"
        "<p>An octopus has three hearts and blue blood; it can change colour to hide.</p>"
        "<script>var tracking = 1;</script></body></html>"
    )
    (root / "animals" / "tides.md").write_text(
        "# Tides\n\nTides are the rise and fall of sea levels caused by the gravity of the moon "
        "and the sun acting on the oceans of the earth.\n"
    )
    return root
