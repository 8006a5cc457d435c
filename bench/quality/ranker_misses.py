"""Where the default re-ranker loses relevant products at 100: never a candidate, or a candidate ranked below.

    python -m bench.quality.ranker_misses --catalog data/homedepot/catalog.parquet \\
        --train data/homedepot/train/judgments.parquet --val data/homedepot/val/judgments.parquet \\
        --model models:/vitrine-homedepot@challenger --workdir runs/g2 --embeddings <its vectors> \\
        --output reports/rerank-homedepot/misses.json

Fits the default ranker (LambdaMART, shipped features and settings) on the train queries, orders the validation
candidates, and splits every relevant validation product (label >= 2) three ways: in the top 100, a candidate
ranked 101 or lower (the ranker's miss), or not among the candidates at all (the retrievers' miss). For the
ranker's misses it reports their rank percentiles and each feature's median beside the found products', plus
a seeded sample of missed (query, title, rank, top three titles) to read.
"""

from __future__ import annotations

import logging
import random

import numpy as np


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m bench.quality.ranker_misses``."""
    from bench.quality.common import ranker_bench_parser

    p = ranker_bench_parser(__doc__, prf=3)
    p.add_argument("--examples", type=int, default=25, help="missed products to list")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from bench.quality.common import fit_default_ranker, open_judged, write_report
    from vitrine.evaluate import Relevance
    from vitrine.rerank import candidate_builder, feature_names, per_query

    rel = Relevance()
    cat, dense, label = open_judged(args)
    tq, vq = sorted(cat.judged["train"]), sorted(cat.judged["val"])
    builder = candidate_builder(cat.ids, cat.titles, dense, 200, 200, "product", dense.index, args.prf)
    tx, trows = builder.build(tq, progress="train features")
    vx, vrows = builder.build(vq, progress="val features")
    scores = per_query(fit_default_ranker(cat, tx, trows, args.prf).score(vx), vrows)
    start = np.cumsum([0] + [len(r) for r in vrows])
    pos = {pid: i for i, pid in enumerate(cat.ids)}
    counts = {"found_at_100": 0, "candidate_below_100": 0, "not_a_candidate": 0}
    found, missed, ranks, examples = [], [], [], []
    for qi, q in enumerate(vq):
        order = np.argsort(-scores[qi], kind="stable")
        rank = {int(vrows[qi][j]): r for r, j in enumerate(order)}
        at = {int(row): i for i, row in enumerate(vrows[qi])}
        for pid, lab in cat.judged["val"][q].items():
            if lab < rel.relevant_min:
                continue
            row = pos[pid]
            if row not in rank:
                counts["not_a_candidate"] += 1
            elif rank[row] < 100:
                counts["found_at_100"] += 1
                found.append(vx[start[qi] + at[row]])
            else:
                counts["candidate_below_100"] += 1
                missed.append(vx[start[qi] + at[row]])
                ranks.append(rank[row] + 1)
                examples.append({"query": q, "title": cat.titles[row], "rank": rank[row] + 1,
                                 "top3": [cat.titles[vrows[qi][j]] for j in order[:3]]})
    total = sum(counts.values())
    names, f, m = feature_names(args.prf), np.array(found), np.array(missed)
    write_report(args.output, {
        "model": label, "prf": args.prf, "val_queries": len(vq), "relevant_products": total,
        "shares": {k: round(v / total, 4) for k, v in counts.items()}, "counts": counts,
        "missed_rank_percentiles": dict(zip(("p10", "p25", "p50", "p75", "p90"),
                                            (float(x) for x in np.percentile(ranks, [10, 25, 50, 75, 90])),
                                            strict=True)) if ranks else {},
        "feature_medians": {n: {"found": round(float(np.median(f[:, i])), 3),
                                "missed": round(float(np.median(m[:, i])), 3)} for i, n in enumerate(names)}
        if len(m) and len(f) else {},
        "examples": random.Random(1).sample(examples, min(args.examples, len(examples)))})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
