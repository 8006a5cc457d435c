"""Re-ranker ablation: what the training grades, a zero-shot MiniLM feature, capacity and honest dense scores add.

Every variant trains the ``vitrine.rerank`` LambdaMART stage on the judged train queries and scores the
validation queries, one at a time against the shipped setting (the first row):
- ``gain grades``: every judged label by its nDCG gain (``round(3 * gain)``, 0-6), not only the relevant ones;
- ``+ zero-shot``: the zero-shot MiniLM cosine, its distance to the query's top, min-max and log rank as 4 more
  features (candidates unchanged);
- ``800 trees / 31 leaves``: more capacity;
- with ``--fold-model`` / ``--fold-queries``: the ranker trained on the train queries the fold model never saw,
  once with the full model's dense scores (optimistic: it trained on them) and once with the fold model's
  (honest), so the cost of optimistic training features is measured on the same queries.

    python -m bench.quality.rerank_ablation --model models:/vitrine-homedepot@challenger --workdir runs/g2 \\
        --embeddings <that model's vectors> --catalog data/homedepot/catalog.parquet \\
        --train data/homedepot/train/judgments.parquet --val data/homedepot/val/judgments.parquet \\
        --fold-model models:/vitrine-homedepot@challenger --fold-workdir runs/fa --fold-embeddings <its vectors> \\
        --fold-queries data/homedepot/folda/queries.parquet --output reports/rerank-ablation-homedepot
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import numpy as np

from bench.quality.fusion_sweep import _Cached

ZS_FEATURES = ("zs", "zs_minus_top", "zs_minmax", "zs_log_rank")


class _Keyed(_Cached):
    """A ranking computed once for a fixed query list, looked up by query text."""

    def __init__(self, name: str, queries: list[str], scores: np.ndarray, rows: np.ndarray) -> None:
        super().__init__(name, scores, rows)
        self.at = {q: i for i, q in enumerate(queries)}

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The cached (scores, rows) of these queries, cut to k."""
        idx = [self.at[q] for q in queries]
        return self.scores[idx, :k], self.rows[idx, :k]

    top = search  # as a lexical side: the rows were cached from BM25Retriever.top


def zs_columns(side: _Keyed, queries: list[str], rows: list[list[int]], depth: int) -> np.ndarray:
    """The zero-shot columns of every candidate (a product outside its top ``depth`` gets its floor)."""
    s, r = side.search(queries, depth)
    out = []
    for i, q_rows in enumerate(rows):
        got = {int(p): (float(v), k) for k, (v, p) in enumerate(zip(s[i], r[i], strict=True)) if p >= 0}
        top, floor = float(s[i].max()), float(s[i].min())
        span = max(top - floor, 1e-6)
        for p in q_rows:
            v, k = got.get(p, (floor, depth))
            out.append([v, v - top, (v - floor) / span, math.log1p(k)])
    return np.asarray(out, np.float32).reshape(-1, len(ZS_FEATURES))


def judged_grades(rows: list[list[int]], queries: list[str], ids: list[str], judged: dict, rel) -> np.ndarray:  # noqa: ANN001
    """Every judged candidate by its nDCG gain, ``round(3 * gain)`` (0-6); unjudged 0."""
    return np.asarray([int(round(3 * rel.gain(judged.get(q, {}).get(ids[p], rel.gain_offset))))
                       for q, q_rows in zip(queries, rows, strict=True) for p in q_rows], np.int32)


