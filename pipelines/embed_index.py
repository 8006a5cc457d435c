"""Embed + index job: Ray Data embeds the whole catalog with the product tower, FAISS indexes the vectors.

    vitrine index [--model_uri=models:/vitrine@champion] [--index.factory=HNSW32 ...]

Outputs (logged to MLflow and tied to the model version by the ``vitrine.index_uri`` tag): the embeddings
Parquet (product_id, embedding, modal weights) and an index directory (see ``vitrine.index.faiss_index``).
Every valid catalog product is embedded exactly once; the job checks ids against the catalog and fails loudly.
The embedding runs as a streaming Ray Data job (read -> product tower in an actor pool, on GPUs in bf16 when the
cluster has them -> Parquet), with Ray Data's progress bars. recall@10 is measured against an exact Flat search
with held-out query vectors: the query tower's encodings of the titles of products sampled from the catalog.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.common import absolute, catalog_index, ray_session
from vitrine import registry
from vitrine.catalog.io import catalog_columns
from vitrine.config import IndexConfig, IndexJob
from vitrine.config_io import flatten
from vitrine.errors import ConfigError, VitrineError
from vitrine.index.embed import ProductEmbedder
from vitrine.index.faiss_index import IndexSpec, recall_at_k, save_index, timed_build
from vitrine.model.store import read_meta, verify_model_dir

log = logging.getLogger(__name__)
VECTORS_META = "_vitrine_vectors.json"  # beside the vectors; "_" keeps it out of Parquet dataset reads


def embedder_kwargs(model_dir: Path, job: IndexJob) -> dict[str, Any]:
    """``ProductEmbedder``'s constructor arguments for this job (a bad embedding setting is a ``ConfigError``)."""
    least = {"embed_batch_size": 1, "embed_concurrency": 1, "embed_chunk": 0, "embed_threads": 0}
    for key, low in least.items():
        value = getattr(job.index, key)
        if value < low:
            raise ConfigError(f"index.{key} must be >= {low}, got {value}; e.g. --index.{key}="
                              f"{getattr(IndexConfig, key)} (the default)")
    return {"model_dir": str(model_dir), "torch_threads": job.index.embed_threads, "chunk": job.index.embed_chunk,
            "actors": job.index.embed_concurrency}


def embed_catalog(files: list[str], model_dir: Path, out_dir: Path, job: IndexJob) -> pa.Table:
    """Run the Ray Data embedding and return the embeddings table (read back from the written Parquet)."""
    import ray.data

    shutil.rmtree(out_dir, ignore_errors=True)
    ray.data.DataContext.get_current().enable_progress_bars = True
    gpus = ray.cluster_resources().get("GPU", 0)
    present = catalog_columns(files)  # union: an image-less catalog listed first keeps the others' images
    columns = [c for c in ("product_id", "title", "image") if c in present]
    ds = ray.data.read_parquet(files, num_cpus=job.data.cpus_per_data_task).select_columns(columns)
    ds = ds.map_batches(ProductEmbedder, fn_constructor_kwargs=embedder_kwargs(model_dir, job),
                        batch_format="numpy", batch_size=job.index.embed_batch_size,
                        compute=ray.data.ActorPoolStrategy(size=job.index.embed_concurrency),
                        num_cpus=1, num_gpus=1 if gpus > 0 else 0)
    log.info("embedding %d catalog file(s) with %d actor(s) on %s", len(files), job.index.embed_concurrency,
             "GPU (bf16)" if gpus > 0 else "CPU")
    ds.write_parquet(str(out_dir))
    write_vectors_meta(out_dir, model_dir)
    return pq.read_table(out_dir)


def write_vectors_meta(out_dir: Path, model_dir: Path) -> None:
    """Record which model wrote a folder of product vectors (its weights checksum), so a later
    ``vitrine evaluate --embeddings`` can refuse vectors of another model."""
    meta = {"model_weights_sha256": read_meta(model_dir)["weights_sha256"], "written": time.time()}
    (Path(out_dir) / VECTORS_META).write_text(json.dumps(meta, indent=1))


