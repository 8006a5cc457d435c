"""Several trained dense models as one: each model's vectors unit-normalised, concatenated and scaled by 1/sqrt(n),
so one inner product is the mean of the models' cosines. Measures each model alone, the ensemble alone, and the
default re-ranker (LambdaMART, the shipped features and settings) over each and over the ensemble.

Seeds of one recipe disagree on many queries; averaging their scores is the cheapest variance reduction a
retrieval team has, and on Home Depot a seed of the recipe trains in about 12 minutes, so two or three fit the
60-minute budget. This measures whether it pays before any serving code is written for it.

    python -m bench.quality.dense_ensemble --catalog data/homedepot/catalog.parquet \\
        --train data/homedepot/train/judgments.parquet --val data/homedepot/val/judgments.parquet \\
        --member models:/vitrine-homedepot@challenger,runs/g2,<its vectors> \\
        --member models:/vitrine-homedepot@challenger,runs/g3,<its vectors> \\
        --prf 3 --output reports/rerank-ensemble-homedepot/ensemble.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np


def concatenated(retrievers: list) -> object:  # noqa: ANN001 - DenseRetriever
    """One DenseRetriever whose inner product is the mean of the members' cosines."""
    from vitrine.evaluate import DenseRetriever
    from vitrine.index.faiss_index import stored_vectors
    from vitrine.rerank import unit_rows

    scale = 1.0 / np.sqrt(len(retrievers))
    vectors = np.hstack([unit_rows(stored_vectors(r.index)) for r in retrievers]) * scale

    def encode(queries: list[str]) -> np.ndarray:
        return np.hstack([unit_rows(np.asarray(r.encode_queries(queries), np.float32)) for r in retrievers]) * scale

    names = "+".join(r.name for r in retrievers)
    return DenseRetriever(f"ensemble({names})", vectors.astype(np.float32), encode)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m bench.quality.dense_ensemble``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag in ("--catalog", "--train", "--val", "--output"):
        p.add_argument(flag, required=True)
    p.add_argument("--member", action="append", required=True, help="MODEL,WORKDIR,EMBEDDINGS (repeat)")
    p.add_argument("--prf", type=int, default=3)
    p.add_argument("--singles", type=int, default=1, help="also fit a ranker over the first N members alone")
    p.add_argument("--dense-only", action="store_true", help="measure the retrievers alone, fit no ranker")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from bench.quality.common import fit_default_ranker, judged_catalog, retriever, top_rows, val_metrics, write_report
    from vitrine.errors import VitrineError
    from vitrine.evaluate import Relevance
    from vitrine.rerank import candidate_builder

    rel = Relevance()
    try:
        cat = judged_catalog(args.catalog, train=args.train, val=args.val)
        members = []
        for spec in args.member:
            model, workdir, embeddings = spec.split(",")
            dense, label = retriever(cat, model, workdir, embeddings, args.val)
            dense.name = f"{label}@{workdir}"
            members.append(dense)
    except (VitrineError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    ids, titles, judged = cat.ids, cat.titles, cat.judged
    tq, vq = sorted(judged["train"]), sorted(judged["val"])

    def measure(run_rows: dict[str, list[int]]) -> dict[str, float]:
        return val_metrics(cat, run_rows, rel)

    def dense_alone(dense) -> dict[str, float]:  # noqa: ANN001
        _, rows = dense.search(vq, 100)
        return measure({q: [int(r) for r in row] for q, row in zip(vq, rows, strict=True)})

    def reranked(dense) -> dict[str, float]:  # noqa: ANN001
        t0 = time.time()
        builder = candidate_builder(ids, titles, dense, 200, 200, "product", dense.index, args.prf)
        tx, trows = builder.build(tq, progress="train features")
        vx, vrows = builder.build(vq, progress="val features")
        run = top_rows(fit_default_ranker(cat, tx, trows, args.prf), vx, vrows, vq)
        return {**measure(run), "seconds": round(time.time() - t0, 1)}

    results = [{"retriever": m.name, "dense": dense_alone(m)} for m in members]
    for i in range(0 if args.dense_only else min(args.singles, len(members))):
        results[i]["rerank"] = reranked(members[i])
    for n in range(2, len(members) + 1):
        ens = concatenated(members[:n])
        results.append({"retriever": ens.name, "dense": dense_alone(ens)})
        if not args.dense_only:
            results[-1]["rerank"] = reranked(ens)
        print(json.dumps(results[-1]), flush=True)
    report = {"prf": args.prf, "train_queries": len(tq), "val_queries": len(vq), "results": results}
    write_report(args.output, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
