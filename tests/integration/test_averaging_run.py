"""A real pretrain (local Ray, sqlite MLflow) with weight averaging on, a worker killed after the step-2
checkpoint: the average resumes from the checkpoint, and the registered model is the average."""

from __future__ import annotations

import json

import mlflow
import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from pipelines import pretrain
from vitrine import registry
from vitrine.config import DataConfig, LossConfig, PretrainJob, TrackingConfig, TrainConfig
from vitrine.model.store import META, WEIGHTS
from vitrine.train.averaging import warmed_decay
from vitrine.train.ray_train import TRAINED

DECAY, STEPS, KILL_AT = 0.9, 4, 3


def test_averaged_run_resumes_and_registers_the_average(tmp_path, sample_catalog, monkeypatch):
    catalog = tmp_path / "train.parquet"
    pq.write_table(pq.read_table(sample_catalog).slice(0, 40), catalog)
    monkeypatch.setenv("VITRINE_FAULT", f"train_step={KILL_AT}")
    monkeypatch.setenv("VITRINE_FAULT_DIR", str(tmp_path))
    tracking = TrackingConfig(experiment="averaging", model_name="averaged-model")
    try:
        trained = pretrain.run(PretrainJob(
            workdir=str(tmp_path), data=DataConfig(catalog=str(catalog), max_query_len=8, max_title_len=16),
            tracking=tracking, loss=LossConfig(visual_task="none"),
            train=TrainConfig(max_steps=STEPS, batch_size=16, checkpoint_every=2, log_every=1, shuffle_buffer=0,
                              ema_decay=DECAY)))
        assert (tmp_path / "train_step.killed").is_file(), "the fault did not fire"
        assert trained["metrics"]["resumed_from_step"] == 2
        history = mlflow.MlflowClient().get_metric_history(trained["run_id"], "ema_decay")
        # every logged step, the redone step 3 included, used the decay of its own update count: the resumed
        # average continued counting from the checkpoint's step rather than warming up again from 0
        assert sorted({m.step for m in history}) == list(range(1, STEPS + 1))
        for m in history:
            assert m.value == pytest.approx(warmed_decay(DECAY, m.step))

        last = sorted(p for p in (tmp_path / "ray_train").glob("*/checkpoint_*") if p.is_dir())[-1]
        meta = json.loads((last / "model" / META).read_text())
        assert (meta["weights"], meta["train_step"], meta["ema_decay"]) == ("moving average", STEPS, DECAY)
        assert json.loads((last / TRAINED / META).read_text())["weights"] == "last"
        averaged, weights = load_file(str(last / "model" / WEIGHTS)), load_file(str(last / TRAINED / WEIGHTS))
        assert averaged.keys() == weights.keys()
        moved = [k for k in averaged if not averaged[k].equal(weights[k])]
        assert any("query_encoder" in k for k in moved), "the average should lag the trained text encoder"

        resolved = registry.resolve_model(trained["model_uri"], tmp_path / "cache")
        registered = json.loads((resolved.local_dir / META).read_text())
        assert registered["weights_sha256"] == meta["weights_sha256"]  # the average is what gets registered
    finally:
        mlflow.set_tracking_uri(None)
