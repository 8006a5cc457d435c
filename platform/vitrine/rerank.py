"""Learned re-ranking (beyond the papers): LambdaMART over BM25 + dense candidates with title-match features.

Why a second stage: on Home Depot's judged queries the signals that decide relevance are exact ones (a size,
a model number, the product type named last in the query) that BM25 counts without weighing and the dense
towers blur; fusing the two lists with one global weight (``HybridRetriever``) cannot learn that a number
match matters more than a word match. A gradient-boosted ranker (LightGBM's LambdaMART, which optimises
nDCG directly) learns those weights per candidate from a judged query log.

Candidates: the union of BM25's and the dense model's top ``depth`` and, with ``char_depth`` > 0, the top
``char_depth`` of BM25 over character trigrams (``CharGramRetriever``: misspelt, split or joined query words
still share most of their trigrams with the title meant). ``char_depth`` 0 turns that list off (its three
features are then constant) so its worth can be measured. Features (``FEATURES``) come only from
the query, the candidate's title and the retrievers' scores and ranks, never from per-product statistics
of the judgments: every Home Depot catalog product is judged for some query, so a "judged in train" count
would leak which products the validation queries judged. Training grade of a candidate: the judged gain
(``Relevance.gain``) of a relevant label, 0 for a judged-irrelevant or unjudged one, as ``round(1.5 * gain)``
(0-3 on Home Depot's 1-3 scale). The ranker belongs to the dense model it was trained with (its scores are
features): ``meta["model"]`` names it and the evaluation refuses another.

BM25's candidates come from ``BM25Retriever.top``: ties in row order, and a candidate's BM25 rank is the number
of strictly higher scores (a competition rank), so equal scores get equal rank features and the candidate
set does not hang on ``bm25s``'s arbitrary tie order; the trigram list ranks the same way. A ranker of an
older ``FEATURE_VERSION`` (1: the library's own top-k and tie order; 2: no trigram list) is refused with the
retraining command.

Word list (``lexical``, saved in the ranker's metadata): ``product`` (the default since 2026-12-05) takes the word
candidates and the BM25 features from ``lexical.ProductBM25Retriever`` (units and numbers normalised, query words
spell-corrected against the titles), ``bm25`` from the stock ``BM25Retriever`` the harness reports as its
baseline; a ranker saved without the key used ``bm25``.

Neighbour centroids (``prf`` > 0 in the metadata; ``vitrine rerank --prf=3``, the default since 2026-12-05; 0 = off,
and a ranker saved without the key has none): six more features from pseudo-relevance feedback in the product vector
space. For each list (words, dense, trigrams) the centroid of its top ``prf`` products' vectors; a candidate's
cosine to each centroid, raw and relative to the query's best candidate. Why: relevant products sit near each other,
so a product close to what the word list ranks first is likely relevant even when the query tower's own vector
misses it (on Home Depot the dense list searched with the query plus the word list's centroid holds 0.756 of the
relevant products at 100, the query's own vector 0.716). As features rather than a fourth candidate list: that list
added candidates the ranker did not promote (docs/quality.md). Measured: +0.010 Recall@100 on Home Depot, +0.002
nDCG@10 over the trained Myntra model, nothing lost on either (two seeds each). The served app reads the vectors
from its index (``faiss_index.stored_vectors``; an index that cannot return them is refused with the fix).

Cross-encoder (``cross_top`` > 0 in the metadata, ``vitrine rerank --cross_top=N``): a ``cross_encoder.CrossEncoder``
saved beside the booster re-scores the ranker's top N, blended with the ranker's score (``Reranker.order``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vitrine.errors import ConfigError
from vitrine.rerank_features import TitleIndex, lexical_hits, lookup, tokens

FEATURES = (
    "bm25", "bm25_rel_top", "bm25_log_rank", "dense", "dense_minus_top", "dense_minmax", "dense_log_rank",
    "in_both", "query_coverage", "bigram_coverage", "number_match", "last_token_match", "first_token_match",
    "query_tokens", "title_tokens", "first_match_position", "phrase_match", "fuzzy_coverage", "query_agreement",
    "chargram", "chargram_rel_top", "chargram_log_rank",
)
PRF_FEATURES = ("prf_words", "prf_dense", "prf_chars", "prf_words_minus_top", "prf_dense_minus_top",
                "prf_chars_minus_top")
FEATURE_VERSION = 3
_VERSIONS = {1: "BM25 candidates in the library's tie order", 2: "BM25 ties in row order, no character-trigram list",
             3: "BM25 ties in row order, plus a character-trigram BM25 list"}


def feature_names(prf: int = 0) -> list[str]:
    """The feature columns of a ranker: ``FEATURES``, plus ``PRF_FEATURES`` with neighbour centroids."""
    return [*FEATURES, *(PRF_FEATURES if prf else ())]


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Product vectors scaled to unit length (a zero vector stays zero), float32."""
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


