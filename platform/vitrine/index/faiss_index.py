"""FAISS indexes described by a spec (factory string + metric + search parameters), saved with metadata.

An index directory holds ``index.faiss``, ``products.parquet`` (row -> product id, title, attributes,
modal weights) and ``index_meta.json`` (model name/version, dim, count, build time, recall@10 vs an exact
Flat search, checksums). GPU placement is used only when ``faiss.get_num_gpus() > 0``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vitrine.config import IndexConfig
from vitrine.errors import ConfigError, RegistryError

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
PRODUCTS_FILE = "products.parquet"
META_FILE = "index_meta.json"


@dataclass(frozen=True)
class IndexSpec:
    """What index to build: a FAISS factory string, a metric and search-time parameters."""

    factory: str = "Flat"
    metric: str = "ip"
    search_params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: IndexConfig) -> IndexSpec:
        """The spec of an ``IndexConfig`` section."""
        if cfg.metric not in ("ip", "l2"):
            raise ConfigError(f"index.metric={cfg.metric!r} must be 'ip' or 'l2'")
        return cls(cfg.factory, cfg.metric, dict(cfg.search_params))

    def faiss_metric(self) -> int:
        """The FAISS metric constant."""
        import faiss

        return faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2


def set_search_params(index: Any, params: dict[str, Any]) -> None:
    """Apply search-time parameters (``nprobe``, ``efSearch``, ...) through FAISS's ParameterSpace."""
    import faiss

    ps = faiss.ParameterSpace()
    for key, value in params.items():
        try:
            ps.set_index_parameter(index, key, value)
        except RuntimeError as exc:
            raise ConfigError(f"search parameter {key}={value!r} does not apply to this index: {exc}") from None


def build_index(vectors: np.ndarray, spec: IndexSpec, train_size: int = 100_000, seed: int = 0) -> Any:
    """Build (train on a sample, then add) a CPU index over ``vectors`` (N, D) float32."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    try:
        index = faiss.index_factory(vectors.shape[1], spec.factory, spec.faiss_metric())
    except RuntimeError as exc:
        raise ConfigError(f"index.factory={spec.factory!r} is not a valid FAISS factory string: {exc}") from None
    if faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = vectors[rng.choice(len(vectors), min(train_size, len(vectors)), replace=False)]
        index.train(sample)
    index.add(vectors)
    if faiss.get_num_gpus() > 0:
        index = faiss.index_gpu_to_cpu(index)
    set_search_params(index, spec.search_params)
    return index


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int, metric: str = "ip") -> np.ndarray:
    """Exact top-k row ids by brute force (the reference every index is measured against)."""
    import faiss

    flat = faiss.IndexFlatIP(vectors.shape[1]) if metric == "ip" else faiss.IndexFlatL2(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)[1]


def recall_at_k(index: Any, vectors: np.ndarray, queries: np.ndarray, k: int = 10, metric: str = "ip") -> float:
    """Mean overlap of the index's top-k with the exact top-k (1.0 for Flat)."""
    truth = exact_topk(vectors, queries, k, metric)
    found = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)[1]
    return float(np.mean([len(set(t) & set(f)) / k for t, f in zip(truth, found, strict=True)]))


def save_index(out: str | Path, index: Any, products: pa.Table, meta: dict[str, Any]) -> Path:
    """Write index + products table + metadata (with a checksum of the index file)."""
    import faiss

    from vitrine.model.store import file_sha256

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(out / INDEX_FILE))
    pq.write_table(products, out / PRODUCTS_FILE)
    meta = {**meta, "count": int(index.ntotal), "dim": int(index.d), "index_sha256": file_sha256(out / INDEX_FILE)}
    (out / META_FILE).write_text(json.dumps(meta, indent=1, default=str))
    return out


@dataclass
class LoadedIndex:
    """An index loaded for search, with its products and metadata."""

    index: Any
    products: pa.Table
    meta: dict[str, Any]
    product_ids: list[str] = field(default_factory=list)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) float32 -> scores (Q, k) and row positions (Q, k); -1 where fewer than k exist."""
        k = max(1, min(k, int(self.index.ntotal)))
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def load_index(path: str | Path, expect_model_version: str | None = None) -> LoadedIndex:
    """Load an index directory; refuses a corrupt file or one built for another model version."""
    import faiss

    from vitrine.model.store import file_sha256

    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise RegistryError(f"'{path}' is not a Vitrine index directory (no {META_FILE}); run `vitrine index`")
    meta = json.loads(meta_path.read_text())
    if file_sha256(path / INDEX_FILE) != meta.get("index_sha256"):
        raise RegistryError(f"index file in '{path}' does not match its recorded checksum; rebuild it")
    if expect_model_version is not None and str(meta.get("model_version")) != str(expect_model_version):
        raise RegistryError(
            f"index in '{path}' was built for model version {meta.get('model_version')!r} but the query tower "
            f"is version {expect_model_version!r}; run `vitrine index` for that version")
    index = faiss.read_index(str(path / INDEX_FILE))
    products = pq.read_table(path / PRODUCTS_FILE)
    return LoadedIndex(index, products, meta, products.column("product_id").to_pylist())


def timed_build(vectors: np.ndarray, spec: IndexSpec) -> tuple[Any, float]:
    """Build an index and return it with its build time in seconds."""
    t0 = time.perf_counter()
    index = build_index(vectors, spec)
    return index, time.perf_counter() - t0
