"""BM25 top-k: ``BM25Retriever.search`` (``bm25s.retrieve``, the baseline's) against ``BM25Retriever.top`` (ties
in row order, matching rows only: the re-ranker's candidates), on speed and on the scores they return.

    python -m bench.serve.bm25_ties --catalog data/homedepot/catalog.parquet \
        --queries data/homedepot/val/judgments.parquet --limit 2000

Prints JSON: ms per query for both (one query per call, as the served re-ranker asks, interleaved query by
query), and for how many queries the positive scores agree rank by rank.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def main(argv: list[str] | None = None) -> int:
    """Time both selections over the same queries and compare their scores."""
    from vitrine.evaluate import BM25Retriever, judgments_by_query

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--catalog", type=Path, required=True, help="catalog Parquet whose titles are indexed")
    p.add_argument("--queries", type=Path, required=True, help="judgments whose queries are used")
    p.add_argument("--limit", type=int, default=300)
    p.add_argument("--depth", type=int, default=200, help="k of each search (the re-ranker's candidate depth)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)
    for path in (args.catalog, args.queries):
        if not path.is_file():
            raise SystemExit(f"bench.serve.bm25_ties: {path} is not a file")
    catalog = pq.read_table(args.catalog, columns=["product_id", "title"])
    bm25 = BM25Retriever(catalog.column("product_id").to_pylist(), catalog.column("title").to_pylist())
    queries = sorted(judgments_by_query(pq.read_table(args.queries)))[:args.limit]
    seconds = {"library": 0.0, "by_row": 0.0}
    same = 0
    for q in queries:
        t0 = time.perf_counter()
        lib_s, _ = bm25.search([q], args.depth)
        t1 = time.perf_counter()
        top_s, _ = bm25.top([q], args.depth)
        t2 = time.perf_counter()
        seconds["library"] += t1 - t0
        seconds["by_row"] += t2 - t1
        hits = top_s[0] > 0
        same += bool(np.allclose(top_s[0][hits], lib_s[0][:hits.sum()]) and not (lib_s[0][hits.sum():] > 0).any())
    ms = {k: round(v / len(queries) * 1000, 3) for k, v in seconds.items()}
    text = json.dumps({"products": catalog.num_rows, "queries": len(queries), "depth": args.depth,
                       "ms_per_query": ms, "speedup": round(ms["library"] / ms["by_row"], 1),
                       "queries_with_the_same_scores": same,
                       "command": " ".join(["python -m bench.serve.bm25_ties",
                                            *(sys.argv[1:] if argv is None else argv)])}, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
