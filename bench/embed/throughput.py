"""Embedding throughput: the index job's Ray Data path vs a plain in-process loop, same model, same run.

    python -m bench.embed.throughput [--config configs/cpu.yaml] [--limit 0] [--index.embed_concurrency=2 ...]

* ``ray``: ``pipelines.embed_index.embed_catalog`` (Parquet read -> ``ProductEmbedder`` actors -> Parquet write),
  timed from the call to the written embeddings: actor start-up and model load included, ``ray.init`` not.
* ``plain``: the same ``ProductEmbedder`` in this process over the same Parquet rows in batches of
  ``index.embed_batch_size``, timed from construction (model load included) to the last batch; it runs before
  and after the Ray path and the mean is the ceiling.
* ``ray_former_settings``: the Ray path again with the settings the job had before chunking (``FORMER``: one
  forward pass per 64-row batch, one torch thread per actor), in the same run; the vectors of both are compared.

The model is the untrained product tower of the config's ``model`` section (zero-shot MiniLM + MobileNetV2):
embedding cost does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import yaml

from bench.train.machine import load_average, machine, write_result
from pipelines.common import catalog_index, ray_session
from pipelines.embed_index import embed_catalog, embedder_kwargs
from vitrine.config import IndexJob, PretrainJob
from vitrine.config_io import flatten, from_dict, merge, parse_overrides

log = logging.getLogger("bench.embed")
REPO = Path(__file__).resolve().parents[2]
EMBED_KEYS = ("embed_concurrency", "embed_batch_size", "embed_chunk", "embed_threads")
# Until 2026-12-04 the job ran each 64-row batch in one forward pass, in an actor Ray held to one thread.
FORMER = {"embed_batch_size": 64, "embed_chunk": 64, "embed_threads": 1}


def load_jobs(path: str, overrides: list[str]) -> tuple[IndexJob, PretrainJob]:
    """The index job (data/index sections) and the model recipe (model section) of one YAML + overrides."""
    raw = merge(yaml.safe_load(Path(path).read_text()) or {}, parse_overrides(overrides))
    index = from_dict(IndexJob, {k: v for k, v in raw.items() if k in ("data", "index")})
    recipe = from_dict(PretrainJob, {k: v for k, v in raw.items() if k in ("data", "model")})
    return index, recipe


def catalog_slice(files: list[str], limit: int, out: Path) -> list[str]:
    """The catalog files, or the first ``limit`` rows of them written to one file."""
    if not limit:
        return files
    table = pq.read_table(files[0]).slice(0, limit)
    pq.write_table(table, out)
    return [str(out)]


def plain_loop(files: list[str], model_dir: Path, job: IndexJob) -> dict[str, Any]:
    """Embed every row of ``files`` with one in-process ``ProductEmbedder``; products/s incl. model load."""
    import torch

    from vitrine.index.embed import ProductEmbedder

    batch_size = job.index.embed_batch_size
    t0 = time.perf_counter()
    embedder = ProductEmbedder(**embedder_kwargs(model_dir, job))
    loaded = time.perf_counter()
    n = 0
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=["product_id", "title", "image"]):
            cols = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names}
            n += len(embedder(cols)["product_id"])
    end = time.perf_counter()
    return {"products": n, "seconds": round(end - t0, 3), "products_per_s": round(n / (end - t0), 3),
            "model_load_seconds": round(loaded - t0, 3),
            "products_per_s_after_load": round(n / (end - loaded), 3), "torch_threads": torch.get_num_threads(),
            "chunk": embedder.chunk}


def ray_path(files: list[str], model_dir: Path, out: Path, job: IndexJob) -> tuple[dict[str, Any], np.ndarray]:
    """``embed_catalog`` as the index job runs it, in a local Ray instance started before the clock.

    Returns the figures and the vectors in product-id order.
    """
    with ray_session():
        t0 = time.perf_counter()
        table = embed_catalog(files, model_dir, out, job)
        seconds = time.perf_counter() - t0
    table = table.sort_by("product_id")
    figures = {"products": table.num_rows, "seconds": round(seconds, 3),
               "products_per_s": round(table.num_rows / seconds, 3),
               **{k: getattr(job.index, k) for k in EMBED_KEYS}}
    return figures, np.stack(table.column("embedding").to_numpy(zero_copy_only=False))


def former(job: IndexJob) -> IndexJob:
    """The same job with the embedding settings before chunking: one pass per 64-row batch, one thread."""
    return replace(job, index=replace(job.index, **FORMER))


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run plain -> Ray (former settings) -> Ray -> plain, print and save the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "cpu.yaml"))
    parser.add_argument("--limit", type=int, default=0, help="embed only the first N catalog rows (0 = all)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "embed_cpu.json"))
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from vitrine.model.make import MakeModel
    from vitrine.model.store import save_model_dir

    before = load_average()
    job, recipe = load_jobs(args.config, overrides)
    with tempfile.TemporaryDirectory(prefix="vitrine-bench-embed-") as tmp:
        model_dir = save_model_dir(MakeModel(recipe.model), job.data, Path(tmp) / "model")
        _, _, files = catalog_index(job.data.catalog)
        files = catalog_slice(files, args.limit, Path(tmp) / "slice.parquet")
        plain_a = plain_loop(files, model_dir, job)
        log.info("plain loop (before): %.1f products/s", plain_a["products_per_s"])
        ray_old, old_vectors = ray_path(files, model_dir, Path(tmp) / "embeddings_former", former(job))
        log.info("Ray Data embed, former settings: %.1f products/s", ray_old["products_per_s"])
        ray_, vectors = ray_path(files, model_dir, Path(tmp) / "embeddings", job)
        log.info("Ray Data embed: %.1f products/s", ray_["products_per_s"])
        plain_b = plain_loop(files, model_dir, job)
        log.info("plain loop (after): %.1f products/s", plain_b["products_per_s"])
    ceiling = (plain_a["products_per_s"] + plain_b["products_per_s"]) / 2
    result = {
        "benchmark": "embed products/s: index job's Ray Data path vs plain in-process loop (same model)",
        "command": " ".join(["python -m bench.embed.throughput", *(argv if argv is not None else sys.argv[1:])]),
        "device": machine(),
        "config": {"file": os.path.relpath(args.config, REPO),
                   "rows": f"first {args.limit} rows of data.catalog" if args.limit else "all of data.catalog",
                   **{k: v for k, v in flatten(job).items() if k.split(".")[0] in ("data", "index")},
                   **flatten(recipe.model, "model.")},
        "ray": ray_, "ray_former_settings": ray_old,
        "speedup_over_former": round(ray_["products_per_s"] / ray_old["products_per_s"], 3),
        "max_abs_vector_difference": float(np.abs(vectors - old_vectors).max()),
        "plain_before": plain_a, "plain_after": plain_b,
        "plain_products_per_s": round(ceiling, 3),
        "ratio_ray_over_plain": round(ray_["products_per_s"] / ceiling, 3), "target_ratio": 0.85,
        "load_average_before": before, "load_average_after": load_average(),
        "note": "shared machine: other work ran beside this benchmark; see the load averages",
    }
    write_result(result, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
