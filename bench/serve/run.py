"""Serving benchmark: POST /search latency (p50/p95/p99) and QPS at 1, 8, 32 concurrent clients on 127.0.0.1,
beside the same encode + search in-process, in one run.

    python -m bench.serve.run [--products 2000] [--seconds 20] [--port 8150] [--out bench/results]
                              [--query-precision int8]   # the tower quantized (vitrine.model.quantize)

Serves the zero-shot model (registered in a throwaway registry under runs/bench/serve) over the bundled
sample's first ``--products`` products with a Flat index; queries are the real Home Depot queries of the
bundled sample. Each ``--layouts`` x ``--modes`` pair runs in its own process on its own local Ray: the
``split`` app (tower, index and ingress deployments) or the ``colocated`` one (tower and index inside the ingress
replica), under ``standard`` Serve or ``throughput_optimized`` (Ray's ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``: gRPC
between replicas, and direct ingress: the ingress replica also answers HTTP on its own port, measured as
``<layout>/throughput_optimized/direct`` beside the path through the Serve proxy). The load generator keeps
one ``http.client`` connection per client. Prints the figures as JSON and saves them to ``<out>/serve.json``
(``serve_int8.json`` with ``--query-precision int8``, which serves and times in-process the int8 tower).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "platform" / "vitrine" / "sample"


def percentiles(ms: list[float]) -> dict[str, float]:
    """p50 / p95 / p99 / mean of latencies in milliseconds."""
    a = np.asarray(ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "mean_ms": round(float(a.mean()), 2)}


def load_http(url: str, queries: list[str], clients: int, seconds: float, k: int = 10) -> dict[str, Any]:
    """``clients`` threads POST /search back to back for ``seconds``; latency percentiles, QPS, errors.

    Each client keeps one connection open with the standard library's ``http.client``: the load generator
    shares the host's two cores with the server, and this costs it less CPU per request than ``requests``.
    """
    import http.client
    from urllib.parse import urlsplit

    host = urlsplit(url)
    lat: list[float] = []
    errors: list[str] = []
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=120)
        headers = {"Content-Type": "application/json"}
        n = i
        while time.monotonic() < stop:
            body = json.dumps({"query": queries[n % len(queries)], "k": k})
            n += clients
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/search", body, headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as e:
                errors.append(f"{type(e).__name__}: {e}")
                conn.close()
                conn = http.client.HTTPConnection(host.hostname, host.port, timeout=120)
                continue
            if resp.status != 200:
                errors.append(f"{resp.status}: {data[:100]!r}")
                continue
            lat.append((time.perf_counter() - t0) * 1000)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    return {"clients": clients, "requests": len(lat), "errors": len(errors), "qps": round(len(lat) / took, 1),
            **percentiles(lat)}


def in_process(model_dir: Path, index_dir: Path, queries: list[str], seconds: float, k: int = 10,
               precision: str = "fp32") -> dict[str, Any]:
    """The same encode + search in this process (1 torch thread, as a tower replica): one query at a time, and
    8 queries as one batch (what 8 concurrent clients cost at best)."""
    import torch

    from vitrine.index.embed import QueryEncoder
    from vitrine.index.faiss_index import load_index
    from vitrine.index.serving import Catalog

    torch.set_num_threads(1)
    encode, catalog = QueryEncoder(model_dir, device="cpu", precision=precision), Catalog(load_index(index_dir))
    for q in queries[:20]:
        catalog.search(encode([q])[0], k)
    lat, enc, n, stop = [], [], 0, time.monotonic() + seconds
    while time.monotonic() < stop:
        t0 = time.perf_counter()
        vec = encode([queries[n % len(queries)]])[0]
        t1 = time.perf_counter()
        catalog.search(vec, k)
        lat.append((time.perf_counter() - t0) * 1000)
        enc.append((t1 - t0) * 1000)
        n += 1
    out = {"requests": n, "qps": round(n / seconds, 1), **percentiles(lat),
           "encode_p50_ms": round(float(np.median(enc)), 2)}
    # The floor for 8 concurrent clients: their 8 queries encoded as one batch and searched, back to back.
    lat8, n, stop = [], 0, time.monotonic() + seconds
    while time.monotonic() < stop:
        batch = [queries[(n + i) % len(queries)] for i in range(8)]
        t0 = time.perf_counter()
        for vec in encode(batch):
            catalog.search(vec, k)
        lat8.append((time.perf_counter() - t0) * 1000)
        n += 8
    out["batch_of_8"] = {"requests": n, "qps": round(n / seconds, 1), **percentiles(lat8)}
    return out


def measure_http(args: argparse.Namespace, work: Path, queries: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Start local Ray + Serve (in this process's environment), deploy, load each concurrency level, stop.

    Through the Serve proxy (``proxy``) and, when Ray's direct ingress is on, straight to the ingress replica's
    own HTTP port (``direct``: the path a load balancer in front of the replicas takes).
    """
    import ray
    from ray import serve

    from deployments.search_app import SearchAppArgs, build_app
    from pipelines.serve import direct_ingress_urls

    ray.init(num_cpus=4, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        serve.run(build_app(SearchAppArgs(model_uri="models:/bench-serve@champion", workdir=str(work),
                                          tracking_uri="", poll_interval_s=0,
                                          max_batch_size=args.max_batch_size,
                                          batch_wait_timeout_s=args.batch_wait_timeout_s, layout=args.layout,
                                          query_precision=args.query_precision)),
                  name="vitrine-bench", route_prefix="/")
        urls = {"proxy": f"http://127.0.0.1:{args.port}"}
        direct = direct_ingress_urls("vitrine-bench", "127.0.0.1")
        if direct:
            urls["direct"] = direct[0]  # one replica
        out = {}
        for path, url in urls.items():
            load_http(url, queries, 4, 3.0)  # warm-up
            out[path] = [load_http(url, queries, int(c), args.seconds) for c in args.clients.split(",")]
        return out
    finally:
        serve.shutdown()
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    """Deploy, measure HTTP at each concurrency and in-process, print and save JSON."""
    import mlflow
    import pyarrow as pa

    from pipelines import embed_index
    from pipelines.serve import register_zero_shot
    from vitrine import registry
    from vitrine.config import DataConfig, IndexConfig, IndexJob, TrackingConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--products", type=int, default=2000)
    p.add_argument("--seconds", type=float, default=20.0, help="per concurrency level")
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--port", type=int, default=8150)
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--batch-wait-timeout-s", type=float, default=0.005,
                   help="the tower's @serve.batch wait for a fuller batch (a live knob of the app)")
    p.add_argument("--modes", default="standard,throughput_optimized",
                   help="Serve modes measured one after the other: standard, and Ray's throughput-optimized "
                        "data plane (RAY_SERVE_THROUGHPUT_OPTIMIZED=1: gRPC between replicas, direct ingress)")
    p.add_argument("--layouts", default="split,colocated",
                   help="app layouts measured: split (three deployments) and/or colocated (one)")
    p.add_argument("--query-precision", default="fp32", choices=["fp32", "int8"],
                   help="the query tower as served and as timed in-process: fp32, or int8 (dynamic quantization)")
    p.add_argument("--layout", default="split", help=argparse.SUPPRESS)  # child: the layout it serves
    p.add_argument("--http-only", type=Path, default=None, help=argparse.SUPPRESS)  # child: HTTP figures -> file
    p.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench" / "serve")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("RAY_worker_niceness", "0")
    work = args.workdir.resolve()
    if args.http_only:  # a child process started below, in the environment of one mode
        args.http_only.write_text(json.dumps(measure_http(args, work, json.loads(args.http_only.read_text()))))
        return 0
    if not 0 <= args.batch_wait_timeout_s <= 1:
        raise SystemExit(f"--batch-wait-timeout-s {args.batch_wait_timeout_s}: use seconds between 0 and 1")
    unknown = set(args.modes.split(",")) - {"standard", "throughput_optimized"}
    if unknown:
        raise SystemExit(f"--modes: unknown mode(s) {sorted(unknown)}; use standard and/or throughput_optimized")
    unknown = set(args.layouts.split(",")) - {"split", "colocated"}
    if unknown:
        raise SystemExit(f"--layouts: unknown layout(s) {sorted(unknown)}; use split and/or colocated")
    work.mkdir(parents=True, exist_ok=True)
    catalog = work / "catalog.parquet"
    pq.write_table(pq.read_table(SAMPLE / "myntra_sample.parquet").slice(0, args.products), catalog)
    tracking = TrackingConfig(experiment="bench-serve", model_name="bench-serve")
    version = register_zero_shot(work, tracking, alias="champion")
    indexed = embed_index.run_in_process(IndexJob(workdir=str(work), model_uri=f"models:/bench-serve/{version}",
                                                  data=DataConfig(catalog=str(catalog)), tracking=tracking,
                                                  index=IndexConfig(factory="Flat")))
    model = registry.resolve_model(f"models:/bench-serve/{version}", work / "cache")
    judged = pq.read_table(SAMPLE / "homedepot_judgments.parquet", columns=["query"])
    queries = sorted(set(pa.compute.utf8_trim_whitespace(judged.column("query")).to_pylist()) - {""})
    http: dict[str, list[dict[str, Any]]] = {}
    pairs = [(layout, mode) for layout in args.layouts.split(",") for mode in args.modes.split(",")]
    for layout, mode in pairs:  # one process per pair: Serve reads its settings at import
        env = {**os.environ, "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1" if mode == "throughput_optimized" else "0"}
        handoff = work / f"http_{layout}_{mode}.json"
        handoff.write_text(json.dumps(queries))
        subprocess.run([sys.executable, "-m", "bench.serve.run", f"--http-only={handoff}", f"--port={args.port}",
                        f"--seconds={args.seconds}", f"--clients={args.clients}", f"--layout={layout}",
                        f"--max-batch-size={args.max_batch_size}",
                        f"--batch-wait-timeout-s={args.batch_wait_timeout_s}", f"--workdir={work}",
                        f"--query-precision={args.query_precision}"],
                       env=env, check=True, cwd=REPO)
        for path, levels in json.loads(handoff.read_text()).items():
            http[f"{layout}/{mode}" + ("" if path == "proxy" else "/direct")] = levels
    local = in_process(model.local_dir, Path(indexed["index_dir"]), queries, args.seconds,
                       precision=args.query_precision)
    at8 = {name: next((h for h in levels if h["clients"] == 8), levels[0])["p50_ms"] for name, levels in http.items()}
    ratios = {name: round(p50 / local["p50_ms"], 2) for name, p50 in at8.items()}
    ratios_floor = {name: round(p50 / local["batch_of_8"]["p50_ms"], 2) for name, p50 in at8.items()}
    report = {"products": indexed["products"], "index": "Flat", "queries": len(queries),
              "query_source": "real Home Depot queries (bundled sample)", "model": "zero-shot", "k": 10,
              "query_precision": args.query_precision,
              "max_batch_size": args.max_batch_size, "batch_wait_timeout_s": args.batch_wait_timeout_s,
              "seconds_per_level": args.seconds, "http": http,
              "in_process": local,
              "ratio_http_p50_at_8_vs_in_process_p50": ratios,
              "ratio_http_p50_at_8_vs_in_process_batch_of_8_p50": ratios_floor,
              "target": "HTTP p50 at 8 clients <= 2x in-process encode+search",
              "host": {"cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 1),
                       "python": platform.python_version()}}
    report["target_met"] = min(ratios.values()) <= 2
    args.out.mkdir(parents=True, exist_ok=True)
    name = "serve.json" if args.query_precision == "fp32" else f"serve_{args.query_precision}.json"
    (args.out / name).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1), flush=True)
    mlflow.set_tracking_uri(None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