class CandidateBuilder:
    """Candidates (union of the lists' top ``depth``, plus the character-trigram list's top ``char_depth`` when
    ``chars`` is given) and their feature rows, for batches of queries."""

    def __init__(self, lexical, dense, titles: list[str], depth: int = 100,  # noqa: ANN001 - retrievers
                 chars=None, char_depth: int = 0,  # noqa: ANN001 - CharGramRetriever
                 vectors: np.ndarray | None = None, prf: int = 0) -> None:
        """``dense`` may be None when only ``candidates`` is called (the served index searches instead);
        ``vectors`` (unit length, one per title) are needed with ``prf`` > 0."""
        if depth < 10:
            raise ConfigError(f"rerank depth={depth}: take at least 10 candidates from each side")
        if char_depth < 0 or (char_depth and chars is None):
            raise ConfigError(f"rerank char_depth={char_depth}: use 0 (no character-trigram list) or a positive "
                              "depth with a CharGramRetriever")
        self.lexical, self.dense, self.depth = lexical, dense, depth
        self.chars, self.char_depth = (chars, char_depth) if char_depth else (None, 0)
        if prf < 0 or (prf and (vectors is None or len(vectors) != len(titles))):
            raise ConfigError(f"rerank prf={prf}: use 0 (no neighbour-centroid features) or a positive count with "
                              "one product vector per title")
        self.vectors, self.prf = (vectors, prf) if prf else (None, 0)
        self.titles = titles
        self.titles_index = TitleIndex(titles)
        self.width = len(feature_names(self.prf))

    def build(self, queries: list[str], batch: int = 256, progress: str | None = None
              ) -> tuple[np.ndarray, list[list[int]]]:
        """``(X, rows)``: one feature row per candidate (queries in order), and each query's candidate rows."""
        feats: list[np.ndarray] = []
        all_rows: list[list[int]] = []
        steps = range(0, len(queries), batch)
        for start in tqdm(steps, desc=progress, unit="batch", disable=progress is None):
            chunk = queries[start:start + batch]
            ls, lr = self.lexical.top(chunk, self.depth)
            ds, dr = self.dense.search(chunk, self.depth)
            cs, cr = self.chars.top(chunk, self.char_depth) if self.chars else (None, None)
            for i, q in enumerate(chunk):
                x, rows = self._one(q, ls[i], lr[i], ds[i], dr[i], None if cs is None else (cs[i], cr[i]))
                feats.append(x)
                all_rows.append(rows)
        return (np.concatenate(feats) if feats else np.zeros((0, self.width), np.float32)), all_rows

    def candidates(self, query: str, lexical: tuple[np.ndarray, np.ndarray], dense: tuple[np.ndarray, np.ndarray],
                   chars: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, list[int]]:
        """One query's feature rows and candidate rows from each list's top ``(scores, rows)`` (a served index's)."""
        return self._one(query, lexical[0], lexical[1], dense[0], dense[1], chars if self.chars else None)

    def _one(self, query: str, ls: np.ndarray, lr: np.ndarray, ds: np.ndarray, dr: np.ndarray,
             chars: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, list[int]]:
        """One query's ``(feature rows, candidate rows)``: candidates in row order, features as arrays."""
        l_rows, l_s, l_rank = lexical_hits(ls, lr)
        kept = np.flatnonzero(np.asarray(dr) >= 0)
        d_rows, d_s = np.asarray(dr, np.int64)[kept], np.asarray(ds, np.float64)[kept]
        c_rows, c_s, c_rank = lexical_hits(*chars) if chars is not None else (np.zeros(0, np.int64),) * 3
        rows = np.union1d(np.union1d(l_rows, d_rows), c_rows).astype(np.int64)
        if not len(rows):
            return np.zeros((0, self.width), np.float32), []
        l_top = float(l_s.max(initial=0.0)) or 1e-6
        c_top = float(c_s.max(initial=0.0)) or 1e-6
        d_top, d_floor = (float(d_s.max()), float(d_s.min())) if len(d_s) else (0.0, 0.0)
        span = max(d_top - d_floor, 1e-6)
        in_lex, (b, b_rank) = lookup(l_rows, [l_s, l_rank], rows, [0.0, self.depth])
        in_den, (d, d_rank) = lookup(d_rows, [d_s, kept], rows, [d_floor, self.depth])
        _, (c, c_rank) = lookup(c_rows, [c_s, c_rank], rows, [0.0, self.char_depth or self.depth])
        agreement = np.full(len(rows), float(len(np.intersect1d(l_rows, d_rows))))
        x = np.column_stack([b, b / l_top, np.log1p(b_rank), d, d - d_top, (d - d_floor) / span, np.log1p(d_rank),
                             in_lex & in_den, self.titles_index.match(tokens(query), rows), agreement,
                             c, c / c_top, np.log1p(c_rank)])
        if self.prf:
            x = np.column_stack([x, self._neighbours(rows, (l_rows, d_rows, c_rows))])
        return x.astype(np.float32), rows.tolist()

    def _neighbours(self, rows: np.ndarray, lists: tuple[np.ndarray, ...]) -> np.ndarray:
        """``PRF_FEATURES`` of the candidates: cosine to each list's top-``prf`` centroid, raw and minus the best."""
        own = self.vectors[rows]
        cols = []
        for top in lists:  # each list's rows in its own order, best first
            head = top[:self.prf]
            centre = unit_rows(self.vectors[head].mean(0, keepdims=True))[0] if len(head) else np.zeros(own.shape[1])
            cols.append(own @ centre)
        return np.column_stack([*cols, *(c - c.max() for c in cols)])


