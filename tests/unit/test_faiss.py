"""FAISS indexes against an exact Flat search; save/load refusals."""

import numpy as np
import pyarrow as pa
import pytest

from vitrine.config import IndexConfig
from vitrine.errors import ConfigError, RegistryError
from vitrine.index.faiss_index import (
    INDEX_FILE,
    IndexSpec,
    build_index,
    exact_topk,
    load_index,
    recall_at_k,
    save_index,
    stored_vectors,
)


def _clustered(n=3000, d=32, seed=0):
    """Vectors with real cluster structure (as product embeddings have), unit-normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, d))
    x = centres[rng.integers(0, 30, n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_flat_equals_brute_force():
    x = _clustered()
    q = x[:50] + 0.01
    index = build_index(x, IndexSpec("Flat"))
    _, found = index.search(q, 10)
    scores = q @ x.T
    expected = np.argsort(-scores, axis=1)[:, :10]
    assert (found == expected).mean() > 0.99  # ties aside, identical
    assert recall_at_k(index, x, q, 10) == 1.0
    assert (exact_topk(x, q, 10) == found).all()


def test_hnsw_recall_against_flat_with_search_params():
    from vitrine.index.faiss_index import set_search_params

    x = _clustered()
    q = x[::15] + 0.05 * np.random.default_rng(1).normal(size=(200, 32)).astype(np.float32)
    index = build_index(x, IndexSpec("HNSW32", "ip", {"efSearch": 256}))
    high = recall_at_k(index, x, q, 10)
    set_search_params(index, {"efSearch": 10})
    low = recall_at_k(index, x, q, 10)
    assert high >= 0.95 and low < high


def test_bad_factory_and_params_are_clear_errors():
    x = _clustered(200)
    with pytest.raises(ConfigError, match="factory"):
        build_index(x, IndexSpec("NotAnIndex"))
    with pytest.raises(ConfigError, match="metric"):
        IndexSpec.from_config(IndexConfig(metric="cosine"))


def test_save_load_round_trip_and_refusals(tmp_path):
    x = _clustered(500)
    index = build_index(x, IndexSpec("Flat"))
    products = pa.table({"product_id": [str(i) for i in range(500)], "title": [f"p{i}" for i in range(500)]})
    path = save_index(tmp_path / "idx", index, products, {"model_version": "3"})
    loaded = load_index(path, expect_model_version="3")
    assert loaded.meta["count"] == 500 and loaded.meta["dim"] == 32
    scores, rows = loaded.search(x[:1], 5)
    assert rows[0][0] == 0 and loaded.product_ids[rows[0][0]] == "0"
    with pytest.raises(RegistryError, match="version"):
        load_index(path, expect_model_version="4")
    (path / INDEX_FILE).write_bytes((path / INDEX_FILE).read_bytes()[:-8] + b"corrupt!")
    with pytest.raises(RegistryError, match="checksum"):
        load_index(path)


@pytest.mark.parametrize("factory,exact", [("Flat", True), ("HNSW16", True), ("IVF16,Flat", True),
                                           ("IVF16,PQ8x4fs,RFlat", True), ("IVF16,PQ8", False)])
def test_stored_vectors_come_back_in_row_order(factory, exact):
    """What a ``--prf`` ranker reads from a served index: its vectors, exact unless held as PQ codes only."""
    x = _clustered(n=2000)
    got = stored_vectors(build_index(x, IndexSpec(factory), device="cpu"))
    assert got.shape == x.shape
    cos = np.sum(got * x, axis=1) / np.linalg.norm(got, axis=1)
    assert np.array_equal(got, x) if exact else np.median(cos) > 0.9  # PQ8 over 32 dims decodes close


def test_stored_vectors_refusal_names_the_fix():
    import faiss

    mapped = faiss.index_factory(32, "IDMap,Flat")  # external ids: no reconstruction by row
    mapped.add_with_ids(_clustered(n=100), np.arange(100, 200))
    with pytest.raises(ConfigError, match="IndexIDMap index cannot return its vectors.*--prf=0"):
        stored_vectors(mapped)
