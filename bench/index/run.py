"""FAISS index benchmark: build time, QPS at k=10 (1 and 2 threads) and recall@10 vs an exact Flat search.

    python -m bench.index.run [--vectors runs/bench/vectors] [--synthetic 1000000] [--out bench/results]

Two sets: the real product vectors written by ``bench.index.embed_catalogs`` (queried with real Home Depot
queries through the query tower), and a synthetic set of ``--synthetic`` vectors with the real set's
structure (each a real vector plus noise at the scale of its neighbours' distances, renormalised). Each spec is
a FAISS factory string + search parameters; recall is always against the exact Flat top-10 of the same queries.
Figures are printed as JSON and saved to ``<out>/index_<set>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from vitrine.index.faiss_index import IndexSpec, build_index, exact_topk, set_search_params

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]

# (factory, list of search-parameter settings to sweep): one build, several operating points.
SPECS: list[tuple[str, list[dict[str, Any]]]] = [
    ("Flat", [{}]),
    ("HNSW32", [{"efSearch": 64}, {"efSearch": 128}, {"efSearch": 256}, {"efSearch": 512}]),
    ("IVF1024,Flat", [{"nprobe": 16}, {"nprobe": 24}, {"nprobe": 32}]),
    ("IVF1024,PQ32", [{"nprobe": 8}, {"nprobe": 32}]),
    ("IVF1024,PQ32,RFlat", [{"nprobe": 8, "k_factor_rf": 4}, {"nprobe": 32, "k_factor_rf": 8},
                            {"nprobe": 24, "k_factor_rf": 16}, {"nprobe": 32, "k_factor_rf": 16}]),
    ("IVF1024,PQ64x4fs,RFlat", [{"nprobe": 16, "k_factor_rf": 16}, {"nprobe": 24, "k_factor_rf": 16},
                                {"nprobe": 32, "k_factor_rf": 16}, {"nprobe": 32, "k_factor_rf": 32},
                                {"nprobe": 48, "k_factor_rf": 32}, {"nprobe": 64, "k_factor_rf": 32}]),
]


def qps(index: Any, queries: np.ndarray, threads: int, k: int = 10, min_seconds: float = 1.0) -> float:
    """Queries per second of batched search with ``threads`` OpenMP threads (repeated for >= min_seconds)."""
    import faiss

    faiss.omp_set_num_threads(threads)
    n, t0 = 0, time.perf_counter()
    while True:
        index.search(queries, k)
        n += len(queries)
        if time.perf_counter() - t0 >= min_seconds:
            return n / (time.perf_counter() - t0)


def synthetic(real: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors shaped like ``real``: a real vector + Gaussian noise at its local neighbour scale."""
    rng = np.random.default_rng(seed)
    probe = real[rng.choice(len(real), min(2000, len(real)), replace=False)]
    nn_sim = exact_topk(real, probe, 2)[:, 1]
    scale = float(np.median(np.linalg.norm(probe - real[nn_sim], axis=1))) / np.sqrt(real.shape[1])
    out = np.empty((n, real.shape[1]), np.float32)
    for i in range(0, n, 100_000):
        m = min(100_000, n - i)
        x = real[rng.integers(0, len(real), m)] + rng.normal(0, scale, (m, real.shape[1])).astype(np.float32)
        out[i:i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def bench_set(name: str, vectors: np.ndarray, queries: np.ndarray, specs: list, threads: list[int]
              ) -> dict[str, Any]:
    """Build each spec over ``vectors`` and measure it with ``queries``; returns the figures."""
    import faiss

    faiss.omp_set_num_threads(max(threads))
    truth = exact_topk(vectors, queries, 10)
    rows, flat_qps = [], {}
    for factory, sweeps in specs:
        faiss.omp_set_num_threads(max(threads))
        t0 = time.perf_counter()
        index = build_index(vectors, IndexSpec(factory), train_size=min(len(vectors), 100_000), device="cpu")
        build_s = time.perf_counter() - t0
        for params in sweeps:
            set_search_params(index, params)
            found = index.search(queries, 10)[1]
            recall = float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)]))
            row = {"factory": factory, "search_params": params, "build_s": round(build_s, 2),
                   "recall_at_10": round(recall, 4)}
            for t in threads:
                row[f"qps_{t}t"] = round(qps(index, queries, t), 1)
            if factory == "Flat":
                flat_qps = {t: row[f"qps_{t}t"] for t in threads}
            row.update({f"speedup_vs_flat_{t}t": round(row[f"qps_{t}t"] / flat_qps[t], 2) for t in threads})
            log.info("%s %s %s", name, factory, row)
            rows.append(row)
        del index
    best = [r for r in rows if r["recall_at_10"] >= 0.95 and r["factory"] != "Flat"]
    top = max(best, key=lambda r: r[f"qps_{max(threads)}t"], default=None)
    return {"set": name, "vectors": len(vectors), "dim": int(vectors.shape[1]), "queries": len(queries),
            "k": 10, "threads": threads, "results": rows,
            "target": "recall@10 >= 0.95 at >= 5x Flat QPS",
            "best_at_recall_0.95": top,
            "target_met": bool(top and top[f"speedup_vs_flat_{max(threads)}t"] >= 5)}


