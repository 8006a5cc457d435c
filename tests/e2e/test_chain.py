"""The real chain on local Ray: pretrain -> register -> embed + index -> Serve -> HTTP search."""

from __future__ import annotations

import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from pipelines import embed_index, pretrain
from pipelines import serve as serve_job
from pipelines.common import ensure_ray
from vitrine.config import DataConfig, IndexJob, PretrainJob, ServeConfig, TrackingConfig, TrainConfig

N_PRODUCTS = 240
PORT = 8123


@pytest.fixture(scope="module")
def chain(tmp_path_factory, sample_catalog):
    """Train 4 steps on 240 real products (+1 with a corrupt image), index them, return the artefacts."""
    work = tmp_path_factory.mktemp("chain")
    table = pq.read_table(sample_catalog).slice(0, N_PRODUCTS)
    bad = table.slice(0, 1).to_pydict()
    bad.update(product_id=["corrupt-1"], image=[b"\xff\xd8\xff" + b"not really a jpeg"])
    table = pa.concat_tables([table, pa.table(bad, schema=table.schema)])
    catalog = work / "catalog.parquet"
    pq.write_table(table, catalog)
    data = DataConfig(catalog=str(catalog))
    tracking = TrackingConfig(experiment="e2e", model_name="e2e-model")
    trained = pretrain.run(PretrainJob(
        workdir=str(work), data=data, tracking=tracking,
        train=TrainConfig(max_steps=4, batch_size=16, checkpoint_every=2, log_every=1)))
    indexed = embed_index.run(IndexJob(workdir=str(work), model_uri=trained["model_uri"], data=data,
                                       tracking=tracking))
    yield {"work": work, "table": table, "trained": trained, "indexed": indexed, "tracking": tracking}
    mlflow.set_tracking_uri(None)


def test_pretrain_logged_and_registered(chain):
    trained = chain["trained"]
    client = mlflow.MlflowClient()
    mv = client.get_model_version_by_alias("e2e-model", "champion")
    assert str(mv.version) == trained["version"] and mv.run_id == trained["run_id"]
    run = client.get_run(trained["run_id"])
    assert run.data.params["train.max_steps"] == "4"
    assert run.data.params["data.query_source"] == "derived from catalog attributes"
    switches = {k: run.data.params[k] for k in ("model.modal_adaptation", "loss.keyword_enhancement",
                                                 "loss.visual_task", "loss.memory_bank", "loss.gather_negatives")}
    assert switches == {"model.modal_adaptation": "True", "loss.keyword_enhancement": "True",
                        "loss.visual_task": "contrastive", "loss.memory_bank": "256", "loss.gather_negatives": "True"}
    assert int(run.data.params["data.products_with_keywords"]) > 200
    history = {k: client.get_metric_history(trained["run_id"], k) for k in ("visual", "keyword_product")}
    assert all(len(v) == 4 for v in history.values())
    assert run.info.status == "FINISHED"
    assert trained["metrics"]["step"] == 4
    assert [m.step for m in client.get_metric_history(trained["run_id"], "loss")] == [1, 2, 3, 4]
    artifacts = {a.path for a in client.list_artifacts(trained["run_id"], "model")}
    assert {"model/model.safetensors", "model/vitrine_model.json", "model/tokenizer"} <= artifacts


def test_every_product_embedded_exactly_once(chain):
    indexed = chain["indexed"]
    ids = chain["table"].column("product_id").to_pylist()
    assert indexed["products"] == len(ids) == N_PRODUCTS + 1
    emb = pq.read_table(chain["work"] / "index_build" / chain["trained"]["version"] / "embeddings")
    assert sorted(emb.column("product_id").to_pylist()) == sorted(ids)
    assert indexed["images_undecodable"] == 1  # the corrupt image: kept, embedded from its title only
    row = emb.column("product_id").to_pylist().index("corrupt-1")
    assert emb.column("image_weight")[row].as_py() == 0.0
    assert indexed["recall_at_10_vs_flat"] == 1.0
    mv = mlflow.MlflowClient().get_model_version("e2e-model", chain["trained"]["version"])
    assert mv.tags["vitrine.index_uri"] == indexed["index_uri"]
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(indexed["run_id"])}
    assert "modal_weights.png" in plots


def test_serve_http_search_finds_product_by_its_title(chain):
    import ray
    from ray import serve

    ensure_ray()
    try:
        url = serve_job.start(chain["trained"]["model_uri"], str(chain["work"]), ServeConfig(port=PORT),
                              chain["tracking"])
        assert requests.get(f"{url}/health", timeout=30).json() == {"status": "ok"}
        info = requests.get(f"{url}/model", timeout=30).json()
        assert info["version"] == chain["trained"]["version"] and info["index"]["count"] == N_PRODUCTS + 1
        rows = chain["table"].slice(0, N_PRODUCTS).to_pylist()
        for product in rows[::60]:
            resp = requests.post(f"{url}/search", json={"query": product["title"], "k": 10}, timeout=60)
            assert resp.status_code == 200
            hits = resp.json()["results"]
            assert len(hits) == 10
            assert product["product_id"] in [h["product_id"] for h in hits], product["title"]
            assert hits[0]["score"] >= hits[-1]["score"]
        for bad in ({"query": "", "k": 5}, {"query": "shoes", "k": 0}, {"query": "shoes", "extra": 1}):
            assert requests.post(f"{url}/search", json=bad, timeout=30).status_code == 422
    finally:
        serve.shutdown()
        ray.shutdown()
