"""The Serve app on a local Ray cluster, over real HTTP: embed job exactly-once, search, filters, page, hardening,
an OpenAPI fuzz run, live knobs, and an alias promotion under load without a failed request.

One app (port 8131) is shared by every test of the module; the alias tests run last (they move the alias).
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from pipelines import embed_index
from pipelines.serve import register_zero_shot
from vitrine import registry
from vitrine.config import DataConfig, IndexConfig, IndexJob, TrackingConfig
from vitrine.errors import ConfigError, VitrineError

pytestmark = pytest.mark.ray
PORT = 8131
URL = f"http://127.0.0.1:{PORT}"
N = 160
NAME = "serve-it"


def start_ray() -> None:
    """A local Ray instance of our own (no dashboard: its fixed ports clash with other clusters on the host)."""
    import os

    import ray

    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=4, include_dashboard=False, configure_logging=False, log_to_driver=False)


def _wait_for(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; /model says "
                         f"{requests.get(f'{URL}/model', timeout=30).text[:1000]}")


@pytest.fixture(scope="module")
def app(tmp_path_factory, sample_catalog):
    """v1 (HNSW, indexed by the Ray Data job) @champion, v2 (Flat), v3 (wrongly tagged with v1's index); served."""
    import ray
    from ray import serve

    from deployments.search_app import SearchAppArgs, build_app

    work = tmp_path_factory.mktemp("serving")
    table = pq.read_table(sample_catalog).slice(0, N)
    dup = table.slice(5, 1)  # the same product twice in the file: embedded twice, indexed once
    bad = table.slice(0, 1).to_pydict()
    bad.update(product_id=["corrupt-1"], image=[b"\xff\xd8\xff not a jpeg"])
    table = pa.concat_tables([table, dup, pa.table(bad, schema=table.schema)])
    catalog = work / "catalog.parquet"
    pq.write_table(table, catalog)
    tracking = TrackingConfig(experiment="serving-it", model_name=NAME)
    data = DataConfig(catalog=str(catalog))
    start_ray()
    v1 = register_zero_shot(work, tracking, alias="champion")
    indexed = embed_index.run(IndexJob(workdir=str(work), model_uri=f"models:/{NAME}/{v1}", data=data,
                                       tracking=tracking,
                                       index=IndexConfig(factory="HNSW16", search_params={"efSearch": 64})))
    run_id = mlflow.MlflowClient().get_model_version(NAME, v1).run_id
    v2 = registry.register_model(NAME, run_id, None)  # same weights, a new registry version with its own index
    embed_index.run_in_process(IndexJob(workdir=str(work), model_uri=f"models:/{NAME}/{v2}", data=data,
                                        tracking=tracking, index=IndexConfig(factory="Flat")))
    v3 = registry.register_model(NAME, run_id, None)
    registry.set_version_tag(NAME, v3, registry.INDEX_TAG, indexed["index_uri"])  # v1's index: must be refused
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(build_app(SearchAppArgs(model_uri=f"models:/{NAME}@champion", workdir=str(work),
                                      tracking_uri=mlflow.get_tracking_uri(), poll_interval_s=0.5)),
              name="vitrine-it", route_prefix="/")
    yield {"work": work, "table": table, "catalog": catalog, "indexed": indexed, "v1": v1, "v2": v2, "v3": v3,
           "tracking": tracking}
    serve.shutdown()
    ray.shutdown()
    mlflow.set_tracking_uri(None)


def test_embed_job_embeds_every_row_exactly_once(app):
    indexed = app["indexed"]
    emb = pq.read_table(app["work"] / "index_build" / app["v1"] / "embeddings")
    raw = [str(p) for p in app["table"].column("product_id").to_pylist()]
    assert Counter(emb.column("product_id").to_pylist()) == Counter(raw)  # the duplicate row: twice, as in
    assert indexed["products"] == len(set(raw)) == N + 1  # ... the file; indexed once
    assert indexed["images_undecodable"] == 1
    meta = requests.get(f"{URL}/model", timeout=30).json()["index"]
    assert meta["model_name"] == NAME and meta["model_version"] == app["v1"] and meta["count"] == N + 1
    assert meta["dim"] == 256 and meta["build_seconds"] >= 0 and meta["recall_queries"] > 0
    assert meta["recall_at_10_vs_flat"] >= 0.9
    # The check fails loudly when the output lost a row, repeated one, or invented one.
    catalog = pq.read_table(app["catalog"], columns=["product_id", "title"])
    with pytest.raises(VitrineError, match="1 ids missing"):
        embed_index.check_exactly_once(emb.slice(1), catalog, raw)
    with pytest.raises(VitrineError, match="1 embedded more than once"):
        embed_index.check_exactly_once(pa.concat_tables([emb, emb.slice(0, 1)]), catalog, raw)
    renamed = emb.set_column(0, "product_id", pa.array(["ghost"] + emb.column(0).to_pylist()[1:]))
    with pytest.raises(VitrineError, match="1 unknown"):
        embed_index.check_exactly_once(renamed, catalog, raw)


def test_bad_embedding_setting_fails_before_any_mlflow_run(app):
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(app["tracking"].experiment)
    before = len(client.search_runs([exp.experiment_id]))
    for key, value in (("embed_chunk", -1), ("embed_batch_size", 0), ("metric", "cosine")):
        job = IndexJob(workdir=str(app["work"]), model_uri=f"models:/{NAME}/{app['v1']}",
                       data=DataConfig(catalog=str(app["catalog"])), tracking=app["tracking"],
                       index=IndexConfig(**{key: value}))
        with pytest.raises(ConfigError, match=f"index.{key}"):
            embed_index.run_in_process(job)
    assert len(client.search_runs([exp.experiment_id])) == before  # no FAILED run left behind


def test_http_search_finds_products_by_title(app):
    assert requests.get(f"{URL}/health", timeout=30).json() == {"status": "ok"}
    info = requests.get(f"{URL}/model", timeout=30).json()
    assert (info["name"], info["version"], info["alias"]) == (NAME, app["v1"], "champion")
    assert info["index"]["factory"] == "HNSW16" and info["index"]["placement"] in ("cpu", "gpu")
    assert info["query_precision"] in ("fp32", "bf16")  # bf16 on a GPU replica
    rows = app["table"].slice(0, N).to_pylist()
    for product in rows[::40]:
        resp = requests.post(f"{URL}/search", json={"query": product["title"], "k": 10}, timeout=60)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        hits = body["results"]
        assert len(hits) == 10 and body["model_version"] == app["v1"]
        assert product["product_id"] in [h["product_id"] for h in hits], product["title"]
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        assert all(abs(h["title_weight"] + h["image_weight"] - 1) < 1e-3 for h in hits)


def test_filters_on_attribute_columns(app):
    gender = {r["product_id"]: r["gender"] for r in app["table"].to_pylist()}
    body = {"query": "black shoes", "k": 20, "filters": {"gender": "Women", "masterCategory": ["Footwear"]}}
    resp = requests.post(f"{URL}/search", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    hits = resp.json()["results"]
    assert hits and all(gender[h["product_id"]] == "Women" for h in hits)
    resp = requests.post(f"{URL}/search", json={"query": "shoes", "filters": {"colour": "Red"}}, timeout=30)
    assert resp.status_code == 422 and "baseColour" in resp.json()["detail"]


def test_page_image_and_openapi(app):
    page = requests.get(f"{URL}/", timeout=30)
    assert page.status_code == 200 and 'id="q"' in page.text and "text/html" in page.headers["content-type"]
    pid = app["table"].column("product_id")[0].as_py()
    img = requests.get(f"{URL}/image/{pid}", timeout=30)
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg" and img.content[:3] == b"\xff\xd8\xff"
    assert requests.get(f"{URL}/image/no-such-product", timeout=30).status_code == 404
    spec = requests.get(f"{URL}/openapi.json", timeout=30).json()
    assert {"/search", "/model", "/health"} <= set(spec["paths"])
    assert requests.get(f"{URL}/docs", timeout=30).status_code == 200


BAD_BODIES = {
    "empty query": {"query": "", "k": 5},
    "whitespace query": {"query": "   \n ", "k": 5},
    "10 kB query": {"query": "shoe " * 2048, "k": 5},
    "control character": {"query": "red\x07shoes", "k": 5},
    "NUL": {"query": "red\x00", "k": 5},
    "k = 0": {"query": "shoes", "k": 0},
    "k < 0": {"query": "shoes", "k": -3},
    "huge k": {"query": "shoes", "k": 10**12},
    "k as string": {"query": "shoes", "k": "5"},
    "k as float": {"query": "shoes", "k": 5.5},
    "k as bool": {"query": "shoes", "k": True},
    "query as number": {"query": 42},
    "query as list": {"query": ["shoes"]},
    "query null": {"query": None},
    "missing query": {"k": 3},
    "unknown field": {"query": "shoes", "extra": 1},
    "filters not an object": {"query": "shoes", "filters": "gender"},
    "filter value a number": {"query": "shoes", "filters": {"gender": 1}},
    "empty filter list": {"query": "shoes", "filters": {"gender": []}},
    "body a list": ["shoes"],
    "body null": None,
}
BAD_RAW = {"malformed JSON": b'{"query": "shoes",', "not UTF-8": b'{"query": "\xff\xfe"}', "empty body": b"",
           "plain text": b"shoes"}


@pytest.mark.parametrize("case", sorted(BAD_BODIES) + sorted(BAD_RAW))
def test_bad_input_is_a_clear_4xx(app, case):
    if case in BAD_BODIES:
        resp = requests.post(f"{URL}/search", json=BAD_BODIES[case], timeout=30)
    else:
        resp = requests.post(f"{URL}/search", data=BAD_RAW[case], timeout=30,
                             headers={"content-type": "application/json"})
    expected = 400 if case == "not UTF-8" else 422  # bytes that are not text at all: FastAPI's 400
    assert resp.status_code == expected, (case, resp.status_code, resp.text[:300])
    detail = resp.json()["detail"]
    assert isinstance(detail, str) and len(detail) > 10


def test_live_knobs_via_user_config(app):
    from ray import serve

    from deployments.search_app import SearchAppArgs, build_app

    args = SearchAppArgs(model_uri=f"models:/{NAME}@champion", workdir=str(app["work"]),
                         tracking_uri=mlflow.get_tracking_uri(), poll_interval_s=0.5,
                         max_batch_size=8, search_params={"efSearch": 16})
    serve.run(build_app(args), name="vitrine-it", route_prefix="/")
    _wait_for(lambda: requests.get(f"{URL}/model", timeout=30).json()["index"]["live_search_params"]
              == {"efSearch": 16}, 60, "efSearch=16 to be applied")
    resp = requests.post(f"{URL}/search", json={"query": "blue jeans", "k": 5}, timeout=60)
    assert resp.status_code == 200 and len(resp.json()["results"]) == 5
    # efSearch stays the live knob but does not apply to a Flat index: it is skipped there, not an error.


def _beside_the_split_app(app, prefix: str) -> list[tuple[list, list]]:
    """Every 40th product's title searched on the split app and on the app at ``prefix``: their top-10 lists, each
    checked to answer 200 and the second to hold the product searched for."""
    out = []
    for product in app["table"].slice(0, N).to_pylist()[::40]:
        body = {"query": product["title"], "k": 10}
        split, other = (requests.post(f"{URL}{p}/search", json=body, timeout=60) for p in ("", prefix))
        assert split.status_code == other.status_code == 200, other.text
        a, b = split.json()["results"], other.json()["results"]
        assert product["product_id"] in [h["product_id"] for h in b], product["title"]
        out.append((a, b))
    return out


def test_colocated_layout_serves_the_same_results(app):
    """layout=colocated: one deployment holding tower + index answers as the split app does, live knobs included."""
    from ray import serve

    from deployments.search_app import SearchAppArgs, build_app

    args = SearchAppArgs(model_uri=f"models:/{NAME}@champion", workdir=str(app["work"]),
                         tracking_uri=mlflow.get_tracking_uri(), poll_interval_s=0, layout="colocated",
                         max_batch_size=8, search_params={"efSearch": 16})
    serve.run(build_app(args), name="vitrine-colo", route_prefix="/colo")
    try:
        assert set(serve.status().applications["vitrine-colo"].deployments) == {"SearchIngress"}
        info = requests.get(f"{URL}/colo/model", timeout=30).json()
        assert info["version"] == app["v1"] and info["index"]["live_search_params"] == {"efSearch": 16}
        for a, b in _beside_the_split_app(app, "/colo"):
            assert [h["product_id"] for h in a[:5]] == [h["product_id"] for h in b[:5]]
            assert max(abs(x["score"] - y["score"]) for x, y in zip(a, b, strict=True)) < 1e-3
        image = next(h["image_url"] for h in b if h["image_url"])
        assert requests.get(f"{URL}/colo/{image}", timeout=30).content[:2] == b"\xff\xd8"
    finally:
        serve.delete("vitrine-colo")


def test_int8_query_tower_finds_what_fp32_finds(app):
    """query_precision=int8: the tower quantized in the replica; /model says so and the answers match fp32's."""
    from ray import serve

    from deployments.search_app import SearchAppArgs, build_app

    args = SearchAppArgs(model_uri=f"models:/{NAME}@champion", workdir=str(app["work"]),
                         tracking_uri=mlflow.get_tracking_uri(), poll_interval_s=0, layout="colocated",
                         query_precision="int8")
    serve.run(build_app(args), name="vitrine-int8", route_prefix="/int8")
    try:
        info = requests.get(f"{URL}/int8/model", timeout=30).json()
        if info["query_precision"] == "bf16":
            pytest.skip("the replica runs on a GPU, where the tower runs in bf16 and int8 does not apply")
        assert info["query_precision"] == "int8" and info["version"] == app["v1"]
        overlap = [len({h["product_id"] for h in a} & {h["product_id"] for h in b}) / 10
                   for a, b in _beside_the_split_app(app, "/int8")]
        assert sum(overlap) / len(overlap) >= 0.7, overlap  # mostly the same top 10, not necessarily identical
    finally:
        serve.delete("vitrine-int8")


def _from_schema(schema: dict, spec: dict):  # noqa: ANN202 - a hypothesis strategy
    """A hypothesis strategy of JSON values valid for an OpenAPI (JSON Schema) fragment of ``spec``."""
    from hypothesis import strategies as st

    if "$ref" in schema:
        return _from_schema(spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]], spec)
    if "anyOf" in schema:
        return st.one_of([_from_schema(s, spec) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 64), 80))
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**40)), schema.get("maximum", 2**40))
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(_from_schema(schema.get("items", {}), spec), max_size=4)
    if kind == "object" and "properties" in schema:
        required = {k: _from_schema(v, spec) for k, v in schema["properties"].items()
                    if k in schema.get("required", [])}
        optional = {k: _from_schema(v, spec) for k, v in schema["properties"].items() if k not in required}
        return st.fixed_dictionaries(required, optional=optional)
    if kind == "object":
        return st.dictionaries(st.text(max_size=12), _from_schema(schema.get("additionalProperties", {}), spec),
                               max_size=3)
    return st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                        max_leaves=8)


