"""Retrieval metrics (Recall@K, nDCG@K, MRR@K) and the retrievers the harness compares.

Relevance: a judged product is *relevant* when ``label >= relevant_min`` (default 2.0: on Home Depot's
1-3 scale, at least "relevant" on average; derived Myntra judgments use 3.0). nDCG uses graded gain
``max(0, label - gain_offset)`` (default offset 1.0, so Home Depot's 1 = irrelevant gains 0, 3 gains 2) with
the linear-gain DCG ``gain / log2(rank + 1)``; the ideal DCG is computed from the query's judged labels.
Unjudged retrieved products count as irrelevant. Queries without any relevant product are skipped (counted).
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from vitrine.errors import ConfigError


@dataclass(frozen=True)
class Relevance:
    """How labels become relevance and gain."""

    relevant_min: float = 2.0
    gain_offset: float = 1.0

    def gain(self, label: float) -> float:
        """Graded gain of a label."""
        return max(0.0, label - self.gain_offset)


def judgments_by_query(judgments: pa.Table) -> dict[str, dict[str, float]]:
    """``{query: {product_id: label}}`` (the max label when a pair is judged twice)."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for q, pid, label in zip(judgments.column("query").to_pylist(), judgments.column("product_id").to_pylist(),
                             judgments.column("label").to_pylist(), strict=True):
        out[q][pid] = max(float(label), out[q].get(pid, float("-inf")))
    return dict(out)


def recall_at_k(ranked: list[str], labels: dict[str, float], k: int, rel: Relevance) -> float:
    """Share of the query's relevant products found in the top k."""
    relevant = {p for p, lab in labels.items() if lab >= rel.relevant_min}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


