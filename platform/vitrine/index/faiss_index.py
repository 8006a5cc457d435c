"""FAISS indexes described by a spec (factory string + metric + search parameters), saved with metadata.

An index directory holds ``index.faiss``, ``products.parquet`` (row -> product id, title, attributes,
modal weights) and ``index_meta.json`` (model name/version, dim, count, build time, recall@10 vs an exact
Flat search on held-out query vectors, checksums). Indexes are built and searched on the GPU(s) when
``faiss.get_num_gpus() > 0`` and the index type has a GPU version (Flat, IVF*); otherwise on the CPU, logged.
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


DEVICES = ("auto", "cpu", "gpu")


def place(index: Any, device: str = "auto") -> tuple[Any, str]:
    """Move ``index`` to all GPUs when asked/available and supported; returns (index, "gpu" | "cpu").

    ``auto`` uses GPUs when ``faiss.get_num_gpus() > 0``; ``gpu`` is a wish, not an order: without a GPU (or
    for an index type FAISS cannot put on a GPU, such as HNSW) the CPU index is kept and the reason logged.
    """
    import faiss

    if device not in DEVICES:
        raise ConfigError(f"index device {device!r} must be one of {DEVICES}")
    if device == "cpu":
        return index, "cpu"
    if faiss.get_num_gpus() == 0 or not hasattr(faiss, "index_cpu_to_all_gpus"):
        if device == "gpu":
            log.warning("index device 'gpu' requested but FAISS sees no GPU (faiss.get_num_gpus() == 0); "
                        "using the CPU index")
        return index, "cpu"
    try:
        return faiss.index_cpu_to_all_gpus(index), "gpu"
    except (RuntimeError, AttributeError) as exc:
        log.warning("index type %s has no GPU version (%s); using the CPU index", type(index).__name__, exc)
        return index, "cpu"


def to_cpu(index: Any) -> Any:
    """The CPU copy of a GPU index (a CPU index unchanged)."""
    import faiss

    if faiss.get_num_gpus() > 0 and "Gpu" in type(index).__name__:
        return faiss.index_gpu_to_cpu(index)
    return index


def set_search_params(index: Any, params: dict[str, Any]) -> None:
    """Apply search-time parameters (``nprobe``, ``efSearch``, ...) through FAISS's ParameterSpace."""
    import faiss

    on_gpu = "Gpu" in type(index).__name__ and hasattr(faiss, "GpuParameterSpace")
    ps = faiss.GpuParameterSpace() if on_gpu else faiss.ParameterSpace()
    for key, value in params.items():
        try:
            ps.set_index_parameter(index, key, value)
        except RuntimeError as exc:
            raise ConfigError(f"search parameter {key}={value!r} does not apply to this index: {exc}") from None