def check_vectors_model(path: str, model_dir: Path, model: str) -> None:
    """Refuse product vectors (a Parquet file or folder) that another model wrote; vectors written before the
    record existed are taken as they are."""
    where = Path(path) if Path(path).is_dir() else Path(path).parent
    record = where / VECTORS_META
    if not record.is_file():
        log.info("%s has no record of the model that wrote it (%s); its vectors are taken as %s's", path,
                 VECTORS_META, model)
        return
    try:
        got = json.loads(record.read_text(encoding="utf-8"))["model_weights_sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--embeddings {path}: its {VECTORS_META} is damaged ({exc!r}); drop --embeddings to "
                          "re-embed the catalog") from None
    want = read_meta(model_dir)["weights_sha256"]
    if got != want:
        raise ConfigError(f"--embeddings {path}: these vectors were written by another model (weights "
                          f"{str(got)[:12]}...), not {model} ({str(want)[:12]}...); drop --embeddings to re-embed "
                          "the catalog with this model")


def embed_in_process(files: list[str], model_dir: Path, out_dir: Path, job: IndexJob) -> pa.Table:
    """The same embedding without Ray (small catalogs: tests, demos, benchmarks); same output Parquet."""
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    embed = ProductEmbedder(**embedder_kwargs(model_dir, job))
    parts = []
    for f in files:
        pf = pq.ParquetFile(f)
        columns = [c for c in ("product_id", "title", "image") if c in pf.schema_arrow.names]
        for rb in pf.iter_batches(batch_size=job.index.embed_batch_size, columns=columns):
            batch = {c: np.asarray(rb.column(c).to_pylist(), dtype=object) for c in columns}
            out = embed(batch)
            vec = out.pop("embedding")
            cols = {"product_id": pa.array(list(out.pop("product_id")), pa.string()),
                    "embedding": pa.FixedSizeListArray.from_arrays(vec.ravel(), vec.shape[1])}
            parts.append(pa.table(cols | {k: pa.array(v) for k, v in out.items()}))
    table = pa.concat_tables(parts)
    pq.write_table(table, out_dir / "part-0.parquet")
    write_vectors_meta(out_dir, model_dir)
    return table


def raw_ids(files: list[str]) -> list[str]:
    """Every row's product id as the embedder sees it (``str`` of the raw value), duplicates included."""
    return [str(v) for f in files for v in pq.read_table(f, columns=["product_id"]).column(0).to_pylist()]


def check_exactly_once(emb: pa.Table, catalog: pa.Table, source_ids: list[str] | None = None) -> pa.Table:
    """Verify the embedder saw every catalog row exactly once, then keep one row per valid product.

    ``source_ids`` are the raw files' ids (duplicates included): each must come out exactly as many times
    as it went in. Fails (``VitrineError``) on a missing, repeated or unknown id, naming examples.
    """
    ids = emb.column("product_id").to_pylist()
    if source_ids is not None:
        got, want = Counter(ids), Counter(source_ids)
        lost = sorted(pid for pid in want if got[pid] < want[pid])
        doubled = sorted(pid for pid in got if got[pid] > want.get(pid, 0) and pid in want)
        unknown = sorted(pid for pid in got if pid not in want)
        if lost or doubled or unknown or len(ids) != len(source_ids):
            raise VitrineError(
                f"embedding output ({len(ids)} rows) does not match the catalog files ({len(source_ids)} rows): "
                f"{len(lost)} ids missing (e.g. {lost[:5]}), {len(doubled)} embedded more than once "
                f"(e.g. {doubled[:5]}), {len(unknown)} unknown (e.g. {unknown[:5]}); the embedding job lost or "
                "repeated work: re-run `vitrine index`")
    valid = set(catalog.column("product_id").to_pylist())
    first: dict[str, int] = {}
    for i, pid in enumerate(ids):
        if pid in valid:
            first.setdefault(pid, i)
    missing = valid - first.keys()
    if missing:
        raise VitrineError(f"embedding output does not match the catalog: {len(missing)} products missing "
                           f"(e.g. {sorted(missing)[:5]}); re-run `vitrine index`")
    if len(first) != len(ids):
        log.info("%d embedded rows were duplicate or invalid catalog rows; kept one embedding per valid product",
                 len(ids) - len(first))
    return emb.take(pa.array(sorted(first.values()), pa.int64()))


