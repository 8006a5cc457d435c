"""Every MLflow call: tracking set-up, run logging, model registration, aliases and URI resolution.

Default: a sqlite database and an artifact folder inside the job's workdir (no server needed); set
``tracking.tracking_uri`` or ``$MLFLOW_TRACKING_URI`` to use an MLflow server instead. Promotion moves a
registry alias (never a stage). Models are plain artifact directories (see ``vitrine.model.store``); a model
version links to its run (``run_id``, ``source``), carries the run's lineage tags (code version, data hashes)
and, once ``vitrine index`` ran, points at its index artifact.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vitrine.config import TrackingConfig
from vitrine.errors import RegistryError
from vitrine.lineage import CodeVersion, DataSnapshot

log = logging.getLogger(__name__)

INDEX_TAG = "vitrine.index_uri"
RERANKER_TAG = "vitrine.reranker_uri"  # a `vitrine rerank --attach=true` ranker the Serve app applies
MODEL_URI = re.compile(r"^models:/(?P<name>[^@/]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


_exported: str | None = None  # the URI ``setup`` put in this process's environment (not the user's choice)


def resolve_tracking_uri(cfg: TrackingConfig, workdir: str | Path) -> str:
    """The tracking URI in force: config, then ``$MLFLOW_TRACKING_URI``, then sqlite in the workdir.

    A ``$MLFLOW_TRACKING_URI`` that an earlier job of this process exported (for its Ray workers) is not the
    user's choice: a later job with another workdir gets its own store."""
    if cfg.tracking_uri:
        return cfg.tracking_uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and env != _exported:
        return env
    path = Path(workdir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


def setup(cfg: TrackingConfig, workdir: str | Path) -> str:
    """Point MLflow at the tracking store and make sure the experiment exists; returns its id."""
    import mlflow

    global _exported
    uri = resolve_tracking_uri(cfg, workdir)
    if os.environ.get("MLFLOW_TRACKING_URI") in (None, "", _exported):
        _exported = uri  # ours, not the user's: resolve_tracking_uri may replace it for a later job
    mlflow.set_tracking_uri(uri)  # (MLflow exports it too)
    os.environ["MLFLOW_TRACKING_URI"] = uri  # Ray workers and Serve replicas inherit it
    client = mlflow.MlflowClient()
    try:
        exp = client.get_experiment_by_name(cfg.experiment)
    except mlflow.exceptions.MlflowException as exc:
        raise RegistryError(f"cannot reach the MLflow tracking store at {uri}: {str(exc)[:300]}. Start it, or "
                            "point tracking.tracking_uri / $MLFLOW_TRACKING_URI at a running one.") from None
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:"):
        location = (Path(workdir).resolve() / "mlartifacts").as_uri()
    return client.create_experiment(cfg.experiment, artifact_location=location)


def client():  # noqa: ANN201 - mlflow type imported lazily
    """An MlflowClient on the configured tracking URI."""
    import mlflow

    return mlflow.MlflowClient()


def start_run(experiment_id: str, run_name: str, tags: dict[str, str] | None = None) -> str:
    """Create a run and return its id (the caller logs to it by id, from any process)."""
    run = client().create_run(experiment_id, run_name=run_name, tags=tags or {})
    return run.info.run_id


def log_params(run_id: str, params: dict[str, Any]) -> None:
    """Log a flat dict of params (values stringified, long ones cut to MLflow's limit)."""
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client().log_batch(run_id, params=items[i:i + 100])


def log_metrics(run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    """Log numeric metrics at a step."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client().log_batch(run_id, metrics=[Metric(k, float(v), now, step or 0) for k, v in metrics.items()])


def log_artifacts(run_id: str, local_dir: str | Path, artifact_path: str) -> str:
    """Upload a directory as run artifacts; returns its ``runs:/`` URI."""
    client().log_artifacts(run_id, str(local_dir), artifact_path)
    return f"runs:/{run_id}/{artifact_path}"


def log_histogram(run_id: str, values: Any, name: str, title: str, xlabel: str, bins: int = 40) -> None:
    """Log a histogram plot (PNG artifact) of ``values`` to a run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(values, bins=bins, range=(0.0, 1.0), color="#3a7bd5")
    ax.set(title=title, xlabel=xlabel, ylabel="products")
    fig.tight_layout()
    client().log_figure(run_id, fig, name)
    plt.close(fig)


def log_curve(run_id: str, curve: dict[int, float], name: str, title: str) -> None:
    """Log a Recall@K line plot (PNG artifact) to a run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(list(curve), list(curve.values()), marker="o")
    ax.set(title=title, xlabel="K", ylabel="Recall@K", xscale="log", ylim=(0, 1))
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    client().log_figure(run_id, fig, name)
    plt.close(fig)


def lineage_tags(data: DataSnapshot, code: CodeVersion) -> dict[str, str]:
    """The short lineage tags put on a run and on the model version it registers."""
    tags = {"vitrine.code_version": code.label, "vitrine.code_source": code.source,
            "vitrine.vitrine_version": code.vitrine_version,
            "vitrine.data.catalog_sha256": data.role_sha256("catalog"),
            "vitrine.data.queries_sha256": data.role_sha256("queries") or data.derived_queries_sha256,
            "vitrine.data.query_source": data.query_source[:5000]}
    if code.git_commit:
        tags["mlflow.source.git.commit"] = code.git_commit
        tags["vitrine.git_dirty"] = str(bool(code.git_dirty))
    return tags


def log_lineage(run_id: str, data: DataSnapshot, code: CodeVersion) -> None:
    """Record what a run read and which code ran it: tags, ``lineage.*`` params, MLflow dataset inputs and
    ``lineage/data.json`` + ``lineage/code.json`` (every input file with its path, rows and SHA-256)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag, RunTag

    c = client()
    c.log_batch(run_id, tags=[RunTag(k, v) for k, v in lineage_tags(data, code).items()])
    params = {f"lineage.{name}": version or "absent" for name, version in code.stack.items()}
    params |= {"lineage.python": code.python, "lineage.vitrine_version": code.vitrine_version,
               "lineage.code_version": code.label}
    for role in ("catalog", "queries"):
        files = [f for f in data.files if f.role == role]
        if files:
            params |= {f"data.{role}_sha256": data.role_sha256(role), f"data.{role}_file_count": len(files),
                       f"data.{role}_file_rows": data.rows(role)}
    log_params(run_id, params)
    inputs = []
    for role in ("catalog", "queries"):
        files = [f for f in data.files if f.role == role]
        if not files:
            continue
        digest = data.role_sha256(role)[:32]  # MLflow keeps at most 36 characters of a dataset digest
        source = json.dumps({"uris": [Path(f.path).as_uri() for f in files]})
        profile = json.dumps({"num_rows": data.rows(role), "num_files": len(files), "sha256": data.role_sha256(role)})
        inputs.append(DatasetInput(Dataset(name=role, digest=digest, source_type="local", source=source,
                                           profile=profile), tags=[InputTag("mlflow.data.context", "training")]))
    if inputs:
        c.log_inputs(run_id, datasets=inputs)
    c.log_dict(run_id, data.to_dict(), "lineage/data.json")
    c.log_dict(run_id, asdict(code) | {"label": code.label}, "lineage/code.json")
    log.info("lineage: code %s, catalog sha256 %s (%d rows in %d files)", code.label,
             data.role_sha256("catalog")[:12], data.rows("catalog"), sum(f.role == "catalog" for f in data.files))


def end_run(run_id: str, status: str = "FINISHED") -> None:
    """Mark a run finished (or FAILED)."""
    client().set_terminated(run_id, status)


def register_model(name: str, run_id: str, alias: str | None, tags: dict[str, str] | None = None) -> str:
    """Register ``runs:/<run_id>/model`` as a new version of ``name`` and point ``alias`` at it."""
    from mlflow.exceptions import MlflowException

    c = client()
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name)
    mv = c.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id, tags=tags or {})
    if alias:
        c.set_registered_model_alias(name, alias, mv.version)
    log.info("registered %s version %s%s", name, mv.version, f" as @{alias}" if alias else "")
    return str(mv.version)


