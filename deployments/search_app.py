"""Ray Serve application: a batched query-tower deployment and a search ingress holding the FAISS index.

    serve run deployments/serve_config.yaml          # or: vitrine serve
    curl -X POST localhost:8000/search -d '{"query": "red tshirt for men", "k": 10}'

``build_app`` pins the model alias to a concrete registry version at deploy time, so the query tower and the
index always come from the same version; the ingress refuses an index built for another version.
Nothing is loaded at import time: replicas resolve and download artifacts in their constructors.
"""

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

log = logging.getLogger(__name__)


class SearchAppArgs(BaseModel):
    """Arguments of the application builder (the ``args`` of a serve config YAML)."""

    model_config = ConfigDict(extra="forbid")

    model_uri: str = "models:/vitrine@champion"
    workdir: str = "runs"
    tracking_uri: str = ""
    max_batch_size: int = Field(16, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(0.005, ge=0.0, le=1.0)
    num_replicas: int = Field(1, ge=1)
    default_k: int = Field(10, ge=1, le=1000)


class SearchRequest(BaseModel):
    """``POST /search`` body."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., min_length=1, max_length=512, description="shopper query text")
    k: int = Field(10, ge=1, le=1000, description="number of results")


class SearchHit(BaseModel):
    """One result."""

    product_id: str
    title: str
    score: float
    title_weight: float
    image_weight: float


class SearchResponse(BaseModel):
    """``POST /search`` answer."""

    query: str
    results: list[SearchHit]
    model_name: str
    model_version: str
    took_ms: float


def _resolve(model_uri: str, workdir: str, tracking_uri: str) -> Any:
    from vitrine import registry

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    import mlflow

    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI"))
    return registry.resolve_model(model_uri, Path(workdir) / "cache")


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=128)
class QueryTower:
    """The query encoder behind dynamic batching (``@serve.batch``)."""

    def __init__(self, model_uri: str, workdir: str, tracking_uri: str, max_batch_size: int,
                 batch_wait_timeout_s: float) -> None:
        import torch

        from vitrine.index.embed import QueryEncoder

        torch.set_num_threads(1)
        self.model = _resolve(model_uri, workdir, tracking_uri)
        self.encoder = QueryEncoder(self.model.local_dir)
        self.reconfigure({"max_batch_size": max_batch_size, "batch_wait_timeout_s": batch_wait_timeout_s})

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live knobs: batch size and wait."""
        if "max_batch_size" in user_config:
            self.encode_batch.set_max_batch_size(int(user_config["max_batch_size"]))
        if "batch_wait_timeout_s" in user_config:
            self.encode_batch.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))

    def version(self) -> str:
        """The registry version this replica serves."""
        return self.model.version

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """A batch of query strings -> their unit vectors."""
        return list(self.encoder(texts))

    async def __call__(self, text: str) -> np.ndarray:
        """One query -> (D,) float32."""
        return await self.encode_batch(text)


api = FastAPI(title="Vitrine search", description="Text-to-multimodal product search.", version="0.1.0")


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=128)
@serve.ingress(api)
class SearchIngress:
    """HTTP ingress: embeds the query through ``QueryTower`` and searches the index of the same model version."""

    def __init__(self, tower: DeploymentHandle, model_uri: str, workdir: str, tracking_uri: str,
                 default_k: int) -> None:
        from vitrine import registry
        from vitrine.errors import RegistryError
        from vitrine.index.faiss_index import load_index

        self.tower = tower
        self.model = _resolve(model_uri, workdir, tracking_uri)
        if not self.model.index_uri:
            raise RegistryError(f"model {model_uri} (version {self.model.version}) has no index yet; "
                                "run `vitrine index` first")
        local = Path(workdir) / "cache" / self.model.name / self.model.version / "index_dl"
        if not (local / "index" / "index_meta.json").is_file():
            registry.download(self.model.index_uri, local)
        self.index = load_index(local / "index", expect_model_version=self.model.version)
        self.titles = self.index.products.column("title").to_pylist()
        self.title_w = self.index.products.column("title_weight").to_pylist()
        self.image_w = self.index.products.column("image_weight").to_pylist()
        self.default_k = default_k

    @api.get("/health")
    def health(self) -> dict[str, str]:
        """Liveness: the index is loaded."""
        return {"status": "ok"}

    @api.get("/model")
    def model_info(self) -> dict[str, Any]:
        """Model name, version, alias and index metadata."""
        return {"name": self.model.name, "version": self.model.version, "alias": self.model.alias,
                "index": self.index.meta}

    @api.post("/search", response_model=SearchResponse)
    async def search(self, req: SearchRequest) -> SearchResponse:
        """Top-k products for a query."""
        t0 = time.perf_counter()
        vec = await self.tower.remote(req.query)
        scores, rows = self.index.search(vec[None, :], req.k)
        hits = [SearchHit(product_id=self.index.product_ids[r], title=self.titles[r], score=float(s),
                          title_weight=float(self.title_w[r]), image_weight=float(self.image_w[r]))
                for s, r in zip(scores[0], rows[0], strict=True) if r >= 0]
        return SearchResponse(query=req.query, results=hits, model_name=self.model.name,
                              model_version=self.model.version, took_ms=(time.perf_counter() - t0) * 1000)


def pin_version(model_uri: str, tracking_uri: str) -> str:
    """``models:/name@alias`` -> ``models:/name/<version>`` (other URIs unchanged)."""
    from vitrine import registry

    m = registry.MODEL_URI.match(model_uri)
    if not m or not m["alias"]:
        return model_uri
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    mv = registry.client().get_model_version_by_alias(m["name"], m["alias"])
    return f"models:/{m['name']}/{mv.version}"


def build_app(args: dict[str, Any] | SearchAppArgs) -> Any:
    """Typed application builder (``import_path: deployments.search_app:build_app``)."""
    a = args if isinstance(args, SearchAppArgs) else SearchAppArgs(**args)
    workdir = str(Path(a.workdir).resolve())
    tracking = a.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not tracking:
        tracking = f"sqlite:///{Path(workdir) / 'mlflow.db'}"
    uri = pin_version(a.model_uri, tracking)
    tower = QueryTower.options(num_replicas=a.num_replicas).bind(uri, workdir, tracking, a.max_batch_size,
                                                                 a.batch_wait_timeout_s)
    return SearchIngress.options(num_replicas=a.num_replicas).bind(tower, uri, workdir, tracking, a.default_k)
