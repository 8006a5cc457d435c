"""BM25 top-k selection: ``bm25s.retrieve``'s against one that breaks ties by row, on speed and on what the
served re-ranker answers with each (run after ``bench.serve.rerank_cost``, on the version it prepared).

    python -m bench.serve.bm25_ties --version 1 --queries platform/vitrine/sample/homedepot_judgments.parquet

Prints JSON: ms per query for both selections (same BM25 scores, rank by rank), and how many re-ranked top 10s
stay identical when the served ranker's BM25 candidates come from the by-row selection.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]


def top_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best rows of one BM25 score vector, ties by row; rows that match nothing fill, in row order."""
    hit = np.flatnonzero(scores > 0)
    if len(hit) > k:
        kth = np.partition(scores[hit], len(hit) - k)[len(hit) - k]
        hit = hit[scores[hit] >= kth]
    hit = hit[np.lexsort((hit, -scores[hit]))][:k]
    rows = np.concatenate([hit, np.flatnonzero(scores <= 0)[:k - len(hit)]])
    return scores[rows].astype(np.float32), rows


class ByRow:
    """A ``BM25Retriever`` whose search selects with ``top_rows``."""

    def __init__(self, bm25) -> None:  # noqa: ANN001 - vitrine.evaluate.BM25Retriever
        self.bm25 = bm25

    def search(self, queries: list[str], k: int, allowed: np.ndarray | None = None):  # noqa: ANN201
        """Same contract as ``BM25Retriever.search`` (no filters)."""
        import bm25s

        words = bm25s.tokenize(queries, stopwords="en", stemmer=self.bm25.stemmer, show_progress=False,
                               return_ids=False)
        n = len(self.bm25.ids)
        out = [top_rows(self.bm25.index.get_scores(list(w)) if w else np.zeros(n, np.float32), min(k, n))
               for w in words]
        return np.stack([s for s, _ in out]), np.stack([r for _, r in out])


def main(argv: list[str] | None = None) -> int:
    """Time both selections and compare the served re-ranker's answers."""
    from bench.serve.rerank_cost import open_version
    from vitrine.errors import VitrineError
    from vitrine.evaluate import judgments_by_query
    from vitrine.index.embed import QueryEncoder
    from vitrine.index.reranked import load_version_reranker

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--version", required=True, help="a version bench.serve.rerank_cost prepared in --workdir")
    p.add_argument("--queries", type=Path, required=True, help="judgments whose queries are used")
    p.add_argument("--limit", type=int, default=300)
    p.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench" / "rerank_cost")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)
    work = args.workdir.resolve()
    try:
        model, catalog = open_version(work, args.version)
        ranker = load_version_reranker(model, work / "cache", catalog)
    except VitrineError as exc:
        raise SystemExit(f"bench.serve.bm25_ties: {exc}") from None
    if ranker is None:
        raise SystemExit(f"bench.serve.bm25_ties: version {args.version} has no attached ranker; run "
                         "bench.serve.rerank_cost first")
    queries = sorted(judgments_by_query(pq.read_table(args.queries)))[:args.limit]
    library, by_row = ranker.lexical, ByRow(ranker.lexical)
    timing, results = {}, {}
    for name, bm25 in (("library", library), ("by_row", by_row)):
        t0 = time.perf_counter()
        results[name] = [bm25.search([q], ranker.depth) for q in queries]
        timing[name] = round((time.perf_counter() - t0) / len(queries) * 1000, 3)
    same_scores = sum(np.allclose(a[0], b[0]) for a, b in zip(results["library"], results["by_row"], strict=True))
    vectors = QueryEncoder(model.local_dir, device="cpu")(queries)
    tops = {}
    for name, bm25 in (("library", library), ("by_row", by_row)):
        ranker.lexical = bm25
        tops[name] = [[r for r, _, _ in ranker.search(q, v, 10)] for q, v in zip(queries, vectors, strict=True)]
    pairs = list(zip(tops["library"], tops["by_row"], strict=True))
    text = json.dumps({"products": len(catalog.titles), "queries": len(queries), "ms_per_query": timing,
                      "speedup": round(timing["library"] / timing["by_row"], 1),
                      "queries_with_the_same_scores": same_scores,
                      "reranked_top10_identical": sum(a == b for a, b in pairs),
                      "reranked_top10_mean_shared": round(float(np.mean([len(set(a) & set(b)) for a, b in pairs])), 2),
                      "command": " ".join(["python -m bench.serve.bm25_ties",
                                           *(sys.argv[1:] if argv is None else argv)])},
                     indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
