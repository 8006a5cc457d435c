"""Ray Jobs client: ``vitrine submit <job> [args]`` runs any pipeline on a cluster and streams its logs.

The repository is uploaded as the job's ``working_dir`` (virtualenvs, run folders and caches excluded) and
put first on ``PYTHONPATH``, so the cluster runs the code you submitted against the pinned stack that
``ray_cluster.yaml`` installs on every node. ``--pip`` additionally asks Ray to build a job environment from
``requirements.lock`` (needs the nodes to reach a package index). Set ``MLFLOW_TRACKING_URI`` to the
cluster's MLflow server so runs and the registry outlive the job; it is forwarded to the job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import time
from pathlib import Path

log = logging.getLogger(__name__)

EXCLUDES = [".venv", ".git", "runs", "mlartifacts", "*.db", "__pycache__", ".pytest_cache", ".ruff_cache",
            ".whl", "*.egg-info"]
FORWARDED_ENV = ("MLFLOW_TRACKING_URI", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def repo_root() -> Path:
    """The source tree to upload (the folder holding ``platform/`` and ``pipelines/``)."""
    return Path(__file__).resolve().parents[2]


def runtime_env(working_dir: Path, pip: bool = False) -> dict:
    """The job's runtime environment: uploaded working dir, PYTHONPATH, forwarded env, optional pinned pip."""
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    env["PYTHONPATH"] = "platform:."
    from vitrine.lineage import ENV_COMMIT, ENV_DIRTY, git_state

    state = git_state(working_dir)  # the upload drops .git: pass the commit on for the run's lineage
    if state:
        env[ENV_COMMIT], env[ENV_DIRTY] = state[0], str(state[1]).lower()
    out: dict = {"working_dir": str(working_dir), "excludes": EXCLUDES, "env_vars": env}
    if pip:
        lock = working_dir / "requirements.lock"
        out["pip"] = [ln for ln in lock.read_text().splitlines() if ln and not ln.startswith("#")]
    return out


def submit(args: list[str], address: str, wait: bool = True, pip: bool = False, timeout_s: float = 0) -> int:
    """Submit ``vitrine <args>`` as a Ray Job; stream logs when ``wait``; return 0 on success, 1 otherwise."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    from vitrine.errors import VitrineError

    try:
        client = JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise VitrineError(f"cannot reach a Ray cluster at {address!r}: {exc}. Start one with `ray start --head` "
                           "or `ray up ray_cluster.yaml`, and pass its dashboard address (http://host:8265).") from None
    entrypoint = "python -m vitrine.cli " + shlex.join(args)
    deadline = time.monotonic() + 90
    while True:  # a freshly started head answers "No available agent" for a few seconds
        try:
            job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env(repo_root(), pip),
                                       metadata={"vitrine.command": args[0] if args else ""})
            break
        except RuntimeError as exc:
            if "try again" not in str(exc) or time.monotonic() > deadline:
                raise VitrineError(f"the cluster at {address} refused the job: {exc}") from None
            time.sleep(2)
    print(f"submitted {job_id}: {entrypoint}", flush=True)
    if not wait:
        return 0

    async def _tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    asyncio.run(_tail())
    deadline = time.monotonic() + (timeout_s or 1e9)
    status = client.get_job_status(job_id)
    while not status.is_terminal() and time.monotonic() < deadline:
        time.sleep(1)
        status = client.get_job_status(job_id)
    print(f"job {job_id}: {status.value}", flush=True)
    return 0 if status == JobStatus.SUCCEEDED else 1
