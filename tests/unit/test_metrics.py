"""Retrieval metrics against hand-computed values."""

import math

import pytest

from vitrine.errors import ConfigError
from vitrine.evaluate import Relevance, mrr_at_k, ndcg_at_k, recall_at_k, score_run

REL = Relevance(relevant_min=2.0, gain_offset=1.0)
LABELS = {"a": 3.0, "b": 2.0, "c": 1.0, "d": 2.67}  # relevant: a, b, d; gains 2, 1, 0, 1.67


def test_recall():
    assert recall_at_k(["x", "a", "c", "b"], LABELS, 2, REL) == pytest.approx(1 / 3)
    assert recall_at_k(["x", "a", "c", "b"], LABELS, 4, REL) == pytest.approx(2 / 3)
    assert recall_at_k([], LABELS, 10, REL) == 0.0


def test_ndcg_by_hand():
    ranked = ["c", "a", "x", "d"]
    dcg = 0 / math.log2(2) + 2 / math.log2(3) + 0 / math.log2(4) + 1.67 / math.log2(5)
    idcg = 2 / math.log2(2) + 1.67 / math.log2(3) + 1 / math.log2(4) + 0 / math.log2(5)
    assert ndcg_at_k(ranked, LABELS, 10, REL) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["a", "d", "b", "c"], LABELS, 10, REL) == pytest.approx(1.0)
    # cut at k: only the top 2 count, ideal also cut at 2
    assert ndcg_at_k(["c", "a"], LABELS, 2, REL) == pytest.approx((2 / math.log2(3)) / (2 + 1.67 / math.log2(3)))


def test_mrr():
    assert mrr_at_k(["c", "x", "b"], LABELS, 10, REL) == pytest.approx(1 / 3)
    assert mrr_at_k(["c", "x", "b"], LABELS, 2, REL) == 0.0
    assert mrr_at_k(["d"], LABELS, 10, Relevance(relevant_min=3.0)) == 0.0


def test_score_run_means_and_skips_queries_without_relevant():
    judged = {"q1": {"a": 3.0, "b": 1.0}, "q2": {"c": 2.0}, "q3": {"z": 1.0}}
    run = {"q1": ["b", "a"], "q2": ["x"]}
    m = score_run(run, judged, REL, ks=(1, 10))
    assert m["queries"] == 2 and m["queries_without_relevant"] == 1
    assert m["recall@1"] == pytest.approx(0.0)
    assert m["recall@10"] == pytest.approx(0.5)
    assert m["mrr@10"] == pytest.approx(0.25)
    assert m["ndcg@10"] == pytest.approx((2 / math.log2(3) / 2) / 2)
    with pytest.raises(ConfigError, match="relevant"):
        score_run(run, {"q": {"a": 1.0}}, REL)


class _Fixed:
    """A retriever returning fixed rankings (scores descending by rank)."""

    def __init__(self, name: str, rows: list[list[int]], scores: list[list[float]] | None = None) -> None:
        self.name, self.rows = name, rows
        self.scores = scores or [[1.0 / (r + 1) for r in range(len(row))] for row in rows]

    def search(self, queries: list[str], k: int):
        import numpy as np

        return (np.array([s[:k] for s in self.scores], np.float32), np.array([r[:k] for r in self.rows]))


def test_hybrid_reciprocal_rank_fusion_by_hand():
    from vitrine.evaluate import HybridRetriever

    # lexical ranks rows 5, 7, 9 (row 9 has BM25 score 0: no term matched, not a hit); dense ranks 7, 3, 5
    lexical = _Fixed("bm25", [[5, 7, 9]], [[3.0, 2.0, 0.0]])
    dense = _Fixed("dense", [[7, 3, 5]])
    scores, rows = HybridRetriever(lexical, dense, depth=3, rrf_k=1.0).search(["q"], 4)
    # row 7: 0.5/(1+2) + 0.5/(1+1) = 0.4167; row 5: 0.5/2 + 0.5/4 = 0.375; row 3: 0.5/3 = 0.1667
    assert rows[0].tolist() == [7, 5, 3, -1]
    assert scores[0][:3] == pytest.approx([0.5 / 3 + 0.25, 0.25 + 0.125, 0.5 / 3])
    # all weight on dense = the dense ranking
    _, rows = HybridRetriever(lexical, dense, depth=3, rrf_k=1.0, dense_weight=1.0).search(["q"], 3)
    assert rows[0].tolist() == [7, 3, 5]
    with pytest.raises(ConfigError, match="dense_weight=1.5"):
        HybridRetriever(lexical, dense, dense_weight=1.5)


def test_hybrid_convex_blend_by_hand():
    from vitrine.evaluate import HybridRetriever

    # BM25 scaled by its top score (floor 0): row 5 -> 1, row 7 -> 0.5, row 9 (score 0) is no hit;
    # dense min-max over its list: row 7 -> 1, row 3 -> (0.6-0.2)/0.6 = 2/3, row 5 -> 0
    lexical = _Fixed("bm25", [[5, 7, 9]], [[4.0, 2.0, 0.0]])
    dense = _Fixed("dense", [[7, 3, 5]], [[0.8, 0.6, 0.2]])
    scores, rows = HybridRetriever(lexical, dense, depth=3, dense_weight=0.75, fusion="convex").search(["q"], 4)
    # row 7: 0.75*1 + 0.25*0.5 = 0.875; row 3: 0.75*2/3 = 0.5; row 5: 0.25*1 = 0.25
    assert rows[0].tolist() == [7, 3, 5, -1]
    assert scores[0][:3] == pytest.approx([0.875, 0.5, 0.25])
    # a weight of 0.25 lets the lexical top hit win: row 5 = 0.75, row 7 = 0.25 + 0.375 = 0.625
    _, rows = HybridRetriever(lexical, dense, depth=3, dense_weight=0.25, fusion="convex").search(["q"], 2)
    assert rows[0].tolist() == [5, 7]
    with pytest.raises(ConfigError, match="fusion='sum'"):
        HybridRetriever(lexical, dense, fusion="sum")


def test_hybrid_on_real_bm25_and_dense_vectors():
    import numpy as np

    from vitrine.evaluate import BM25Retriever, DenseRetriever, HybridRetriever

    titles = ["red cotton shirt", "blue denim jeans", "red leather handbag", "green cotton kurta"]
    ids = [f"p{i}" for i in range(4)]
    vecs = np.eye(4, dtype=np.float32)  # the "dense model" puts the handbag first for every query
    dense = DenseRetriever("toy", vecs, lambda qs: np.tile(vecs[2], (len(qs), 1)))
    _, rows = HybridRetriever(BM25Retriever(ids, titles), dense, depth=4).search(["red shirt"], 2)
    # BM25: shirt (both terms) then handbag; dense: handbag first -> handbag collects both votes, then shirt
    assert [ids[r] for r in rows[0]] == ["p2", "p0"]


@pytest.mark.parametrize("model", ["bm25", "pretrained", "hybrid:pretrained"])
def test_embeddings_with_a_baseline_is_refused_not_ignored(model, tmp_path):
    import pyarrow as pa

    from pipelines.evaluate import build_retriever
    from vitrine.config import EvaluateJob

    catalog = pa.table({"product_id": ["a"], "title": ["red shirt"]})
    job = EvaluateJob(model=model, embeddings=str(tmp_path / "vectors.parquet"))
    with pytest.raises(ConfigError, match="--embeddings applies to a trained model"):
        build_retriever(job, catalog, [], tmp_path)
