"""Indexes as the Serve app loads them, through a real MLflow registry: round trip for Flat / HNSW / IVF-PQ,
GPU placement or its CPU fallback, filtered search against an exact reference, and the version-mismatch refusal.
"""

from __future__ import annotations

import json
import logging

import faiss
import mlflow
import numpy as np
import pyarrow as pa
import pytest

from vitrine import registry
from vitrine.config import TrackingConfig
from vitrine.errors import RegistryError
from vitrine.index.faiss_index import IndexSpec, build_index, exact_topk, load_index, place, recall_at_k, save_index
from vitrine.index.serving import Catalog, VersionCache, load_version_index, resolve_version


def _clustered(n=4000, d=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, d))
    x = centres[rng.integers(0, 40, n)] + 0.35 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _products(n):
    colours = ["Red", "Blue", "Black", "White"]
    return pa.table({"product_id": [f"p{i}" for i in range(n)], "title": [f"product {i}" for i in range(n)],
                     "baseColour": [colours[i % 4] for i in range(n)], "year": [2010 + i % 3 for i in range(n)],
                     "title_weight": np.full(n, 0.8, np.float32), "image_weight": np.full(n, 0.2, np.float32),
                     "has_image": np.zeros(n, bool)})


@pytest.mark.parametrize("factory,params,floor", [("Flat", {}, 1.0), ("HNSW32", {"efSearch": 128}, 0.95),
                                                  ("IVF64,PQ16x4fs,RFlat", {"nprobe": 16, "k_factor_rf": 8}, 0.9)])
def test_round_trip_keeps_results_and_params(tmp_path, factory, params, floor):
    everything = _clustered(4200)
    x, q = everything[:4000], everything[4000:]  # held-out queries: same distribution, never indexed
    index = build_index(x, IndexSpec(factory, "ip", params), train_size=3000)
    recall = recall_at_k(index, x, q, 10)
    assert recall >= floor
    path = save_index(tmp_path / factory.replace(",", "_"), index, _products(len(x)),
                      {"model_version": "7", "search_params": params, "recall_at_10_vs_flat": recall})
    loaded = load_index(path, expect_model_version="7", device="auto")
    before = index.search(q, 10)[1]
    after = loaded.search(q, 10)[1]
    assert (before == after).mean() > 0.99
    assert loaded.meta["count"] == len(x) and loaded.meta["dim"] == 32 and loaded.meta["faiss_version"]
    assert loaded.placement == ("gpu" if faiss.get_num_gpus() > 0 and factory != "HNSW32" else "cpu")


def test_gpu_request_falls_back_to_cpu_with_a_reason(caplog):
    index = build_index(_clustered(500), IndexSpec("Flat"), device="gpu")
    with caplog.at_level(logging.WARNING, logger="vitrine.index.faiss_index"):
        placed, where = place(index, "gpu")
    if faiss.get_num_gpus() == 0:
        assert where == "cpu" and placed is index
        assert "no GPU" in caplog.text
    else:
        assert where == "gpu" and "Gpu" in type(placed).__name__
    assert place(index, "cpu") == (index, "cpu")
    with pytest.raises(Exception, match="must be one of"):
        place(index, "tpu")


def test_filtered_search_equals_exact_search_on_the_subset(tmp_path):
    everything = _clustered(3050)
    x, q = everything[:3000], everything[3000:]
    path = save_index(tmp_path / "idx", build_index(x, IndexSpec("HNSW32", "ip", {"efSearch": 256})),
                      _products(len(x)), {"model_version": "1"})
    catalog = Catalog(load_index(path))
    assert catalog.filterable == ["baseColour", "year"]
    filters = {"baseColour": ["Red", "Black"], "year": ["2011"]}
    allowed = catalog.mask(filters)
    subset = np.flatnonzero(allowed)
    assert len(subset) == sum(1 for i in range(3000) if i % 4 in (0, 2) and i % 3 == 1)
    truth = subset[exact_topk(x[subset], q, 10)]
    found = np.stack([[int(h["product_id"][1:]) for h in catalog.search(v, 10, filters)] for v in q])
    assert np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)]) >= 0.95
    assert catalog.search(q[0], 5, {"baseColour": ["Purple"]}) == []
    with pytest.raises(ValueError, match="filterable columns"):
        catalog.mask({"colour": ["Red"]})


def test_version_cache_keeps_two_and_loads_once():
    loads: list[str] = []
    cache = VersionCache(lambda v: loads.append(v) or f"model-{v}")
    assert [cache.get(v) for v in ("1", "1", "2", "1", "3")] == ["model-1", "model-1", "model-2", "model-1",
                                                                 "model-3"]
    assert loads == ["1", "2", "3"] and cache.versions() == ["1", "3"]


def test_registry_version_with_another_versions_index_is_refused(tmp_path):
    """Two registry versions; v2 is tagged with v1's index: loading v2 is refused, naming both versions."""
    work = tmp_path / "work"
    exp = registry.setup(TrackingConfig(experiment="idx", model_name="idx-model"), work)
    try:
        model_dir = tmp_path / "model"
        model_dir.mkdir()
        (model_dir / "vitrine_model.json").write_text(json.dumps({"format": 1}))  # registry only looks it up
        versions, uris = [], []
        for _ in range(2):
            run = registry.start_run(exp, "idx")
            registry.log_artifacts(run, model_dir, "model")
            versions.append(registry.register_model("idx-model", run, "champion"))
            path = save_index(tmp_path / f"index{versions[-1]}", build_index(_clustered(300), IndexSpec("Flat")),
                              _products(300), {"model_version": versions[-1]})
            uris.append(registry.log_artifacts(run, path, "index"))
            registry.end_run(run)
        v1, v2 = versions
        registry.set_version_tag("idx-model", v1, registry.INDEX_TAG, uris[0])
        registry.set_version_tag("idx-model", v2, registry.INDEX_TAG, uris[0])  # the wrong index
        cache = work / "cache"
        ok = load_version_index(resolve_version("idx-model", v1, cache), cache)
        assert ok.meta["model_version"] == v1 and ok.index.ntotal == 300
        with pytest.raises(RegistryError, match=f"built for model version '{v1}'.*version '{v2}'"):
            load_version_index(resolve_version("idx-model", v2, cache), cache)
    finally:
        mlflow.set_tracking_uri(None)
