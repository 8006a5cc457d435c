"""Evaluation job: retrieve over the FULL catalog for every judged query; Recall@10/100, nDCG@10, MRR@10.

    vitrine evaluate --model models:/vitrine@champion --catalog products.parquet --judgments judgments.parquet
    vitrine evaluate --model bm25 ...          # BM25 over titles (bm25s's stock tokens: the baseline)
    vitrine evaluate --model bm25-product ...  # the re-ranker's word list: units normalised, spelling corrected
    vitrine evaluate --model pretrained ...    # zero-shot MiniLM (mean pooled, exact search)
    vitrine evaluate --model hybrid:models:/vitrine@champion ...   # BM25 + the model, reciprocal-rank fusion
        [--hybrid-fusion convex --hybrid-weight 0.8]              # ... or a blend of per-query scaled scores
    vitrine evaluate --model models:/vitrine@champion --rerank <folder> ...  # candidates of both, `vitrine rerank`'s
                                                                          # trained ranker orders them
        [--query-precision int8]   # a trained model's query tower quantized as a CPU replica would serve it

A trained model embeds whatever catalog it is handed with its product tower (Ray Data), then searches
exactly (Flat); metrics, a Recall@K plot and the metrics JSON are logged to MLflow.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipelines.common import absolute, catalog_index, ray_session
from vitrine import registry
from vitrine.catalog.io import read_table
from vitrine.catalog.schema import clean_judgments
from vitrine.config import EvaluateJob, IndexJob
from vitrine.config_io import flatten
from vitrine.errors import ConfigError, VitrineError
from vitrine.evaluate import (
    BM25Retriever,
    DenseRetriever,
    HybridRetriever,
    Relevance,
    judgments_by_query,
    recall_curve,
    score_run,
)
from vitrine.index.embed import QueryEncoder, ZeroShotTextEncoder
from vitrine.model.quantize import check_precision
from vitrine.model.store import verify_model_dir

log = logging.getLogger(__name__)
LEXICAL_MODELS = ("bm25", "bm25-product")  # --model values that are word lists, not dense models
CURVE_KS = (1, 5, 10, 20, 50, 100)


def build_retriever(job: EvaluateJob, catalog: pa.Table, files: list[str], workdir: Path) -> tuple[Any, str]:
    """The retriever named by ``job.model`` and a label for reports (``hybrid:<model>`` fuses BM25 with it;
    ``--rerank <folder>`` orders BM25 + model candidates with that trained ranker)."""
    if job.rerank:
        from vitrine.rerank import Reranker, RerankRetriever, candidate_builder

        reranker = Reranker.load(job.rerank)  # a bad folder fails here, before any embedding
        dense, label = single_retriever(job, catalog, files, workdir)
        if reranker.meta.get("model") != label:
            raise ConfigError(f"--rerank {job.rerank}: trained with the scores of {reranker.meta.get('model')}, "
                              f"not of {label}; pass --model {reranker.meta.get('model_uri')} or retrain it")
        titles = catalog.column("title").to_pylist()
        builder = candidate_builder(catalog.column("product_id").to_pylist(), titles, dense,
                                    int(reranker.meta["depth"]), int(reranker.meta["char_depth"]),
                                    reranker.meta["lexical"], dense.index, int(reranker.meta["prf"]))
        return RerankRetriever(builder, reranker), f"rerank-{reranker.meta['lexical']}+{label}"
    if not job.model.startswith("hybrid:"):
        return single_retriever(job, catalog, files, workdir)
    inner = job.model.removeprefix("hybrid:")
    if inner in ("", *LEXICAL_MODELS) or inner.startswith("hybrid:"):
        raise ConfigError(f"--model {job.model!r}: hybrid fuses BM25 with a dense model; write "
                          "hybrid:models:/<name>@<alias>, hybrid:<model dir> or hybrid:pretrained")
    dense, label = single_retriever(replace(job, model=inner), catalog, files, workdir)
    lexical = BM25Retriever(catalog.column("product_id").to_pylist(), catalog.column("title").to_pylist())
    retriever = HybridRetriever(lexical, dense, job.hybrid_depth, dense_weight=job.hybrid_weight,
                                fusion=job.hybrid_fusion)
    suffix = "" if job.hybrid_fusion == "rrf" else f"-{job.hybrid_fusion}{job.hybrid_weight:g}"
    return retriever, f"hybrid-bm25+{label}{suffix}"


def single_retriever(job: EvaluateJob, catalog: pa.Table, files: list[str], workdir: Path) -> tuple[Any, str]:
    """BM25, zero-shot MiniLM, or a trained model's towers (catalog embedded now, or read from ``job.embeddings``)."""
    ids = catalog.column("product_id").to_pylist()
    titles = catalog.column("title").to_pylist()
    if job.embeddings and job.model in (*LEXICAL_MODELS, "pretrained"):
        raise ConfigError(f"--embeddings applies to a trained model's vectors, not to --model {job.model}; "
                          "drop --embeddings")
    if job.model == "bm25":
        return BM25Retriever(ids, titles), "bm25"
    if job.model == "bm25-product":
        from vitrine.lexical import ProductBM25Retriever

        return ProductBM25Retriever(ids, titles), "bm25-product"
    if job.model == "pretrained":
        enc = ZeroShotTextEncoder()
        return DenseRetriever("pretrained", enc(titles, progress="embedding titles"), enc), "pretrained-minilm"
    from pipelines.embed_index import check_exactly_once, check_vectors_model, embed_catalog

    model = registry.resolve_model(job.model, workdir / "cache")
    verify_model_dir(model.local_dir)
    if job.embeddings:
        emb, source = read_table(job.embeddings), job.embeddings
        lacking = [c for c in ("product_id", "embedding") if c not in emb.column_names]
        if lacking:
            raise ConfigError(f"--embeddings {job.embeddings}: no {' / '.join(lacking)} column, so not product vectors "
                              "(pass the `embeddings` path an earlier evaluate printed, or drop --embeddings)")
        check_vectors_model(job.embeddings, model.local_dir, job.model)
        log.info("product vectors read from %s (%d rows), not re-embedded", job.embeddings, emb.num_rows)
    else:
        index_job = IndexJob(workdir=job.workdir, data=job.data, index=job.index, tracking=job.tracking)
        source = str(workdir / "eval_embeddings" / f"{time.time_ns()}")
        with ray_session():
            emb = embed_catalog(files, model.local_dir, Path(source), index_job)
        log.info("product vectors written to %s (reuse them with --embeddings)", source)
    try:
        emb = check_exactly_once(emb.filter(pa.compute.is_in(emb.column("product_id"),
                                                             catalog.column("product_id"))), catalog)
    except VitrineError as exc:
        if not job.embeddings:
            raise
        raise ConfigError(f"--embeddings {job.embeddings} does not cover this catalog ({job.catalog}): {exc}. "
                          "Drop --embeddings to embed this catalog.") from None
    position = {pid: i for i, pid in enumerate(emb.column("product_id").to_pylist())}
    vectors = np.stack(emb.column("embedding").to_numpy(zero_copy_only=False))[[position[p] for p in ids]]
    label = f"{model.name}/v{model.version}" if model.version else str(model.local_dir)
    query_encoder = QueryEncoder(model.local_dir, precision=job.query_precision)
    if vectors.shape[1] != query_encoder.model.cfg.embed_dim:
        raise ConfigError(f"--embeddings {job.embeddings}: vectors of dim {vectors.shape[1]} do not come from "
                          f"{job.model} (dim {query_encoder.model.cfg.embed_dim}); drop --embeddings to re-embed")
    return DenseRetriever(label, vectors, query_encoder, source), label


