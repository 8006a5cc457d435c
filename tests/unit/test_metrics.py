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
