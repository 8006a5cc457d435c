"""Hybrid fusion sweep: BM25 + one dense model, reciprocal-rank vs convex score fusion over dense weights.

Each side retrieves once (top ``--depth``); every fusion setting is scored on the whole judged set and on two
halves of it (queries split by the parity of their text's MD5), so a weight picked on one half can be checked
on the other. Writes ``sweep.json`` and ``sweep.png`` (nDCG@10 and Recall@100 against the dense weight).

    python -m bench.quality.fusion_sweep --model models:/vitrine-homedepot@challenger --workdir runs/g2 \
        --embeddings <vectors parquet of that model> --catalog data/homedepot/catalog.parquet \
        --judgments data/homedepot/val/judgments.parquet --output reports/fusion-homedepot
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

import numpy as np

WEIGHTS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


class _Cached:
    """One side's ranking, computed once at the sweep's depth and cut to k on every call."""

    def __init__(self, name: str, scores: np.ndarray, rows: np.ndarray) -> None:
        self.name, self.scores, self.rows = name, scores, rows

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The cached (scores, rows) for all queries, cut to k (the sweep always asks for every query)."""
        return self.scores[:, :k], self.rows[:, :k]


def half_of(query: str) -> str:
    """'A' or 'B': the parity of the query text's MD5 (stable across runs and machines)."""
    return "AB"[int(hashlib.md5(query.encode()).hexdigest(), 16) % 2]


def sweep(lexical, dense, ids: list[str], judged: dict[str, dict[str, float]], rel,  # noqa: ANN001 - retrievers
          weights: tuple[float, ...] = WEIGHTS, depth: int = 200) -> list[dict]:
    """Score RRF (weight 0.5) and convex fusion at each weight on the whole set and on halves A and B."""
    from vitrine.evaluate import HybridRetriever, score_run

    queries = sorted(judged)
    sides = [_Cached(r.name, *r.search(queries, depth)) for r in (lexical, dense)]
    halves = {q: half_of(q) for q in queries}
    rows = []
    for fusion, ws in (("rrf", (0.5,)), ("convex", weights)):
        for w in ws:
            _, pos = HybridRetriever(*sides, depth=depth, dense_weight=w, fusion=fusion).search(queries, 100)
            run = {q: [ids[int(p)] for p in pos[i] if p >= 0] for i, q in enumerate(queries)}
            row: dict = {"fusion": fusion, "dense_weight": w}
            for part in ("all", "A", "B"):
                sub = {q: v for q, v in judged.items() if part == "all" or halves[q] == part}
                m = score_run({q: run[q] for q in sub}, sub, rel, ks=(10, 100))
                row[part] = {"ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"], "queries": m["queries"]}
            logging.getLogger(__name__).info("%s %.2f: nDCG@10 %.4f  R@100 %.4f", fusion, w,
                                             row["all"]["ndcg@10"], row["all"]["recall@100"])
            rows.append(row)
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    """nDCG@10 and Recall@100 against the dense weight, one line per half, RRF dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    convex = [r for r in rows if r["fusion"] == "convex"]
    rrf = next(r for r in rows if r["fusion"] == "rrf")
    for ax, metric in zip(axes, ("ndcg@10", "recall@100"), strict=True):
        for part, style in (("all", "-o"), ("A", ":"), ("B", "--")):
            ax.plot([r["dense_weight"] for r in convex], [r[part][metric] for r in convex], style,
                    label=f"convex, {part}")
        ax.axhline(rrf["all"][metric], color="grey", linestyle="--", label="RRF, all")
        ax.set_xlabel("dense weight (0 = BM25 alone, 1 = dense alone)")
        ax.set_ylabel(metric)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def judged_dense(model: str, workdir: str, embeddings: str, catalog: str, judgments: str) -> tuple:
    """``(catalog table, {query: {product_id: label}}, dense retriever, its label, Relevance)`` for a bench run:
    the model's vectors read from ``embeddings`` (or embedded now), the judgments cleaned against the catalog;
    a ``VitrineError`` ends the run with its message."""
    from pipelines.common import absolute, catalog_index
    from pipelines.evaluate import single_retriever
    from vitrine import registry
    from vitrine.catalog.io import read_table
    from vitrine.catalog.schema import clean_judgments
    from vitrine.config import EvaluateJob
    from vitrine.errors import VitrineError
    from vitrine.evaluate import Relevance, judgments_by_query

    try:
        job = EvaluateJob(workdir=workdir, model=model, catalog=catalog, judgments=judgments, embeddings=embeddings)
        root = absolute(job.workdir)
        if job.model.startswith("models:/"):
            registry.setup(job.tracking, root)
        table, _, files = catalog_index(job.catalog)
        ids = set(table.column("product_id").to_pylist())
        cleaned, _ = clean_judgments(read_table(job.judgments), ids, source=job.judgments)
        dense, label = single_retriever(job, table, files, root)
    except VitrineError as exc:
        raise SystemExit(f"error: {exc}") from None
    return table, judgments_by_query(cleaned), dense, label, Relevance(job.relevant_min, job.gain_offset)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m bench.quality.fusion_sweep``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="models:/<name>@<alias>, a model dir or 'pretrained'")
    p.add_argument("--catalog", required=True)
    p.add_argument("--judgments", required=True)
    p.add_argument("--embeddings", default="", help="that model's product vectors (Parquet); else embedded now")
    p.add_argument("--workdir", default="runs")
    p.add_argument("--weights", default=",".join(map(str, WEIGHTS)), help="comma-separated dense weights in [0, 1]")
    p.add_argument("--depth", type=int, default=200)
    p.add_argument("--output", required=True, help="folder for sweep.json and sweep.png")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        weights = tuple(float(w) for w in args.weights.split(","))
    except ValueError:
        raise SystemExit(f"error: --weights {args.weights!r}: expected comma-separated numbers") from None
    if any(not 0.0 <= w <= 1.0 for w in weights) or args.depth < 100:
        raise SystemExit(f"error: --weights {args.weights!r} / --depth {args.depth}: weights in [0, 1], depth >= 100")

    from vitrine.evaluate import BM25Retriever

    catalog, judged, dense, label, rel = judged_dense(args.model, args.workdir, args.embeddings, args.catalog,
                                                      args.judgments)
    ids = catalog.column("product_id").to_pylist()
    lexical = BM25Retriever(ids, catalog.column("title").to_pylist())
    rows = sweep(lexical, dense, ids, judged, rel, weights, args.depth)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({"model": label, "catalog": args.catalog, "judgments": args.judgments,
                                                "depth": args.depth, "rows": rows}, indent=1))
    plot(rows, out / "sweep.png", f"BM25 + {label}: fusion sweep")
    print(json.dumps({"model": label, "best_convex_all": max((r for r in rows if r["fusion"] == "convex"),
                                                             key=lambda r: r["all"]["ndcg@10"]),
                      "rrf": rows[0]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
