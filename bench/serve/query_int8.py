"""The int8 query tower against float32, side by side: retrieval quality on judged queries and encode latency.

    python -m bench.serve.query_int8 --model models:/vitrine-homedepot@challenger --workdir runs/g2 \\
        --embeddings <the model's product vectors> --catalog data/homedepot/catalog.parquet \\
        --judgments data/homedepot/val/judgments.parquet --train data/homedepot/train/judgments.parquet \\
        --output bench/results/query_int8_homedepot.json

Both towers search the same float32 product vectors exactly (Flat), so the quality difference is the query
tower's alone. With ``--train`` the default re-ranker (``vitrine rerank``'s settings, neighbour centroids on) is
fitted once on the train queries' fp32 features, as a served ranker is, and orders each tower's candidates.
Latency: the tower's forward pass on one torch thread (as a Serve tower replica runs it), for one query and for
batches of 8 (what 8 concurrent clients cost at best), fp32 and int8 alternating batch by batch so
both see the same machine load; the index search is the same for both and is left out.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np


def timings(encoders: dict[str, object], queries: list[str], batch: int, rounds: int) -> dict[str, dict[str, float]]:
    """p50 / p95 ms per batch of ``batch`` queries, the encoders interleaved."""
    ms: dict[str, list[float]] = {name: [] for name in encoders}
    for r in range(rounds):
        chunk = [queries[(r * batch + i) % len(queries)] for i in range(batch)]
        for name, enc in encoders.items():
            t0 = time.perf_counter()
            enc(chunk)  # type: ignore[operator]
            ms[name].append((time.perf_counter() - t0) * 1000)
    return {name: {"p50_ms": round(float(np.percentile(v[5:], 50)), 2),
                   "p95_ms": round(float(np.percentile(v[5:], 95)), 2)} for name, v in ms.items()}


def behind_ranker(cat, dense: dict[str, object]) -> dict[str, dict[str, float]]:  # noqa: ANN001 - JudgedCatalog
    """The default ranker fitted on fp32 train features, then ordering each precision's validation candidates."""
    from bench.quality.common import fit_default_ranker, top_rows, val_metrics
    from vitrine.evaluate import Relevance
    from vitrine.rerank import candidate_builder

    prf = 3
    tq, vq = sorted(cat.judged["train"]), sorted(cat.judged["val"])
    builders = {prec: candidate_builder(cat.ids, cat.titles, ret, 200, 200, "product", ret.index, prf)
                for prec, ret in dense.items()}
    ranker = fit_default_ranker(cat, *builders["fp32"].build(tq, progress="train features"), prf)
    return {prec: val_metrics(cat, top_rows(ranker, *builder.build(vq, progress=f"val features, {prec}"), vq),
                              Relevance()) for prec, builder in builders.items()}


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m bench.serve.query_int8``."""
    from bench.quality.common import add_dense_flags

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dense_flags(p)
    p.add_argument("--train", default="", help="train judgments: also measure behind the default re-ranker")
    p.add_argument("--rounds", type=int, default=400, help="timed batches per batch size and precision")
    p.add_argument("--output", default="bench/results/query_int8.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    from bench.quality.common import judged_catalog, retriever, val_metrics, write_report
    from vitrine.errors import VitrineError
    from vitrine.evaluate import Relevance

    try:
        cat = judged_catalog(args.catalog, val=args.judgments, **({"train": args.train} if args.train else {}))
        dense = {prec: retriever(cat, args.model, args.workdir, args.embeddings, args.judgments, prec)
                 for prec in ("fp32", "int8")}
    except (VitrineError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    queries = sorted(cat.judged["val"])
    quality, vecs = {}, {}
    for prec, (ret, _) in dense.items():
        _, rows = ret.search(queries, 100)
        quality[prec] = val_metrics(cat, {q: [int(r) for r in row] for q, row in zip(queries, rows, strict=True)},
                                    Relevance())
        vecs[prec] = np.asarray(ret.encode_queries(queries), np.float32)
    cos = (vecs["fp32"] * vecs["int8"]).sum(axis=1)
    reranked = behind_ranker(cat, {prec: ret for prec, (ret, _) in dense.items()}) if args.train else {}
    torch.set_num_threads(1)
    encoders = {prec: ret.encode_queries for prec, (ret, _) in dense.items()}
    latency = {f"batch_{b}": timings(encoders, queries, b, args.rounds) for b in (1, 8)}
    speedup = {key: round(v["fp32"]["p50_ms"] / v["int8"]["p50_ms"], 2) for key, v in latency.items()}
    write_report(args.output, {
        "model": dense["fp32"][1], "catalog": args.catalog, "judgments": args.judgments, "queries": len(queries),
        "quality": quality, "delta_int8_minus_fp32": {k: round(quality["int8"][k] - quality["fp32"][k], 4)
                                                      for k in quality["fp32"]},
        **({"reranked": reranked} if reranked else {}),
        "query_vector_cosine": {"mean": round(float(cos.mean()), 4), "min": round(float(cos.min()), 4)},
        "encode_latency_one_thread": latency, "speedup_p50": speedup,
        "host": {"cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 1)},
        "command": "python -m bench.serve.query_int8 " + " ".join(argv if argv is not None else sys.argv[1:])})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
