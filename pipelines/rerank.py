"""Re-ranker training job: LambdaMART over BM25 (words, character trigrams) + dense candidates, fitted on a
judged TRAIN query log.

    vitrine rerank --model=models:/vitrine-homedepot@challenger --catalog=data/homedepot/catalog.parquet \\
        --judgments=data/homedepot/train/judgments.parquet --out=runs/rerankers/homedepot
    vitrine evaluate --model models:/vitrine-homedepot@challenger --rerank runs/rerankers/homedepot \\
        --catalog data/homedepot/catalog.parquet --judgments data/homedepot/val/judgments.parquet

The ranker (``vitrine.rerank``) is tied to the dense model it was trained with; ``vitrine evaluate --rerank``
refuses another. Params, the candidates' recall, the feature-importance plot and the ranker itself are logged
to MLflow. ``--attach=true`` (a registry model only) also tags that version with the logged ranker
(``vitrine.reranker_uri``): the Serve app then orders that version's answers with it (``vitrine.index.reranked``).
The ranker reads each list's top-3 neighbour centroids from the dense model's product vectors (``--prf=3``, the
default; ``--prf=0`` turns them off). ``--cross_top=30`` also trains a cross-encoder that re-scores the ranker's
top 30 (``vitrine.cross_encoder``): it and a first ranker fit 90% of the training queries, the blend weight is
chosen on the other 10%, then the ranker is refitted on all of them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.common import absolute, catalog_index
from pipelines.evaluate import LEXICAL_MODELS, single_retriever
from vitrine import registry
from vitrine.catalog.io import read_table
from vitrine.catalog.schema import clean_judgments
from vitrine.config import EvaluateJob, RerankJob
from vitrine.config_io import flatten
from vitrine.evaluate import Relevance, judgments_by_query
from vitrine.rerank import Reranker, candidate_builder, grades

log = logging.getLogger(__name__)


def held_out(queries: list[str], fraction: float) -> np.ndarray:
    """Which queries choose the cross-encoder's blend weight: a stable ``fraction`` of them by MD5."""
    buckets = np.array([int(hashlib.md5(q.encode()).hexdigest()[:8], 16) % 1000 for q in queries])
    return buckets < round(1000 * fraction)


