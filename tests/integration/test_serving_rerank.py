"""A re-ranker attached to a registry version and served: ``vitrine rerank --attach=true``, then ``POST /search``
on a local Ray cluster answers in the ranker's order, the order ``vitrine evaluate --rerank`` gives offline.

The ranker carries a cross-encoder over its top 10, so the served answers also check that stage against offline.
Real parts throughout: the bundled Home Depot sample (1,889 products, 300 judged queries), the zero-shot model
registered in a sqlite MLflow, a Flat FAISS index, LightGBM, Ray Serve over HTTP on port 8134.
"""

from __future__ import annotations

import os

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from pipelines import embed_index
from pipelines.serve import register_zero_shot
from vitrine import registry
from vitrine.cli import main
from vitrine.config import SAMPLE_DIR, DataConfig, IndexConfig, IndexJob, TrackingConfig

pytestmark = pytest.mark.ray
PORT = 8134
URL = f"http://127.0.0.1:{PORT}"
NAME = "rerank-it"
QUERIES = 40


def _ranked(path, column: str = "product_id") -> dict[str, list]:
    table = pq.read_table(path).to_pylist()
    out: dict[str, list] = {}
    for row in sorted(table, key=lambda r: (r["query"], r["rank"])):
        out.setdefault(row["query"], []).append(row[column])
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """v1 (zero-shot, Flat index) @champion with a ranker attached; the offline rankings; the app on 8134."""
    import ray
    from ray import serve

    from deployments.search_app import SearchAppArgs, build_app

    work = tmp_path_factory.mktemp("serve-rerank")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    tracking = TrackingConfig(experiment="rerank-it", model_name=NAME)
    table = pq.read_table(SAMPLE_DIR / "homedepot_products.parquet")
    half = ["a" if i % 2 else "b" for i in range(table.num_rows)]  # an attribute column to filter on
    pq.write_table(table.append_column("half", pa.array(half)), work / "catalog.parquet")
    data = DataConfig(catalog=str(work / "catalog.parquet"))
    v1 = register_zero_shot(work, tracking, alias="champion", data=data)
    embed_index.run_in_process(IndexJob(workdir=str(work), model_uri=f"models:/{NAME}/{v1}", data=data,
                                        tracking=tracking, index=IndexConfig(factory="Flat")))
    emb = work / "index_build" / v1 / "embeddings"
    model = f"--model=models:/{NAME}/{v1}"
    common = [f"--workdir={work}", f"--embeddings={emb}", f"--catalog={data.catalog}"]
    # the attached ranker carries a cross-encoder over its top 10 (weight fixed so that it always acts) and the
    # neighbour-centroid features, which the app computes from the vectors its index holds
    assert main(["rerank", model, *common, f"--out={work / 'ranker'}", "--trees=60", "--attach=true",
                 "--cross_top=10", "--cross_steps=10", "--cross_weight=0.5", "--prf=3"]) == 0
    for name, extra in (("reranked", ["--rerank", str(work / "ranker")]), ("dense", [])):
        assert main(["evaluate", model, *common, "--k=1000", f"--run-output={work / name}.parquet", *extra]) == 0
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=4, include_dashboard=False, configure_logging=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(build_app(SearchAppArgs(model_uri=f"models:/{NAME}@champion", workdir=str(work),
                                      tracking_uri=mlflow.get_tracking_uri(), poll_interval_s=0)),
              name="vitrine-rerank-it", route_prefix="/")
    yield {"work": work, "v1": v1, "half": dict(zip(table.column("product_id").to_pylist(), half, strict=True)),
           "reranked": _ranked(work / "reranked.parquet"),
           "reranked_scores": _ranked(work / "reranked.parquet", "score"),
           "dense": _ranked(work / "dense.parquet"), "dense_scores": _ranked(work / "dense.parquet", "score")}
    serve.shutdown()
    ray.shutdown()
    mlflow.set_tracking_uri(None)


