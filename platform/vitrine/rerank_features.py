"""The re-ranker's candidate features computed with array operations, one query's candidates at a time.

Why: the served re-ranked search spends most of its Python time on features, and a loop over ~400 candidates
of a query costs milliseconds where numpy over the same arrays costs a fraction of one. ``TitleIndex`` holds
the catalog's title tokens as integer ids (CSR), their joined texts and each distinct token's character
trigram ids (CSR as well); ``TitleIndex.match`` turns one query and many candidate rows into the ten
title-match features of ``rerank.FEATURES``. ``lexical_hits`` and ``lookup`` give every candidate its
retrievers' scores and ranks the same way. The definitions are unchanged from the per-candidate loop they
replace (feature version 3), and tests/unit/test_rerank.py checks them against a per-pair reference on real
titles.
"""

from __future__ import annotations

import re

import numpy as np

_TOKEN = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
MATCH_FEATURES = 10  # query_coverage .. fuzzy_coverage


def tokens(text: str) -> list[str]:
    """Lower-cased word / number tokens with a light plural strip (``"Screws"`` -> ``"screw"``)."""
    out = []
    for t in _TOKEN.findall(text.lower()):
        if len(t) > 3 and t.endswith("s") and not t.endswith("ss"):
            t = t[:-1]
        out.append(t)
    return out


def word_trigrams(token: str) -> set[str]:
    """The distinct character trigrams of ``#token#`` (``"bolt"`` -> ``{"#bo", "bol", "olt", "lt#"}``)."""
    from vitrine.evaluate import char_grams

    return set(char_grams(token))


def competition_ranks(scores: np.ndarray) -> np.ndarray:
    """Ranks of a descending score list where equal scores share the rank of the first of them (0-based)."""
    scores = np.asarray(scores)
    if not len(scores):
        return np.zeros(0, np.int64)
    first = np.r_[True, scores[1:] != scores[:-1]]
    return np.maximum.accumulate(np.where(first, np.arange(len(scores)), 0))


