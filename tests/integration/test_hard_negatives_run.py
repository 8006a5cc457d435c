"""A real pretrain (local Ray, sqlite MLflow) on the bundled Home Depot sample with judged hard negatives."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pyarrow.parquet as pq

from pipelines import pretrain
from vitrine.config import DataConfig, LossConfig, PretrainJob, TrackingConfig, TrainConfig

SAMPLE = Path(__file__).resolve().parents[2] / "platform" / "vitrine" / "sample"


def test_pretrain_streams_hard_negatives_into_the_loss(tmp_path):
    judged = pq.read_table(SAMPLE / "homedepot_judgments.parquet")
    low = sum(1 for v in judged.column("label").to_pylist() if v <= 1.7)
    data = DataConfig(catalog=str(SAMPLE / "homedepot_products.parquet"),
                      queries=str(SAMPLE / "homedepot_judgments.parquet"), min_label=2.3,
                      hard_negative_max_label=1.7, max_query_len=8, max_title_len=16)
    tracking = TrackingConfig(experiment="hard-negatives", model_name="hard-negatives-model")
    try:
        trained = pretrain.run(PretrainJob(
            workdir=str(tmp_path), data=data, tracking=tracking,
            loss=LossConfig(visual_task="none", w_query_image=0.0, w_title_image=0.0),
            train=TrainConfig(max_steps=2, batch_size=32, checkpoint_every=2, log_every=1)))
        client = mlflow.MlflowClient()
        run = client.get_run(trained["run_id"])
        assert run.data.params["data.hard_negative_pairs"] == str(low)
        rows = [m.value for m in client.get_metric_history(trained["run_id"], "hard_negative_rows")]
        assert len(rows) == 2 and all(0.0 < r < 1.0 for r in rows), rows  # some rows carry one, some have none
        assert all(v == v for v in (m.value for m in client.get_metric_history(trained["run_id"], "loss")))
    finally:
        mlflow.set_tracking_uri(None)
