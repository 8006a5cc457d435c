"""Ensemble job: register several trained models as one model version whose vectors are the members' side by side.

    vitrine ensemble --members=models:/vitrine-homedepot/1,models:/vitrine-homedepot/2 \\
        --tracking.model_name=vitrine-homedepot-ensemble --tracking.alias=challenger

The version is an ordinary model to every other job (`vitrine evaluate`, `index`, `rerank`, `serve`, `promote`):
one inner product over its vectors is the mean of the members' cosines (``vitrine.model.ensemble``). The MLflow
run records each member's source and run id, the version is tagged with them, and the model's metadata holds each
member's weights checksum.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from pipelines.common import absolute
from vitrine import registry
from vitrine.config import EnsembleJob
from vitrine.errors import ConfigError

log = logging.getLogger(__name__)


def run(job: EnsembleJob) -> dict[str, Any]:
    """Resolve the members, write the ensemble directory, log it to MLflow and register it."""
    from vitrine.model.ensemble import save_ensemble_dir

    members = [m.strip() for item in job.members for m in item.split(",") if m.strip()]  # a,b or [a, b]
    if len(members) < 2:
        raise ConfigError(f"--members={','.join(members)!r}: name at least 2 trained models, e.g. "
                          "--members=models:/vitrine/1,models:/vitrine/2 (versions, aliases or model dirs)")
    if len(set(members)) < len(members):
        raise ConfigError(f"--members={','.join(members)!r} names one model twice; list distinct models")
    workdir = absolute(job.workdir)
    exp_id = registry.setup(job.tracking, workdir)
    resolved = [registry.resolve_model(m, workdir / "cache") for m in members]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        # written first: a bad member is refused before a run is opened, so it leaves no failed run behind
        out = save_ensemble_dir([r.local_dir for r in resolved], Path(tmp) / "model", labels=members)
        run_id = registry.start_run(exp_id, f"ensemble-{time.strftime('%Y%m%d-%H%M%S')}",
                                    tags={"vitrine.job": "ensemble"})
        try:
            registry.log_params(run_id, {"ensemble.members": ",".join(members)[:500], "ensemble.size": len(members)})
            registry.log_params(run_id, {f"ensemble.member_{i}_run": r.run_id or str(r.local_dir)
                                         for i, r in enumerate(resolved)})
            registry.log_artifacts(run_id, out, "model")
        except BaseException:
            registry.end_run(run_id, "FAILED")
            raise
    registry.end_run(run_id)
    tags = {"ensemble_members": ",".join(members)[:5000],
            "ensemble_member_runs": ",".join(r.run_id for r in resolved)}
    version = registry.register_model(job.tracking.model_name, run_id, job.tracking.alias, tags=tags)
    uri = f"models:/{job.tracking.model_name}@{job.tracking.alias}"
    log.info("ensemble of %d models registered: run %s, %s version %s (%s)", len(members), run_id,
             job.tracking.model_name, version, uri)
    return {"run_id": run_id, "model_name": job.tracking.model_name, "version": version, "model_uri": uri,
            "members": members}


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m pipelines.ensemble`` (same flags as ``vitrine ensemble``)."""
    from vitrine.cli import main as cli_main

    return cli_main(["ensemble", *(argv or [])])