def heldout_title_queries(vectors_dir: Path, data: Path, n: int) -> np.ndarray:
    """Query-tower vectors of titles of Myntra products that were not embedded (held out of the index)."""
    import pyarrow.parquet as pq

    from vitrine.index.embed import QueryEncoder

    embedded = set((vectors_dir / "product_ids.txt").read_text().split("\n"))
    titles = [t for f in sorted((data / "myntra").glob("products-*.parquet"))
              for pid, t in zip(*pq.read_table(f, columns=["product_id", "title"]).to_pydict().values(), strict=True)
              if str(pid) not in embedded]
    rng = np.random.default_rng(0)
    picked = [titles[i] for i in rng.choice(len(titles), min(n, len(titles)), replace=False)]
    encode = QueryEncoder(vectors_dir / "model", device="cpu")
    return np.concatenate([encode(picked[i:i + 256]) for i in range(0, len(picked), 256)])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark on the real vectors and the synthetic set; print and save JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vectors", type=Path, default=REPO / "runs" / "bench" / "vectors")
    p.add_argument("--synthetic", type=int, default=1_000_000, help="size of the synthetic set (0 = skip)")
    p.add_argument("--synthetic-specs", default="Flat;IVF1024,Flat;IVF1024,PQ32,RFlat;IVF1024,PQ64x4fs,RFlat",
                   help="';'-separated factories of SPECS run on the synthetic set ('all' = every spec; HNSW "
                        "on 1M vectors takes long on 2 cores)")
    p.add_argument("--synthetic-queries", type=int, default=300, help="queries for the synthetic set")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--query-source", choices=["heldout-titles", "file"], default="heldout-titles",
                   help="held-out Myntra titles through the vectors' zero-shot query tower (embed_catalogs), or "
                        "the vectors folder's queries.npy (real queries; trained_vectors writes held-out ones)")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    products = np.load(args.vectors / "products.npy")
    if args.query_source == "file":
        queries = np.load(args.vectors / "queries.npy")[:args.queries]
    else:
        queries = heldout_title_queries(args.vectors, args.data, args.queries)
    threads = [int(t) for t in args.threads.split(",")]
    info = json.loads((args.vectors / "embed.json").read_text()) if (args.vectors / "embed.json").is_file() else {}
    host = {"machine": platform.machine(), "cpus": __import__("os").cpu_count(), "python": platform.python_version()}
    args.out.mkdir(parents=True, exist_ok=True)
    report = bench_set("real", products, queries, SPECS, threads)
    report |= {"source": info.get("model", "product vectors") + f" from {args.vectors.name} (see embedding)",
               "query_source": args.query_source, "embedding": info, "host": host}
    (args.out / "index_real.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1), flush=True)
    if args.synthetic:
        keep = {f.strip() for f in args.synthetic_specs.split(";")}
        specs = [s for s in SPECS if args.synthetic_specs == "all" or s[0] in keep]
        synth = synthetic(products, args.synthetic)
        report = bench_set("synthetic", synth, queries[:args.synthetic_queries], specs, threads)
        report |= {"source": f"{args.synthetic} synthetic vectors: real product vectors + neighbour-scale noise",
                   "host": host}
        (args.out / "index_synthetic.json").write_text(json.dumps(report, indent=1))
        print(json.dumps(report, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
