"""`vitrine report` for real on the bundled Myntra sample: two ablations (a few steps each) + BM25, local Ray,
sqlite MLflow; the table, plot and run ids are checked, and a second call resumes instead of retraining."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pyarrow.parquet as pq

from vitrine.catalog.splits import write_splits

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "platform" / "vitrine" / "sample"
BIN = Path(sys.executable).parent


def test_report_trains_evaluates_and_resumes(tmp_path):
    catalog = pq.read_table(SAMPLE / "myntra_sample.parquet")
    paths = write_splits("myntra", catalog, None, str(tmp_path / "data"), 0.2, seed=0)
    out = tmp_path / "report"
    cmd = [str(BIN / "vitrine"), "report", f"--workdir={tmp_path / 'w'}",
           f"--recipe={REPO / 'configs' / 'recipes' / 'myntra.yaml'}",
           f"--ablation_dir={REPO / 'configs' / 'ablations'}", "--ablations=[full, text_only]",
           "--max_steps=3", "--baselines=[bm25]", f"--judgments={paths['val_judgments']}",
           f"--overrides=[data.catalog={SAMPLE / 'myntra_sample.parquet'},data.queries={paths['train_queries']},"
           "train.batch_size=8,train.log_every=1,train.checkpoint_every=3]",
           f"--output={out}", "--label=sample"]
    # the job's own sqlite store in its workdir, whatever tracking URI earlier tests left in this process
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    rows = report["rows"]
    assert list(rows) == ["full", "text_only", "bm25"]
    for name, row in rows.items():
        m = row["metrics"]
        assert m["queries"] > 50, name
        assert 0.0 <= m["ndcg@10"] <= 1.0 and 0.0 <= m["recall@10"] <= m["recall@100"] <= 1.0, (name, m)
    table = (out / "report.md").read_text()
    for name in rows:
        assert f"| {name} | {rows[name]['metrics']['ndcg@10']:.4f} |" in table
    assert "vitrine report --recipe=" in table and (out / "report.png").stat().st_size > 5000

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'w' / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    text_only = client.get_run(rows["text_only"]["train_run_id"])
    assert text_only.data.params["model.use_images"] == "False"
    assert text_only.data.params["train.max_steps"] == "3"
    assert client.get_run(rows["full"]["train_run_id"]).data.params["model.use_images"] == "True"
    assert client.get_model_version_by_alias("vitrine-myntra-full", "ablation").run_id == rows["full"]["train_run_id"]

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "report.json").read_text())["rows"] == rows  # resumed: nothing retrained
    assert "already evaluated" in again.stderr