def build_index(vectors: np.ndarray, spec: IndexSpec, train_size: int = 100_000, seed: int = 0,
                device: str = "auto") -> Any:
    """Build (train on a sample, then add) an index over ``vectors`` (N, D) float32; returned on the CPU."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ConfigError(f"cannot index vectors of shape {vectors.shape}; expected (N > 0, D)")
    try:
        index = faiss.index_factory(vectors.shape[1], spec.factory, spec.faiss_metric())
    except RuntimeError as exc:
        raise ConfigError(f"index.factory={spec.factory!r} is not a valid FAISS factory string: {exc}") from None
    index, placement = place(index, device)
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = vectors[rng.choice(len(vectors), min(train_size, len(vectors)), replace=False)]
        try:
            index.train(sample)
        except RuntimeError as exc:
            raise ConfigError(f"index.factory={spec.factory!r} cannot be trained on {len(sample)} vectors "
                              f"({exc}); use fewer IVF lists or more products") from None
    index.add(vectors)
    index = to_cpu(index) if placement == "gpu" else index
    set_search_params(index, spec.search_params)
    log.debug("built %s over %d vectors on %s", spec.factory, len(vectors), placement)
    return index


def stored_vectors(index: Any) -> np.ndarray:
    """Every vector the index holds, in row order: exact for Flat, HNSW and refined (``RFlat``) indexes, decoded
    (approximate) for PQ / SQ codes; an IVF index gets its direct map first. A clear error where FAISS cannot
    reconstruct (the re-ranker's neighbour-centroid features need the vectors)."""
    import faiss

    index = to_cpu(index)
    if not index.ntotal:
        return np.zeros((0, index.d), np.float32)
    try:  # one vector first: reconstruct_n aborts the process on an index type that cannot reconstruct
        index.reconstruct(0)
    except RuntimeError:
        try:
            faiss.extract_index_ivf(index).make_direct_map()
            index.reconstruct(0)
        except RuntimeError:
            raise ConfigError(f"this {type(index).__name__} index cannot return its vectors; a ranker trained "
                              "with --prf needs them: serve a Flat, HNSW or IVF index, or retrain the ranker "
                              "with --prf=0") from None
    return index.reconstruct_n(0, index.ntotal)


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
    meta = {**meta, "count": int(index.ntotal), "dim": int(index.d), "faiss_version": faiss.__version__,
            "index_sha256": file_sha256(out / INDEX_FILE)}
    (out / META_FILE).write_text(json.dumps(meta, indent=1, default=str))
    return out


@dataclass
class LoadedIndex:
    """An index loaded for search, with its products and metadata."""

    index: Any
    products: pa.Table
    meta: dict[str, Any]
    product_ids: list[str] = field(default_factory=list)
    placement: str = "cpu"

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) float32 -> scores (Q, k) and row positions (Q, k); -1 where fewer than k exist.

        ``allowed`` (N,) bool restricts results to those rows (attribute filters): the search over-fetches
        and widens until k allowed rows are found or the whole index was asked.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n = int(self.index.ntotal)
        k = max(1, min(k, n))
        if allowed is None:
            return self.index.search(queries, k)
        share = max(float(allowed.mean()), 1e-6)
        fetch = min(n, max(4 * k, int(2 * k / share)))
        while True:
            scores, rows = self.index.search(queries, fetch)
            keep = (rows >= 0) & allowed[np.clip(rows, 0, n - 1)]
            if fetch >= n or keep.sum(axis=1).min() >= k:
                break
            fetch = min(n, fetch * 4)
        out_s = np.full((len(queries), k), -np.inf, np.float32)
        out_r = np.full((len(queries), k), -1, np.int64)
        for i in range(len(queries)):
            sel = np.flatnonzero(keep[i])[:k]
            out_s[i, :len(sel)], out_r[i, :len(sel)] = scores[i, sel], rows[i, sel]
        return out_s, out_r

    def set_search_params(self, params: dict[str, Any], strict: bool = True) -> dict[str, Any]:
        """Change search-time parameters (``nprobe``, ``efSearch``) of the loaded index; returns those applied.

        ``strict=False`` skips (and logs) parameters this index type does not have, e.g. ``efSearch`` on Flat.
        """
        applied = {}
        for key, value in params.items():
            try:
                set_search_params(self.index, {key: value})
                applied[key] = value
            except ConfigError as exc:
                if strict:
                    raise
                log.warning("%s; skipped for this %s index", exc, self.meta.get("factory", "?"))
        return applied


def load_index(path: str | Path, expect_model_version: str | None = None, device: str = "cpu") -> LoadedIndex:
    """Load an index directory (onto GPUs when ``device`` allows); refuses a corrupt file or another version's."""
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
    index, placement = place(faiss.read_index(str(path / INDEX_FILE)), device)
    set_search_params(index, meta.get("search_params") or {})
    products = pq.read_table(path / PRODUCTS_FILE)
    return LoadedIndex(index, products, meta, products.column("product_id").to_pylist(), placement)


def timed_build(vectors: np.ndarray, spec: IndexSpec, train_size: int = 100_000, device: str = "auto"
                ) -> tuple[Any, float]:
    """Build an index and return it with its build time in seconds."""
    t0 = time.perf_counter()
    index = build_index(vectors, spec, train_size=train_size, device=device)
    return index, time.perf_counter() - t0
