"""The cross-encoder stage: blending by hand, the held-out weight choice, training pairs, and a real MiniLM
cross-encoder that learns from the bundled judged sample and reads back identically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from vitrine.cross_encoder import CrossEncoder, blend, choose_weight, order_top, training_pairs, union_pools, zscore
from vitrine.errors import ConfigError
from vitrine.evaluate import Relevance, judgments_by_query

SAMPLE = Path(__file__).resolve().parents[2] / "platform" / "vitrine" / "sample"


def test_blend_is_a_convex_mix_of_per_query_z_scores():
    ranker, cross = np.array([3.0, 1.0, 2.0]), np.array([0.0, 10.0, 5.0])
    z_r, z_c = np.array([1.0, -1.0, 0.0]) * np.sqrt(1.5), np.array([-1.0, 1.0, 0.0]) * np.sqrt(1.5)
    np.testing.assert_allclose(zscore(ranker), z_r)
    np.testing.assert_allclose(blend(ranker, cross, 0.0), z_r)
    np.testing.assert_allclose(blend(ranker, cross, 1.0), z_c)
    np.testing.assert_allclose(blend(ranker, cross, 0.25), 0.75 * z_r + 0.25 * z_c)
    np.testing.assert_allclose(zscore(np.array([2.0, 2.0])), [0.0, 0.0])
    with pytest.raises(ConfigError, match="weight=1.5"):
        blend(ranker, cross, 1.5)


def test_order_top_reorders_only_the_head_and_keeps_it_above_the_tail():
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    rows = [10, 11, 12, 13, 14]
    cross = {10: 0.0, 11: 0.0, 12: 9.0}  # the cross-encoder likes the third
    s, r = order_top(scores, rows, 3, lambda rs: np.array([cross[x] for x in rs]), 1.0)
    assert r.tolist() == [12, 10, 11, 13, 14]
    assert np.all(np.diff(s) <= 0)  # the order reads off the scores
    s, r = order_top(scores, rows, 3, lambda rs: np.array([cross[x] for x in rs]), 0.0)
    assert r.tolist() == rows


def test_choose_weight_picks_the_best_held_out_ndcg_and_the_smaller_weight_on_ties():
    hit = {"b": 3.0}
    per_query = [(np.array([2.0, 1.0]), np.array([0.0, 5.0]), ["a", "b"])]  # ranker wrong, cross right
    metric = lambda ranked, labels: float(ranked[0] in labels)  # noqa: E731
    weight, curve = choose_weight(per_query, [hit], metric, (0.0, 0.4, 0.6, 1.0))
    assert weight == 0.6 and curve == {"0": 0.0, "0.4": 0.0, "0.6": 1.0, "1": 1.0}
    per_query = [(np.array([1.0, 2.0]), np.array([0.0, 5.0]), ["a", "b"])]  # both right
    assert choose_weight(per_query, [hit], metric, (0.0, 0.5))[0] == 0.0


def test_training_pairs_grade_judged_pairs_and_draw_unjudged_negatives():
    ids, titles = ["p0", "p1", "p2", "p3"], ["t0", "t1", "t2", "t3"]
    judged = {"q": {"p0": 3.0, "p1": 1.0}}
    rel = Relevance(2.0, 1.0)
    pairs = training_pairs(["q"], judged, ids, titles, np.array([[0, 2, 3, -1]]), 1, rel.gain)
    assert pairs[:2] == [("q", "t0", 1.0), ("q", "t1", 0.0)]
    assert len(pairs) == 3 and pairs[2][1] in {"t2", "t3"} and pairs[2][2] == 0.0


def test_union_pools_keeps_the_first_pools_order_then_adds_the_seconds_new_rows():
    ranker = [np.array([4, 2, 7]), np.array([1])]
    words = np.array([[2, 5, -1], [-1, -1, -1]])
    merged = union_pools(ranker, words)
    assert merged.tolist() == [[4, 2, 7, 5], [1, -1, -1, -1]]
    assert union_pools([np.array([], np.int64)], np.array([[-1]])).shape == (1, 0)


def test_a_minilm_cross_encoder_learns_the_sample_and_reads_back(tmp_path):
    products = pq.read_table(SAMPLE / "homedepot_products.parquet", columns=["product_id", "title"])
    ids, titles = products.column("product_id").to_pylist(), products.column("title").to_pylist()
    judged = judgments_by_query(pq.read_table(SAMPLE / "homedepot_judgments.parquet"))
    queries = sorted(judged)[:40]
    rng = np.random.default_rng(0)
    pool = rng.integers(0, len(ids), (len(queries), 20))
    pairs = training_pairs(queries, judged, ids, titles, pool, 2, Relevance(2.0, 1.0).gain)
    model = CrossEncoder.pretrained("minilm")
    q, t = [p[0] for p in pairs], [p[1] for p in pairs]
    y = np.array([p[2] for p in pairs])
    before = model.score(q, t)
    figures = model.fit(pairs, batch=16, lr=1e-4, steps=30)
    after = model.score(q, t)
    # trained on these pairs, it now separates the relevant ones from the drawn negatives
    corr = lambda v: float(np.corrcoef(v, y)[0, 1])  # noqa: E731
    assert corr(after) > max(0.3, corr(before) + 0.2), (corr(before), corr(after))
    assert figures["cross_steps"] == 30 and figures["cross_pairs"] == len(pairs)
    model.save(tmp_path / "ce", {"cross_top": 30})
    again = CrossEncoder.load(tmp_path / "ce")
    np.testing.assert_allclose(again.score(q, t), after, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="not a cross-encoder folder"):
        CrossEncoder.load(tmp_path)
