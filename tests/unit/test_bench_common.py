"""What the re-ranker benches share (bench/quality/common.py): the default ranker fitted on train candidates
orders the validation candidates by what it learnt, and a bad path is one line, not a traceback."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from bench.quality.common import JudgedCatalog, fit_default_ranker, open_judged, top_rows
from vitrine.rerank import feature_names


def test_default_ranker_orders_candidates_by_what_it_learnt():
    rng = np.random.default_rng(0)
    queries, per, width = [f"q{i:02d}" for i in range(30)], 20, len(feature_names(0))
    ids = [f"p{i}" for i in range(len(queries) * per)]
    rows = [list(range(i * per, (i + 1) * per)) for i in range(len(queries))]
    x = rng.normal(size=(len(ids), width))
    relevant = {r for group in rows for r in rng.choice(group, 3, replace=False)}
    x[:, 0] += np.array([4.0 if r in relevant else 0.0 for r in range(len(ids))])  # the signal to learn
    judged = {q: {ids[r]: (3.0 if r in relevant else 1.0) for r in group} for q, group in zip(queries, rows,
                                                                                               strict=True)}
    cat = JudgedCatalog("unused", None, [], ids, ids, {"train": judged, "val": judged})
    ranker = fit_default_ranker(cat, x, rows, prf=0)
    top = top_rows(ranker, x, rows, queries, k=3)
    assert list(top) == queries and all(len(t) == 3 for t in top.values())
    hits = sum(r in relevant for t in top.values() for r in t)
    assert hits >= 0.9 * 3 * len(queries), hits


def test_open_judged_names_the_bad_path(tmp_path):
    args = argparse.Namespace(catalog=str(tmp_path / "missing.parquet"), train=str(tmp_path / "t.parquet"),
                              val=str(tmp_path / "v.parquet"), model="bm25", workdir=str(tmp_path),
                              embeddings="")
    with pytest.raises(SystemExit, match=r"^error: .*missing\.parquet"):
        open_judged(args)
