"""Faults injected into the real chain on local Ray: a Ray Train worker and a Ray Data embedding actor SIGKILL
themselves once (``vitrine.faults``), a Serve replica is killed under load, promotions fail; each test checks
what survives. Bad catalog rows ride along in the indexed catalog and must be skipped and counted."""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import requests
import torch

from pipelines import embed_index, pretrain
from vitrine.config import DataConfig, IndexConfig, IndexJob, PretrainJob, TrackingConfig, TrainConfig

TRAIN_PRODUCTS = 40  # 120 derived pairs -> 60 per worker -> 3 batches of 16 per worker per epoch
STEPS_PER_EPOCH = 3
MAX_STEPS, CHECKPOINT_EVERY, KILL_AT_STEP = 6, 2, 3
INDEX_PRODUCTS, EMBED_BATCH, KILL_AT_BATCH = 160, 16, 4
CLIENTS = 4  # concurrent HTTP clients during the replica kill


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bad_rows(table: pa.Table) -> tuple[pa.Table, dict[str, str]]:
    """One row per bad-input class (image faults keep the product; the rest are skipped), keyed by id."""
    jpeg = table.column("image")[0].as_py()
    base = table.slice(5, 1).to_pylist()[0]
    rows = {
        "bad-truncated-jpeg": dict(image=jpeg[: len(jpeg) // 3]),
        "bad-not-an-image": dict(image=b"%PDF-1.4 this is a pdf, not a picture"),
        "bad-50mb-image": dict(image=jpeg + b"\0" * (50 * 1024 * 1024)),  # a real JPEG padded to 50 MB
        "bad-empty-title": dict(title="  "),
        "bad-null-title": dict(title=None),
        base["product_id"]: dict(title="DUPLICATE of an earlier product id"),
        "": dict(),  # empty product id
    }
    out = [{**base, "product_id": pid, **change} for pid, change in rows.items()]
    kept = {"bad-truncated-jpeg": "image", "bad-not-an-image": "image", "bad-50mb-image": "image"}
    return pa.Table.from_pylist(out, schema=table.schema), kept


@pytest.fixture(scope="module")
def chain(tmp_path_factory, sample_catalog):
    """Pretrain with a worker killed at step 3, then index with an embedding actor killed at batch 4."""
    work = tmp_path_factory.mktemp("faults")
    sample = pq.read_table(sample_catalog)
    train_cat = work / "train.parquet"
    pq.write_table(sample.slice(0, TRAIN_PRODUCTS), train_cat)
    extra, kept_bad = bad_rows(sample)
    index_table = pa.concat_tables([sample.slice(0, INDEX_PRODUCTS), extra])
    index_cat = work / "index.parquet"
    pq.write_table(index_table, index_cat, row_group_size=64)
    tracking = TrackingConfig(experiment="faults", model_name="faults-model")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VITRINE_FAULT", f"train_step={KILL_AT_STEP},embed_batch={KILL_AT_BATCH}")
        mp.setenv("VITRINE_FAULT_DIR", str(work))
        t0 = time.perf_counter()
        trained = pretrain.run(PretrainJob(
            workdir=str(work), data=DataConfig(catalog=str(train_cat)), tracking=tracking,
            train=TrainConfig(max_steps=MAX_STEPS, batch_size=16, checkpoint_every=CHECKPOINT_EVERY, log_every=1,
                              shuffle_buffer=0)))
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        indexed = embed_index.run(IndexJob(workdir=str(work), model_uri=trained["model_uri"],
                                           data=DataConfig(catalog=str(index_cat)), tracking=tracking,
                                           index=IndexConfig(embed_batch_size=EMBED_BATCH)))
        index_s = time.perf_counter() - t0
    print(f"\npretrain with a worker kill: {train_s:.1f} s; index with an actor kill: {index_s:.1f} s")
    yield {"work": work, "trained": trained, "indexed": indexed, "tracking": tracking,
           "index_table": index_table, "kept_bad": kept_bad}
    mlflow.set_tracking_uri(None)


def test_train_worker_killed_resumes_from_checkpoint(chain):
    work, trained = chain["work"], chain["trained"]
    assert (work / "train_step.killed").is_file(), "the fault did not fire: a worker should have died at step 3"
    assert trained["metrics"]["step"] == MAX_STEPS
    assert trained["metrics"]["resumed_from_step"] == (KILL_AT_STEP // CHECKPOINT_EVERY) * CHECKPOINT_EVERY
    client = mlflow.MlflowClient()
    history = client.get_metric_history(trained["run_id"], "epoch")
    steps = collections.Counter(m.step for m in history)
    assert sorted(steps) == list(range(1, MAX_STEPS + 1))  # no step skipped
    redone = {s for s, n in steps.items() if n > 1}
    assert redone <= set(range(int(trained["metrics"]["resumed_from_step"]) + 1, KILL_AT_STEP + 1))
    # epoch boundaries fall where an uninterrupted run puts them: the interrupted epoch was not restarted
    assert {m.step: int(m.value) for m in history} == {s: (s - 1) // STEPS_PER_EPOCH
                                                        for s in range(1, MAX_STEPS + 1)}
    # the optimizer's own step count continued from the checkpoint (it would read 4 had it restarted)
    last = sorted(p for p in (work / "ray_train").glob("*/checkpoint_*") if p.is_dir())[-1]
    state = torch.load(last / "train_state.pt", map_location="cpu", weights_only=True)
    assert state["step"] == MAX_STEPS
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {MAX_STEPS}
    assert int(state["bank_count"]) == MAX_STEPS * 2 * 16  # memory bank restored, then filled on
    assert client.get_run(trained["run_id"]).info.status == "FINISHED"


def test_embed_actor_killed_every_product_once(chain):
    work, indexed, table = chain["work"], chain["indexed"], chain["index_table"]
    assert (work / "embed_batch.killed").is_file(), "the fault did not fire: the embedder should have died"
    raw = pq.read_table(work / "index_build" / chain["trained"]["version"] / "embeddings")
    # every input row embedded exactly once despite the retried task (the duplicate id row included)
    input_ids = collections.Counter("None" if p is None else p for p in table.column("product_id").to_pylist())
    assert collections.Counter(raw.column("product_id").to_pylist()) == input_ids
    expected = {f"{p}" for p in table.slice(0, INDEX_PRODUCTS).column("product_id").to_pylist()}
    expected |= set(chain["kept_bad"])
    products = pq.read_table(Path(indexed["index_dir"]) / "products.parquet")
    assert sorted(products.column("product_id").to_pylist()) == sorted(expected)
    assert indexed["products"] == len(expected)
    assert indexed["catalog_rows_skipped"] == 4  # empty title, null title, duplicate id, empty id
    assert indexed["images_undecodable"] == 3  # truncated, not an image, 50 MB: kept, embedded from the title
    no_image = {r["product_id"]: r for r in products.to_pylist() if r["product_id"] in chain["kept_bad"]}
    assert all(r["image_weight"] == 0.0 and not r["has_image"] for r in no_image.values())


def _hammer(url: str, stop: threading.Event, log: list[tuple[float, int]], queries: list[str]) -> None:
    """One client: POST /search until stopped, recording (time, HTTP status or -1 for a connection error)."""
    i = 0
    with requests.Session() as s:
        while not stop.is_set():
            i += 1
            try:
                body = {"query": queries[i % len(queries)], "k": 5}
                code = s.post(f"{url}/search", json=body, timeout=30).status_code
            except requests.RequestException:
                code = -1
            log.append((time.monotonic(), code))


def _replicas(deployment: str) -> set[str]:
    import ray

    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("SERVE_REPLICA::") and f"#{deployment}#" in a["name"]}


def test_serve_replica_killed_under_load(chain):
    import ray
    from ray import serve

    from deployments.search_app import SearchAppArgs, build_app

    ray.init(num_cpus=4, include_dashboard=False, configure_logging=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(SearchAppArgs(model_uri=chain["trained"]["model_uri"], workdir=str(chain["work"]),
                                          tracking_uri=mlflow.get_tracking_uri(), num_replicas=2)),
                  name="faults", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        assert requests.get(f"{url}/health", timeout=30).status_code == 200
        queries = chain["index_table"].slice(0, 50).column("title").to_pylist()
        stop, log = threading.Event(), []
        clients = [threading.Thread(target=_hammer, args=(url, stop, log, queries)) for _ in range(CLIENTS)]
        for c in clients:
            c.start()
        while sum(code == 200 for _, code in log) < 40:
            time.sleep(0.2)
        before = _replicas("QueryTower")
        victim = sorted(before)[0]
        killed_at = time.monotonic()
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        deadline = killed_at + 120
        while time.monotonic() < deadline:
            now = _replicas("QueryTower")
            status = serve.status().applications["faults"].deployments["QueryTower"].status
            if victim not in now and len(now) == 2 and status == "HEALTHY":
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"Serve did not replace the killed replica within 120 s: {_replicas('QueryTower')}")
        recovered_at = time.monotonic()
        time.sleep(5)  # load keeps running on the repaired deployment
        stop.set()
        for c in clients:
            c.join(timeout=60)
    finally:
        serve.shutdown()
        ray.shutdown()
    failed = [(t, code) for t, code in log if code != 200]
    during = [r for r in log if killed_at <= r[0] <= recovered_at]
    print(f"\nreplica kill under {CLIENTS} clients: {len(log)} requests, {len(failed)} failed "
          f"({[c for _, c in failed]}), {len(during)} during the {recovered_at - killed_at:.1f} s repair")
    # requests in flight on the killed replica are re-sent by the ingress: no client sees a failure
    assert not failed, f"{len(failed)} requests failed during the replica kill: {failed}"
    assert sum(code == 200 for t, code in log if t > recovered_at) > 10


def test_failed_promotions_leave_the_alias(chain, tmp_path, monkeypatch):
    from pipelines.promote import run as promote
    from vitrine import registry
    from vitrine.config import PromoteJob
    from vitrine.errors import RegistryError
    from vitrine.model.store import WEIGHTS

    work, tracking = chain["work"], chain["tracking"]
    name, champion = tracking.model_name, chain["trained"]["version"]
    registry.setup(tracking, work)
    # a bad candidate: the champion's files with one flipped byte in the weights, registered as @challenger
    bad_dir = tmp_path / "model"
    src = registry.resolve_model(chain["trained"]["model_uri"], work / "cache").local_dir
    subprocess.run(["cp", "-r", str(src), str(bad_dir)], check=True)
    weights = bytearray((bad_dir / WEIGHTS).read_bytes())
    weights[-100] ^= 0xFF
    (bad_dir / WEIGHTS).write_bytes(bytes(weights))
    run = registry.start_run(registry.setup(tracking, work), "bad-candidate")
    registry.log_artifacts(run, bad_dir, "model")
    registry.end_run(run)
    bad = registry.register_model(name, run, "challenger")
    sample = Path(__file__).resolve().parents[2] / "platform" / "vitrine" / "sample"
    judgments = pq.read_table(sample / "homedepot_judgments.parquet").slice(0, 30)
    products = pq.read_table(sample / "homedepot_products.parquet")
    pq.write_table(judgments, tmp_path / "judgments.parquet")
    pq.write_table(products.filter(pc.is_in(products.column("product_id"), judgments.column("product_id"))),
                   tmp_path / "products.parquet")
    job = PromoteJob(workdir=str(work), model_name=name, catalog=str(tmp_path / "products.parquet"),
                     judgments=str(tmp_path / "judgments.parquet"), tracking=tracking)
    with pytest.raises(RegistryError, match="do not match the checksum"):
        promote(job)
    assert str(registry.client().get_model_version_by_alias(name, "champion").version) == champion != bad
    # MLflow down: the command fails in one clear line, no traceback, and the alias is untouched
    down = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_TRACKING_URI": down}
    done = subprocess.run([str(Path(sys.executable).parent / "vitrine"), "promote", f"--workdir={work}",
                           f"--model_name={name}"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and f"cannot reach the MLflow tracking store at {down}" in done.stderr
    assert str(registry.client().get_model_version_by_alias(name, "champion").version) == champion
