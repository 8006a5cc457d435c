"""The re-ranker ablation's own pieces (bench/quality/rerank_ablation.py), computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vitrine.evaluate import Relevance


def test_zero_shot_columns_and_gain_grades_by_hand():
    from bench.quality.rerank_ablation import _Keyed, judged_grades, zs_columns

    side = _Keyed("zs", ["a", "b"], np.array([[0.9, 0.5, 0.1], [0.8, 0.4, 0.0]], np.float32),
                  np.array([[2, 0, 1], [1, 0, -1]]))
    s, r = side.search(["b"], 2)
    assert r.tolist() == [[1, 0]] and s.shape == (1, 2)
    cols = zs_columns(side, ["a", "b"], [[0, 3], [1]], depth=3)
    # query a: row 0 is 2nd (0.5) in a list spanning 0.1-0.9; row 3 is outside it, so it gets the floor and rank 3
    assert cols[0] == pytest.approx([0.5, -0.4, 0.5, math.log1p(1)])
    assert cols[1] == pytest.approx([0.1, -0.8, 0.0, math.log1p(3)])
    assert cols[2] == pytest.approx([0.8, 0.0, 1.0, 0.0])
    ids = ["p0", "p1", "p2"]
    judged = {"a": {"p0": 3.0, "p1": 1.67, "p2": 1.0}}
    # round(3 * (label - 1)): 6, 2 (a judged label under the relevance threshold still has gain), 0; unjudged 0
    assert judged_grades([[0, 1, 2], [0]], ["a", "b"], ids, judged, Relevance(2.0, 1.0)).tolist() == [6, 2, 0, 0]


def test_spelling_query_vector_by_hand():
    from bench.quality.spell_dense import spelled
    from vitrine.evaluate import DenseRetriever

    basis = {"ceiling fan": [1.0, 0.0, 0.0], "celing fan": [0.0, 1.0, 0.0], "ceiling light": [0.0, 0.0, 1.0]}
    products = np.eye(3, dtype=np.float32)
    typed = DenseRetriever("toy", products, lambda qs: np.array([basis[q] for q in qs], np.float32))
    fixed, speller = spelled(typed, ["ceiling fan white", "ceiling light", "ceiling fan"])
    assert speller.correct("celing fan") == "ceiling fan"
    vectors = fixed.encode_queries(["celing fan", "ceiling light"])
    # the misspelt query: the mean of its own vector and the corrected one's, unit length; the other as typed
    assert vectors[0] == pytest.approx([2 ** -0.5, 2 ** -0.5, 0.0])
    assert vectors[1] == pytest.approx([0.0, 0.0, 1.0])
    scores, rows = fixed.search(["celing fan"], 3)
    assert rows[0][:2].tolist() in ([0, 1], [1, 0]) and scores[0][0] == pytest.approx(2 ** -0.5)