def test_no_direct_addresses_in_standard_mode(app):
    """Without Ray's direct ingress the proxy URL is the only address: ``direct_ingress_urls`` says so."""
    from pipelines.serve import direct_ingress_urls

    assert direct_ingress_urls("vitrine-it", "127.0.0.1") == []


def test_fuzz_search_against_openapi_spec(app, record_property):
    """Schema-valid bodies from /openapi.json, arbitrary JSON and arbitrary bytes: 200 or 422, never a 5xx."""
    import json

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    spec = requests.get(f"{URL}/openapi.json", timeout=30).json()
    body_schema = spec["paths"]["/search"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    valid = _from_schema(body_schema, spec)
    anything = _from_schema({}, spec)
    seen: Counter[str] = Counter()
    session = requests.Session()

    @settings(max_examples=150, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(st.one_of(valid.map(lambda b: ("schema", b)), anything.map(lambda b: ("json", b)),
                     st.binary(max_size=200).map(lambda b: ("bytes", b))))
    def post(case: tuple[str, object]) -> None:
        kind, payload = case
        data = payload if kind == "bytes" else json.dumps(payload).encode()
        resp = session.post(f"{URL}/search", data=data, headers={"content-type": "application/json"}, timeout=60)
        seen[f"{kind}:{resp.status_code}"] += 1
        assert resp.status_code in (200, 400, 422), (kind, payload, resp.status_code, resp.text[:300])
        if resp.status_code == 200:
            assert len(resp.json()["results"]) <= payload.get("k", 10)
        else:
            assert isinstance(resp.json()["detail"], str)

    post()
    total = sum(seen.values())
    record_property("fuzz_inputs", total)
    print(f"\nfuzz: {total} inputs against /search: {dict(sorted(seen.items()))}")
    assert total >= 100 and seen["schema:200"] > 0 and seen["schema:422"] + seen["json:422"] > 0


def test_alias_promotion_under_load_fails_no_request(app):
    """Move @champion v1 -> v2 while 4 clients search non-stop: every request succeeds, on one version or the other."""
    stop = threading.Event()
    answers: list[tuple[int, str]] = []
    errors: list[str] = []

    def client(i: int) -> None:
        session = requests.Session()
        n = 0
        while not stop.is_set():
            n += 1
            try:
                resp = session.post(f"{URL}/search", json={"query": f"casual shirt {i} {n}", "k": 5}, timeout=60)
                answers.append((resp.status_code, resp.json().get("model_version", "")))
            except Exception as exc:  # noqa: BLE001 - every failure is collected and reported
                errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    registry.set_alias(NAME, "champion", app["v2"])
    _wait_for(lambda: requests.get(f"{URL}/model", timeout=30).json()["version"] == app["v2"], 180,
              f"the app to serve v{app['v2']}")
    switched_at = len(answers)
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert Counter(code for code, _ in answers) == Counter({200: len(answers)}), Counter(c for c, _ in answers)
    versions = [v for _, v in answers]
    assert versions[0] == app["v1"] and set(versions[switched_at + 8:]) == {app["v2"]}
    info = requests.get(f"{URL}/model", timeout=30).json()
    assert info["index"]["model_version"] == app["v2"] and info["index"]["factory"] == "Flat"


def test_index_of_another_version_is_refused(app):
    """@champion -> v3 whose index was built for v1: the app refuses it, says why, and keeps serving v2."""
    registry.set_alias(NAME, "champion", app["v3"])
    _wait_for(lambda: "built for model version" in requests.get(f"{URL}/model", timeout=30).json()["last_refusal"],
              120, "the refusal of v3's index")
    info = requests.get(f"{URL}/model", timeout=30).json()
    assert info["version"] == app["v2"] and f"'{app['v1']}'" in info["last_refusal"]
    resp = requests.post(f"{URL}/search", json={"query": "watch", "k": 3}, timeout=60)
    assert resp.status_code == 200 and resp.json()["model_version"] == app["v2"]
