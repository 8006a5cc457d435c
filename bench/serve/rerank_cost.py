"""Serve-time cost of re-ranking: per-query latency of the served search with and without the version's attached
ranker, side by side in one process (each query timed on both paths, interleaved).

    python -m bench.serve.rerank_cost                                   # bundled Home Depot sample (1,889 products)
    python -m bench.serve.rerank_cost --catalog data/homedepot/catalog.parquet \\
        --judgments data/homedepot/train/judgments.parquet --queries data/homedepot/val/judgments.parquet

Registers the zero-shot model in a throwaway registry under ``--workdir``, indexes ``--catalog`` (Flat), trains a
ranker on ``--judgments`` and attaches it (``vitrine rerank --attach=true``), then loads both exactly as a Serve
replica does (``vitrine.index.serving`` + ``vitrine.index.reranked``, one torch thread). Dense path: encode +
index search. Re-ranked path: encode + BM25 (words, analysed as ``--lexical`` says, and character trigrams unless
``--char-depth 0``) + index
search at the ranker's depth + title features + the neighbour-centroid ones (``--prf``, 3; 0 = none) + LightGBM (+ with
``--cross-top N`` a cross-encoder over its top N).
Also the memory the ranker adds to a warm dense replica (RSS, after loading it, which builds the BM25 indexes and
the titles' token index, and after the timing). Prints JSON and saves
``<out>/rerank_cost_<catalog>.json``; the ranker's quality is not measured here (docs/quality.md is).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from bench.serve.run import SAMPLE, percentiles

REPO = Path(__file__).resolve().parents[2]
NAME = "bench-rerank"


def prepare(args: argparse.Namespace, work: Path) -> str:
    """Register, index and attach a ranker; returns the registry version."""
    from pipelines import embed_index
    from pipelines.serve import register_zero_shot
    from vitrine.cli import main as cli_main
    from vitrine.config import DataConfig, IndexConfig, IndexJob, TrackingConfig

    tracking = TrackingConfig(experiment=NAME, model_name=NAME)
    data = DataConfig(catalog=str(args.catalog))
    version = register_zero_shot(work, tracking, data=data)
    embed_index.run_in_process(IndexJob(workdir=str(work), model_uri=f"models:/{NAME}/{version}", data=data,
                                        tracking=tracking, index=IndexConfig(factory="Flat")))
    rc = cli_main(["rerank", f"--model=models:/{NAME}/{version}", f"--workdir={work}", f"--catalog={args.catalog}",
                   f"--judgments={args.judgments}", f"--embeddings={work / 'index_build' / version / 'embeddings'}",
                   f"--depth={args.depth}", f"--char_depth={args.char_depth}", f"--trees={args.trees}",
                   f"--lexical={args.lexical}", f"--prf={args.prf}", *cross_args(args),
                   f"--out={work / 'ranker'}", "--attach=true"])
    if rc:
        raise SystemExit(f"vitrine rerank failed (exit {rc}); see the log above")
    return version


def cross_args(args: argparse.Namespace) -> list[str]:
    """``vitrine rerank`` flags for a cross-encoder over the ranker's top ``--cross-top`` (none when 0); a few
    training steps and a fixed weight, since its cost does not depend on how well it was trained."""
    if not args.cross_top:
        return []
    return [f"--cross_top={args.cross_top}", f"--cross_steps={args.cross_steps}", "--cross_weight=0.3"]


def open_version(work: Path, version: str) -> tuple[Any, Any]:
    """A version this benchmark registered in ``work``, resolved, with its index loaded as a replica does."""
    from vitrine import registry
    from vitrine.config import TrackingConfig
    from vitrine.index.serving import Catalog, load_version_index, resolve_version

    registry.setup(TrackingConfig(experiment=NAME, model_name=NAME), work)
    model = resolve_version(NAME, version, work / "cache")
    return model, Catalog(load_version_index(model, work / "cache", "cpu"))


def measure(work: Path, version: str, queries: list[str], seconds: float, k: int) -> dict[str, Any]:
    """Interleaved timing of both served paths, then the re-ranked path's parts on their own."""
    import torch

    from vitrine.index.embed import QueryEncoder
    from vitrine.index.reranked import load_version_reranker

    torch.set_num_threads(1)
    model, catalog = open_version(work, version)
    encode = QueryEncoder(model.local_dir, device="cpu")
    for q in queries[:20]:
        catalog.search(encode([q])[0], k)
    rss0 = _rss_mb()  # a dense replica, warm
    ranker = load_version_reranker(model, work / "cache", catalog)
    rss1 = _rss_mb()
    for q in queries[:20]:
        ranker.search(q, encode([q])[0], k)
    enc, dense, rerank, n, stop = [], [], [], 0, time.monotonic() + seconds
    while time.monotonic() < stop:
        q = queries[n % len(queries)]
        t0 = time.perf_counter()
        vec = encode([q])[0]
        t1 = time.perf_counter()
        catalog.search(vec, k)
        t2 = time.perf_counter()
        ranker.search(q, vec, k)
        t3 = time.perf_counter()
        enc.append((t1 - t0) * 1000)
        dense.append((t2 - t0) * 1000)
        rerank.append((t1 - t0 + t3 - t2) * 1000)
        n += 1
    parts: dict[str, list[float]] = {"bm25": [], "chargram_bm25": [], "index_at_depth": [], "features": [],
                                     "lightgbm": [], "cross_encoder": []}
    for q in queries[:min(len(queries), 300)]:
        vec = encode([q])[0]
        t0 = time.perf_counter()
        ls, lr = ranker.lexical.top([q], ranker.depth)  # as ServedReranker.search
        t1 = time.perf_counter()
        grams = None if ranker.chars is None else ranker.chars.top([q], ranker.char_depth)
        t2 = time.perf_counter()
        ds, dr = catalog.index.search(vec[None, :], ranker.depth)
        t3 = time.perf_counter()
        x, rows = ranker.builder.candidates(q, (ls[0], lr[0]), (ds[0], dr[0]),
                                            None if grams is None else (grams[0][0], grams[1][0]))
        t4 = time.perf_counter()
        scores = ranker.reranker.score(x)
        t5 = time.perf_counter()
        ranker.reranker.order([q], [scores], [rows], catalog.titles, k)  # the cross-encoder's pass, if any
        t6 = time.perf_counter()
        for key, ms in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5), strict=True):
            parts[key].append(ms * 1000)
    rss2 = _rss_mb()
    return {"products": len(catalog.titles), "queries_timed": n, "encode_p50_ms": round(float(np.median(enc)), 2),
            "dense": percentiles(dense), "reranked": percentiles(rerank),
            "ratio_p50_reranked_vs_dense": round(float(np.median(rerank) / np.median(dense)), 2),
            "reranked_parts_p50_ms": {k: round(float(np.median(v)), 2) for k, v in parts.items()},
            "ranker_memory_mb": {"loaded": round(rss1 - rss0, 1), "after_timing": round(rss2 - rss0, 1)},
            "ranker": ranker.info()}


