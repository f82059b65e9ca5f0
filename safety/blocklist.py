"""A deployment's own block list, per direction: terms and regular expressions.

Terms match case-insensitively on the normalized text (``safety.normalize``: invisible
characters dropped, full-width forms folded), so ``ＰＲＯＪＥＣＴ falcon`` or ``pro\u200bject`` still
match ``project falcon``. A term that starts or ends with a letter or digit of a Latin-script
word must not run on into a Latin-script word (``ass`` does not match ``class``, ``falcon``
matches ``falcon에``); a term in a script written without spaces between a word and its particles
(Korean ``코드명`` in ``코드명은``) matches anywhere. Regexes are the operator's own and match the original text, with the ``regex``
module and a time limit per text: a pattern that backtracks for longer than ``REGEX_TIMEOUT_S``
counts as a match (fail closed), so a slow pattern blocks instead of stalling the server.
"""

import re
from dataclasses import dataclass, field

import regex

from llmloop.safety.errors import PolicyError
from llmloop.safety.normalize import normalize

MAX_ENTRIES = 10_000  # terms plus regexes, per direction
MAX_ENTRY_CHARS = 1000
REGEX_TIMEOUT_S = 0.05  # per text and pattern set; a longer search blocks the text


@dataclass(frozen=True)
class Match:
    rule: str
    """``term`` or ``regex``: which list matched (never the entry: the log must not spell it)."""
    start: int
    end: int
    """Offsets into the text given to ``find`` (for a term: where the normalized match came from)."""


@dataclass(frozen=True)
class Blocklist:
    terms: tuple[str, ...] = ()
    """Blocked words or phrases, case-insensitive."""
    regexes: tuple[str, ...] = ()
    """Blocked patterns (``regex`` module syntax), matched as written (add ``(?i)`` for case)."""
    _terms: "re.Pattern | None" = field(default=None, init=False, repr=False, compare=False)
    _regexes: "regex.Pattern | None" = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.terms:
            alternatives = sorted({_term_pattern(t) for t in self.terms}, key=len, reverse=True)
            object.__setattr__(self, "_terms", re.compile("|".join(alternatives), re.IGNORECASE))
        if self.regexes:
            joined = "|".join(f"(?:{p})" for p in self.regexes)
            object.__setattr__(self, "_regexes", regex.compile(joined))

    def __bool__(self) -> bool:
        return bool(self.terms or self.regexes)

    def find(self, text: str) -> Match | None:
        """The first entry found in ``text`` (terms first), or None."""
        if self._terms is not None:
            normalized = normalize(text)
            if m := self._terms.search(normalized.text):
                return Match("term", *normalized.span(m.start(), m.end()))
        if self._regexes is not None:
            try:
                m = self._regexes.search(text, timeout=REGEX_TIMEOUT_S)
            except TimeoutError:
                return Match("regex", 0, len(text))
            if m:
                return Match("regex", m.start(), m.end())
        return None


def parse_blocklist(data: object, where: str) -> Blocklist:
    """``{terms: [...], regexes: [...]}`` from a policy file; a bad entry names its key."""
    if not isinstance(data, dict):
        raise PolicyError(f"{where}: expected a mapping with terms and/or regexes, got {data!r}")
    unknown = sorted(str(k) for k in data if k not in ("terms", "regexes"))
    if unknown:
        raise PolicyError(f"{where}: unknown key {unknown[0]!r}; known keys: regexes, terms")
    terms = _entries(data.get("terms") or [], f"{where}.terms")
    regexes = _entries(data.get("regexes") or [], f"{where}.regexes")
    if len(terms) + len(regexes) > MAX_ENTRIES:
        raise PolicyError(f"{where}: at most {MAX_ENTRIES} terms and regexes together")
    for i, pattern in enumerate(regexes):
        try:
            regex.compile(pattern)
        except regex.error as e:
            raise PolicyError(f"{where}.regexes[{i}]: not a valid regex ({e})") from e
    if any(not normalize(t).text.strip() for t in terms):
        raise PolicyError(f"{where}.terms: an entry is empty once invisible characters are dropped")
    return Blocklist(terms=tuple(normalize(t).text.strip() for t in terms), regexes=regexes)


def _entries(data: object, where: str) -> tuple[str, ...]:
    if not isinstance(data, list):
        raise PolicyError(f"{where}: expected a list of strings, got {data!r}")
    for i, entry in enumerate(data):
        if not isinstance(entry, str) or not entry.strip():
            raise PolicyError(f"{where}[{i}]: expected a non-empty string, got {entry!r}")
        if len(entry) > MAX_ENTRY_CHARS:
            raise PolicyError(f"{where}[{i}]: longer than {MAX_ENTRY_CHARS} characters")
    return tuple(data)


_LATIN_WORD = "0-9A-Za-z\u00c0-\u024f"  # a Korean particle after an English term is no word


def _term_pattern(term: str) -> str:
    # a boundary only where the term starts/ends with a Latin-script word character
    before = rf"(?<![{_LATIN_WORD}])" if _is_latin_word_char(term[0]) else ""
    after = rf"(?![{_LATIN_WORD}])" if _is_latin_word_char(term[-1]) else ""
    return before + re.escape(term) + after


def _is_latin_word_char(ch: str) -> bool:
    return ch.isalnum() and ch <= "\u024f"
