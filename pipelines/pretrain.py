"""Pre-training job: Ray Data streams catalog + query log into Ray Train workers; MLflow logs and registers.

    vitrine pretrain [--config FILE] [--train.max_steps=200 ...]
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.common import absolute, catalog_index, ray_session
from vitrine import registry
from vitrine.catalog.derive import derive_queries, title_queries
from vitrine.catalog.io import has_images, read_table
from vitrine.catalog.keywords import mine_keywords
from vitrine.catalog.schema import clean_judgments
from vitrine.config import DataConfig, PretrainJob
from vitrine.config_io import flatten
from vitrine.errors import ConfigError, VitrineError
from vitrine.features import Featurizer, PairBuilder, judged_negatives
from vitrine.lineage import code_version, data_snapshot
from vitrine.model.encoders import resolve_text_encoder
from vitrine.model.make import check_model_config
from vitrine.train import ingest
from vitrine.train.averaging import check_decay
from vitrine.train.loop import check_schedule
from vitrine.train.ray_train import run_trainer

log = logging.getLogger(__name__)


def load_query_log(job: PretrainJob, catalog: pa.Table) -> tuple[pa.Table, str]:
    """The training query log and its provenance ('file:<path>' or 'derived from catalog attributes')."""
    ids = set(catalog.column("product_id").to_pylist())
    if job.data.queries:
        queries, report = clean_judgments(read_table(job.data.queries), ids, source=job.data.queries)
        if report.issues:
            log.warning("query log: %s", report.summary())
        return queries, f"file:{job.data.queries}"
    return derive_queries(catalog, seed=job.train.seed), "derived from catalog attributes"


def add_title_queries(job: PretrainJob, catalog: pa.Table, queries: pa.Table, source: str) -> tuple[pa.Table, str]:
    """The log plus ``data.title_queries`` pseudo-queries per product cut from titles, labelled as its positives."""
    rate = job.data.title_queries
    if rate == 0:
        return queries, source
    top = pc.max(queries.column("label")).as_py() if queries.num_rows else None
    label = float(top) if top is not None and top > job.data.min_label else job.data.min_label + 1.0
    try:
        extra = title_queries(catalog, rate, label=label, seed=job.train.seed)
    except ValueError as e:  # a rate that is not a count
        raise ConfigError(f"data.title_queries={rate}: {e}, e.g. 0.5 pseudo-queries per product") from None
    log.info("title pseudo-queries: %d added to %d logged pairs (label %.2f)", extra.num_rows, queries.num_rows,
             label)
    return pa.concat_tables([queries.select(["query", "product_id", "label"]), extra]), \
        f"{source} + {extra.num_rows} title pseudo-queries"


def term_columns(dc: DataConfig) -> tuple[str, ...]:
    """``data.term_columns`` as a tuple of column names."""
    return tuple(c.strip() for c in dc.term_columns.split(",") if c.strip())


def check_grouping(dc: DataConfig, columns: list[str]) -> None:
    """Refuse a batch-grouping or term column the catalog lacks, or a window below 1, before any data is read."""
    if dc.group_column and dc.group_column not in columns:
        raise ConfigError(f"data.group_column={dc.group_column!r} is not a catalog column; use one of "
                          f"{sorted(c for c in columns if c not in ('product_id', 'title'))} or '' (random batches)")
    for col in term_columns(dc):
        if col not in columns:
            raise ConfigError(f"data.term_columns names {col!r}, not a catalog column; use comma-separated names "
                              f"from {sorted(c for c in columns if c not in ('product_id', 'title', 'image'))}")
    if dc.group_window < 1:
        raise ConfigError(f"data.group_window={dc.group_window}: use 1 (off) or more batches to regroup")


def check_hard_negatives(job: PretrainJob, images: bool) -> None:
    """Refuse ``data.hard_negative_max_label`` where judged non-matches cannot be honest hard negatives."""
    dc, key = job.data, "data.hard_negative_max_label"
    value = dc.hard_negative_max_label
    if value == 0:
        return
    if value < 0:
        raise ConfigError(f"{key}={value} is negative; use a label below data.min_label, or 0 (off)")
    if not dc.queries:
        raise ConfigError(f"{key}={value} needs a judged query log (data.queries); derived queries have no judged "
                          "non-matches: set it to 0")
    if value >= dc.min_label:
        raise ConfigError(f"{key}={value} must be below data.min_label={dc.min_label} (a pair above min_label is a "
                          "positive, so it cannot also be a negative); lower it, e.g. to 1.7 on a 1-3 scale")
    if images and job.model.use_images:
        raise ConfigError(f"{key}={value}: hard negatives are encoded from their titles only and this catalog has "
                          "images, so the missing image would give them away; use model.use_images=false, or 0 (off)")


def check_ingest(dc: DataConfig) -> None:
    """Refuse a Ray Data idle back-off that is not a period between 0 and 1000 ms."""
    if not (math.isfinite(dc.idle_backoff_ms) and 0 <= dc.idle_backoff_ms <= 1000):
        raise ConfigError(f"data.idle_backoff_ms={dc.idle_backoff_ms} is not a sleep in ms; use 0 (off) to 1000, "
                          "e.g. 20")


def build_dataset(job: PretrainJob, files: list[str], queries: pa.Table,
                  keywords: dict[str, list[str]] | None = None,
                  negatives: dict[str, list[tuple[str, str]]] | None = None) -> Any:
    """Ray Data pipeline: read Parquet -> (query, product) pairs -> tokenized, decoded tensors."""
    import ray.data

    dc = job.data
    terms = term_columns(dc) if job.loss.mask_satisfied else None  # read only when the mask uses them
    extra = [dc.group_column] if dc.group_column else []
    extra += [c for c in terms or () if c not in extra]
    columns = ["product_id", "title", "image"] + extra
    with ingest.installed(ray.data.DataContext.get_current(), dc.idle_backoff_ms):  # the dataset copies it
        ds = ray.data.read_parquet(files, shuffle="files", num_cpus=dc.cpus_per_data_task).select_columns(columns)
    ds = ds.map_batches(PairBuilder, fn_constructor_kwargs={"queries": queries, "min_label": dc.min_label,
                                                          "keywords": keywords, "group_column": dc.group_column,
                                                          "term_columns": terms, "negatives": negatives},
                        batch_format="pyarrow", batch_size=256, compute=ray.data.ActorPoolStrategy(size=1),
                        num_cpus=dc.cpus_per_data_task)
    ds = ds.map_batches(
        Featurizer,
        fn_constructor_kwargs={"tokenizer_dir": str(resolve_text_encoder(job.model.text_encoder)),
                               "image_size": dc.image_size, "max_query_len": dc.max_query_len,
                               "max_title_len": dc.max_title_len, "keep_ids": False},
        batch_format="numpy", batch_size=64, compute=ray.data.ActorPoolStrategy(size=dc.data_actors),
        num_cpus=dc.cpus_per_data_task,
    )
    return ds


def _run(job: PretrainJob) -> dict[str, Any]:
    """Train, log to MLflow, register the model and point ``tracking.alias`` at it."""
    check_schedule(job.train)  # before anything is created in the workdir
    check_decay(job.train.ema_decay)
    check_ingest(job.data)
    check_model_config(job.model)
    workdir = absolute(job.workdir)
    exp_id = registry.setup(job.tracking, workdir)
    catalog, report, files = catalog_index(job.data.catalog)
    check_grouping(job.data, catalog.column_names)
    if job.data.hard_negative_max_label != 0:  # reads Parquet footers only when the switch is on
        check_hard_negatives(job, has_images(files))
    queries, query_source = load_query_log(job, catalog)
    if queries.num_rows == 0:
        raise VitrineError(f"no usable (query, product) pairs in {job.data.queries or job.data.catalog}; "
                           "check the query log's product ids against the catalog")
    logged = queries  # keywords and judged negatives come from the log alone
    queries, query_source = add_title_queries(job, catalog, queries, query_source)
    run_name = f"pretrain-{time.strftime('%Y%m%d-%H%M%S')}"
    run_id = registry.start_run(exp_id, run_name, tags={"vitrine.job": "pretrain"})
    registry.log_params(run_id, flatten(job))
    registry.log_params(run_id, {
        "data.catalog_rows": report.rows_in, "data.catalog_rows_kept": report.rows_out,
        "data.query_rows": queries.num_rows, "data.query_source": query_source,
        "data.catalog_files": ",".join(Path(f).name for f in files)[:500],
    })
    snapshot = data_snapshot(job.data.catalog, job.data.queries, query_source, derived=queries)
    code = code_version()
    registry.log_lineage(run_id, snapshot, code)
    keywords = None
    if job.loss.keyword_enhancement:
        keywords = mine_keywords(logged, catalog, k=job.loss.num_keywords, min_label=job.data.min_label)
        with_kw = sum(1 for v in keywords.values() if v)
        registry.log_params(run_id, {"data.products_with_keywords": with_kw})
        log.info("keyword enhancement: keywords mined for %d of %d products", with_kw, len(keywords))
    negatives = None
    if job.data.hard_negative_max_label > 0:
        negatives = judged_negatives(logged, catalog, job.data.hard_negative_max_label)
        pairs = sum(len(v) for v in negatives.values())
        registry.log_params(run_id, {"data.hard_negative_pairs": pairs, "data.hard_negative_queries": len(negatives)})
        log.info("hard negatives: %d judged non-matches for %d queries", pairs, len(negatives))
    try:
        dataset = build_dataset(job, files, queries, keywords, negatives)
        result = run_trainer(job, dataset, workdir / "ray_train", run_name, run_id)
        if result.error:
            raise result.error
        with result.checkpoint.as_directory() as ckpt:
            registry.log_artifacts(run_id, Path(ckpt) / "model", "model")
        final = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
        registry.log_metrics(run_id, {f"final_{k}": v for k, v in final.items()}, step=int(final.get("step", 0)))
    except BaseException:
        registry.end_run(run_id, "FAILED")
        raise
    registry.end_run(run_id)
    version = registry.register_model(job.tracking.model_name, run_id, job.tracking.alias,
                                      tags={"query_source": query_source, **registry.lineage_tags(snapshot, code)})
    uri = f"models:/{job.tracking.model_name}@{job.tracking.alias}"
    log.info("pretrain done: run %s, %s version %s (%s)", run_id, job.tracking.model_name, version, uri)
    return {"run_id": run_id, "model_name": job.tracking.model_name, "version": version, "model_uri": uri,
            "metrics": final}


def run(job: PretrainJob) -> dict[str, Any]:
    """Run the job in the current Ray cluster, or in a local Ray instance started (and stopped) for it."""
    with ray_session():
        return _run(job)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m pipelines.pretrain`` (same flags as ``vitrine pretrain``)."""
    from vitrine.cli import main as cli_main

    return cli_main(["pretrain", *(argv or [])])
