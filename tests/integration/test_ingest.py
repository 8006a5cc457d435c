"""Ray Data idle back-off (``vitrine.train.ingest``) on a real local Ray: wired into the training dataset,
taken by a real executor whose consumer is slow (its loop steps come back at once), every row still delivered
exactly once through a 2-way split.
"""

from __future__ import annotations

import time

import pytest

from pipelines.pretrain import build_dataset, check_ingest
from vitrine.config import PretrainJob
from vitrine.config_io import load_config
from vitrine.errors import ConfigError
from vitrine.train import ingest


@pytest.fixture(scope="module")
def local_ray():
    import ray
    import ray.data

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    saved = list(ray.data.DataContext.get_current().custom_execution_callback_classes)
    yield ray
    ray.data.DataContext.get_current().custom_execution_callback_classes = saved
    ray.shutdown()


def test_build_dataset_carries_the_backoff_in_the_context_it_ships(local_ray, sample_catalog):
    import pyarrow as pa

    for ms, on in ((20.0, True), (0.0, False)):
        job = load_config(PretrainJob, None, [f"--data.catalog={sample_catalog}", f"--data.idle_backoff_ms={ms}"])
        queries = pa.table({"query": ["q"], "product_id": ["p"], "label": pa.array([1.0], pa.float32())})
        ds = build_dataset(job, [str(sample_catalog)], queries)
        assert (ingest.IdleBackoff in ds.context.execution_callback_classes) is on
        assert ds.context.get_config(ingest.CONFIG_KEY) == pytest.approx(ms / 1000)
        current = local_ray.data.DataContext.get_current()  # the process's own context is left as it was
        assert ingest.IdleBackoff not in current.custom_execution_callback_classes
        assert current.get_config(ingest.CONFIG_KEY) is None


def test_bad_backoff_values_are_refused_with_the_fix():
    for value in ("-1", "nan", "5000", "inf"):
        job = load_config(PretrainJob, None, [f"--data.idle_backoff_ms={value}"])
        with pytest.raises(ConfigError, match=rf"data.idle_backoff_ms={value}.*use 0 \(off\) to 1000"):
            check_ingest(job.data)
    check_ingest(load_config(PretrainJob, None, []).data)  # the default passes


def test_a_slow_consumer_gets_the_backoff_and_every_row_once(local_ray):
    import numpy as np
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ingest.install(ctx, 5.0)
    ds = ray.data.range(2000, override_num_blocks=40).map_batches(
        lambda b: {"id": b["id"], "x": np.ones((len(b["id"]), 64), np.float32)}, batch_size=50)
    before = ingest.IdleBackoff.sleeps
    seen = []
    for batch in ds.iter_batches(batch_size=100, batch_format="numpy"):
        seen.extend(batch["id"].tolist())
        time.sleep(0.05)  # a slow step: the pipeline fills its budget and waits
    assert sorted(seen) == list(range(2000))
    assert ingest.IdleBackoff.sleeps > before  # the real executor's steps came back early and backed off

    shards = ds.streaming_split(2, equal=True)

    @local_ray.remote(num_cpus=0.5)
    def drain(shard) -> list[int]:  # noqa: ANN001 - a Ray Data split iterator
        return [int(i) for b in shard.iter_batches(batch_size=100, batch_format="numpy") for i in b["id"]]

    parts = local_ray.get([drain.remote(s) for s in shards])
    assert sorted(parts[0] + parts[1]) == list(range(2000)) and len(parts[0]) == len(parts[1])


def test_install_is_idempotent_and_zero_restores_rays_loop():
    import ray.data

    ctx = ray.data.DataContext.get_current().copy()
    ingest.install(ctx, 20.0)
    ingest.install(ctx, 20.0)
    assert ctx.custom_execution_callback_classes.count(ingest.IdleBackoff) == 1
    ingest.install(ctx, 0.0)
    assert ingest.IdleBackoff not in ctx.custom_execution_callback_classes
    assert ctx.get_config(ingest.CONFIG_KEY) == 0.0