def heldout_queries(model_dir: Path, titles: list[str], n: int, seed: int = 0) -> np.ndarray:
    """Query-tower vectors of ``n`` sampled product titles: query-like probes for recall vs Flat."""
    from vitrine.index.embed import QueryEncoder

    rng = np.random.default_rng(seed)
    picked = [titles[i] for i in rng.choice(len(titles), min(n, len(titles)), replace=False)]
    encode = QueryEncoder(model_dir, device="cpu")
    return np.concatenate([encode(picked[i:i + 128]) for i in range(0, len(picked), 128)])


def _run(job: IndexJob, embed: Any = embed_catalog) -> dict[str, Any]:
    """Embed, verify, index, save, log to MLflow and tag the model version with the index URI."""
    workdir = absolute(job.workdir)
    exp_id = registry.setup(job.tracking, workdir)
    model_uri = job.model_uri or f"models:/{job.tracking.model_name}@{job.tracking.alias}"
    model = registry.resolve_model(model_uri, workdir / "cache")
    catalog, report, files = catalog_index(job.data.catalog)
    verify_model_dir(model.local_dir)  # a corrupt artifact: one clear error before any worker starts
    embedder_kwargs(model.local_dir, job)  # a bad setting: one ConfigError before an MLflow run is opened
    spec = IndexSpec.from_config(job.index)
    run_id = registry.start_run(exp_id, f"index-{time.strftime('%Y%m%d-%H%M%S')}",
                                tags={"vitrine.job": "embed_index", "vitrine.model_uri": model_uri})
    registry.log_params(run_id, flatten(job.index, "index.") | {"model_uri": model_uri,
                                                                 "model_version": model.version,
                                                                 "data.catalog": job.data.catalog})
    try:
        out = workdir / "index_build" / (model.version or "local")
        t0 = time.perf_counter()
        emb = embed(files, model.local_dir, out / "embeddings", job)
        embed_s = time.perf_counter() - t0
        # The raw files may hold rows the catalog validation rejected (e.g. an empty title): each raw row must
        # still be embedded exactly once; only valid products (first of each id) are indexed.
        emb = check_exactly_once(emb, catalog, raw_ids(files))
        log.info("embedded %d products in %.1fs (%.0f/s), every catalog row exactly once", len(emb), embed_s,
                 len(emb) / max(embed_s, 1e-9))
        vectors = np.stack(emb.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
        index, build_s = timed_build(vectors, spec, train_size=job.index.train_size, device=job.index.device)
        probe = heldout_queries(model.local_dir, catalog.column("title").to_pylist(), job.index.recall_queries)
        recall = recall_at_k(index, vectors, probe, k=min(10, len(vectors)), metric=spec.metric)
        order = {pid: i for i, pid in enumerate(catalog.column("product_id").to_pylist())}
        rows = pa.array([order[p] for p in emb.column("product_id").to_pylist()], pa.int64())
        products = catalog.take(rows).append_column("title_weight", emb.column("title_weight")).append_column(
            "image_weight", emb.column("image_weight")).append_column("has_image", emb.column("has_image"))
        meta = {"model_name": model.name, "model_version": model.version, "model_uri": model_uri,
                "factory": spec.factory, "metric": spec.metric, "search_params": spec.search_params,
                "build_seconds": round(build_s, 3), "embed_seconds": round(embed_s, 3),
                "recall_at_10_vs_flat": recall, "recall_queries": len(probe),
                "recall_query_source": "query tower on sampled catalog titles",
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "catalog": str(absolute(job.data.catalog))}
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


def run_in_process(job: IndexJob) -> dict[str, Any]:
    """The whole job without Ray (embedding in this process): for small catalogs."""
    return _run(job, embed=embed_in_process)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m pipelines.embed_index`` (same flags as ``vitrine index``)."""
    from vitrine.cli import main as cli_main

    return cli_main(["index", *(argv or [])])
