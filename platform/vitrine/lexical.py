"""Product-search text analysis for the re-ranker's word list: sizes and units written one way, query words the
catalog never uses corrected against its own vocabulary.

Why: shoppers write sizes many ways ("2x4", "1-1/2in.", "12 ft", '36"') and titles write them another
("2 in. x 4 in.", "1-1/2 in.", "12 ft."). ``bm25s``'s stock tokenizer keeps only words of two or more word
characters, so "1/2 in." loses all three tokens and "2x4" never meets "2 in. x 4 in.". Real query logs also
misspell ("toliet", "sealler") and join words ("inchesside"). ``normalise`` splits numbers from units,
dimensions at their "x" and mixed fractions, writes each unit one way ("inches", "in.", '"' -> "in") and keeps
one-character tokens; ``SpellCorrector`` replaces a query word of four or more letters that no catalog text
holds with the most frequent catalog word one edit away (a deletion, insertion, substitution or transposition),
or splits it in two known words. A word the shipped MiniLM's vocabulary holds whole ("black", "doug") is a real
word, never a typo, and stays: on Myntra's colourless titles, where no title holds a colour, the corrector would
otherwise read "black" as "back" (nDCG@10 0.143 without the guard, 0.153 with it; Home Depot 0.414 and 0.413).

``ProductBM25Retriever`` is BM25 over titles analysed this way. The stock ``BM25Retriever`` stays the baseline
the harness reports; this one is a Vitrine part and a switch of the re-ranker (``vitrine rerank --lexical``), so
its worth is measured (docs/quality.md#product-text-analysis).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np

log = logging.getLogger(__name__)

_UNITS = (  # "sq" / "cu" first: the unit after them is then read as one ("sq. feet" -> "sq ft")
    (r"square|sq\.?", "sq"), (r"cubic|cu\.?", "cu"),
    (r"inches|inch|in\.?|''|\"", "in"), (r"feet|foot|ft\.?|'", "ft"), (r"gallons|gallon|gal\.?", "gal"),
    (r"pounds|pound|lbs\.?|lb\.?", "lb"), (r"ounces|ounce|oz\.?", "oz"), (r"watts|watt|w\b", "watt"),
    (r"volts|volt|v\b", "volt"), (r"amps|amp|a\b", "amp"),
    (r"degrees|degree|deg\.?|°", "deg"), (r"millimeters|millimeter|mm\.?", "mm"),
    (r"centimeters|centimeter|cm\.?", "cm"),
)
# a unit word counts only after a number (or after "sq" / "cu": "1,000 sq. feet")
_UNIT = [(re.compile(r"(?:(?<=\d )|(?<=sq )|(?<=cu ))(?:" + pat + r")(?![a-z])"), rep) for pat, rep in _UNITS]
_TOKEN = re.compile(r"\d+(?:\.\d+)?(?:/\d+)?|[a-z]+")
_WORD = re.compile(r"[a-z]+|[^a-z]+")


def normalise(text: str) -> str:
    """Lower-cased text with numbers split from units and dimensions, each unit written one way
    (``'2x4x8 ft.'`` -> ``'2 x 4 x 8 ft'``, ``'1-1/2in.'`` -> ``'1 1/2 in'``)."""
    s = text.lower().replace("&amp;", "&")
    s = re.sub(r"(\d),(\d{3})\b", r"\1\2", s)           # 1,000 -> 1000
    s = re.sub(r"(\d)-(\d+/\d+)", r"\1 \2", s)           # 1-1/2 -> 1 1/2
    s = re.sub(r"(\d)\s*[x*]\s*(?=\.?\d)", r"\1 x ", s)  # 2x4, 2 x4 -> 2 x 4
    s = re.sub(r"(?<![a-z])x(?=\d)", " x ", s)            # 2 in. x12 -> 2 in.  x 12
    s = re.sub(r"(\d)\s*(\"|'')", r"\1 \2 ", s)          # 36" -> 36 "
    s = re.sub(r"(\d)-?(?=[a-z'])", r"\1 ", s)           # 12ft, 600-watt -> 12 ft, 600 watt
    for pattern, unit in _UNIT:
        s = pattern.sub(unit, s)
    return s


def words(text: str) -> list[str]:
    """``normalise``'s tokens: words, numbers and fractions, one-character ones kept."""
    return _TOKEN.findall(normalise(text))