def _search(query: str, k: int = 10, **extra) -> dict:
    r = requests.post(f"{URL}/search", json={"query": query, "k": k, **extra}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_served_answers_follow_the_offline_reranker(served):
    queries = sorted(served["reranked"])[:QUERIES]
    same = 0
    for q in queries:
        body = _search(q)
        assert body["reranked"] and {h["stage"] for h in body["results"]} == {"rerank"}
        scores = [h["score"] for h in body["results"]]
        assert scores == sorted(scores, reverse=True)
        same += [h["product_id"] for h in body["results"]] == served["reranked"][q][:10]
    # The offline path searches the same vectors exactly (Flat both sides), but in batches (FAISS's BLAS path)
    # where the server searches one query (its SIMD loop): cosines may differ in the 7th digit, which can swap
    # two near-tied dense ranks and so a feature. Nearly every top 10 must still be the same list.
    assert same >= len(queries) - 2, f"{same} of {len(queries)} served top-10s equal the offline re-ranker's"
    # ... and the ranker does change the order: dense-only answers differ for most queries.
    assert sum(served["reranked"][q][:10] != served["dense"][q][:10] for q in queries) > len(queries) // 2


def test_rerank_false_answers_in_dense_order(served):
    queries, same = sorted(served["dense"])[:10], 0
    for q in queries:
        body = _search(q, rerank=False)
        assert not body["reranked"] and {h["stage"] for h in body["results"]} == {"dense"}
        assert np.allclose([h["score"] for h in body["results"]], served["dense_scores"][q][:10], atol=1e-4)
        same += [h["product_id"] for h in body["results"]] == served["dense"][q][:10]
    assert same >= len(queries) - 1  # up to a near-tie (see above)


def test_k_beyond_the_candidates_continues_in_dense_order(served):
    q = sorted(served["reranked"])[0]
    hits = _search(q, k=1000)["results"]
    stages = [h["stage"] for h in hits]
    ids = [h["product_id"] for h in hits]
    assert len(hits) == 1000 and len(set(ids)) == 1000
    n = stages.count("rerank")
    assert 10 <= n <= 400 and stages == ["rerank"] * n + ["dense"] * (1000 - n)
    # The pool in the ranker's order: equal ranker scores rank by rank (tied candidates may swap), same products.
    # The top 10's blended scores carry the cross-encoder's logits, which differ in the 6th digit between the
    # offline batches (padded to the batch's longest pair) and the served query's own batch.
    assert np.allclose([h["score"] for h in hits[:n]], served["reranked_scores"][q][:n], atol=1e-4)
    assert len(set(ids[:n]) & set(served["reranked"][q][:n])) >= 0.98 * n
    offline = [(p, s) for p, s in zip(served["dense"][q], served["dense_scores"][q], strict=True)
               if p not in set(ids[:n])][:1000 - n]
    # The tail is the dense order (up to near-ties, see above): same cosines rank by rank, nearly the same ids.
    assert np.allclose([h["score"] for h in hits[n:]], [s for _, s in offline], atol=1e-4)
    assert len(set(ids[n:]) & {p for p, _ in offline}) >= 0.98 * (1000 - n)


def test_model_reports_the_attached_ranker(served):
    info = requests.get(f"{URL}/model", timeout=30).json()
    ranker = info["reranker"]
    assert ranker["uri"].startswith("runs:/") and ranker["uri"].endswith("/reranker")
    assert ranker["model"] == f"{NAME}/v{served['v1']}" and ranker["depth"] == 200 and ranker["trees"] == 60
    assert ranker["lexical"] == "product"  # the word list it was trained with, rebuilt the same way in the app
    assert ranker["prf"] == 3
    assert ranker["cross_top"] == 10 and ranker["cross_weight"] == 0.5 and ranker["cross_encoder"] == "minilm"
    tags = mlflow.MlflowClient().get_model_version(NAME, served["v1"]).tags
    assert tags[registry.RERANKER_TAG] == ranker["uri"]


def test_filters_restrict_the_reranked_candidates(served):
    """Filters apply before ranking (in-process: the Home Depot sample has no attribute column to filter on)."""
    from vitrine.index.embed import QueryEncoder
    from vitrine.index.reranked import load_version_reranker
    from vitrine.index.serving import Catalog, load_version_index, resolve_version

    cache = served["work"] / "cache"
    model = resolve_version(NAME, served["v1"], cache)
    catalog = Catalog(load_version_index(model, cache, "cpu"))
    ranker = load_version_reranker(model, cache, catalog)
    q = sorted(served["reranked"])[1]
    vec = QueryEncoder(model.local_dir)([q])[0]
    full = ranker.search(q, vec, 10)
    assert np.allclose([s for _, s, _ in full], served["reranked_scores"][q][:10], atol=1e-6)
    allowed = np.ones(len(catalog.titles), bool)
    allowed[[r for r, _, _ in full[::2]]] = False  # every other hit of the unfiltered answer is filtered out
    kept = ranker.search(q, vec, 10, allowed)
    assert len(kept) == 10 and all(allowed[r] for r, _, _ in kept) and {s for _, _, s in kept} == {"rerank"}


def test_http_filters_apply_before_ranking(served):
    for q in sorted(served["reranked"])[:10]:
        body = _search(q, filters={"half": "a"})
        assert body["reranked"] and len(body["results"]) == 10
        assert {served["half"][h["product_id"]] for h in body["results"]} == {"a"}
        assert {h["stage"] for h in body["results"]} == {"rerank"}


def test_a_ranker_of_another_version_is_refused(served, capsys):
    from vitrine.errors import RegistryError
    from vitrine.index.reranked import load_version_reranker
    from vitrine.index.serving import resolve_version

    client = mlflow.MlflowClient()
    v2 = registry.register_model(NAME, client.get_model_version(NAME, served["v1"]).run_id, None)
    uri = client.get_model_version(NAME, served["v1"]).tags[registry.RERANKER_TAG]
    registry.set_version_tag(NAME, v2, registry.RERANKER_TAG, uri)
    model = resolve_version(NAME, v2, served["work"] / "cache")
    with pytest.raises(RegistryError, match=f"trained with the scores of {NAME}/v{served['v1']}, not of {NAME}/v{v2}"):
        load_version_reranker(model, served["work"] / "cache", None)
    assert main(["rerank", "--model=pretrained", "--attach=true", f"--workdir={served['work']}"]) == 2
    assert "only a registry version can carry a ranker" in capsys.readouterr().err