def ndcg_at_k(ranked: list[str], labels: dict[str, float], k: int, rel: Relevance) -> float:
    """Graded nDCG@k against the ideal ordering of the judged labels."""
    dcg = sum(rel.gain(labels.get(p, 0.0)) / math.log2(i + 2) for i, p in enumerate(ranked[:k]))
    ideal = sorted((rel.gain(v) for v in labels.values()), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at_k(ranked: list[str], labels: dict[str, float], k: int, rel: Relevance) -> float:
    """Reciprocal rank of the first relevant product within the top k (0 if none)."""
    for i, p in enumerate(ranked[:k]):
        if labels.get(p, float("-inf")) >= rel.relevant_min:
            return 1.0 / (i + 1)
    return 0.0


def score_run(run: dict[str, list[str]], judged: dict[str, dict[str, float]], rel: Relevance,
              ks: Iterable[int] = (10, 100)) -> dict[str, float]:
    """Mean metrics over the judged queries that have at least one relevant product."""
    usable = [q for q, labels in judged.items() if any(v >= rel.relevant_min for v in labels.values())]
    if not usable:
        raise ConfigError("no judged query has a relevant product; lower --relevant-min or check the labels")
    out: dict[str, float] = {"queries": float(len(usable)),
                             "queries_without_relevant": float(len(judged) - len(usable))}
    for k in ks:
        out[f"recall@{k}"] = float(np.mean([recall_at_k(run.get(q, []), judged[q], k, rel) for q in usable]))
    out["ndcg@10"] = float(np.mean([ndcg_at_k(run.get(q, []), judged[q], 10, rel) for q in usable]))
    out["mrr@10"] = float(np.mean([mrr_at_k(run.get(q, []), judged[q], 10, rel) for q in usable]))
    return out


def recall_curve(run: dict[str, list[str]], judged: dict[str, dict[str, float]], rel: Relevance,
                 ks: Iterable[int]) -> dict[int, float]:
    """Recall@K for several K (for the plot)."""
    usable = [q for q, labels in judged.items() if any(v >= rel.relevant_min for v in labels.values())]
    return {k: float(np.mean([recall_at_k(run.get(q, []), judged[q], k, rel) for q in usable])) for k in ks}


class BM25Retriever:
    """BM25 over titles (``bm25s``, English stopwords, Snowball stemming)."""

    name = "bm25"

    def __init__(self, product_ids: list[str], titles: list[str]) -> None:
        import bm25s
        import Stemmer

        self.ids = product_ids
        self.lock = threading.Lock()  # PyStemmer's stemmer must not be called concurrently (Serve's thread pool)
        self.stemmer = Stemmer.Stemmer("english")
        self.index = bm25s.BM25()
        self.index.index(bm25s.tokenize(titles, stopwords="en", stemmer=self.stemmer, show_progress=False),
                         show_progress=False)

    def search(self, queries: list[str], k: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, row positions) per query; ``allowed`` (N,) bool keeps only those rows (filters: the
        others score 0, and the caller drops zero scores)."""
        import bm25s

        k = min(k, len(self.ids))
        mask = None if allowed is None else allowed.astype(np.float32)
        with self.lock:
            tokens = bm25s.tokenize(queries, stopwords="en", stemmer=self.stemmer, show_progress=False)
            rows, scores = self.index.retrieve(tokens, k=k, show_progress=False, n_threads=0, weight_mask=mask)
        return scores, rows

    def top(self, queries: list[str], k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) by BM25 score, equal scores in row order, only rows that match a query term
        (``-1`` / 0 pad the rest); ``allowed`` as in ``search``. The re-ranker's candidates come from here.

        Same scores as ``search``, but deterministic among ties (``bm25s``'s partition orders them arbitrarily,
        and a ranker's rank features read that order) and 18-36x faster per query
        (``bench/serve/bm25_ties.py``): only the matching rows are ranked, not the whole catalog.
        """
        import bm25s

        with self.lock:
            words = bm25s.tokenize(queries, stopwords="en", stemmer=self.stemmer, show_progress=False,
                                   return_ids=False)
        return top_matching(self.index, [list(w) for w in words], k, allowed)


def top_matching(index, words: list[list[str]], k: int, allowed: np.ndarray | None = None  # noqa: ANN001
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the top-k ``(scores, rows)`` of a ``bm25s`` index among the rows that match a query term:
    equal scores in row order, ``-1`` / 0 pads; ``allowed`` (N,) bool keeps only those rows."""
    mask = None if allowed is None else allowed.astype(np.float32)
    out_s = np.zeros((len(words), k), np.float32)
    out_r = np.full((len(words), k), -1, np.int64)
    for i, w in enumerate(words):
        w = [t for t in w if t in index.vocab_dict]
        if not w:
            continue
        scores = index.get_scores(w, weight_mask=mask)
        hit = np.flatnonzero(scores > 0)
        if len(hit) > k:
            kth = np.partition(scores[hit], len(hit) - k)[len(hit) - k]
            hit = hit[scores[hit] >= kth]
        hit = hit[np.lexsort((hit, -scores[hit]))][:k]
        out_r[i, :len(hit)], out_s[i, :len(hit)] = hit, scores[hit]
    return out_s, out_r


def char_grams(text: str, n: int = 3) -> list[str]:
    """Character n-grams of each lower-cased word, with ``#`` marking its start and end (``"#to", "tol", ...``)."""
    out: list[str] = []
    for word in text.lower().split():
        w = f"#{word}#"
        out += [w[i:i + n] for i in range(max(1, len(w) - n + 1))]
    return out


class CharGramRetriever:
    """BM25 over the character trigrams of titles: a third candidate list for the re-ranker.

    Real query logs misspell ("toliet"), split or join words ("dish washer", "hamptonbay") and cut them short
    ("galv"), and word-level BM25 then finds nothing. Over character trigrams those queries still share most of
    their grams with the title they meant. On the Home Depot validation queries its top 100 alone holds 0.744
    of the relevant products, against 0.710 for word BM25 and 0.713 for the trained dense model, and adding its
    top 200 to theirs raises the candidates' recall from 0.870 to 0.895
    (docs/quality.md#a-third-candidate-list-bm25-over-character-trigrams).
    """

    name = "bm25-chargrams"

    def __init__(self, product_ids: list[str], titles: list[str]) -> None:
        import bm25s

        self.ids = product_ids
        self.index = bm25s.BM25()
        # one string object per distinct gram (about 15k on Home Depot), not one per occurrence (3.3M): this
        # halves the memory that building the index leaves in the process (238 -> 121 MB for Home Depot)
        canon: dict[str, str] = {}
        self.index.index([[canon.setdefault(g, g) for g in char_grams(t)] for t in titles], show_progress=False)

    def top(self, queries: list[str], k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) as in ``BM25Retriever.top``."""
        return top_matching(self.index, [char_grams(q) for q in queries], k, allowed)


class DenseRetriever:
    """Exact inner-product search over product vectors given query vectors (any encoder); ``source`` names where
    the product vectors are stored, when they are (reported so they can be reused with ``--embeddings``)."""

    def __init__(self, name: str, product_vectors: np.ndarray, encode_queries,  # noqa: ANN001
                 source: str = "") -> None:
        import faiss

        self.name, self.source = name, source
        self.index = faiss.IndexFlatIP(product_vectors.shape[1])
        self.index.add(np.ascontiguousarray(product_vectors, dtype=np.float32))
        self.encode_queries = encode_queries

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, row positions) per query."""
        q = np.ascontiguousarray(self.encode_queries(queries), dtype=np.float32)
        return self.index.search(q, min(k, self.index.ntotal))


class HybridRetriever:
    """Fusion of a lexical and a dense retriever: reciprocal-rank (``rrf``) or a convex score blend (``convex``).

    ``rrf`` scores ``sum_r w_r / (rrf_k + rank_r)``: it needs no score calibration between BM25 (unbounded) and
    cosine scores and is the usual first hybrid a search team ships. ``convex`` scores
    ``w * dense_norm + (1 - w) * bm25_norm`` with each side scaled per query onto [0, 1]: BM25 by its top score
    (its floor is 0, no term matched), the dense cosine by min-max over its top ``depth`` (a product outside that
    list gets the floor, 0). Rank fusion throws away how far apart two scores are, which a convex blend keeps:
    the published comparisons of the two (Bruch et al., 2023) favour the blend once its weight is tuned, so both
    are switches here. Each side contributes its top ``depth``; a BM25 hit with score 0 (no query term in the
    title) is not a hit. ``dense_weight`` in [0, 1] is the dense share (0.5 = plain RRF).
    """

    FUSIONS = ("rrf", "convex")

    def __init__(self, lexical, dense, depth: int = 200, rrf_k: float = 60.0,  # noqa: ANN001 - retrievers
                 dense_weight: float = 0.5, fusion: str = "rrf") -> None:
        if not 0.0 <= dense_weight <= 1.0:
            raise ConfigError(f"hybrid dense_weight={dense_weight}: use a value in [0, 1]")
        if depth < 1:
            raise ConfigError(f"hybrid depth={depth}: take at least 1 candidate from each side")
        if fusion not in self.FUSIONS:
            raise ConfigError(f"hybrid fusion={fusion!r}: use one of {', '.join(self.FUSIONS)}")
        self.name = f"hybrid-{fusion}({lexical.name}+{dense.name})"
        self.lexical, self.dense = lexical, dense
        self.depth, self.rrf_k, self.dense_weight, self.fusion = depth, rrf_k, dense_weight, fusion

    def _votes(self, rows: np.ndarray, scores: np.ndarray, lexical: bool) -> dict[int, float]:
        """One side's contribution per row position for one query (before its weight)."""
        hits = [(int(r), float(s)) for r, s in zip(rows, scores, strict=True) if r >= 0 and (s > 0 or not lexical)]
        if self.fusion == "rrf":
            return {r: 1.0 / (self.rrf_k + rank) for rank, (r, _) in enumerate(hits, start=1)}
        if not hits:
            return {}
        top = max(s for _, s in hits)
        floor = 0.0 if lexical else min(s for _, s in hits)
        span = top - floor
        return {r: (s - floor) / span if span > 0 else 1.0 for r, s in hits}

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (fused scores, row positions) per query; -1 pads when fewer than k products were hit."""
        depth = max(k, self.depth)
        l_scores, l_rows = self.lexical.search(queries, depth)
        d_scores, d_rows = self.dense.search(queries, depth)
        out_s = np.zeros((len(queries), k), np.float32)
        out_p = np.full((len(queries), k), -1, np.int64)
        for i in range(len(queries)):
            fused: dict[int, float] = defaultdict(float)
            for row, vote in self._votes(l_rows[i], l_scores[i], lexical=True).items():
                fused[row] += (1.0 - self.dense_weight) * vote
            for row, vote in self._votes(d_rows[i], d_scores[i], lexical=False).items():
                fused[row] += self.dense_weight * vote
            top = sorted(fused.items(), key=lambda kv: -kv[1])[:k]
            out_p[i, :len(top)] = [r for r, _ in top]
            out_s[i, :len(top)] = [s for _, s in top]
        return out_s, out_p