def candidate_builder(ids: list[str], titles: list[str], dense, depth: int,  # noqa: ANN001 - retriever
                      char_depth: int, lexical: str = "bm25", index: Any = None, prf: int = 0) -> CandidateBuilder:
    """Word BM25 over ``titles`` (``lexical``: a key of ``lexical.WORD_LISTS``; character-trigram BM25 as well
    when ``char_depth`` > 0) plus ``dense``, as one builder; with ``prf`` > 0 the products' vectors are read
    from ``index`` (the FAISS index over them, row for row)."""
    from vitrine.evaluate import CharGramRetriever
    from vitrine.index.faiss_index import stored_vectors
    from vitrine.lexical import word_retriever

    words = word_retriever(lexical, ids, titles)
    chars = CharGramRetriever(ids, titles) if char_depth > 0 else None
    vectors = unit_rows(stored_vectors(index)) if prf and index is not None else None
    return CandidateBuilder(words, dense, titles, depth, chars, char_depth, vectors, prf)


def grades(rows: list[list[int]], queries: list[str], ids: list[str], judged: dict[str, dict[str, float]],
           rel) -> np.ndarray:  # noqa: ANN001 - Relevance
    """Training grade of every candidate: ``round(1.5 * gain)`` for a relevant judged label, else 0."""
    out = []
    for q, q_rows in zip(queries, rows, strict=True):
        labels = judged.get(q, {})
        for r in q_rows:
            label = labels.get(ids[r], 0.0)
            out.append(int(round(1.5 * rel.gain(label))) if label >= rel.relevant_min else 0)
    return np.asarray(out, np.int32)


