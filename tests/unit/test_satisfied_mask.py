"""loss.mask_satisfied: a product holding every term of another row's query is not that query's negative."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from pipelines.pretrain import check_grouping
from vitrine.catalog.derive import derive_queries
from vitrine.config import DataConfig, LossConfig
from vitrine.errors import ConfigError
from vitrine.features import PRODUCT_TERMS, QUERY_TERMS, Featurizer, PairBuilder, term_hashes
from vitrine.losses import info_nce, make_loss, pair_loss, satisfied_mask
from vitrine.model.encoders import resolve_text_encoder

QUERIES = ["navy blue shirts for men", "shirts for men", "red t-shirts", "", "jeans"]
PRODUCTS = ["Roadster Men Navy Blue Shirts", "Women Navy Blue Shirts", "Men Red T-Shirts Casual",
            "Levis Men Black Jeans", "Men Shirts Navy-Blue"]


def test_term_hashes_pad_and_keep_distinct_terms():
    h = term_hashes(["Blue blue shirts for men", ""], 4, -1)
    assert h.shape == (2, 4) and h.dtype.name == "int64"
    assert h[0, 3] == -1 and len(set(h[0, :3].tolist())) == 3  # blue, shirts, men ("for" is a stopword)
    assert h[1].tolist() == [-1] * 4


def test_satisfied_mask_is_term_containment():
    q = torch.from_numpy(term_hashes(QUERIES, QUERY_TERMS, -1))
    p = torch.from_numpy(term_hashes(PRODUCTS, PRODUCT_TERMS, -2))
    got = satisfied_mask(q, p).int().tolist()
    # hand-checked: which product titles hold every term of each query (hyphens split, stopwords ignored)
    assert got == [
        [1, 0, 0, 0, 1],  # navy blue shirts men: products 0 and 4 (women's shirt lacks "men")
        [1, 0, 1, 0, 1],  # shirts men: "T-Shirts" splits into "t" (too short to be a term) and "shirts"
        [0, 0, 1, 0, 0],  # red t-shirts
        [0, 0, 0, 0, 0],  # a query without terms is satisfied by nothing
        [0, 0, 0, 1, 0],  # jeans
    ]


def test_masked_candidates_leave_the_softmax():
    torch.manual_seed(3)
    a = F.normalize(torch.randn(4, 8), dim=-1)
    b = F.normalize(torch.randn(4, 8), dim=-1)
    ids = torch.arange(4).unsqueeze(1)
    sat = torch.zeros(4, 4, dtype=torch.bool)
    sat[0, 2] = sat[3, 1] = True
    sat[1, 1] = True  # the positive itself is never masked
    got = info_nce(a, b, torch.tensor(10.0), ids, ids, also_drop=sat)
    expected = 0.0
    for i in range(4):
        cands = [i] + [j for j in range(4) if j != i and not sat[i, j]]
        logits = [10.0 * float(a[i] @ b[j]) for j in cands]
        expected += math.log(sum(math.exp(x) for x in logits)) - logits[0]
    assert math.isclose(float(got), expected / 4, rel_tol=1e-5)
    # both directions: product anchors drop the queries they satisfy
    both = pair_loss(a, b, torch.tensor(10.0), ids, satisfied=sat)
    back = info_nce(b, a, torch.tensor(10.0), ids, ids, also_drop=sat.t())
    assert math.isclose(float(both), 0.5 * (float(got) + float(back)), rel_tol=1e-6)
    assert float(got) < float(info_nce(a, b, torch.tensor(10.0), ids, ids))  # fewer negatives, lower loss here


def test_make_loss_uses_the_mask_only_when_switched_on():
    torch.manual_seed(4)
    n, d = 5, 8
    out = {k: F.normalize(torch.randn(n, d), dim=-1) for k in ("query", "product", "title", "image")}
    out.update(logit_scale=torch.tensor(10.0), has_image=torch.ones(n, dtype=torch.bool))
    ids = torch.stack([torch.arange(n), torch.arange(n) + 100], dim=1)
    terms = (torch.from_numpy(term_hashes(QUERIES, QUERY_TERMS, -1)),
             torch.from_numpy(term_hashes(PRODUCTS, PRODUCT_TERMS, -2)))
    base = LossConfig(visual_task="none", keyword_enhancement=False, memory_bank=0)
    off = make_loss(out, ids, base, query_terms=terms)["query_product"]
    on = make_loss(out, ids, LossConfig(**{**base.__dict__, "mask_satisfied": True}), query_terms=terms)
    assert float(off) == float(make_loss(out, ids, base)["query_product"])
    assert not math.isclose(float(on["query_product"]), float(off))


def test_pairs_carry_product_terms_from_title_and_term_columns(sample_catalog):
    catalog = pq.read_table(sample_catalog).slice(0, 12)
    pairs = PairBuilder(derive_queries(catalog, per_product=1, seed=0),
                        term_columns=("baseColour", "articleType", "gender", "usage"))(catalog)
    rows = {r["product_id"]: r for r in catalog.to_pylist()}
    for pid, text in zip(pairs.column("product_id").to_pylist(), pairs.column("p_text").to_pylist(), strict=True):
        r = rows[pid]
        assert text == " ".join(str(v) for v in (r["title"], r["baseColour"], r["articleType"], r["gender"], r["usage"])
                                if v is not None)
    feats = Featurizer(str(resolve_text_encoder("minilm")), 32, 8, 8)(
        {k: pairs.column(k).to_pylist() for k in pairs.column_names})
    assert feats["q_terms"].shape == (pairs.num_rows, QUERY_TERMS)
    assert feats["p_terms"].shape == (pairs.num_rows, PRODUCT_TERMS)
    # a derived query is built from its own product's attributes, so that product always satisfies it
    sat = satisfied_mask(torch.from_numpy(feats["q_terms"]), torch.from_numpy(feats["p_terms"]))
    assert bool(sat.diagonal().all())
    assert "p_text" not in PairBuilder(derive_queries(catalog, per_product=1, seed=0))(catalog).column_names


def test_unknown_term_column_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"data.term_columns names 'colour', not a catalog column; .*'baseColour'"):
        check_grouping(DataConfig(term_columns="baseColour, colour"), ["product_id", "title", "baseColour"])
    check_grouping(DataConfig(term_columns="baseColour"), ["product_id", "title", "baseColour"])
