"""Candidate recall of the re-ranker's lists: word BM25, the dense model, BM25 over character trigrams, and their
unions, at several depths (what share of a judged query's relevant products any ranker could reach).

    python -m bench.quality.candidate_recall --model models:/vitrine-homedepot@challenger --workdir runs/g2 \
        --embeddings <vectors parquet of that model> --catalog data/homedepot/catalog.parquet \
        --judgments data/homedepot/val/judgments.parquet --output reports/candidates-homedepot

Each list retrieves once at the largest depth and is cut for the smaller ones, exactly as ``CandidateBuilder``
takes them (``--lexical``'s word list ``.top`` / ``CharGramRetriever.top``: matching rows only, ties in row order;
``--lexical=bm25`` for the stock tokens of the rankers saved before 2026-12-05).
Recall is per query (relevant products among the candidates / relevant products), averaged over the queries
with at least one relevant product; ``size`` is the mean number of distinct candidates. Writes
``candidate_recall.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

LISTS = {"words": "W", "dense": "D", "chargrams": "C"}
UNIONS = (("words", "dense"), ("words", "dense", "chargrams"))


def recall_table(sides: dict[str, np.ndarray], relevant: list[set[int]], depths: list[int]) -> dict[str, dict]:
    """``{depth: {list or union: recall, "size " + union: mean candidates}}`` from each list's (Q, max depth) rows."""
    out: dict[str, dict] = {}
    for d in depths:
        cut = {name: [{int(r) for r in row[:d] if r >= 0} for row in rows] for name, rows in sides.items()}
        row: dict[str, float] = {}
        for name in sides:
            row[name] = float(np.mean([len(c & r) / len(r) for c, r in zip(cut[name], relevant, strict=True)]))
        for names in UNIONS:
            if all(n in cut for n in names):
                union = [set().union(*parts) for parts in zip(*(cut[n] for n in names), strict=True)]
                key = "+".join(LISTS[n] for n in names)
                row[key] = float(np.mean([len(c & r) / len(r) for c, r in zip(union, relevant, strict=True)]))
                row[f"size {key}"] = float(np.mean([len(c) for c in union]))
        out[str(d)] = row
    return out


def main(argv: list[str] | None = None) -> int:
    """Retrieve with each list once, tabulate recall by depth, print and save JSON."""
    from bench.quality.common import add_dense_flags

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dense_flags(p)
    p.add_argument("--depths", default="100,200,300,500")
    p.add_argument("--lexical", default="product", help="word list: product (the ranker's default) or bm25 (stock)")
    p.add_argument("--output", required=True, help="folder for candidate_recall.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        depths = sorted(int(d) for d in args.depths.split(","))
    except ValueError:
        raise SystemExit(f"error: --depths {args.depths!r}: expected comma-separated integers") from None
    if depths[0] < 1:
        raise SystemExit(f"error: --depths {args.depths!r}: depths must be >= 1")
    from vitrine.lexical import WORD_LISTS

    if args.lexical not in WORD_LISTS:
        raise SystemExit(f"error: --lexical {args.lexical!r}: choose one of {', '.join(WORD_LISTS)}")

    from bench.quality.fusion_sweep import judged_dense
    from vitrine.evaluate import CharGramRetriever
    from vitrine.lexical import word_retriever

    catalog, judged, dense, label, rel = judged_dense(args.model, args.workdir, args.embeddings, args.catalog,
                                                      args.judgments)
    ids = catalog.column("product_id").to_pylist()
    titles = catalog.column("title").to_pylist()
    position = {pid: i for i, pid in enumerate(ids)}
    queries = sorted(q for q, labels in judged.items() if any(v >= rel.relevant_min for v in labels.values()))
    relevant = [{position[p] for p, v in judged[q].items() if v >= rel.relevant_min} for q in queries]
    top, seconds = depths[-1], {}
    sides: dict[str, np.ndarray] = {}
    words = word_retriever(args.lexical, ids, titles)
    for name, retrieve in (("words", words.top), ("dense", dense.search),
                           ("chargrams", CharGramRetriever(ids, titles).top)):
        t0 = time.perf_counter()
        sides[name] = retrieve(queries, top)[1]
        seconds[name] = round(time.perf_counter() - t0, 2)
    report = {"model": label, "lexical": args.lexical, "catalog": args.catalog, "judgments": args.judgments,
              "queries": len(queries), "retrieve_seconds": seconds, "recall": recall_table(sides, relevant, depths),
              "command": " ".join(["python -m bench.quality.candidate_recall", *(sys.argv[1:] if argv is None
                                                                                  else argv)])}
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=1)
    (out / "candidate_recall.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
