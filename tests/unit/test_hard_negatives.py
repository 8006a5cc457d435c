"""data.hard_negative_max_label: judged non-matches of a query join its candidates as hard negatives."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from pipelines.pretrain import check_hard_negatives
from vitrine.catalog.io import has_images
from vitrine.config import DataConfig, LossConfig, ModelConfig, PretrainJob
from vitrine.errors import ConfigError
from vitrine.features import Featurizer, PairBuilder, id_hash, judged_negatives
from vitrine.losses import info_nce, make_loss, pair_loss
from vitrine.model.encoders import resolve_text_encoder
from vitrine.train.loop import hard_negative_ids

SAMPLE = Path(__file__).resolve().parents[2] / "platform" / "vitrine" / "sample"


@pytest.fixture(scope="module")
def judged():
    """The bundled real Home Depot sample: judgments and the products they name."""
    return (pq.read_table(SAMPLE / "homedepot_judgments.parquet"),
            pq.read_table(SAMPLE / "homedepot_products.parquet"))


def test_judged_negatives_are_the_low_labels_with_titles(judged):
    queries, catalog = judged
    got = judged_negatives(queries, catalog, 1.7)
    titles = dict(zip(catalog.column("product_id").to_pylist(), catalog.column("title").to_pylist(), strict=True))
    expected: dict[str, set] = {}
    for r in queries.to_pylist():
        if r["label"] <= 1.7:
            expected.setdefault(r["query"], set()).add((r["product_id"], titles[r["product_id"]]))
    assert {q: set(v) for q, v in got.items()} == expected
    assert sum(len(v) for v in got.values()) == sum(1 for r in queries.to_pylist() if r["label"] <= 1.7) > 100


def test_pairs_carry_one_judged_negative_of_their_own_query(judged):
    queries, catalog = judged
    negatives = judged_negatives(queries, catalog, 1.7)
    build = PairBuilder(queries, min_label=2.3, negatives=negatives)
    pairs = build(catalog)
    assert pairs.num_rows == sum(1 for r in queries.to_pylist() if r["label"] > 2.3)
    rows = pairs.to_pylist()
    with_neg = [r for r in rows if r["neg_id"]]
    assert 0 < len(with_neg) < len(rows)
    for r in rows:
        options = negatives.get(r["query"], [])
        assert ((r["neg_id"], r["neg_title"]) in options) if options else (r["neg_id"], r["neg_title"]) == ("", "")
    assert build(catalog).column("neg_id").to_pylist() == pairs.column("neg_id").to_pylist()  # run to run alike
    spread = {}  # a query with several positives and negatives does not always get the same negative
    for r in with_neg:
        spread.setdefault(r["query"], set()).add(r["neg_id"])
    assert any(len(v) > 1 for v in spread.values())
    assert "neg_id" not in PairBuilder(queries, min_label=2.3)(catalog).column_names


def test_featurizer_tokenizes_negatives_and_marks_rows_without(judged):
    queries, catalog = judged
    negatives = judged_negatives(queries, catalog, 1.7)
    pairs = PairBuilder(queries, min_label=2.3, negatives=negatives)(catalog.slice(0, 200))
    feats = Featurizer(str(resolve_text_encoder("minilm")), 32, 8, 16)(
        {k: pairs.column(k).to_pylist() for k in pairs.column_names})
    neg_ids = pairs.column("neg_id").to_pylist()
    assert feats["n_ids"].shape == (pairs.num_rows, 16)
    assert feats["has_neg"].tolist() == [bool(i) for i in neg_ids]
    assert feats["n_hash"].tolist() == id_hash(neg_ids).tolist()
    assert (feats["n_mask"].sum(1)[feats["has_neg"]] > 2).all()  # a real title, not just [CLS] [SEP]


def test_hard_negatives_join_the_softmax_and_invalid_ones_do_not():
    torch.manual_seed(5)
    a, b, n = (F.normalize(torch.randn(4, 8), dim=-1) for _ in range(3))
    scale = torch.tensor(10.0)
    ids = torch.stack([torch.arange(4), torch.arange(4) + 100], dim=1)
    n_ids = torch.stack([torch.arange(4) + 50, torch.full((4,), -3)], dim=1)
    n_ids[2, 0] = 1  # row 2's negative is row 1's positive product: masked for row 1 only
    valid = torch.tensor([1.0, 1.0, 1.0, 0.0])  # row 3 has none
    got = info_nce(a, torch.cat([b, n]), scale, ids, torch.cat([ids, n_ids]),
                   b_valid=torch.cat([torch.ones(4), valid]))
    expected = 0.0
    for i in range(4):
        cands = [b[i]] + [b[j] for j in range(4) if j != i] + [n[j] for j in range(3) if not (i == 1 and j == 2)]
        logits = [10.0 * float(a[i] @ c) for c in cands]
        expected += math.log(sum(math.exp(x) for x in logits)) - logits[0]
    assert math.isclose(float(got), expected / 4, rel_tol=1e-5)
    both = pair_loss(a, b, scale, ids, hard=(n, n_ids, valid))
    assert math.isclose(float(both), 0.5 * (float(got) + float(info_nce(b, a, scale, ids, ids))), rel_tol=1e-6)
    none_valid = pair_loss(a, b, scale, ids, hard=(n, n_ids, torch.zeros(4)))
    assert math.isclose(float(none_valid), float(pair_loss(a, b, scale, ids)), rel_tol=1e-6)


def test_make_loss_adds_them_to_the_product_terms_only():
    torch.manual_seed(6)
    b = 5
    out = {k: F.normalize(torch.randn(b, 8), dim=-1) for k in ("query", "product", "title", "image", "query_kw")}
    out.update(logit_scale=torch.tensor(10.0), has_image=torch.ones(b, dtype=torch.bool))
    ids = torch.stack([torch.arange(b), torch.arange(b) + 100], dim=1)
    batch = {"n_hash": torch.arange(b) + 50, "has_neg": torch.tensor([True, True, False, True, False])}
    cfg = LossConfig(visual_task="none", memory_bank=0)
    plain = make_loss(out, ids, cfg)
    # a hard negative right next to its query: the loss must rise
    with_hard = make_loss({**out, "neg_product": out["query"].clone()}, ids, cfg,
                          hard_ids=hard_negative_ids(batch))
    for term in ("query_product", "keyword_product"):
        assert float(with_hard[term]) > float(plain[term]) + 0.1, term
    for term in ("query_title", "query_image", "title_image"):
        assert math.isclose(float(with_hard[term]), float(plain[term]), rel_tol=1e-6), term
    assert hard_negative_ids({}) is None
    assert float(make_loss({**out, "neg_product": out["query"]}, ids, cfg)["loss"]) == float(plain["loss"])


@pytest.mark.parametrize(("data", "model", "images", "message"), [
    ({"hard_negative_max_label": -1.0, "queries": "q.parquet", "min_label": 2.3}, {}, False, "is negative"),
    ({"hard_negative_max_label": 1.7}, {}, False, r"needs a judged query log \(data.queries\)"),
    ({"hard_negative_max_label": 2.5, "queries": "q.parquet", "min_label": 2.3}, {}, False,
     r"must be below data.min_label=2.3"),
    ({"hard_negative_max_label": 1.7, "queries": "q.parquet", "min_label": 2.3}, {}, True,
     r"model.use_images=false"),
])
def test_bad_settings_are_refused_with_the_fix(data, model, images, message):
    job = PretrainJob(data=DataConfig(**data), model=ModelConfig(**model))
    with pytest.raises(ConfigError, match=rf"data.hard_negative_max_label=.*{message}"):
        check_hard_negatives(job, images)


def test_good_settings_pass():
    data = DataConfig(hard_negative_max_label=1.7, queries="q.parquet", min_label=2.3)
    check_hard_negatives(PretrainJob(data=data), images=False)
    check_hard_negatives(PretrainJob(data=data, model=ModelConfig(use_images=False)), images=True)
    check_hard_negatives(PretrainJob(), images=True)  # off


def test_empty_negatives_table_gives_no_negatives():
    empty = pa.table({"query": pa.array([], pa.string()), "product_id": pa.array([], pa.string()),
                      "label": pa.array([], pa.float64())})
    catalog = pa.table({"product_id": ["1"], "title": ["drill"]})
    assert judged_negatives(empty, catalog, 1.7) == {}


@pytest.mark.parametrize("statistics", [True, False])
def test_has_images_reads_null_counts_not_the_schema(tmp_path, statistics):
    def write(name: str, images: list) -> Path:
        table = pa.table({"product_id": [str(i) for i in range(len(images))], "title": ["t"] * len(images),
                          "image": pa.array(images, pa.binary())})
        pq.write_table(table, tmp_path / name, row_group_size=2, write_statistics=statistics)
        return tmp_path / name

    empty = write("empty.parquet", [None] * 5)  # the Home Depot import: an image column, all null
    late = write("late.parquet", [None, None, None, None, b"\xff\xd8"])  # one image, in the last row group
    no_column = tmp_path / "text.parquet"
    pq.write_table(pa.table({"product_id": ["1"], "title": ["drill"]}), no_column)
    assert not has_images([empty]) and not has_images([no_column])
    assert has_images([empty, late]) and has_images([no_column, late])
