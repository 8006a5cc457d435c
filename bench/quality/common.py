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


def retriever(cat: JudgedCatalog, model: str, workdir: str, embeddings: str = "", judgments: str = ""
              ) -> tuple[Any, str]:
    """``pipelines.evaluate.single_retriever`` for ``model`` (its registry in ``workdir`` when it is a URI)."""
    from pipelines.common import absolute
    from pipelines.evaluate import single_retriever
    from vitrine import registry
    from vitrine.config import EvaluateJob

    job = EvaluateJob(workdir=workdir, model=model, catalog=cat.path, judgments=judgments, embeddings=embeddings)
    if model.startswith("models:/"):
        registry.setup(job.tracking, absolute(workdir))
    return single_retriever(job, cat.table, cat.files, absolute(workdir))
