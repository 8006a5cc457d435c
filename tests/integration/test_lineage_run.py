"""A real pretrain (3 steps on local Ray) + index job: the MLflow records (sqlite) carry the run's full lineage."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest

from pipelines import embed_index, pretrain
from vitrine.catalog.derive import derive_queries
from vitrine.config import DataConfig, IndexJob, PretrainJob, TrackingConfig, TrainConfig

REPO = Path(__file__).resolve().parents[2]
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _all_artifacts(client: mlflow.MlflowClient, run_id: str, path: str = "") -> list[str]:
    out = []
    for a in client.list_artifacts(run_id, path):
        out.extend(_all_artifacts(client, run_id, a.path) if a.is_dir else [a.path])
    return out


@pytest.fixture(scope="module")
def lineage_run(tmp_path_factory, sample_catalog):
    """80 real products as two part files + a query-log file; pretrain 3 steps (grouped batches), then index."""
    work = tmp_path_factory.mktemp("lineage")
    table = pq.read_table(sample_catalog).slice(0, 80)
    parts = work / "catalog"
    parts.mkdir()
    pq.write_table(table.slice(0, 50), parts / "part-0.parquet")
    pq.write_table(table.slice(50), parts / "part-1.parquet")
    queries = work / "queries.parquet"
    pq.write_table(derive_queries(table.drop_columns(["image"]), seed=0), queries)
    # batches packed by article type (hard in-batch negatives) through the real Ray Data -> Ray Train path
    data = DataConfig(catalog=str(parts), queries=str(queries), group_column="articleType", group_window=2)
    tracking = TrackingConfig(experiment="lineage", model_name="lineage-model")
    trained = pretrain.run(PretrainJob(workdir=str(work), data=data, tracking=tracking,
                                       train=TrainConfig(max_steps=3, batch_size=8, checkpoint_every=3,
                                                         log_every=1)))
    client = mlflow.MlflowClient()
    before = client.get_model_version("lineage-model", trained["version"])
    indexed = embed_index.run(IndexJob(workdir=str(work), model_uri=trained["model_uri"], data=data,
                                       tracking=tracking))
    yield {"work": work, "parts": parts, "queries": queries, "trained": trained, "indexed": indexed,
           "client": client, "before_index": before}
    mlflow.set_tracking_uri(None)


def test_run_records_config_data_code_and_metrics(lineage_run):
    client, trained = lineage_run["client"], lineage_run["trained"]
    run = client.get_run(trained["run_id"])
    params, tags = run.data.params, run.data.tags
    assert params["train.max_steps"] == "3" and params["data.catalog"] == str(lineage_run["parts"])  # config
    assert params["data.group_column"] == "articleType" and params["data.group_window"] == "2"
    files = {p.resolve(): "catalog" for p in lineage_run["parts"].glob("*.parquet")}
    files[lineage_run["queries"].resolve()] = "queries"
    data = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=trained["run_id"], artifact_path="lineage/data.json", dst_path=str(lineage_run["work"] / "dl"))
    ).read_text())
    assert {Path(f["path"]): (f["role"], f["rows"], f["sha256"]) for f in data["files"]} == {
        p: (role, pq.ParquetFile(p).metadata.num_rows, _sha(p)) for p, role in files.items()}
    assert params["data.catalog_file_rows"] == "80" and tags["vitrine.data.catalog_sha256"] == data["catalog_sha256"]
    datasets = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
    assert set(datasets) == {"catalog", "queries"}
    assert datasets["queries"].digest == data["queries_sha256"][:32]
    for lib in ("torch", "ray", "mlflow", "transformers", "faiss"):
        assert params[f"lineage.{lib}"] not in ("", "absent"), lib
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if shutil.which("git") and head.returncode == 0:
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()
        assert tags["vitrine.git_dirty"] in ("True", "False")
    else:
        assert tags["vitrine.code_version"].startswith("vitrine==")
    assert [m.step for m in client.get_metric_history(trained["run_id"], "loss")] == [1, 2, 3]
    assert "final_loss" in run.data.metrics and run.info.status == "FINISHED"


def test_model_is_safetensors_with_tokenizer_and_no_pickles(lineage_run):
    client, run_id = lineage_run["client"], lineage_run["trained"]["run_id"]
    artifacts = _all_artifacts(client, run_id)
    assert {"model/model.safetensors", "model/vitrine_model.json", "model/tokenizer/tokenizer.json",
            "model/tokenizer/tokenizer_config.json"} <= set(artifacts)
    assert not [a for a in artifacts if a.endswith(PICKLE_SUFFIXES)], artifacts


def test_model_version_links_run_lineage_and_index(lineage_run):
    client, trained, indexed = lineage_run["client"], lineage_run["trained"], lineage_run["indexed"]
    mv = client.get_model_version("lineage-model", trained["version"])
    assert mv.run_id == trained["run_id"] and mv.source == f"runs:/{trained['run_id']}/model"
    run_tags = client.get_run(trained["run_id"]).data.tags
    for key in ("vitrine.code_version", "vitrine.data.catalog_sha256", "vitrine.data.queries_sha256"):
        assert mv.tags[key] == run_tags[key] != "", key
    assert "vitrine.index_uri" not in lineage_run["before_index"].tags  # set by the index job, not before
    assert mv.tags["vitrine.index_uri"] == indexed["index_uri"] == f"runs:/{indexed['run_id']}/index"
    index_files = {a.path for a in client.list_artifacts(indexed["run_id"], "index")}
    assert index_files and all(p.startswith("index/") for p in index_files)
    index_run = client.get_run(indexed["run_id"])
    assert index_run.data.params["model_version"] == trained["version"]