def select(x: np.ndarray, y: np.ndarray, rows: list[list[int]], keep: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """The feature rows, grades and candidate lists of the kept queries."""
    per_row = np.repeat(keep, [len(r) for r in rows])
    return x[per_row], y[per_row], [r for r, k in zip(rows, keep, strict=True) if k]


def fit_cross(job: RerankJob, reranker: Reranker, builder: Any, queries: list[str], held: np.ndarray,
              x: np.ndarray, rows: list[list[int]], judged: dict[str, dict[str, float]], ids: list[str],
              titles: list[str], rel: Relevance) -> dict[str, Any]:
    """Train the cross-encoder on the queries the ranker fitted, choose its blend weight on the held-out ones
    (or take ``--cross_weight``), attach both to ``reranker``; returns the figures."""
    from vitrine.cross_encoder import CrossEncoder, choose_weight, training_pairs, union_pools
    from vitrine.evaluate import ndcg_at_k
    from vitrine.rerank import per_query, top_k

    t0 = time.time()
    fit_q = [q for q, h in zip(queries, held, strict=True) if not h]
    pool = []
    if job.cross_pool_from in ("ranker", "mix"):  # the unjudged products the first ranker puts first: re-scored
        fx, _, f_rows = select(x, np.zeros(len(x)), rows, ~held)
        pool = [top_k(s, r, job.cross_pool)[1] for s, r in zip(per_query(reranker.score(fx), f_rows), f_rows,
                                                                  strict=True)]
    if job.cross_pool_from in ("words", "mix"):
        _, words = builder.lexical.top(fit_q, job.cross_pool)
        pool = union_pools(pool, words) if pool else words
    pairs = training_pairs(fit_q, judged, ids, titles, pool, job.cross_negatives, rel.gain, job.seed)
    cross = CrossEncoder.pretrained(job.cross_encoder)
    import torch

    if torch.cuda.is_available():  # trains and scores on the GPU when there is one; Reranker.load does the same
        cross.to("cuda")
    figures = cross.fit(pairs, batch=job.cross_batch, lr=job.cross_lr, steps=job.cross_steps, seed=job.seed,
                        progress="cross-encoder")
    figures["cross_fit_s"] = round(time.time() - t0, 1)
    hx, _, h_rows = select(x, np.zeros(len(x)), rows, held)
    h_q = [q for q, h in zip(queries, held, strict=True) if h]
    heads = [top_k(s, r, job.cross_top) for s, r in zip(per_query(reranker.score(hx), h_rows), h_rows, strict=True)]
    pq, pt = [q for q, (_, r) in zip(h_q, heads, strict=True) for _ in r], [titles[i] for _, r in heads for i in r]
    logits = cross.score(pq, pt, progress="cross-encoder, held-out queries")
    per_query, at = [], 0
    for s, r in heads:
        per_query.append((s, logits[at:at + len(r)], [ids[i] for i in r]))
        at += len(r)
    weight, curve = choose_weight(per_query, [judged[q] for q in h_q],
                                  lambda ranked, labels: ndcg_at_k(ranked, labels, 10, rel))
    if job.cross_weight >= 0:
        weight = job.cross_weight
    figures.update(cross_top=job.cross_top, cross_weight=weight, cross_held_queries=len(h_q),
                   cross_held_ndcg_ranker=curve["0"], cross_held_ndcg_blend=curve[f"{weight:g}"]
                   if f"{weight:g}" in curve else float("nan"))
    reranker.cross = cross
    reranker.meta.update(figures, cross_encoder=job.cross_encoder, cross_pool_from=job.cross_pool_from,
                         cross_curve=curve)
    log.info("cross-encoder: weight %.2f on %d held-out queries (nDCG@10 %s)", weight, len(h_q), curve)
    return figures


def plot_importance(importance: dict[str, float], path: Path, title: str) -> None:
    """Horizontal bar chart of each feature's share of the total split gain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total = sum(importance.values()) or 1.0
    items = sorted(importance.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.barh([k for k, _ in items], [v / total for _, v in items])
    ax.set_xlabel("share of split gain")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def check_out(out: Path) -> None:
    """Refuse, before any work, an output that is a file or a folder holding something other than a ranker."""
    from vitrine.errors import ConfigError

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out={out}: a file is there; pass a folder for the ranker")
    if out.is_dir() and any(out.iterdir()) and not (out / "reranker.json").is_file():
        raise ConfigError(f"--out={out}: the folder holds other files, not a ranker; pass a new or empty folder "
                          "(a ranker's own folder is replaced)")


def run(job: RerankJob) -> dict[str, Any]:
    """Train the ranker, save it, log it; returns its folder and training figures."""
    from vitrine.errors import ConfigError

    if not job.model or job.model in LEXICAL_MODELS or job.model.startswith("hybrid:"):
        raise ConfigError(f"--model {job.model!r}: the re-ranker needs the dense model whose scores it uses: "
                          "models:/<name>@<alias>, a model directory or 'pretrained'")
    if job.attach and not registry.MODEL_URI.match(job.model):
        raise ConfigError(f"--attach=true with --model {job.model!r}: only a registry version can carry a ranker; "
                          "pass --model=models:/<name>@<alias> or models:/<name>/<version>")
    if job.trees < 1 or job.depth < 10:
        raise ConfigError(f"--trees={job.trees} / --depth={job.depth}: use at least 1 tree and 10 candidates a side")
    if job.cross_top < 0:
        raise ConfigError(f"--cross_top={job.cross_top}: use 0 (no cross-encoder) or at least 10, e.g. 30")
    if job.cross_top and job.cross_weight != -1 and not 0 <= job.cross_weight <= 1:
        raise ConfigError(f"--cross_weight={job.cross_weight}: a blend weight in [0, 1], or -1 to choose it on the "
                          "held-out training queries (the default)")
    if job.cross_top and (job.cross_top < 10 or not 0 < job.cross_holdout < 1 or job.cross_weight > 1
                          or job.cross_negatives < 0 or job.cross_steps < 0 or job.cross_pool < 1):
        raise ConfigError(f"--cross_top={job.cross_top} --cross_holdout={job.cross_holdout} --cross_weight="
                          f"{job.cross_weight} --cross_negatives={job.cross_negatives} --cross_steps={job.cross_steps} "
                          f"--cross_pool={job.cross_pool}: the cross-encoder re-scores at least 10 candidates "
                          "(--cross_top=30), chooses its weight on a held-out share in (0, 1) (0.1), takes a weight "
                          "<= 1 (or -1 to choose it), 0+ negatives from a pool of 1+, 0+ steps (0 = one pass)")
    if job.cross_top and job.cross_pool_from not in ("words", "ranker", "mix"):
        raise ConfigError(f"--cross_pool_from={job.cross_pool_from!r}: the cross-encoder's negatives come from "
                          "'words' (the word list's top --cross_pool, the default), 'ranker' (the ranker's) or "
                          "'mix' (both tops in one pool)")
    if job.cross_top:  # before the ranker's features and fit, which take minutes
        from vitrine.model.encoders import resolve_text_encoder

        try:
            resolve_text_encoder(job.cross_encoder)
        except ConfigError:
            raise ConfigError(f"--cross_encoder={job.cross_encoder!r}: neither 'minilm' (the shipped MiniLM) nor a "
                              "local Hugging Face checkpoint directory with a config.json") from None
    if job.prf < 0:
        raise ConfigError(f"--prf={job.prf}: use 0 (no neighbour-centroid features) or the number of each list's "
                          "top products whose vectors make its centroid, e.g. --prf=3")
    if job.char_depth < 0:
        raise ConfigError(f"--char_depth={job.char_depth}: use 0 (no character-trigram list) or a positive depth, "
                          "e.g. --char_depth=200 (the default)")
    from vitrine.lexical import check_word_list

    check_word_list(job.lexical, "--lexical")  # before the catalog is read and embedded
    workdir = absolute(job.workdir)
    if job.out:
        check_out(Path(job.out))  # before minutes of features and fitting
    exp_id = registry.setup(job.tracking, workdir)
    catalog, _, files = catalog_index(job.catalog)
    ids = catalog.column("product_id").to_pylist()
    titles = catalog.column("title").to_pylist()
    judgments, jreport = clean_judgments(read_table(job.judgments), set(ids), source=job.judgments)
    if jreport.issues:
        log.warning("judgments: %s", jreport.summary())
    judged = judgments_by_query(judgments)
    ejob = EvaluateJob(workdir=job.workdir, model=job.model, catalog=job.catalog, judgments=job.judgments,
                       embeddings=job.embeddings, data=job.data, index=job.index, tracking=job.tracking)
    dense, label = single_retriever(ejob, catalog, files, workdir)
    rel = Relevance(job.relevant_min, job.gain_offset)
    builder = candidate_builder(ids, titles, dense, job.depth, job.char_depth, job.lexical, dense.index, job.prf)
    queries = sorted(judged)
    t0 = time.time()
    x, rows = builder.build(queries, progress="candidates + features")
    y = grades(rows, queries, ids, judged, rel)
    relevant = sum(1 for labels in judged.values() for v in labels.values() if v >= rel.relevant_min)
    figures = {"queries": len(queries), "candidates": int(len(y)), "candidate_recall": float((y > 0).sum()) /
               max(relevant, 1), "features_s": round(time.time() - t0, 1)}
    t1 = time.time()
    meta = {"model": label, "model_uri": job.model, "catalog": job.catalog, "judgments": job.judgments,
            "depth": job.depth, "char_depth": job.char_depth, "lexical": job.lexical, "prf": job.prf,
            "relevant_min": job.relevant_min,
            "gain_offset": job.gain_offset, **figures}
    held = held_out(queries, job.cross_holdout) if job.cross_top else np.zeros(len(queries), bool)
    fit_x, fit_y, fit_rows = select(x, y, rows, ~held)
    reranker = Reranker.fit(fit_x, fit_y, [len(r) for r in fit_rows], meta, trees=job.trees, seed=job.seed)
    figures["fit_s"] = round(time.time() - t1, 1)
    reranker.meta.update(fit_s=figures["fit_s"])
    if job.cross_top:
        figures.update(fit_cross(job, reranker, builder, queries, held, x, rows, judged, ids, titles, rel))
        # the weight is chosen; the ranker is refitted on every training query (the cross-encoder keeps its 90%)
        t2 = time.time()
        cross, fitted = reranker.cross, reranker.meta
        reranker = Reranker.fit(x, y, [len(r) for r in rows], meta, trees=job.trees, seed=job.seed)
        reranker.cross = cross
        figures["refit_s"] = round(time.time() - t2, 1)
        reranker.meta.update({k: v for k, v in fitted.items() if k.startswith("cross_")}, fit_s=figures["fit_s"],
                             refit_s=figures["refit_s"])
    out = Path(job.out) if job.out else workdir / "rerankers" / re.sub(r"[^A-Za-z0-9_.-]+", "-", label)
    check_out(out)
    if (out / "reranker.json").is_file():
        log.warning("replacing the ranker in %s", out)
    reranker.save(out)
    run_id = registry.start_run(exp_id, f"rerank-{label.replace('/', '-')}",
                                tags={"vitrine.job": "rerank", "vitrine.model": label})
    registry.log_params(run_id, flatten(job))
    registry.log_metrics(run_id, {k: float(v) for k, v in figures.items()})
    plot_importance(reranker.importance(), out / "importance.png", f"re-ranker over BM25 + {label}")
    uri = registry.log_artifacts(run_id, out, "reranker")
    registry.end_run(run_id)
    if job.attach:
        name, _, version = label.rpartition("/v")
        registry.set_version_tag(name, version, registry.RERANKER_TAG, uri)
        print(f"attached to {name} version {version}: a Serve app re-ranks that version's answers with {uri} "
              "when it loads the version (on promotion to its alias, or on a redeploy if it serves it already)",
              flush=True)
    print(f"re-ranker for {label}: {out} ({figures['queries']} queries, {figures['candidates']} candidates, "
          f"{figures['candidate_recall']:.3f} of relevant judged pairs among them; features "
          f"{figures['features_s']} s, fit {figures['fit_s']} s)", flush=True)
    if job.cross_top:
        print(f"cross-encoder over its top {job.cross_top}: {figures['cross_pairs']} pairs, {figures['cross_steps']} "
              f"steps in {figures['cross_fit_s']} s; blend weight {figures['cross_weight']:g} (nDCG@10 on "
              f"{figures['cross_held_queries']} held-out training queries: {figures['cross_held_ndcg_ranker']:.4f} "
              f"ranker alone, {figures['cross_held_ndcg_blend']:.4f} blended)", flush=True)
    return {"out": str(out), "model": label, "run_id": run_id, "uri": uri, "attached": job.attach, **figures}


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m pipelines.rerank``."""
    from vitrine.cli import main as cli_main

    return cli_main(["rerank", *(argv or [])])
