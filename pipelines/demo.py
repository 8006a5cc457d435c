"""Demo job: pretrain -> register -> embed + index -> Serve -> HTTP search, on the bundled sample, offline.

    vitrine demo [--train.max_steps=60 ...]
"""

from __future__ import annotations

import logging
import time
from typing import Any

import requests

from pipelines import embed_index, pretrain
from pipelines import serve as serve_job
from vitrine.config import DemoJob, IndexJob, PretrainJob

log = logging.getLogger(__name__)


def search(url: str, query: str, k: int = 5) -> dict[str, Any]:
    """POST one query to a running Vitrine endpoint."""
    resp = requests.post(f"{url}/search", json={"query": query, "k": k}, timeout=60)
    resp.raise_for_status()
    return resp.json()


def run(job: DemoJob) -> dict[str, Any]:
    """Run the whole chain and print each demo query's top results."""
    from ray import serve

    t0 = time.perf_counter()
    trained = pretrain.run(PretrainJob(workdir=job.workdir, data=job.data, model=job.model, train=job.train,
                                       tracking=job.tracking))
    indexed = embed_index.run(IndexJob(workdir=job.workdir, model_uri=trained["model_uri"], data=job.data,
                                       index=job.index, tracking=job.tracking))
    url = serve_job.start(trained["model_uri"], job.workdir, job.serve, job.tracking)
    answers = {}
    try:
        for q in job.queries:
            answers[q] = search(url, q)
    finally:
        serve.shutdown()
    print(f"\nVitrine demo: model {trained['model_name']} v{trained['version']} "
          f"({trained['metrics'].get('step', 0):.0f} steps, in-batch acc "
          f"{trained['metrics'].get('inbatch_acc', 0):.2f}), {indexed['products']} products indexed")
    for q, ans in answers.items():
        print(f"\n  query: {q!r}  ({ans['took_ms']:.0f} ms)")
        for rank, hit in enumerate(ans["results"], 1):
            print(f"    {rank}. {hit['title']:<55.55} score {hit['score']:.3f}  "
                  f"title/image {hit['title_weight']:.2f}/{hit['image_weight']:.2f}")
    took = time.perf_counter() - t0
    print(f"\nDone in {took / 60:.1f} min. MLflow: {trained['run_id']} (tracking in {job.workdir}/mlflow.db)")
    return {"pretrain": trained, "index": indexed, "answers": answers, "seconds": took}


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m pipelines.demo``."""
    from vitrine.cli import main as cli_main

    return cli_main(["demo", *(argv or [])])