def score(x: np.ndarray, rows: list[list[int]], queries: list[str], ids: list[str], model, judged, rel) -> dict:  # noqa: ANN001
    """nDCG@10 / Recall@10 / Recall@100 of the candidates ordered by ``model``."""
    from vitrine.evaluate import score_run

    s, run, start = model.score(x), {}, 0
    for q, q_rows in zip(queries, rows, strict=True):
        order = np.argsort(-s[start:start + len(q_rows)], kind="stable")[:100]
        run[q] = [ids[q_rows[i]] for i in order]
        start += len(q_rows)
    m = score_run(run, judged, rel, ks=(10, 100))
    return {k: round(m[k], 4) for k in ("ndcg@10", "recall@10", "recall@100")}


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one linear experiment
    """Entry point: ``python -m bench.quality.rerank_ablation``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag in ("--model", "--catalog", "--train", "--val", "--output"):
        p.add_argument(flag, required=True)
    for flag in ("--embeddings", "--fold-model", "--fold-embeddings", "--fold-queries", "--fold-workdir"):
        p.add_argument(flag, default="")
    p.add_argument("--workdir", default="runs")
    p.add_argument("--depth", type=int, default=200)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.depth < 10:
        raise SystemExit(f"error: --depth {args.depth}: take at least 10 candidates from each side")
    if bool(args.fold_model) != bool(args.fold_queries):
        raise SystemExit("error: --fold-model and --fold-queries go together (the queries that model trained on)")

    from bench.quality.common import judged_catalog, retriever
    from vitrine.catalog.io import read_table
    from vitrine.errors import VitrineError
    from vitrine.evaluate import BM25Retriever, Relevance
    from vitrine.rerank import CandidateBuilder, Reranker, grades

    try:
        cat = judged_catalog(args.catalog, train=args.train, val=args.val)
        ids, titles, judged = cat.ids, cat.titles, cat.judged
        queries = sorted(set(judged["train"]) | set(judged["val"]))
        sides: dict[str, _Keyed] = {}
        specs = [("dense", args.model, args.embeddings, args.workdir), ("zs", "pretrained", "", args.workdir)]
        if args.fold_model:
            specs.append(("fold", args.fold_model, args.fold_embeddings, args.fold_workdir or args.workdir))
        for name, model, emb, workdir in specs:
            found, label = retriever(cat, model, workdir, emb, args.val)
            sides[name] = _Keyed(label, queries, *found.search(queries, args.depth))
        fold_seen = set(read_table(args.fold_queries).column("query").to_pylist()) if args.fold_queries else set()
    except VitrineError as exc:
        raise SystemExit(f"error: {exc}") from None
    rel = Relevance()
    lexical = _Keyed("bm25", queries, *BM25Retriever(ids, titles).top(queries, args.depth))

    def build(dense: _Keyed, part: str, only: set[str] | None = None) -> tuple:
        qs = [q for q in sorted(judged[part]) if only is None or q in only]
        x, rows = CandidateBuilder(lexical, dense, titles, args.depth).build(qs, progress=f"{part} features")
        return qs, x, rows

    vq, vx, vrows = build(sides["dense"], "val")
    vz = np.hstack([vx, zs_columns(sides["zs"], vq, vrows, args.depth)])
    tq, tx, trows = build(sides["dense"], "train")
    tz = np.hstack([tx, zs_columns(sides["zs"], tq, trows, args.depth)])
    groups = [len(r) for r in trows]
    y_rel, y_gain = grades(trows, tq, ids, judged["train"], rel), judged_grades(trows, tq, ids, judged["train"], rel)
    variants = [("shipped: relevant grades, 300 trees / 15 leaves", tx, vx, y_rel, 4, 300, 15),
                ("gain grades", tx, vx, y_gain, 7, 300, 15),
                ("gain grades + zero-shot", tz, vz, y_gain, 7, 300, 15),
                ("gain grades + zero-shot, 800 trees / 31 leaves", tz, vz, y_gain, 7, 800, 31)]
    results = []
    try:
        for name, x, xv, y, levels, trees, leaves in variants:
            model = Reranker.fit(x, y, groups, {}, trees=trees, leaves=leaves, levels=levels)
            results.append({"variant": name, "train_queries": len(tq),
                            **score(xv, vrows, vq, ids, model, judged["val"], rel)})
            logging.getLogger(__name__).info("%s", results[-1])
        if args.fold_model:
            unseen = set(judged["train"]) - fold_seen
            keep = np.repeat([q in unseen for q in tq], groups)  # the full model's rows of those queries
            optimistic = ([q for q in tq if q in unseen], tx[keep], [r for q, r in zip(tq, trows, strict=True)
                                                                   if q in unseen])
            for name, dense, (qs, x, rows) in (("optimistic", sides["dense"], optimistic),
                                               ("honest", sides["fold"], build(sides["fold"], "train", unseen))):
                model = Reranker.fit(x, grades(rows, qs, ids, judged["train"], rel), [len(r) for r in rows], {})
                results.append({"variant": f"train queries {args.fold_model} never saw, {name} dense scores "
                                f"({dense.name})", "train_queries": len(qs),
                                **score(vx, vrows, vq, ids, model, judged["val"], rel)})
                logging.getLogger(__name__).info("%s", results[-1])
    except VitrineError as exc:
        raise SystemExit(f"error: {exc}") from None
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": sides["dense"].name, "depth": args.depth, "val_queries": len(vq), "results": results}
    (out / "ablation.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