class Reranker:
    """A trained LightGBM ranker plus its metadata (``reranker.txt`` + ``reranker.json`` in one folder)."""

    def __init__(self, booster: Any, meta: dict[str, Any], cross: Any = None) -> None:  # CrossEncoder | None
        self.booster, self.meta, self.cross = booster, meta, cross

    @property
    def cross_top(self) -> int:
        """How many of the ranker's top candidates the cross-encoder re-scores (0 without one)."""
        return int(self.meta.get("cross_top", 0)) if self.cross is not None else 0

    def order(self, queries: list[str], scores: list[np.ndarray], rows: list[list[int]], titles: list[str],
              k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each query's top-k (scores, rows): by ranker score, the top ``cross_top`` re-ordered by the blend with
        the cross-encoder when the ranker has one (its pairs scored in one batch across the queries)."""
        if not self.cross_top:
            return [top_k(s, r, k) for s, r in zip(scores, rows, strict=True)]
        from vitrine.cross_encoder import order_top

        heads = [top_k(s, r, self.cross_top)[1] for s, r in zip(scores, rows, strict=True)]
        pairs = [(q, int(r)) for q, h in zip(queries, heads, strict=True) for r in h]
        logits = self.cross.score([q for q, _ in pairs], [titles[r] for _, r in pairs])
        by_pair = {pair: float(v) for pair, v in zip(pairs, logits, strict=True)}
        out = []
        for q, s, r in zip(queries, scores, rows, strict=True):
            bs, br = order_top(s, r, self.cross_top, lambda rs, q=q: np.array([by_pair[(q, x)] for x in rs]),
                               float(self.meta["cross_weight"]))
            out.append((bs[:k], br[:k]))
        return out

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, groups: list[int], meta: dict[str, Any], trees: int = 300,
            seed: int = 0, leaves: int = 15, levels: int = 4) -> Reranker:
        """LambdaMART (LightGBM ``lambdarank``) on graded candidates (0 .. ``levels`` - 1) grouped by query."""
        import lightgbm as lgb

        if y.max(initial=0) == 0:
            raise ConfigError("rerank: no candidate of any training query is judged relevant; check --judgments "
                              "(it must judge products of --catalog) and --relevant_min")
        model = lgb.LGBMRanker(objective="lambdarank", n_estimators=trees, learning_rate=0.05, num_leaves=leaves,
                               min_child_samples=50, subsample=0.8, subsample_freq=1, colsample_bytree=0.8,
                               label_gain=list(range(levels)), lambdarank_truncation_level=20, random_state=seed,
                               verbose=-1)
        model.fit(x, y, group=groups)
        return cls(model.booster_, {**meta, "features": feature_names(meta.get("prf", 0)),
                                    "feature_version": FEATURE_VERSION,
                                    "trees": trees, "seed": seed})

    def score(self, x: np.ndarray) -> np.ndarray:
        """Ranking scores of candidate feature rows."""
        return self.booster.predict(x) if len(x) else np.zeros(0)

    def importance(self) -> dict[str, float]:
        """Total split gain per feature (what the ranker leans on)."""
        gains = self.booster.feature_importance(importance_type="gain")
        return {f: float(g) for f, g in zip(self.meta["features"], gains, strict=True)}

    def save(self, folder: str | Path) -> Path:
        """Write ``reranker.txt`` (the booster), ``reranker.json`` (metadata) and, with a cross-encoder, its
        ``cross_encoder/`` folder into ``folder``."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(out / "reranker.txt"))
        if self.cross is not None:
            self.cross.save(out / "cross_encoder", {k: v for k, v in self.meta.items() if k.startswith("cross_")})
        (out / "reranker.json").write_text(json.dumps({**self.meta, "saved": time.time()}, indent=1))
        return out

    @classmethod
    def load(cls, folder: str | Path) -> Reranker:
        """Read a folder written by ``save``; a clear error when it is not one."""
        import lightgbm as lgb

        path = Path(folder)
        if not (path / "reranker.txt").is_file() or not (path / "reranker.json").is_file():
            raise ConfigError(f"--rerank {folder}: not a reranker folder (needs reranker.txt + reranker.json); "
                              "train one with `vitrine rerank`")
        try:
            meta = json.loads((path / "reranker.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--rerank {folder}: reranker.json is not valid JSON ({exc}); the folder is corrupt, "
                              "retrain it with `vitrine rerank`") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("depth"), int) or "model" not in meta:
            raise ConfigError(f"--rerank {folder}: reranker.json lacks its dense model or candidate depth; "
                              "retrain it with `vitrine rerank`")
        version = meta.get("feature_version", 1)
        if version != FEATURE_VERSION:
            raise ConfigError(f"--rerank {folder}: trained with feature version {version} "
                              f"({_VERSIONS.get(version, 'unknown')}), this version computes {FEATURE_VERSION} "
                              f"({_VERSIONS[FEATURE_VERSION]}); retrain it with this version's `vitrine rerank` "
                              "(and --attach=true again if served)")
        if not isinstance(meta.setdefault("prf", 0), int) or meta["prf"] < 0:
            raise ConfigError(f"--rerank {folder}: reranker.json holds prf={meta['prf']!r}, not a count of 0 or more; "
                              "retrain it with `vitrine rerank`")
        if meta.get("features") != feature_names(meta["prf"]):
            raise ConfigError(f"--rerank {folder}: trained with other features ({meta.get('features')}); "
                              "retrain it with this version's `vitrine rerank`")
        if not isinstance(meta.get("char_depth"), int) or meta["char_depth"] < 0:
            raise ConfigError(f"--rerank {folder}: reranker.json lacks its character-trigram depth; "
                              "retrain it with `vitrine rerank`")
        from vitrine.lexical import WORD_LISTS

        meta.setdefault("lexical", "bm25")  # rankers saved before the switch read the stock word list
        if meta["lexical"] not in WORD_LISTS:
            raise ConfigError(f"--rerank {folder}: reranker.json names an unknown word list "
                              f"lexical={meta['lexical']!r} (known: {', '.join(WORD_LISTS)}); retrain it with "
                              "`vitrine rerank`")
        cross = None
        if meta.get("cross_top", 0):
            from vitrine.cross_encoder import CrossEncoder

            if not isinstance(meta.get("cross_weight"), int | float) or not 0 <= meta["cross_weight"] <= 1:
                raise ConfigError(f"--rerank {folder}: reranker.json names a cross-encoder without a blend weight in "
                                  "[0, 1]; retrain it with `vitrine rerank --cross_top=30`")
            cross = CrossEncoder.load(path / "cross_encoder")
        try:
            booster = lgb.Booster(model_file=str(path / "reranker.txt"))
        except lgb.basic.LightGBMError as exc:
            raise ConfigError(f"--rerank {folder}: reranker.txt is not a LightGBM model ({str(exc)[:200]}); the "
                              "folder is corrupt, retrain it with `vitrine rerank`") from None
        if booster.num_feature() != len(meta["features"]):
            raise ConfigError(f"--rerank {folder}: reranker.txt reads {booster.num_feature()} features, "
                              f"reranker.json names {len(meta['features'])}; retrain it with `vitrine rerank`")
        return cls(booster, meta, cross)


class RerankRetriever:
    """BM25 + dense candidates ordered by a trained ``Reranker`` (the harness's retriever interface)."""

    def __init__(self, builder: CandidateBuilder, reranker: Reranker) -> None:
        self.builder, self.reranker = builder, reranker
        self.name = f"rerank({builder.lexical.name}+{builder.dense.name})"

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (ranker scores, row positions) per query; -1 pads when fewer than k candidates exist."""
        x, rows = self.builder.build(queries)
        scores = per_query(self.reranker.score(x), rows)
        out_s = np.zeros((len(queries), k), np.float32)
        out_p = np.full((len(queries), k), -1, np.int64)
        for i, (s, p) in enumerate(self.reranker.order(queries, scores, rows, self.builder.titles, k)):
            out_p[i, :len(p)], out_s[i, :len(p)] = p, s
        return out_s, out_p


def per_query(flat: np.ndarray, rows: list[list[int]]) -> list[np.ndarray]:
    """Scores of all queries' candidates, concatenated, cut back into one array per query."""
    bounds = np.cumsum([0, *map(len, rows)])
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def top_k(scores: np.ndarray, rows: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best candidates of one query by ranker score (ties keep candidate order): (scores, rows)."""
    order = np.argsort(-scores, kind="stable")[:k]
    return scores[order], np.asarray(rows, np.int64)[order]
