"""Re-ranker objectives: LambdaMART against pointwise and listwise alternatives, and cascades of two of them.

The shipped stage fits LightGBM's ``lambdarank`` with truncation 20, which weighs the top of each list. Recall@100
asks for a different thing, every relevant candidate above rank 100, so this measures, on the same candidates
and features: a binary classifier (relevant or not), a regression on the grade, ``rank_xendcg`` (a listwise
cross-entropy over the whole list), and combinations with LambdaMART (the other model's top N re-ordered by
LambdaMART; LambdaMART's top 10, then the other model's order; the two ranks averaged).

    python -m bench.quality.rerank_objectives --model models:/vitrine-homedepot@challenger --workdir runs/g2 \\
        --embeddings <that model's vectors> --catalog data/homedepot/catalog.parquet \\
        --train data/homedepot/train/judgments.parquet --val data/homedepot/val/judgments.parquet \\
        --prf 3 --output reports/rerank-ablation-homedepot/objectives.json
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np

OBJECTIVES = ("lambdarank", "binary", "regression", "rank_xendcg")


def fit_score(objective: str, x: np.ndarray, y: np.ndarray, groups: list[int], xv: np.ndarray) -> np.ndarray:
    """Fit one LightGBM model with the shipped ranker's capacity (``Reranker.fit``'s settings; its ``lambdarank`` row
    reproduces the shipped ranker's figures) and return its scores of ``xv``."""
    import lightgbm as lgb

    common = dict(n_estimators=300, learning_rate=0.05, num_leaves=15, min_child_samples=50, subsample=0.8,
                  subsample_freq=1, colsample_bytree=0.8, random_state=0, verbose=-1)
    if objective in ("lambdarank", "rank_xendcg"):
        extra = {"lambdarank_truncation_level": 20} if objective == "lambdarank" else {}
        model = lgb.LGBMRanker(objective=objective, label_gain=list(range(4)), **extra, **common)
        model.fit(x, y, group=groups)
    elif objective == "binary":
        model = lgb.LGBMClassifier(objective="binary", **common).fit(x, (y > 0).astype(np.int32))
    else:
        model = lgb.LGBMRegressor(objective="regression", **common).fit(x, y.astype(np.float64))
    return model.booster_.predict(xv)


def cascade(first: list[np.ndarray], then: list[np.ndarray], top: int) -> Iterator[np.ndarray]:
    """Each list in ``then``'s order, its top ``top`` re-ordered by ``first``."""
    for a, b in zip(first, then, strict=True):
        order = np.argsort(-b, kind="stable")
        head = order[:top]
        yield np.concatenate([head[np.argsort(-a[head], kind="stable")], order[top:]])


def head_then(first: list[np.ndarray], then: list[np.ndarray], top: int = 10) -> Iterator[np.ndarray]:
    """``first``'s top ``top``, then the rest in ``then``'s order."""
    for a, b in zip(first, then, strict=True):
        head = np.argsort(-a, kind="stable")[:top]
        rest = np.setdiff1d(np.arange(len(a)), head)
        yield np.concatenate([head, rest[np.argsort(-b[rest], kind="stable")]])


def rank_average(first: list[np.ndarray], then: list[np.ndarray]) -> Iterator[np.ndarray]:
    """Both models' ranks summed."""
    for a, b in zip(first, then, strict=True):
        yield np.argsort(np.argsort(-a).argsort() + np.argsort(-b).argsort(), kind="stable")


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m bench.quality.rerank_objectives``."""
    from bench.quality.common import ranker_bench_parser

    p = ranker_bench_parser(__doc__, prf=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from bench.quality.common import open_judged, val_metrics, write_report
    from vitrine.evaluate import Relevance
    from vitrine.rerank import candidate_builder, grades, per_query

    rel = Relevance()
    cat, dense, label = open_judged(args)
    builder = candidate_builder(cat.ids, cat.titles, dense, 200, 200, "product", dense.index, args.prf)
    ids, judged = cat.ids, cat.judged
    tq, vq = sorted(judged["train"]), sorted(judged["val"])
    tx, trows = builder.build(tq, progress="train features")
    vx, vrows = builder.build(vq, progress="val features")
    ty = grades(trows, tq, ids, judged["train"], rel)

    def measure(orders: Callable[[], Iterator[np.ndarray]]) -> dict[str, float]:
        run = {q: [rows[i] for i in order[:100]] for q, rows, order in zip(vq, vrows, orders(), strict=True)}
        return val_metrics(cat, run, rel)

    scores = {o: per_query(fit_score(o, tx, ty, [len(r) for r in trows], vx), vrows) for o in OBJECTIVES}
    results = [{"variant": o, **measure(lambda o=o: (np.argsort(-s, kind="stable") for s in scores[o]))}
               for o in OBJECTIVES]
    lam = scores["lambdarank"]
    for other in OBJECTIVES[1:]:
        for top in (20, 50):
            results.append({"variant": f"{other}, its top {top} re-ordered by lambdarank",
                            **measure(lambda o=other, t=top: cascade(lam, scores[o], t))})
        results.append({"variant": f"lambdarank's top 10, then {other}",
                        **measure(lambda o=other: head_then(lam, scores[o]))})
        results.append({"variant": f"ranks of lambdarank and {other} averaged",
                        **measure(lambda o=other: rank_average(lam, scores[o]))})
    report = {"model": label, "prf": args.prf, "train_queries": len(tq), "val_queries": len(vq), "results": results}
    write_report(args.output, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
