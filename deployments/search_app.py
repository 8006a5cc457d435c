"""Ray Serve application: a batched query tower, an index deployment and an HTTP ingress with a search page.

    serve run deployments/serve_config.yaml          # or: vitrine serve
    curl -X POST localhost:8000/search -d '{"query": "red tshirt for men", "k": 10}'

Every request is served by one registry version end to end: the ingress picks the version when the request
arrives and both the query tower and the index answer with that version's weights and index (an index built
for another version is refused). The ingress follows the registry alias (``poll_interval_s``): when the alias
moves, it has the tower and index load the new version first, then switches; requests already running finish
on the old version, which each replica keeps loaded beside the new one. Nothing is loaded at import time.

``layout``: ``split`` (default) runs the query tower, the index and the ingress as three deployments that scale
apart (a GPU tower beside CPU index replicas, say); ``colocated`` loads the tower and the index inside each
ingress replica, so a request is one hop from the HTTP proxy instead of three (lower latency on small hosts and
CPU-only clusters; replicas scale together). Both serve the same API, versions and live knobs.
"""

import asyncio
import inspect
import logging
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import HTTPException
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.api import PAGE, ErrorResponse, SearchHit, SearchRequest, SearchResponse, make_api
from vitrine.config import SERVE_LAYOUTS

log = logging.getLogger(__name__)
GiB = 1024**3