class SpellCorrector:
    """Corrects query words that no catalog text holds: the most frequent catalog word one edit away, else a
    split into two catalog words; a word it cannot place is kept as written."""

    def __init__(self, texts: Iterable[str], min_length: int = 4, known: Iterable[str] = ()) -> None:
        """``known``: real words kept as written even when no catalog text holds them."""
        self.counts = Counter(w for t in texts for w in re.findall(r"[a-z]+", t.lower()))
        self.known = frozenset(known)
        self.min_length = min_length
        self.deleted: dict[str, list[str]] = defaultdict(list)  # each word's one-letter deletions -> the words
        for w in self.counts:
            if len(w) >= min_length - 1:
                for d in {w[:i] + w[i + 1:] for i in range(len(w))}:
                    self.deleted[d].append(w)

    def word(self, w: str) -> str:
        """``w`` itself when the catalog holds it (or it is short), else its correction."""
        if len(w) < self.min_length or w in self.counts or w in self.known:
            return w
        deletions = {w[:i] + w[i + 1:] for i in range(len(w))}
        near = set(self.deleted.get(w, ()))                                   # an insertion in w
        near |= {d for d in deletions if d in self.counts}                     # a deletion from w
        near |= {c for d in deletions for c in self.deleted.get(d, ()) if len(c) == len(w)}  # substitution / swap
        if near:
            return max(sorted(near), key=lambda c: self.counts[c])
        best: tuple[int, str] | None = None
        for i in range(3, len(w) - 2):
            a, b = w[:i], w[i:]
            score = min(self.counts.get(a, 0), self.counts.get(b, 0))
            if score > 2 and (best is None or score > best[0]):
                best = (score, f"{a} {b}")
        return best[1] if best else w

    def correct(self, query: str) -> str:
        """The query with each unknown word corrected (everything else as written, lower-cased)."""
        return "".join(self.word(p) if p[0].isalpha() else p for p in _WORD.findall(query.lower()))


@functools.cache
def dictionary_words() -> frozenset[str]:
    """The whole alphabetic words of the shipped MiniLM's WordPiece vocabulary (about 22k): real words the spelling
    corrector leaves alone; empty (with a warning) when the weights package is missing."""
    from vitrine.errors import ConfigError
    from vitrine.model.encoders import resolve_text_encoder

    try:
        lines = (resolve_text_encoder("minilm") / "vocab.txt").read_text(encoding="utf-8").split()
    except (ConfigError, OSError) as exc:
        log.warning("spelling correction without a dictionary (%s): real words a catalog lacks may be changed", exc)
        return frozenset()
    return frozenset(w for w in lines if w.isalpha() and w.islower())


class ProductBM25Retriever:
    """BM25 over ``normalise``d, stemmed titles (stopwords dropped, numbers kept whole), queries spell-corrected
    against the titles' own words.

    ``k1`` 0.9 and ``b`` 0.4 (the Anserini defaults for short documents) rather than ``bm25s``'s 1.5 / 0.75:
    chosen on the Home Depot TRAIN queries (nDCG@10 0.421 against 0.413 at 1.2 / 0.75), where titles are short
    and a long title should not be pushed down as much as a long web page.
    """

    name = "bm25-product"

    def __init__(self, product_ids: list[str], titles: list[str], k1: float = 0.9, b: float = 0.4,
                 spell: bool = True) -> None:
        import bm25s
        import Stemmer

        self.ids = product_ids
        self.lock = threading.Lock()  # PyStemmer's stemmer must not be called concurrently
        self.stemmer = Stemmer.Stemmer("english")
        self.stopwords = set(bm25s.stopwords.STOPWORDS_EN)
        self.speller = SpellCorrector(titles, known=dictionary_words()) if spell else None
        self.index = bm25s.BM25(k1=k1, b=b)
        canon: dict[str, str] = {}
        docs = [[canon.setdefault(w, w) for w in self.analyse(t)] for t in titles]
        if not canon:
            from vitrine.errors import ConfigError

            raise ConfigError(f"word BM25 over {len(titles)} titles: none holds a word or number to index; "
                              "check the catalog's title column")
        self.index.index(docs, show_progress=False)

    def analyse(self, text: str) -> list[str]:
        """Index terms of a text: ``words`` without stopwords, words stemmed, numbers as written."""
        with self.lock:
            return [w if w[0].isdigit() else self.stemmer.stemWord(w) for w in words(text)
                    if w not in self.stopwords]

    def query_terms(self, query: str) -> list[str]:
        """A query's index terms after spelling correction."""
        return self.analyse(self.speller.correct(query) if self.speller else query)

    def top(self, queries: list[str], k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) as in ``BM25Retriever.top``: equal scores in row order, -1 / 0 pad."""
        from vitrine.evaluate import top_matching

        return top_matching(self.index, [self.query_terms(q) for q in queries], min(k, len(self.ids)), allowed)

    def search(self, queries: list[str], k: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """The harness's interface: the same as ``top``."""
        return self.top(queries, k, allowed)


WORD_LISTS = {"bm25": "BM25Retriever: bm25s's stock tokens (the baseline)",
              "product": "ProductBM25Retriever: units and numbers normalised, queries spell-corrected"}


def check_word_list(kind: str, flag: str = "lexical") -> None:
    """A clear error naming ``flag`` unless ``kind`` is a key of ``WORD_LISTS``."""
    if kind not in WORD_LISTS:
        from vitrine.errors import ConfigError

        raise ConfigError(f"{flag}={kind!r}: choose one of {', '.join(WORD_LISTS)} (product: units normalised, "
                          "queries spell-corrected; bm25: the stock baseline's tokens)")


def word_retriever(kind: str, product_ids: list[str], titles: list[str]):  # noqa: ANN201 - either retriever
    """The re-ranker's word-level BM25 list named by ``kind`` (a key of ``WORD_LISTS``)."""
    from vitrine.evaluate import BM25Retriever

    check_word_list(kind)
    return BM25Retriever(product_ids, titles) if kind == "bm25" else ProductBM25Retriever(product_ids, titles)