class TitleIndex:
    """Every catalog title as token ids, joined text and trigram sets, for ``match`` over many candidates."""

    def __init__(self, titles: list[str]) -> None:
        vocab: dict[str, int] = {}
        ids: list[int] = []
        lengths = np.zeros(len(titles), np.int64)
        texts = []
        for i, title in enumerate(titles):
            words = tokens(title)
            ids.extend(vocab.setdefault(w, len(vocab)) for w in words)
            lengths[i] = len(words)
            texts.append(" ".join(words))
        self.vocab = vocab
        self.starts = np.zeros(len(titles) + 1, np.int64)
        np.cumsum(lengths, out=self.starts[1:])
        self.ids = np.asarray(ids, np.int64)
        self.texts = texts
        self.grams: dict[str, int] = {}  # each distinct token's trigrams as ids, CSR like the titles
        words_grams = [[self.grams.setdefault(g, len(self.grams)) for g in word_trigrams(w)] for w in vocab]
        self.gram_counts = np.array([len(g) for g in words_grams], np.int64)
        self.gram_starts = np.zeros(len(vocab) + 1, np.int64)
        np.cumsum(self.gram_counts, out=self.gram_starts[1:])
        self.gram_ids = np.array([g for grams in words_grams for g in grams], np.int64)

    def match(self, query_tokens: list[str], rows: np.ndarray) -> np.ndarray:
        """``(len(rows), 10)`` float64: the title-match features of each row's title for one query.

        In ``FEATURES`` order: the share of distinct query tokens in the title; the share of adjacent query
        token pairs found as text in the title; the share of the query's number tokens in the title (-1 without
        any); whether the last and the first query token are in it; the query's and the title's token counts;
        the earliest title position of a query token over the title length (1 without any); whether the whole
        query is found as text in it; and the share of distinct query tokens counting a missing one by its best
        character-trigram Jaccard against a title token (misspellings such as "toliet": real logs hold many).
        """
        rows = np.asarray(rows, np.int64)
        n = len(rows)
        out = np.zeros((n, MATCH_FEATURES))
        length = self.starts[rows + 1] - self.starts[rows]
        seg = np.repeat(np.arange(n), length)
        offset = np.arange(len(seg)) - np.repeat(np.cumsum(length) - length, length)
        flat = self.ids[np.repeat(self.starts[rows], length) + offset]
        distinct = list(dict.fromkeys(query_tokens))
        present = np.zeros((n, len(distinct)), bool)
        known = [(j, self.vocab[t]) for j, t in enumerate(distinct) if t in self.vocab]
        for j, w in known:
            present[:, j] = np.bincount(seg[flat == w], minlength=n) > 0
        common = present.sum(1)
        width = max(len(distinct), 1)
        texts = [self.texts[r] for r in rows]  # substring tests: Python's `in` beats numpy's string find here
        out[:, 0] = common / width
        bigrams = [f"{a} {b}" for a, b in zip(query_tokens, query_tokens[1:], strict=False)]
        for b in bigrams:
            out[:, 1] += np.fromiter((b in t for t in texts), bool, n)
        out[:, 1] /= max(len(bigrams), 1)
        numbers = [j for j, t in enumerate(distinct) if any(c.isdigit() for c in t)]
        out[:, 2] = present[:, numbers].sum(1) / len(numbers) if numbers else -1.0
        if query_tokens:
            out[:, 3] = present[:, distinct.index(query_tokens[-1])]
            out[:, 4] = present[:, distinct.index(query_tokens[0])]
            phrase = " ".join(query_tokens)
            out[:, 8] = np.fromiter((phrase in t for t in texts), bool, n)
        out[:, 5] = len(query_tokens)
        out[:, 6] = length
        nonempty = length > 0
        heads = (np.cumsum(length) - length)[nonempty]  # where each non-empty title starts in ``flat``
        hit = np.isin(flat, [w for _, w in known])
        first = np.full(n, np.iinfo(np.int64).max)
        if len(flat):
            first[nonempty] = np.minimum.reduceat(np.where(hit, offset, first[0]), heads)
        matched = common > 0
        out[:, 7] = 1.0
        out[matched, 7] = first[matched] / length[matched]
        out[:, 9] = (common + self._fuzzy(distinct, flat, heads, nonempty, ~present)) / width
        return out

    def _fuzzy(self, distinct: list[str], flat: np.ndarray, heads: np.ndarray, nonempty: np.ndarray,
               missing: np.ndarray) -> np.ndarray:
        """Per row: the sum over query tokens missing from its title of their best trigram Jaccard there."""
        n = len(nonempty)
        if not missing.any() or not len(flat):
            return np.zeros(n)
        uniq, inverse = np.unique(flat, return_inverse=True)
        counts = self.gram_counts[uniq]  # every token has at least one trigram ("#a#")
        u_heads = np.cumsum(counts) - counts
        grams = self.gram_ids[np.repeat(self.gram_starts[uniq] - u_heads, counts) + np.arange(counts.sum())]
        jaccard = np.zeros((len(uniq), len(distinct)))
        in_query = np.zeros(len(self.grams) + 1, bool)
        for j, t in enumerate(distinct):
            own = word_trigrams(t)
            known = [self.grams[g] for g in own if g in self.grams]
            in_query[known] = True
            shared = np.add.reduceat(in_query[grams].astype(np.int64), u_heads)
            in_query[known] = False
            jaccard[:, j] = shared / (counts + len(own) - shared)
        best = np.zeros((n, len(distinct)))
        best[nonempty] = np.maximum.reduceat(jaccard[inverse], heads, axis=0)
        return np.where(missing, best, 0.0).sum(1)


def lexical_hits(scores: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, scores, competition ranks)`` of a lexical list's matching entries (score > 0, not padding)."""
    ranks = competition_ranks(scores)
    keep = (np.asarray(rows) >= 0) & (np.asarray(scores) > 0)
    return np.asarray(rows, np.int64)[keep], np.asarray(scores, np.float64)[keep], ranks[keep]


def lookup(keys: np.ndarray, values: list[np.ndarray], rows: np.ndarray, defaults: list[float]
           ) -> tuple[np.ndarray, list[np.ndarray]]:
    """For each of ``rows``: whether it is in ``keys``, and each of ``values`` at its key (or the default)."""
    if not len(keys):
        return np.zeros(len(rows), bool), [np.full(len(rows), float(d)) for d in defaults]
    order = np.argsort(keys, kind="stable")
    where = np.minimum(np.searchsorted(keys[order], rows), len(keys) - 1)
    found = keys[order][where] == rows
    return found, [np.where(found, np.asarray(v, np.float64)[order][where], d)
                   for v, d in zip(values, defaults, strict=True)]
