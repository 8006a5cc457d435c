"""MLflow registry on a real sqlite backend: register, alias, resolve models:/ URIs."""

import json
import os

import pytest

from vitrine import registry
from vitrine.config import TrackingConfig
from vitrine.errors import RegistryError


@pytest.fixture()
def tracking(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    exp = registry.setup(TrackingConfig(experiment="t"), tmp_path)
    yield tmp_path, exp
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _fake_model_dir(path, tag):
    path.mkdir(parents=True)
    (path / "vitrine_model.json").write_text(json.dumps({"tag": tag}))
    return path


def test_register_alias_and_resolve(tracking):
    workdir, exp = tracking
    assert registry.resolve_tracking_uri(TrackingConfig(), workdir).startswith("sqlite:///")
    versions = []
    for tag in ("first", "second"):
        run = registry.start_run(exp, tag)
        registry.log_artifacts(run, _fake_model_dir(workdir / tag, tag), "model")
        registry.log_metrics(run, {"loss": 1.0}, step=1)
        registry.end_run(run)
        versions.append(registry.register_model("m", run, "champion"))
    assert versions == ["1", "2"]
    resolved = registry.resolve_model("models:/m@champion", workdir / "cache")
    assert resolved.version == "2" and resolved.alias == "champion"
    assert json.loads((resolved.local_dir / "vitrine_model.json").read_text())["tag"] == "second"
    registry.set_alias("m", "champion", "1")  # rollback = move the alias back
    assert registry.resolve_model("models:/m@champion", workdir / "cache").version == "1"
    old = registry.resolve_model("models:/m/2", workdir / "cache")
    registry.set_version_tag("m", "2", registry.INDEX_TAG, "runs:/x/index")
    assert registry.resolve_model("models:/m/2", workdir / "cache").index_uri == "runs:/x/index"
    assert old.index_uri == ""


def test_unknown_alias_and_bad_uri(tracking):
    workdir, _ = tracking
    with pytest.raises(RegistryError, match="cannot resolve"):
        registry.resolve_model("models:/nope@champion", workdir / "cache")
    with pytest.raises(RegistryError, match="neither"):
        registry.resolve_model("s3://somewhere", workdir / "cache")


def test_a_later_job_in_the_same_process_uses_its_own_workdir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    registry.setup(TrackingConfig(experiment="a"), tmp_path / "a")
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}"  # for Ray workers
    registry.setup(TrackingConfig(experiment="b"), tmp_path / "b")
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}"
    assert (tmp_path / "b" / "mlflow.db").exists()
    user = f"sqlite:///{tmp_path / 'user.db'}"  # a URI the user exported still wins over any workdir
    monkeypatch.setenv("MLFLOW_TRACKING_URI", user)
    registry.setup(TrackingConfig(experiment="c"), tmp_path / "c")
    assert registry.resolve_tracking_uri(TrackingConfig(), tmp_path / "d") == user
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