class SearchAppArgs(BaseModel):
    """Arguments of the application builder (the ``args`` of a serve config YAML)."""

    model_config = ConfigDict(extra="forbid")

    model_uri: str = "models:/vitrine@champion"
    workdir: str = "runs"
    tracking_uri: str = ""
    max_batch_size: int = Field(16, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(0.005, ge=0.0, le=1.0)
    num_replicas: int | None = Field(None, ge=1, description="None = the serve config's (or autoscaling)")
    default_k: int = Field(10, ge=1, le=1000)
    poll_interval_s: float = Field(5.0, ge=0.0, description="alias check period; 0 = stay on the first version")
    search_params: dict[str, Any] = Field(default_factory=dict, description="e.g. {'efSearch': 128}")
    index_device: str = "auto"
    layout: Literal[SERVE_LAYOUTS] = Field(  # type: ignore[valid-type]
        "split", description="split: tower, index and ingress deployments; colocated: all in the ingress replica")
    rerank: bool = Field(True, description="order answers with the ranker attached to a served version "
                                           "(`vitrine rerank --attach=true`); False = dense order always")
    query_precision: Literal["fp32", "int8"] = Field(
        "fp32", description="int8: the query tower dynamically quantized on CPU replicas (faster, a little less "
                            "accurate: docs/serving.md); fp32: as trained")


def _tracking(tracking_uri: str) -> None:
    import mlflow

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI"))


@serve.deployment(ray_actor_options={"num_cpus": 0.5, "memory": int(1.5 * GiB)}, max_ongoing_requests=128)
class QueryTower:
    """The query encoder of each served version behind dynamic batching (``@serve.batch``)."""

    def __init__(self, name: str, version: str, workdir: str, tracking_uri: str, precision: str = "fp32") -> None:
        import torch

        from vitrine.index.embed import QueryEncoder
        from vitrine.index.serving import VersionCache, resolve_version

        torch.set_num_threads(1)
        _tracking(tracking_uri)
        cache = Path(workdir) / "cache"
        self.encoders = VersionCache(lambda v: QueryEncoder(resolve_version(name, v, cache).local_dir,
                                                            precision=precision))
        self.precision = self.encoders.get(version).precision

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live knobs: ``max_batch_size`` and ``batch_wait_timeout_s``."""
        if "max_batch_size" in user_config:
            self.encode_batch.set_max_batch_size(int(user_config["max_batch_size"]))
        if "batch_wait_timeout_s" in user_config:
            self.encode_batch.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))

    async def describe(self) -> dict[str, str]:
        """How this replica runs the tower: ``precision`` is fp32, int8 (quantized CPU) or bf16 (GPU)."""
        return {"precision": self.precision}

    async def warm(self, version: str) -> str:
        """Load a version's query tower (before the ingress switches to it) without blocking requests."""
        await asyncio.to_thread(self.encoders.get, version)
        return version

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def encode_batch(self, items: list[tuple[str, str]]) -> list[np.ndarray]:
        """A batch of (query, version) -> unit vectors, one forward pass per version in the batch."""
        out: list[np.ndarray | None] = [None] * len(items)
        for version in {v for _, v in items}:
            idx = [i for i, (_, v) in enumerate(items) if v == version]
            # On the event loop, not in a worker thread: measured, a thread halved the QPS at 8 clients (GIL
            # contention between torch's small eager ops and HTTP parsing; docs/serving.md).
            vecs = self.encoders.get(version)([items[i][0] for i in idx])
            for i, vec in zip(idx, vecs, strict=True):
                out[i] = vec
        return out  # type: ignore[return-value]

    async def __call__(self, text: str, version: str) -> np.ndarray:
        """One query -> (D,) float32 from the given version's query tower."""
        return await self.encode_batch((text, version))


@serve.deployment(ray_actor_options={"num_cpus": 0.5, "memory": 2 * GiB}, max_ongoing_requests=256)
class IndexSearcher:
    """The FAISS index of each served version (loaded once per replica) plus product titles, images and the
    version's attached re-ranker (BM25 over the titles + the trained ranker), when it has one."""

    def __init__(self, name: str, version: str, workdir: str, tracking_uri: str, device: str = "auto",
                 rerank: bool = True) -> None:
        from vitrine.index.reranked import ServedReranker, fetch_version_reranker
        from vitrine.index.serving import Catalog, ImageStore, VersionCache, load_version_index, resolve_version

        _tracking(tracking_uri)
        cache = Path(workdir) / "cache"
        self.search_params: dict[str, Any] = {}

        def load(v: str) -> tuple[Catalog, ImageStore, ServedReranker | None]:
            model = resolve_version(name, v, cache)
            ranker = fetch_version_reranker(model, cache) if rerank else None  # refused before the index loads
            index = load_version_index(model, cache, device)
            index.set_search_params(self.search_params, strict=False)
            catalog = Catalog(index)
            served = ServedReranker(catalog, ranker, model.reranker_uri) if ranker else None
            return catalog, ImageStore(str(index.meta.get("catalog", ""))), served

        self.versions = VersionCache(load)
        self.versions.get(version)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live knobs: ``search_params`` (``nprobe``, ``efSearch``...) applied to every loaded index."""
        if "search_params" not in user_config:
            return
        params = dict(user_config["search_params"] or {})
        for v in self.versions.versions():
            self.versions.get(v)[0].index.set_search_params(params, strict=False)
        self.search_params = params

    async def info(self, version: str) -> dict[str, Any]:
        """Load ``version`` if needed; its index metadata, filterable columns and live search parameters."""
        catalog, _, ranker = await asyncio.to_thread(self.versions.get, version)
        live = {k: v for k, v in self.search_params.items() if catalog.index.set_search_params({k: v}, False)}
        return {"index": {**catalog.index.meta, "placement": catalog.index.placement, "live_search_params": live},
                "filterable": catalog.filterable, "reranker": ranker.info() if ranker else None}

    def search(self, vector: np.ndarray, k: int, filters: dict[str, list[str]] | None, version: str,
               query: str = "", rerank: bool = True) -> list[dict[str, Any]]:
        """Top-k hits of one query in ``version``'s index, ordered by its re-ranker when it has one."""
        catalog, _, ranker = self.versions.get(version)
        if ranker is None or not rerank or not query:
            return catalog.search(vector, k, filters)
        allowed = catalog.mask(filters or {})
        if allowed is not None and not allowed.any():
            return []
        return [catalog.hit(r, s, stage) for r, s, stage in ranker.search(query, vector, k, allowed)]

    def image(self, product_id: str, version: str) -> bytes | None:
        """A product's image bytes, or None."""
        return self.versions.get(version)[1].get(product_id)


class _InProcess:
    """A deployment's class instantiated inside the ingress replica, called with a handle's ``.remote`` shape."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> "_InProcess":
        return _InProcess(getattr(self._target, name))

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Call now; an awaitable either way, as a ``DeploymentResponse`` is."""
        out = self._target(*args, **kwargs)
        return out if inspect.isawaitable(out) else _ready(out)


async def _ready(value: Any) -> Any:
    return value


api = make_api()
RETRIES = 5  # attempts per downstream call when the replica that took it died (Serve routes a retry elsewhere)


async def _retrying(call: Any) -> Any:
    """Await ``call()``; when the replica serving it died mid-request, try again on another (the calls are pure).

    Serve replaces a dead replica on its own, but the requests it held fail with ``RayActorError``; searching is
    idempotent, so the ingress re-sends them instead of answering 500.
    """
    from ray.exceptions import RayActorError

    for attempt in range(1, RETRIES + 1):
        try:
            return await call()
        except RayActorError as exc:
            if attempt == RETRIES:
                raise
            log.warning("replica died during a request (%s); retry %d of %d", type(exc).__name__, attempt,
                        RETRIES - 1)
            await asyncio.sleep(0.1 * attempt)
    raise AssertionError("unreachable")


@serve.deployment(ray_actor_options={"num_cpus": 0.5, "memory": GiB // 2}, max_ongoing_requests=256)
@serve.ingress(api)
class SearchIngress:
    """HTTP ingress: picks the served version, embeds the query through ``QueryTower``, searches the index."""

    async def __init__(self, tower: DeploymentHandle | None, searcher: DeploymentHandle | None, name: str,
                       version: str, alias: str, tracking_uri: str, default_k: int, poll_interval_s: float,
                       colocated: dict[str, Any] | None = None) -> None:
        _tracking(tracking_uri)
        self.tower: Any = tower
        self.searcher: Any = searcher
        self.local: tuple[Any, ...] = ()  # layout=colocated: the tower and the index objects in this replica
        if colocated is not None:
            workdir = colocated["workdir"]
            self.local = (await asyncio.to_thread(QueryTower.func_or_class, name, version, workdir, tracking_uri,
                                                  colocated.get("query_precision", "fp32")),
                          await asyncio.to_thread(IndexSearcher.func_or_class, name, version, workdir,
                                                  tracking_uri, colocated["device"], colocated["rerank"]))
            self.tower, self.searcher = (_InProcess(obj) for obj in self.local)
        self.name, self.alias, self.version = name, alias, version
        self.default_k = default_k
        self.infos = {version: await self.searcher.info.remote(version)}
        self.last_refusal = ""
        self.page = PAGE.read_text()
        self.watcher = None
        if alias and poll_interval_s > 0:
            self.watcher = asyncio.get_running_loop().create_task(self._follow_alias(poll_interval_s))

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live knobs of the colocated layout: the tower's batching and the index's ``search_params``."""
        for obj in self.local:
            obj.reconfigure(user_config)

    async def _follow_alias(self, every: float) -> None:
        from vitrine.index.serving import alias_version

        while True:
            await asyncio.sleep(every)
            try:
                target = await asyncio.to_thread(alias_version, self.name, self.alias)
                if target != self.version:
                    await self.switch(target)
            except Exception as exc:  # noqa: BLE001 - keep serving the current version, say why
                msg = f"not switching @{self.alias} to its new version: {exc}"
                if msg != self.last_refusal:
                    log.error("%s", msg)
                self.last_refusal = msg

    async def switch(self, version: str) -> None:
        """Load ``version`` in the tower and index replicas, then serve it; a failure keeps the old one."""
        t0 = time.perf_counter()
        info = await self.searcher.info.remote(version)
        await self.tower.warm.remote(version)
        self.infos[version] = info
        for old in [v for v in self.infos if v not in (version, self.version)]:
            del self.infos[old]
        previous, self.version = self.version, version
        self.last_refusal = ""
        log.info("now serving %s version %s (was %s; loaded in %.1fs)", self.name, version, previous,
                 time.perf_counter() - t0)

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(self) -> HTMLResponse:
        """The search page."""
        return HTMLResponse(self.page)

    @api.get("/health")
    def health(self) -> dict[str, str]:
        """Liveness: the served version's tower and index are loaded."""
        return {"status": "ok"}

    @api.get("/model")
    async def model_info(self) -> dict[str, Any]:
        """Model name, version, alias and index metadata of the version served now (live knobs as applied)."""
        version = self.version
        info = await _retrying(lambda: self.searcher.info.remote(version))
        tower = await _retrying(lambda: self.tower.describe.remote())
        if version in self.infos:
            self.infos[version] = info
        return {"name": self.name, "version": version, "alias": self.alias, "index": info["index"],
                "filterable": info["filterable"], "reranker": info.get("reranker"),
                "query_precision": tower["precision"], "last_refusal": self.last_refusal}

    @api.post("/search", response_model=SearchResponse, responses={422: {"model": ErrorResponse}})
    async def search(self, req: SearchRequest) -> SearchResponse:
        """Top-k products for a query, optionally filtered on attribute columns."""
        t0 = time.perf_counter()
        version = self.version
        if req.filters:
            bad = sorted(set(req.filters) - set(self.infos[version]["filterable"]))
            if bad:
                raise HTTPException(422, f"cannot filter on {bad}: not attribute columns of this catalog; "
                                         f"filterable columns: {self.infos[version]['filterable']}")
        vec = await _retrying(lambda: self.tower.remote(req.query, version))
        hits = await _retrying(lambda: self.searcher.search.remote(vec, req.k, req.filters, version, req.query,
                                                                    req.rerank))
        results = [SearchHit(**{k: v for k, v in h.items() if k != "has_image"},
                             image_url=f"image/{h['product_id']}?v={version}" if h["has_image"] else None)
                   for h in hits]
        return SearchResponse(query=req.query, k=req.k, results=results, model_name=self.name,
                              model_version=version, reranked=any(h.stage == "rerank" for h in results),
                              took_ms=(time.perf_counter() - t0) * 1000)

    @api.get("/image/{product_id}", include_in_schema=False)
    async def image(self, product_id: str, v: str = "") -> Response:
        """A product's image (404 when it has none)."""
        from vitrine.index.serving import image_mime

        version = v if v in self.infos else self.version
        data = await self.searcher.image.remote(product_id, version)
        if not data:
            raise HTTPException(404, f"product {product_id!r} has no image in version {version}")
        return Response(data, media_type=image_mime(data), headers={"cache-control": "max-age=3600"})


def resolve_start(model_uri: str, tracking_uri: str) -> tuple[str, str, str]:
    """``models:/name@alias`` or ``models:/name/<version>`` -> (name, version now, alias or '')."""
    from vitrine import registry
    from vitrine.errors import ConfigError

    m = registry.MODEL_URI.match(model_uri)
    if not m:
        raise ConfigError(f"model_uri {model_uri!r} must be models:/<name>@<alias> or models:/<name>/<version> "
                          "(the app serves registry versions, each with its index)")
    _tracking(tracking_uri)
    if m["alias"]:
        from vitrine.index.serving import alias_version

        return m["name"], alias_version(m["name"], m["alias"]), m["alias"]
    return m["name"], m["version"], ""


def build_app(args: dict[str, Any] | SearchAppArgs) -> Any:
    """Typed application builder (``import_path: deployments.search_app:build_app``)."""
    a = args if isinstance(args, SearchAppArgs) else SearchAppArgs(**args)
    workdir = str(Path(a.workdir).resolve())
    tracking = a.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not tracking:
        tracking = f"sqlite:///{Path(workdir) / 'mlflow.db'}"
    name, version, alias = resolve_start(a.model_uri, tracking)
    replicas = {} if a.num_replicas is None else {"num_replicas": a.num_replicas}
    knobs = {"max_batch_size": a.max_batch_size, "batch_wait_timeout_s": a.batch_wait_timeout_s,
             "search_params": a.search_params}
    if a.layout == "colocated":
        return SearchIngress.options(
            **replicas, user_config=knobs,
            ray_actor_options={"num_cpus": 1, "memory": int(3.5 * GiB)}).bind(  # tower + index + ingress
            None, None, name, version, alias, tracking, a.default_k, a.poll_interval_s,
            {"workdir": workdir, "device": a.index_device, "rerank": a.rerank, "query_precision": a.query_precision})
    tower = QueryTower.options(**replicas, user_config={
        "max_batch_size": a.max_batch_size, "batch_wait_timeout_s": a.batch_wait_timeout_s}).bind(
        name, version, workdir, tracking, a.query_precision)
    searcher = IndexSearcher.options(**replicas, user_config={"search_params": a.search_params}).bind(
        name, version, workdir, tracking, a.index_device, a.rerank)
    return SearchIngress.options(**replicas).bind(tower, searcher, name, version, alias, tracking, a.default_k,
                                                  a.poll_interval_s)
