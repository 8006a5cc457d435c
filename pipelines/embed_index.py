"""Embed + index job: Ray Data embeds the whole catalog with the product tower, FAISS indexes the vectors.

    vitrine index [--model_uri=models:/vitrine@champion] [--index.factory=HNSW32 ...]

Outputs (logged to MLflow and tied to the model version by the ``vitrine.index_uri`` tag): the embeddings
Parquet (product_id, embedding, modal weights) and an index directory (see ``vitrine.index.faiss_index``).
Every valid catalog product is embedded exactly once; the job checks ids against the catalog and fails loudly.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.common import absolute, catalog_index, ray_session
from vitrine import registry
from vitrine.config import IndexJob, flatten
from vitrine.errors import VitrineError
from vitrine.index.embed import ProductEmbedder
from vitrine.index.faiss_index import IndexSpec, recall_at_k, save_index, timed_build

log = logging.getLogger(__name__)


def embed_catalog(files: list[str], model_dir: Path, out_dir: Path, job: IndexJob) -> pa.Table:
    """Run the Ray Data embedding and return the embeddings table (read back from the written Parquet)."""
    import ray.data

    shutil.rmtree(out_dir, ignore_errors=True)
    ds = ray.data.read_parquet(files, num_cpus=job.data.cpus_per_data_task).select_columns(
        ["product_id", "title", "image"])
    ds = ds.map_batches(ProductEmbedder, fn_constructor_kwargs={"model_dir": str(model_dir)},
                        batch_format="numpy", batch_size=job.index.embed_batch_size,
                        compute=ray.data.ActorPoolStrategy(size=job.index.embed_concurrency),
                        num_cpus=1, num_gpus=1 if ray.cluster_resources().get("GPU", 0) > 0 else 0)
    ds.write_parquet(str(out_dir))
    return pq.read_table(out_dir)


def check_exactly_once(emb: pa.Table, catalog: pa.Table) -> pa.Table:
    """Keep one row per product; fail if any valid catalog product is missing or unknown ids appeared."""
    expected = set(catalog.column("product_id").to_pylist())
    ids = emb.column("product_id").to_pylist()
    first: dict[str, int] = {}
    for i, pid in enumerate(ids):
        first.setdefault(pid, i)
    missing = expected - first.keys()
    extra = first.keys() - expected
    if missing or extra:
        raise VitrineError(f"embedding output does not match the catalog: {len(missing)} products missing "
                           f"(e.g. {sorted(missing)[:5]}), {len(extra)} unknown (e.g. {sorted(extra)[:5]})")
    if len(first) != len(ids):
        log.info("catalog has %d duplicate rows; kept the first embedding of each id", len(ids) - len(first))
    return emb.take(pa.array(sorted(first.values()), pa.int64()))


def _run(job: IndexJob) -> dict[str, Any]:
    """Embed, verify, index, save, log to MLflow and tag the model version with the index URI."""
    workdir = absolute(job.workdir)
    exp_id = registry.setup(job.tracking, workdir)
    model_uri = job.model_uri or f"models:/{job.tracking.model_name}@{job.tracking.alias}"
    model = registry.resolve_model(model_uri, workdir / "cache")
    catalog, report, files = catalog_index(job.data.catalog)
    run_id = registry.start_run(exp_id, f"index-{time.strftime('%Y%m%d-%H%M%S')}",
                                tags={"vitrine.job": "embed_index", "vitrine.model_uri": model_uri})
    registry.log_params(run_id, flatten(job.index, "index.") | {"model_uri": model_uri,
                                                                 "model_version": model.version,
                                                                 "data.catalog": job.data.catalog})
    try:
        out = workdir / "index_build" / (model.version or "local")
        t0 = time.perf_counter()
        emb = embed_catalog(files, model.local_dir, out / "embeddings", job)
        embed_s = time.perf_counter() - t0
        # Ray Data may emit valid rows whose id the catalog validation rejected (e.g. empty title): drop them.
        emb = emb.filter(pc.is_in(emb.column("product_id"), catalog.column("product_id")))
        emb = check_exactly_once(emb, catalog)
        vectors = np.stack(emb.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
        spec = IndexSpec.from_config(job.index)
        index, build_s = timed_build(vectors, spec)
        rng = np.random.default_rng(0)
        probe = vectors[rng.choice(len(vectors), min(500, len(vectors)), replace=False)]
        recall = recall_at_k(index, vectors, probe, k=min(10, len(vectors)), metric=spec.metric)
        order = {pid: i for i, pid in enumerate(catalog.column("product_id").to_pylist())}
        rows = pa.array([order[p] for p in emb.column("product_id").to_pylist()], pa.int64())
        products = catalog.take(rows).append_column("title_weight", emb.column("title_weight")).append_column(
            "image_weight", emb.column("image_weight")).append_column("has_image", emb.column("has_image"))
        meta = {"model_name": model.name, "model_version": model.version, "model_uri": model_uri,
                "factory": spec.factory, "metric": spec.metric, "search_params": spec.search_params,
                "build_seconds": round(build_s, 3), "embed_seconds": round(embed_s, 3),
                "recall_at_10_vs_flat": recall, "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "catalog": job.data.catalog}
        index_dir = save_index(out / "index", index, products, meta)
        failed = int(pc.sum(emb.column("image_failed")).as_py() or 0)
        metrics = {"products": len(vectors), "embed_seconds": embed_s, "products_per_s": len(vectors) / embed_s,
                   "build_seconds": build_s, "recall_at_10_vs_flat": recall, "images_undecodable": failed,
                   "catalog_rows_skipped": report.rows_in - report.rows_out,
                   "mean_image_weight": float(np.mean(emb.column("image_weight").to_numpy()))}
        registry.log_metrics(run_id, metrics)
        registry.log_histogram(run_id, emb.column("image_weight").to_numpy(), "modal_weights.png",
                               title=f"Modal Adaptation: image weight per product ({model.name} v{model.version})",
                               xlabel="image weight (title weight = 1 - image weight)")
        index_uri = registry.log_artifacts(run_id, index_dir, "index")
        registry.log_artifacts(run_id, out / "embeddings", "embeddings")
    except BaseException:
        registry.end_run(run_id, "FAILED")
        raise
    registry.end_run(run_id)
    if model.version:
        registry.set_version_tag(model.name, model.version, registry.INDEX_TAG, index_uri)
    log.info("indexed %d products (%s, recall@10 vs Flat %.3f) -> %s", len(vectors), spec.factory, recall,
             index_uri)
    return {"run_id": run_id, "index_uri": index_uri, "index_dir": str(index_dir), **metrics}


def run(job: IndexJob) -> dict[str, Any]:
    """Run the job in the current Ray cluster, or in a local Ray instance started (and stopped) for it."""
    with ray_session():
        return _run(job)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m pipelines.embed_index`` (same flags as ``vitrine index``)."""
    from vitrine.cli import main as cli_main

    return cli_main(["index", *(argv or [])])
