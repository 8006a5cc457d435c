"""What the re-ranker bench scripts share: a catalog with its train / validation judgments, and a retriever of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class JudgedCatalog:
    """A catalog read as the harness reads it, with its judgments per query for each named split."""

    path: str
    table: Any  # pa.Table
    files: list[str]
    ids: list[str]
    titles: list[str]
    judged: dict[str, dict[str, dict[str, float]]]  # split -> query -> product_id -> label


def ranker_bench_parser(doc: str, prf: int) -> Any:
    """An ``argparse`` parser with the flags every single-model re-ranker bench takes (the catalog, its train and
    validation judgments, the dense model, its workdir and vectors, the output report, the centroid count)."""
    import argparse

    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    for flag in ("--catalog", "--train", "--val", "--model", "--output"):
        p.add_argument(flag, required=True)
    p.add_argument("--workdir", default="runs")
    p.add_argument("--embeddings", default="")
    p.add_argument("--prf", type=int, default=prf)
    return p


def add_dense_flags(p: Any) -> None:
    """The flags of a bench over one dense model and one judged catalog: ``--model``, ``--workdir``,
    ``--embeddings``, ``--catalog`` and ``--judgments`` (the validation split)."""
    p.add_argument("--model", required=True, help="the dense model (as vitrine evaluate --model)")
    p.add_argument("--workdir", default="runs")
    p.add_argument("--embeddings", default="", help="that model's product vectors (skips embedding the catalog)")
    p.add_argument("--catalog", required=True)
    p.add_argument("--judgments", required=True, help="judged queries (the validation split)")


def judged_catalog(path: str, **splits: str) -> JudgedCatalog:
    """Read ``path`` and each split's judgments (e.g. ``train=..., val=...``), cleaned against the catalog."""
    from pipelines.common import catalog_index
    from vitrine.catalog.io import read_table
    from vitrine.catalog.schema import clean_judgments
    from vitrine.evaluate import judgments_by_query

    table, _, files = catalog_index(path)
    ids, titles = table.column("product_id").to_pylist(), table.column("title").to_pylist()
    judged = {part: judgments_by_query(clean_judgments(read_table(p), set(ids), source=p)[0])
              for part, p in splits.items()}
    return JudgedCatalog(path, table, files, ids, titles, judged)


def retriever(cat: JudgedCatalog, model: str, workdir: str, embeddings: str = "", judgments: str = "",
              precision: str = "fp32") -> tuple[Any, str]:
    """``pipelines.evaluate.single_retriever`` for ``model`` (its registry in ``workdir`` when it is a URI), its
    query tower at ``precision``."""
    from pipelines.common import absolute
    from pipelines.evaluate import single_retriever
    from vitrine import registry
    from vitrine.config import EvaluateJob

    job = EvaluateJob(workdir=workdir, model=model, catalog=cat.path, judgments=judgments, embeddings=embeddings,
                       query_precision=precision)
    if model.startswith("models:/"):
        registry.setup(job.tracking, absolute(workdir))
    return single_retriever(job, cat.table, cat.files, absolute(workdir))


def open_judged(args: Any) -> tuple[JudgedCatalog, Any, str]:
    """The catalog with its train and validation judgments and the dense retriever a ``ranker_bench_parser``'s
    flags name, or a one-line exit naming what is wrong."""
    from vitrine.errors import VitrineError

    try:
        cat = judged_catalog(args.catalog, train=args.train, val=args.val)
        return (cat, *retriever(cat, args.model, args.workdir, args.embeddings, args.val))
    except (VitrineError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None


def fit_default_ranker(cat: JudgedCatalog, tx: Any, trows: list[Any], prf: int, seed: int = 0) -> Any:
    """The default ranker (``Reranker.fit``'s settings) fitted on the train split's candidate features."""
    from vitrine.evaluate import Relevance
    from vitrine.rerank import Reranker, grades

    return Reranker.fit(tx, grades(trows, sorted(cat.judged["train"]), cat.ids, cat.judged["train"], Relevance()),
                        [len(r) for r in trows], {"prf": prf}, seed=seed)


def top_rows(ranker: Any, vx: Any, vrows: list[Any], queries: list[str], k: int = 100) -> dict[str, list[int]]:
    """Each query's top ``k`` candidate rows in ``ranker``'s order (ties kept in candidate order)."""
    import numpy as np

    from vitrine.rerank import per_query

    scores = per_query(ranker.score(vx), vrows)
    return {q: [rows[i] for i in np.argsort(-s, kind="stable")[:k]]
            for q, rows, s in zip(queries, vrows, scores, strict=True)}


def val_metrics(cat: JudgedCatalog, run_rows: dict[str, list[int]], rel: Any) -> dict[str, float]:  # Relevance
    """nDCG@10, Recall@10 and Recall@100 of a run given as catalog rows per query, against the ``val`` split."""
    from vitrine.evaluate import score_run

    m = score_run({q: [cat.ids[r] for r in rows] for q, rows in run_rows.items()}, cat.judged["val"], rel,
                  ks=(10, 100))
    return {k: round(m[k], 4) for k in ("ndcg@10", "recall@10", "recall@100")}


def write_report(path: str, report: dict[str, Any]) -> None:
    """Write a bench report as JSON (creating its folder) and print it."""
    import json
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