def _rss_mb() -> float:
    """This process's resident memory (Linux ``/proc``; elsewhere the peak so far)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    """Prepare, measure, print and save JSON."""
    from vitrine.errors import VitrineError
    from vitrine.evaluate import judgments_by_query

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--catalog", type=Path, default=SAMPLE / "homedepot_products.parquet")
    p.add_argument("--judgments", type=Path, default=SAMPLE / "homedepot_judgments.parquet",
                   help="judged queries the ranker is trained on")
    p.add_argument("--queries", type=Path, default=None, help="judgments whose queries are timed (default: "
                                                                 "--judgments')")
    p.add_argument("--depth", type=int, default=200)
    p.add_argument("--char-depth", type=int, default=200, help="the character-trigram list's depth (0 = none)")
    p.add_argument("--trees", type=int, default=300)
    p.add_argument("--lexical", default="product", help="the ranker's word list: product (default) or bm25 (stock)")
    p.add_argument("--prf", type=int, default=3, help="the ranker's neighbour-centroid features over each list's "
                   "top N product vectors (3, as `vitrine rerank`; 0 = none)")
    p.add_argument("--cross-top", type=int, default=0, help="a cross-encoder over the ranker's top N (0 = none)")
    p.add_argument("--cross-steps", type=int, default=20, help="its training steps (its cost does not depend on them)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench" / "rerank_cost")
    p.add_argument("--version", default="", help="time this registry version of an earlier run in --workdir "
                                                 "(skips registering, indexing and training the ranker)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for path in (args.catalog, args.judgments, args.queries or args.judgments):
        if not path.exists():
            raise SystemExit(f"{path}: no such file; see `python -m bench.serve.rerank_cost --help`")
    if args.seconds <= 0:
        raise SystemExit(f"--seconds {args.seconds}: time each path for a positive number of seconds")
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        version = args.version or prepare(args, work)
        queries = sorted(judgments_by_query(pq.read_table(args.queries or args.judgments)))
        figures = measure(work, version, queries, args.seconds, args.k)
    except VitrineError as exc:
        raise SystemExit(f"bench.serve.rerank_cost: {exc}") from None
    report = {"catalog": str(args.catalog), "model": "zero-shot", "index": "Flat", "k": args.k,
              "queries": len(queries), **figures,
              "host": {"machine": platform.machine(), "python": platform.python_version()},
              "command": " ".join(["python -m bench.serve.rerank_cost", *(sys.argv[1:] if argv is None else argv)])}
    text = json.dumps(report, indent=1)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = (f"_prf{args.prf}" if args.prf else "") + (f"_cross{args.cross_top}" if args.cross_top else "")
    (args.out / f"rerank_cost_{args.catalog.stem}{suffix}.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
