"""The hybrid fusion sweep (bench/quality/fusion_sweep.py): its end points against each side alone."""

from __future__ import annotations

import json

import pytest

from vitrine.evaluate import Relevance, score_run

REL = Relevance(2.0, 1.0)


class _Fixed:
    name = "fixed"

    def __init__(self, rows: list[list[int]], scores: list[list[float]]) -> None:
        self.rows, self.scores = rows, scores

    def search(self, queries: list[str], k: int):
        import numpy as np

        return np.array(self.scores, np.float32)[:, :k], np.array(self.rows)[:, :k]


def test_sweep_end_points_are_each_side_alone_and_halves_partition_the_queries():
    from bench.quality.fusion_sweep import half_of, sweep

    ids = [f"p{i}" for i in range(6)]
    judged = {"q1": {"p0": 3.0, "p4": 2.0}, "q2": {"p5": 3.0}, "q3": {"p1": 2.5}}
    # lexical (every score > 0, so every row is a hit) and dense rankings over 6 rows, queries in sorted order
    lexical = _Fixed([[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [2, 3, 1, 0, 4, 5]], [[6, 5, 4, 3, 2, 1]] * 3)
    dense = _Fixed([[4, 0, 1, 2, 3, 5], [0, 1, 5, 2, 3, 4], [1, 2, 3, 0, 4, 5]], [[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]] * 3)
    rows = sweep(lexical, dense, ids, judged, REL, weights=(0.0, 1.0), depth=6)
    assert [(r["fusion"], r["dense_weight"]) for r in rows] == [("rrf", 0.5), ("convex", 0.0), ("convex", 1.0)]
    q = sorted(judged)
    alone = {name: score_run({qq: [ids[p] for p in side.rows[i]] for i, qq in enumerate(q)}, judged, REL, ks=(10,))
             for name, side in (("lexical", lexical), ("dense", dense))}
    assert rows[1]["all"]["ndcg@10"] == pytest.approx(alone["lexical"]["ndcg@10"])
    assert rows[2]["all"]["ndcg@10"] == pytest.approx(alone["dense"]["ndcg@10"])
    assert alone["lexical"]["ndcg@10"] != pytest.approx(alone["dense"]["ndcg@10"])
    for r in rows:
        assert r["A"]["queries"] + r["B"]["queries"] == r["all"]["queries"] == 3
    assert {half_of(x) for x in q} <= {"A", "B"} and half_of("q1") == half_of("q1")


def test_sweep_cli_on_the_bundled_sample_writes_json_and_plot(sample_catalog, tmp_path):
    from bench.quality.fusion_sweep import main

    sample = sample_catalog.parent
    out = tmp_path / "sweep"
    assert main(["--model", "pretrained", "--catalog", str(sample / "homedepot_products.parquet"),
                 "--judgments", str(sample / "homedepot_judgments.parquet"), "--weights", "0.3,1",
                 "--workdir", str(tmp_path / "w"), "--output", str(out)]) == 0
    result = json.loads((out / "sweep.json").read_text())
    assert [r["dense_weight"] for r in result["rows"]] == [0.5, 0.3, 1.0]
    assert all(0.0 < r["all"]["ndcg@10"] <= 1.0 for r in result["rows"])
    assert (out / "sweep.png").stat().st_size > 10_000


def test_sweep_refuses_bad_weights_with_one_line():
    from bench.quality.fusion_sweep import main

    with pytest.raises(SystemExit, match="--weights '0.3,x'"):
        main(["--model", "pretrained", "--catalog", "c", "--judgments", "j", "--output", "o", "--weights", "0.3,x"])
    with pytest.raises(SystemExit, match="weights in \\[0, 1\\]"):
        main(["--model", "pretrained", "--catalog", "c", "--judgments", "j", "--output", "o", "--weights", "1.5"])
