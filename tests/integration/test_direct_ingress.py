"""Ray's throughput-optimized Serve (direct ingress): the colocated app answers the same search over real HTTP
both through the Serve proxy and on its ingress replica's own port, which ``direct_ingress_urls`` reports.

Serve reads the mode from the environment when it is imported, so the app runs in a child process on its own
local Ray (``python tests/integration/test_direct_ingress.py <workdir> <out.json> <catalog>``) and writes what it
saw as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PORT = 8133
N = 120


def _child(work: Path, sample: Path) -> dict:
    """Deploy the colocated app, POST /search through the proxy and each direct address; the answers."""
    import pyarrow.parquet as pq
    import ray
    import requests
    from ray import serve

    from deployments.search_app import SearchAppArgs, build_app
    from pipelines import embed_index
    from pipelines.serve import direct_ingress_urls, register_zero_shot
    from vitrine.config import DataConfig, IndexConfig, IndexJob, TrackingConfig

    catalog = work / "catalog.parquet"
    table = pq.read_table(sample).slice(0, N)
    pq.write_table(table, catalog)
    tracking = TrackingConfig(experiment="direct-it", model_name="direct-it")
    ray.init(num_cpus=4, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        version = register_zero_shot(work, tracking, alias="champion")
        embed_index.run_in_process(IndexJob(workdir=str(work), model_uri=f"models:/direct-it/{version}",
                                            data=DataConfig(catalog=str(catalog)), tracking=tracking,
                                            index=IndexConfig(factory="Flat")))
        serve.start(http_options={"host": "127.0.0.1", "port": PORT})
        serve.run(build_app(SearchAppArgs(model_uri="models:/direct-it@champion", workdir=str(work),
                                          tracking_uri="", poll_interval_s=0, layout="colocated")),
                  name="vitrine", route_prefix="/")
        direct = direct_ingress_urls("vitrine", "127.0.0.1")
        queries = [row["title"] for row in table.to_pylist()[::30]]
        answers = {}
        for url in [f"http://127.0.0.1:{PORT}", *direct]:
            answers[url] = []
            for q in queries:
                r = requests.post(f"{url}/search", json={"query": q, "k": 5}, timeout=60)
                answers[url].append([h["product_id"] for h in r.json()["results"]] if r.ok else r.status_code)
        ids = table.column("product_id").to_pylist()[::30]
        return {"direct": direct, "answers": answers, "expected": ids}
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.mark.ray
def test_direct_ingress_replica_answers_like_the_proxy(tmp_path, sample_catalog):
    env = {**os.environ, "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "PYTHONPATH": str(REPO),
           "RAY_worker_niceness": "0"}
    out = tmp_path / "answers.json"
    proc = subprocess.run([sys.executable, __file__, str(tmp_path), str(out), str(sample_catalog)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(out.read_text())
    assert len(seen["direct"]) == 1 and seen["direct"][0].startswith("http://127.0.0.1:"), seen["direct"]
    proxy, direct = seen["answers"][f"http://127.0.0.1:{PORT}"], seen["answers"][seen["direct"][0]]
    assert direct == proxy, (direct, proxy)
    # each query is a product's own title: that product is among its top 5 on both paths
    assert all(pid in hits for pid, hits in zip(seen["expected"], direct, strict=True)), direct


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    Path(sys.argv[2]).write_text(json.dumps(_child(Path(sys.argv[1]), Path(sys.argv[3]))))