def vectors_source(retriever: Any) -> str:
    """Where a trained model's product vectors are stored ("" for none), through a hybrid or re-ranked wrapper."""
    inner = getattr(retriever, "builder", retriever)  # RerankRetriever -> its CandidateBuilder
    return getattr(getattr(inner, "dense", inner), "source", "")


def retrieve(retriever: Any, queries: list[str], ids: list[str], k: int, batch: int = 256
             ) -> tuple[dict[str, list[str]], pa.Table]:
    """Top-k product ids per query, plus the ranked table (query, product_id, rank, score)."""
    run: dict[str, list[str]] = {}
    rows: dict[str, list] = {"query": [], "product_id": [], "rank": [], "score": []}
    for i in tqdm(range(0, len(queries), batch), desc="retrieving", unit="batch"):
        chunk = queries[i:i + batch]
        scores, positions = retriever.search(chunk, k)
        for q, s_row, p_row in zip(chunk, scores, positions, strict=True):
            ranked = [ids[int(p)] for p in p_row if p >= 0]
            run[q] = ranked
            rows["query"] += [q] * len(ranked)
            rows["product_id"] += ranked
            rows["rank"] += list(range(1, len(ranked) + 1))
            rows["score"] += [float(s) for s in s_row[: len(ranked)]]
    table = pa.table({"query": pa.array(rows["query"], pa.string()), "product_id": pa.array(rows["product_id"]),
                      "rank": pa.array(rows["rank"], pa.int32()), "score": pa.array(rows["score"], pa.float32())})
    return run, table


