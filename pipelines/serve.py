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

log = logging.getLogger(__name__)


def check_layout(serve_cfg: ServeConfig) -> None:
    """Refuse an unknown ``serve.layout`` before anything starts."""
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
                         layout=serve_cfg.layout)
    serve.start(http_options={"host": serve_cfg.host, "port": serve_cfg.port})
    serve.run(build_app(args), name="vitrine", route_prefix="/")
    url = f"http://{serve_cfg.host}:{serve_cfg.port}"
    log.info("serving %s at %s (page %s/, docs %s/docs)", args.model_uri, url, url, url)
    return url


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
    if job.blocking:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            log.info("shutting down")
        finally:
            serve.shutdown()
    return {"url": url}


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m pipelines.serve``."""
    from vitrine.cli import main as cli_main

    return cli_main(["serve", *(argv or [])])
