"""What a search server needs, without Ray: registry versions resolved to a query tower and its own index,
attribute filters, hits, and a small per-process cache holding the served version and the one before it.

A served version always pairs a query tower and an index built by that same registry version; an index whose
metadata names another version is refused (``RegistryError``). Keeping two versions loaded lets requests
that started on the old version finish on it while new requests use the new one (zero-downtime promotion).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vitrine.errors import RegistryError
from vitrine.index.faiss_index import LoadedIndex, load_index

log = logging.getLogger(__name__)
T = TypeVar("T")

# Columns of the products table that are not attributes a shopper can filter on.
NOT_FILTERABLE = {"product_id", "title", "title_weight", "image_weight", "has_image", "image"}


def cache_lock(cache_dir: Path, key: str):  # noqa: ANN202 - a FileLock context manager
    """An inter-process lock (replicas of one node share the artifact cache)."""
    from filelock import FileLock

    cache_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(str(cache_dir / f".{key}.lock"), timeout=600)


def resolve_version(name: str, version: str, cache_dir: str | Path) -> Any:
    """``models:/<name>/<version>`` -> ``ResolvedModel`` (download once per node, safe across processes)."""
    from vitrine import registry

    with cache_lock(Path(cache_dir), f"{name}-{version}"):
        return registry.resolve_model(f"models:/{name}/{version}", cache_dir)


def load_version_index(model: Any, cache_dir: str | Path, device: str = "auto") -> LoadedIndex:
    """The index recorded on a resolved model version; refuses one built for another version."""
    from vitrine import registry

    if not model.index_uri:
        raise RegistryError(f"model {model.name} version {model.version} has no index yet "
                            f"(no '{registry.INDEX_TAG}' tag); run `vitrine index --model_uri="
                            f"models:/{model.name}/{model.version}` first")
    local = Path(cache_dir) / model.name / model.version / "index_dl"
    with cache_lock(Path(cache_dir), f"{model.name}-{model.version}-index"):
        if not (local / "index" / "index_meta.json").is_file():
            registry.download(model.index_uri, local)
    return load_index(local / "index", expect_model_version=model.version, device=device)


def alias_version(name: str, alias: str) -> str:
    """The registry version an alias points at now."""
    from vitrine import registry

    return str(registry.client().get_model_version_by_alias(name, alias).version)


class VersionCache(Generic[T]):
    """Thread-safe LRU of loaded versions (default 2: the served one and the one being drained).

    A load runs outside the cache lock, so lookups of loaded versions never wait behind a loading one.
    """

    def __init__(self, load: Callable[[str], T], keep: int = 2) -> None:
        self.load = load
        self.keep = keep
        self.items: OrderedDict[str, T] = OrderedDict()
        self.lock = threading.Lock()
        self.loading: dict[str, threading.Lock] = {}

    def get(self, version: str) -> T:
        """The loaded object of ``version``, loading it (once) if needed."""
        with self.lock:
            if version in self.items:
                self.items.move_to_end(version)
                return self.items[version]
            gate = self.loading.setdefault(version, threading.Lock())
        with gate:
            with self.lock:
                if version in self.items:
                    return self.items[version]
            item = self.load(version)
            with self.lock:
                self.items[version] = item
                self.loading.pop(version, None)
                while len(self.items) > self.keep:
                    old, _ = self.items.popitem(last=False)
                    log.info("unloaded version %s", old)
            return item

    def versions(self) -> list[str]:
        """Versions loaded now, oldest first."""
        with self.lock:
            return list(self.items)


class Catalog:
    """A loaded index plus what answers need: titles, modal weights and attribute columns for filters."""

    def __init__(self, index: LoadedIndex) -> None:
        self.index = index
        products = index.products
        self.titles = products.column("title").to_pylist()
        self.title_w = products.column("title_weight").to_numpy(zero_copy_only=False)
        self.image_w = products.column("image_weight").to_numpy(zero_copy_only=False)
        has = products.column("has_image") if "has_image" in products.column_names else None
        self.has_image = has.to_numpy(zero_copy_only=False) if has is not None else np.zeros(len(products), bool)
        self.filterable = sorted(c for c in products.column_names if c not in NOT_FILTERABLE)
        self.row_of = {pid: i for i, pid in enumerate(index.product_ids)}
        self._masks: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}

    def check_filters(self, filters: dict[str, list[str]]) -> None:
        """Refuse filters on columns that do not exist (``ValueError`` naming the valid ones)."""
        unknown = sorted(set(filters) - set(self.filterable))
        if unknown:
            raise ValueError(f"cannot filter on {unknown}: not attribute columns of this catalog; "
                             f"filterable columns: {self.filterable}")

    def mask(self, filters: dict[str, list[str]]) -> np.ndarray | None:
        """Rows whose attributes match every filter (a column matches any of its listed values)."""
        if not filters:
            return None
        self.check_filters(filters)
        allowed = np.ones(len(self.titles), bool)
        for col, values in filters.items():
            key = (col, tuple(sorted(values)))
            if key not in self._masks:
                column = pc.cast(self.index.products.column(col), pa.string())
                hit = pc.is_in(column, value_set=pa.array(values, pa.string()))
                self._masks[key] = pc.fill_null(hit, False).to_numpy(zero_copy_only=False)
                if len(self._masks) > 256:
                    self._masks.pop(next(iter(self._masks)))
            allowed &= self._masks[key]
        return allowed

    def search(self, vector: np.ndarray, k: int, filters: dict[str, list[str]] | None = None
               ) -> list[dict[str, Any]]:
        """Top-k hits (product id, title, score, modal weights, has_image) of one (D,) query vector."""
        allowed = self.mask(filters or {})
        if allowed is not None and not allowed.any():
            return []
        scores, rows = self.index.search(vector[None, :], k, allowed)
        return [self.hit(int(r), float(s)) for s, r in zip(scores[0], rows[0], strict=True) if r >= 0]

    def hit(self, row: int, score: float, stage: str = "dense") -> dict[str, Any]:
        """The answer entry of one index row."""
        return {"product_id": self.index.product_ids[row], "title": self.titles[row], "score": score,
                "title_weight": float(self.title_w[row]), "image_weight": float(self.image_w[row]),
                "has_image": bool(self.has_image[row]), "stage": stage}


class ImageStore:
    """Product images read from the catalog the index was built from, loaded on first use."""

    def __init__(self, catalog_path: str) -> None:
        self.path = catalog_path
        self.images: dict[str, int] | None = None
        self.column: pa.ChunkedArray | None = None
        self.lock = threading.Lock()

    def _load(self) -> None:
        from vitrine.catalog.io import read_table

        try:
            table = read_table(self.path, columns=["product_id", "image"])
        except Exception as exc:  # noqa: BLE001 - any unreadable catalog means "no images", logged
            log.warning("no product images: cannot read catalog %r (%s)", self.path, exc)
            self.images, self.column = {}, None
            return
        self.column = table.column("image")
        self.images = {}
        for i, pid in enumerate(table.column("product_id").to_pylist()):
            self.images.setdefault(str(pid), i)

    def get(self, product_id: str) -> bytes | None:
        """The encoded image bytes of a product, or None."""
        with self.lock:
            if self.images is None:
                self._load()
        row = self.images.get(product_id) if self.images else None
        if row is None or self.column is None:
            return None
        return self.column[row].as_py()


def image_mime(data: bytes) -> str:
    """The MIME type of encoded image bytes, from their magic number."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] == b"GIF8":
        return "image/gif"
    return "application/octet-stream"