def run(job: EvaluateJob) -> dict[str, Any]:
    """Evaluate one model or baseline; returns the metrics dict (also written / logged)."""
    if not job.model:
        raise ConfigError("pass --model: models:/<name>@<alias>, a model directory, 'bm25', 'bm25-product', "
                          "'pretrained' or hybrid:<one of those dense models>")
    if job.model.startswith("hybrid:") and not 0.0 <= job.hybrid_weight <= 1.0:  # before the catalog is embedded
        raise ConfigError(f"--hybrid-weight {job.hybrid_weight}: the dense share of the fusion, in [0, 1] "
                          "(0.5 = plain reciprocal-rank fusion)")
    if job.k < 10:
        raise ConfigError(f"--k {job.k}: retrieve at least the top 10 (nDCG@10, Recall@10 and MRR@10 read them); "
                          "the default is 100")
    check_precision(job.query_precision, "--query-precision")
    if job.query_precision != "fp32" and job.model.removeprefix("hybrid:") in (*LEXICAL_MODELS, "pretrained"):
        raise ConfigError(f"--query-precision {job.query_precision} applies to a trained model's query tower, not to "
                          f"--model {job.model}; drop it or pass a trained model")
    if job.hybrid_fusion not in HybridRetriever.FUSIONS:
        raise ConfigError(f"--hybrid-fusion {job.hybrid_fusion!r}: use one of {', '.join(HybridRetriever.FUSIONS)}")
    if job.rerank and (job.model in LEXICAL_MODELS or job.model.startswith("hybrid:")):
        raise ConfigError(f"--rerank with --model {job.model!r}: the re-ranker takes the dense model it was trained "
                          "with (it adds BM25's candidates itself): models:/<name>@<alias>, a model dir or pretrained")
    workdir = absolute(job.workdir)
    exp_id = registry.setup(job.tracking, workdir)
    catalog, report, files = catalog_index(job.catalog)
    judgments, jreport = clean_judgments(read_table(job.judgments), set(catalog.column("product_id").to_pylist()),
                                         source=job.judgments)
    if jreport.issues:
        log.warning("judgments: %s", jreport.summary())
    judged = judgments_by_query(judgments)
    retriever, label = build_retriever(job, catalog, files, workdir)
    run_map, ranked = retrieve(retriever, sorted(judged), catalog.column("product_id").to_pylist(), job.k)
    rel = Relevance(job.relevant_min, job.gain_offset)
    metrics = score_run(run_map, judged, rel, ks=(10, job.k) if job.k != 10 else (10,))
    metrics.update(catalog_products=float(catalog.num_rows), judgments_skipped=float(len(jreport.issues)))
    curve = recall_curve(run_map, judged, rel, [k for k in CURVE_KS if k <= job.k])
    result = {"model": label, "catalog": job.catalog, "judgments": job.judgments, "k": job.k,
              "relevant_min": job.relevant_min, "gain_offset": job.gain_offset, "metrics": metrics,
              "recall_curve": curve}
    if job.query_precision != "fp32":
        result["query_precision"] = job.query_precision
    if vectors_source(retriever):
        result["embeddings"] = vectors_source(retriever)  # the trained model's product vectors: --embeddings
    run_id = registry.start_run(exp_id, f"evaluate-{label.replace('/', '-')}",
                                tags={"vitrine.job": "evaluate", "vitrine.model": label})
    registry.log_params(run_id, {k: v for k, v in flatten(job).items() if not k.startswith(("index.", "data."))})
    registry.log_metrics(run_id, {k.replace("@", "_at_"): v for k, v in metrics.items()})
    registry.log_curve(run_id, curve, "recall_at_k.png", title=f"Recall@K: {label}")
    if job.output:
        Path(job.output).parent.mkdir(parents=True, exist_ok=True)
        Path(job.output).write_text(json.dumps(result, indent=1))
    if job.run_output:
        Path(job.run_output).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(ranked, job.run_output)
    registry.end_run(run_id)
    print(f"{label}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "@" in k)
          + f"  ({int(metrics['queries'])} queries, {catalog.num_rows} products"
          + (f", {job.query_precision} query tower)" if job.query_precision != "fp32" else ")"), flush=True)
    return {**result, "run_id": run_id}


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m pipelines.evaluate``."""
    from vitrine.cli import main as cli_main

    return cli_main(["evaluate", *(argv or [])])