def set_alias(name: str, alias: str, version: str) -> None:
    """Move ``alias`` of model ``name`` to ``version``."""
    client().set_registered_model_alias(name, alias, version)


def set_version_tag(name: str, version: str, key: str, value: str) -> None:
    """Tag one model version (e.g. with its index URI)."""
    client().set_model_version_tag(name, version, key, value)


@dataclass
class ResolvedModel:
    """A model resolved to a local directory, with its registry coordinates when it came from one."""

    local_dir: Path
    name: str = ""
    version: str = ""
    alias: str = ""
    run_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def index_uri(self) -> str:
        """The index artifact URI recorded on the model version ('' if none was built yet)."""
        return self.tags.get(INDEX_TAG, "")

    @property
    def reranker_uri(self) -> str:
        """The re-ranker artifact URI attached to the model version ('' if none)."""
        return self.tags.get(RERANKER_TAG, "")


def resolve_model(uri: str, cache_dir: str | Path) -> ResolvedModel:
    """``models:/<name>@<alias>``, ``models:/<name>/<version>`` or a local model dir -> local files + metadata."""
    from mlflow.exceptions import MlflowException

    m = MODEL_URI.match(uri)
    if not m:
        path = Path(uri)
        if path.is_dir():
            return ResolvedModel(local_dir=path)
        raise RegistryError(f"model '{uri}' is neither models:/<name>@<alias>, models:/<name>/<version> "
                            "nor an existing local model directory")
    c = client()
    name, alias, version = m["name"], m["alias"] or "", m["version"] or ""
    try:
        mv = c.get_model_version_by_alias(name, alias) if alias else c.get_model_version(name, version)
    except MlflowException as exc:
        raise RegistryError(f"cannot resolve '{uri}' in the registry at {c.tracking_uri}: {exc.message}. "
                            "Train one with `vitrine pretrain` or check the name/alias.") from None
    local = Path(cache_dir) / name / str(mv.version)
    if not (local / "model" / "vitrine_model.json").is_file():
        tmp = local.with_name(local.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        download(mv.source, tmp)
        shutil.rmtree(local, ignore_errors=True)
        tmp.rename(local)
    return ResolvedModel(local_dir=local / "model", name=name, version=str(mv.version), alias=alias,
                         run_id=mv.run_id or "", tags=dict(mv.tags))


def download(artifact_uri: str, dst: str | Path) -> Path:
    """Download a ``runs:/`` (or any MLflow) artifact URI into ``dst``; returns the local path."""
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(dst)))
