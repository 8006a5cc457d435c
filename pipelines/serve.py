"""Serve job: start Ray Serve with the search application on ``serve.host:serve.port``.

    vitrine serve [--model_uri=models:/vitrine@champion] [--serve.port=8000]
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from pipelines.common import absolute, ensure_ray
from vitrine import registry
from vitrine.config import SERVE_LAYOUTS, DataConfig, ModelConfig, ServeConfig, ServeJob, TrackingConfig
from vitrine.errors import ConfigError
from vitrine.model.quantize import check_precision

log = logging.getLogger(__name__)


def check_layout(serve_cfg: ServeConfig) -> None:
    """Refuse an unknown ``serve.layout`` or ``serve.query_precision`` before anything starts."""
    check_precision(serve_cfg.query_precision, "serve.query_precision")
    if serve_cfg.layout not in SERVE_LAYOUTS:
        raise ConfigError(f"serve.layout={serve_cfg.layout!r} is not a layout; use one of {list(SERVE_LAYOUTS)} "
                          "(split: tower, index and ingress deployments; colocated: all in the ingress replica)")


def start(model_uri: str, workdir: str, serve_cfg: ServeConfig, tracking: TrackingConfig) -> str:
    """Deploy the application and return its base URL (Ray must be running)."""
    from ray import serve

    from deployments.search_app import SearchAppArgs, build_app

    check_layout(serve_cfg)
    uri = registry.resolve_tracking_uri(tracking, workdir)
    args = SearchAppArgs(model_uri=model_uri or f"models:/{tracking.model_name}@{tracking.alias}",
                         workdir=str(absolute(workdir)), tracking_uri=uri, max_batch_size=serve_cfg.max_batch_size,
                         batch_wait_timeout_s=serve_cfg.batch_wait_timeout_s,
                         num_replicas=serve_cfg.num_replicas, default_k=serve_cfg.default_k,
                         poll_interval_s=serve_cfg.poll_interval_s, search_params=dict(serve_cfg.search_params),
                         layout=serve_cfg.layout, query_precision=serve_cfg.query_precision)
    serve.start(http_options={"host": serve_cfg.host, "port": serve_cfg.port})
    serve.run(build_app(args), name="vitrine", route_prefix="/")
    url = f"http://{serve_cfg.host}:{serve_cfg.port}"
    log.info("serving %s at %s (page %s/, docs %s/docs)", args.model_uri, url, url, url)
    return url


def direct_ingress_urls(app_name: str = "vitrine", host: str = "0.0.0.0") -> list[str]:
    """HTTP addresses of the app's ingress replicas when Ray's direct ingress is on, else ``[]``.

    Under ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` (or ``RAY_SERVE_ENABLE_DIRECT_INGRESS=1``) each ingress replica
    runs its own HTTP server (ports from 30000); a load balancer in front of these addresses skips the Serve
    proxy hop, which on a 2-core host halves p50 at 8 clients (docs/serving.md). Ray publishes them as target
    groups through its controller; there is no public accessor yet, so a failure to read them is logged and
    ``[]`` returned: the proxy URL keeps working either way. A replica binds Serve's HTTP ``host``: a wildcard
    host gives the node addresses Ray reports, any other host (e.g. 127.0.0.1) is the address itself.
    """
    import ray
    from ray.serve import context
    from ray.serve._private import constants

    if not constants.RAY_SERVE_ENABLE_DIRECT_INGRESS:
        return []
    try:
        controller = context._get_global_client()._controller
        groups = ray.get(controller.get_target_groups.remote(app_name), timeout=30)
    except Exception as exc:  # noqa: BLE001 - private Ray API: report and fall back to the proxy
        log.warning("cannot read the direct-ingress replica addresses (%s); use the proxy URL", exc)
        return []
    wildcard = host in ("0.0.0.0", "::", "")
    return sorted({f"http://{t.ip if wildcard else host}:{t.port}" for g in groups if g.protocol == "HTTP"
                   for t in g.targets})


def register_zero_shot(workdir: str | Path, tracking: TrackingConfig, alias: str | None = None,
                       data: DataConfig | None = None) -> str:
    """Register the untrained (zero-shot MiniLM + ImageNet MobileNetV2) model as a new version; returns it.

    The baseline to serve before any training, and a quick model for serving tests and benchmarks.
    """
    from vitrine.model.make import MakeModel
    from vitrine.model.store import save_model_dir

    workdir = absolute(workdir)
    exp_id = registry.setup(tracking, workdir)
    run_id = registry.start_run(exp_id, "zero-shot", tags={"vitrine.job": "zero_shot"})
    with tempfile.TemporaryDirectory() as tmp:
        save_model_dir(MakeModel(ModelConfig(), pretrained=True), data or DataConfig(), Path(tmp) / "model",
                       extra={"zero_shot": True})
        registry.log_artifacts(run_id, Path(tmp) / "model", "model")
    registry.end_run(run_id)
    return registry.register_model(tracking.model_name, run_id, alias, tags={"vitrine.zero_shot": "true"})


def run(job: ServeJob) -> dict[str, Any]:
    """Deploy; when ``blocking``, keep serving until interrupted, then shut Serve down."""
    from ray import serve

    check_layout(job.serve)
    registry.setup(job.tracking, absolute(job.workdir))
    ensure_ray()
    url = start(job.model_uri, job.workdir, job.serve, job.tracking)
    print(f"Vitrine is serving at {url}  (search page {url}/, POST {url}/search, GET {url}/model, "
          f"docs at {url}/docs)", flush=True)
    direct = direct_ingress_urls("vitrine", job.serve.host)
    if direct:
        print(f"Ingress replicas also answer HTTP directly (Ray direct ingress; put a load balancer in front): "
              f"{', '.join(direct)}", flush=True)
    if job.blocking:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            log.info("shutting down")
        finally:
            serve.shutdown()
    return {"url": url, "direct_urls": direct}


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m pipelines.serve``."""
    from vitrine.cli import main as cli_main

    return cli_main(["serve", *(argv or [])])
