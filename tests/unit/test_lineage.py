"""Lineage bookkeeping: file hashes and row counts, git commit/dirty detection, and what lands in MLflow (sqlite)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vitrine import registry
from vitrine.config import TrackingConfig
from vitrine.lineage import ENV_COMMIT, ENV_DIRTY, code_version, data_snapshot, git_state, table_sha256


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def inputs(tmp_path, sample_catalog):
    """A catalog split into two part files (real rows) and a query-log file."""
    table = pq.read_table(sample_catalog).slice(0, 30)
    parts = tmp_path / "catalog"
    parts.mkdir()
    pq.write_table(table.slice(0, 20), parts / "part-0.parquet")
    pq.write_table(table.slice(20), parts / "part-1.parquet")
    queries = tmp_path / "queries.parquet"
    pq.write_table(pa.table({"query": ["red shirt"] * 3, "product_id": table.column("product_id").to_pylist()[:3],
                             "label": [1.0] * 3}), queries)
    return parts, queries


def test_snapshot_names_every_file_with_rows_and_content_hash(inputs, tmp_path):
    parts, queries = inputs
    snap = data_snapshot(str(parts), str(queries), f"file:{queries}")
    assert [(f.role, f.rows) for f in snap.files] == [("catalog", 20), ("catalog", 10), ("queries", 3)]
    for f in snap.files:
        assert f.sha256 == _sha(Path(f.path)) and f.bytes == Path(f.path).stat().st_size
    assert snap.rows("catalog") == 30 and snap.role_sha256("queries") != ""
    copy = tmp_path / "copy"
    shutil.copytree(parts, copy)
    (copy / "part-1.parquet").rename(copy / "a-first.parquet")  # other place, other order: same content hash
    assert data_snapshot(str(copy), "", "derived").role_sha256("catalog") == snap.role_sha256("catalog")
    changed = pq.read_table(parts / "part-1.parquet").slice(1)
    pq.write_table(changed, copy / "a-first.parquet")
    assert data_snapshot(str(copy), "", "derived").role_sha256("catalog") != snap.role_sha256("catalog")


def test_derived_query_log_is_hashed_in_memory(inputs):
    parts, _ = inputs
    derived = pa.table({"query": ["a", "b"], "product_id": ["1", "2"], "label": [1.0, 1.0]})
    snap = data_snapshot(str(parts), "", "derived from catalog attributes", derived=derived)
    assert snap.derived_queries_sha256 == table_sha256(derived) != table_sha256(derived.slice(1))
    assert snap.role_sha256("queries") == "" and all(f.role == "catalog" for f in snap.files)


def test_unreadable_input_is_named(tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="broken.parquet"):
        data_snapshot(str(bad), "", "derived")


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_commit_and_dirty_flag(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "-m", "one")
    head = git("rev-parse", "HEAD").strip()
    assert git_state(repo) == (head, False)
    assert code_version(repo).label == head and code_version(repo).source == "git"
    (repo / "a.py").write_text("x = 2\n")
    assert git_state(repo) == (head, True)
    assert code_version(repo).label == f"{head}+dirty"
    inner = repo / "sub"
    inner.mkdir()
    assert git_state(inner) is None  # a folder inside some checkout is not that checkout
    monkeypatch.delenv(ENV_COMMIT, raising=False)
    plain = code_version(tmp_path / "elsewhere")
    assert plain.source == "package" and plain.label == "vitrine==0.1.0" and plain.git_dirty is None
    monkeypatch.setenv(ENV_COMMIT, "abc123")
    monkeypatch.setenv(ENV_DIRTY, "true")
    assert code_version(tmp_path / "elsewhere").label == "abc123+dirty"
    assert {"torch", "ray", "mlflow", "transformers", "faiss"} <= {k for k, v in plain.stack.items() if v}


def test_log_lineage_records_tags_params_datasets_and_json(inputs, tmp_path, monkeypatch):
    parts, queries = inputs
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(ENV_COMMIT, raising=False)
    exp = registry.setup(TrackingConfig(experiment="lineage"), tmp_path / "work")
    snap = data_snapshot(str(parts), str(queries), f"file:{queries}")
    code = code_version(tmp_path)  # not a checkout: the package version
    run_id = registry.start_run(exp, "r")
    registry.log_lineage(run_id, snap, code)
    registry.end_run(run_id)
    run = registry.client().get_run(run_id)
    assert run.data.tags["vitrine.code_version"] == "vitrine==0.1.0"
    assert "mlflow.source.git.commit" not in run.data.tags
    assert run.data.tags["vitrine.data.catalog_sha256"] == snap.role_sha256("catalog")
    assert run.data.params["data.catalog_file_rows"] == "30" and run.data.params["data.queries_file_rows"] == "3"
    assert run.data.params["lineage.mlflow"] == code.stack["mlflow"] != ""
    inputs_ = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
    assert inputs_["catalog"].digest == snap.role_sha256("catalog")[:32]
    assert json.loads(inputs_["queries"].profile)["num_rows"] == 3
    local = registry.download(f"runs:/{run_id}/lineage", tmp_path / "dl")
    files = json.loads((local / "data.json").read_text())["files"]
    expected = [parts / "part-0.parquet", parts / "part-1.parquet", queries]
    assert {(f["path"], f["sha256"]) for f in files} == {(str(p.resolve()), _sha(p)) for p in expected}
    assert json.loads((local / "code.json").read_text())["stack"]["torch"] == code.stack["torch"]
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(None)
