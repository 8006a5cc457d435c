"""bench.quality.candidate_recall's table by hand: per-list and union recall, cut at each depth."""

from __future__ import annotations

import numpy as np
import pytest

from bench.quality.candidate_recall import recall_table


def test_recall_table_by_hand():
    sides = {"words": np.array([[0, 1, -1], [5, 6, 7]]), "dense": np.array([[2, 0, 3], [8, 9, 5]]),
             "chargrams": np.array([[4, 9, 9], [7, 8, 4]])}
    relevant = [{0, 2, 4, 3}, {5, 8}]
    table = recall_table(sides, relevant, [1, 3])
    one = table["1"]  # query 0: W {0}, D {2}, C {4}; query 1: W {5}, D {8}, C {7}
    assert one["words"] == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert one["dense"] == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert one["chargrams"] == pytest.approx((1 / 4 + 0) / 2)
    assert one["W+D"] == pytest.approx((2 / 4 + 2 / 2) / 2) and one["size W+D"] == 2.0
    assert one["W+D+C"] == pytest.approx((3 / 4 + 1) / 2) and one["size W+D+C"] == 3.0
    three = table["3"]  # -1 pads are not candidates; repeated rows count once
    assert three["words"] == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert three["W+D"] == pytest.approx((3 / 4 + 1) / 2) and three["size W+D"] == pytest.approx((4 + 5) / 2)
    assert three["W+D+C"] == pytest.approx(1.0) and three["size W+D+C"] == pytest.approx((6 + 6) / 2)
