"""Keyword Enhancement: term extraction, keyword mining, enhanced queries, their features, and the masking of
same-product / same-query rows in the loss."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from vitrine.catalog.keywords import enhance, mine_keywords, terms
from vitrine.config import LossConfig
from vitrine.features import Featurizer, PairBuilder
from vitrine.losses import make_loss
from vitrine.model.encoders import resolve_text_encoder

# --- terms -------------------------------------------------------------------------------------------------


def test_terms_of_a_title():
    title = "The Nike Men's Air Max 90 Running-Shoes, Black"
    assert terms(title) == ["nike", "men's", "air", "max", "running-shoes", "black"]


def test_terms_drop_stopwords_numbers_and_single_letters():
    assert terms("A T Shirt for 2 kids x 3 with 3D print") == ["shirt", "kids", "3d", "print"]
    assert terms("Crew-neck  tee -- 100% cotton") == ["crew-neck", "tee", "cotton"]
    assert terms("The 2 in 1 X") == []


# --- mine_keywords -----------------------------------------------------------------------------------------

CATALOG = pa.table({
    "product_id": ["A", "B", "C"],
    # A: its queries use "denim" and "jeans"; "slim", "indigo", "roadster" occur in no positive query
    # B: its queries share no title word; "men" (2 queries) and "blue" (1) occur in other products' queries
    # C: no usable title term at all
    "title": ["Slim Denim Jeans Indigo Roadster", "Blue Cotton Shirt Men", "The 2 in 1 X"],
})
QUERIES = pa.table({
    "query": ["jeans for men", "blue jeans", "Denim JEANS", "denim pants",  # A: jeans x3, denim x2
              "slim indigo roadster",  # A, label 0: not a positive
              "formal wear", "office top",  # B: nothing from its title
              "cotton shirt",  # B, label 1.0: a positive only when min_label < 1
              "men shoes", "kids sandals",  # C
              "roadster"],  # A, no label
    "product_id": ["A", "A", "A", "A", "A", "B", "B", "B", "C", "C", "A"],
    "label": [2.0, 2.0, 2.0, 2.0, 0.0, 2.0, 2.0, 1.0, 2.0, 2.0, None],
}, schema=pa.schema([("query", pa.string()), ("product_id", pa.string()), ("label", pa.float64())]))


def test_mine_keywords_hand_made_catalog():
    got = mine_keywords(QUERIES, CATALOG, k=3, min_label=1.0)
    assert got == {
        "A": ["jeans", "denim"],  # its own query terms, most used first (not title order)
        "B": ["men", "blue"],  # title terms shoppers type anywhere, most used first
        "C": [],
    }


def test_mine_keywords_respects_k():
    assert mine_keywords(QUERIES, CATALOG, k=1, min_label=1.0) == {"A": ["jeans"], "B": ["men"], "C": []}
    assert mine_keywords(QUERIES, CATALOG, k=0, min_label=1.0) == {"A": [], "B": [], "C": []}


def test_mine_keywords_ignores_labels_at_or_below_min_label():
    # min_label=0: the label-1.0 "cotton shirt" row now counts for B; the label-0 and None rows still do not
    got = mine_keywords(QUERIES, CATALOG, k=2, min_label=0.0)
    assert got == {"A": ["jeans", "denim"], "B": ["cotton", "shirt"], "C": []}
    # min_label=2: nothing is a positive, so no product has keywords
    assert mine_keywords(QUERIES, CATALOG, k=3, min_label=2.0) == {"A": [], "B": [], "C": []}


# --- enhance -----------------------------------------------------------------------------------------------


def test_enhance_appends_only_missing_keywords_in_order():
    assert enhance("blue jeans", ["jeans", "denim", "slim"]) == "blue jeans denim slim"
    assert enhance("men", ["men", "blue"]) == "men blue"


def test_enhance_leaves_query_unchanged_when_all_present():
    assert enhance("Blue DENIM Jeans", ["jeans", "denim"]) == "Blue DENIM Jeans"
    assert enhance("denim pants", []) == "denim pants"


# --- PairBuilder and Featurizer ----------------------------------------------------------------------------

KEYWORDS = {"A": ["jeans", "denim"], "B": ["men", "blue"]}
PAIR_CATALOG = pa.table({"product_id": ["A", "B", "C"],
                         "title": ["Slim Denim Jeans", "Blue Cotton Shirt Men", "Kids Sandals"]})
PAIR_QUERIES = pa.table({
    "query": ["Blue Jeans", "denim jeans", "blue jeans", "formal shirt", "men shirt", "kids sandals", "jeans"],
    "product_id": ["A", "A", "B", "B", "B", "C", "X"],
    "label": [1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0],
})
# rows PairBuilder emits, catalog order then query-log order; C has no keywords, X is not in the catalog
EXPECTED_PAIRS = [("A", "Blue Jeans", "Blue Jeans denim"), ("A", "denim jeans", "denim jeans"),
                  ("B", "blue jeans", "blue jeans men"), ("B", "formal shirt", "formal shirt men blue"),
                  ("C", "kids sandals", "kids sandals")]


@pytest.fixture(scope="module")
def pairs() -> pa.Table:
    return PairBuilder(PAIR_QUERIES, keywords=KEYWORDS)(PAIR_CATALOG)


def test_pair_builder_adds_enhanced_query_column(pairs):
    assert pairs.column_names == ["product_id", "title", "query", "query_kw"]
    got = list(zip(*(pairs.column(c).to_pylist() for c in ("product_id", "query", "query_kw")), strict=True))
    assert got == EXPECTED_PAIRS
    for pid, q, kw in got:
        assert kw == enhance(q, KEYWORDS.get(pid, []))
    without = PairBuilder(PAIR_QUERIES)(PAIR_CATALOG)
    assert "query_kw" not in without.column_names
    assert without.column("query").to_pylist() == [q for _, q, _ in EXPECTED_PAIRS]


@pytest.fixture(scope="module")
def features(pairs) -> dict[str, np.ndarray]:
    featurize = Featurizer(str(resolve_text_encoder("minilm")), 32, 16, 32)
    return featurize({c: np.asarray(pairs.column(c).to_pylist(), dtype=object) for c in pairs.column_names})


def test_featurizer_query_hash_ignores_case_only(features):
    q_hash = features["q_hash"].tolist()
    assert q_hash[0] == q_hash[2] == zlib.crc32(b"blue jeans")  # "Blue Jeans" (A) and "blue jeans" (B)
    assert q_hash == [zlib.crc32(q.lower().encode()) for _, q, _ in EXPECTED_PAIRS]
    assert len({q_hash[i] for i in (0, 1, 3, 4)}) == 4
    assert features["pid_hash"].tolist() == [zlib.crc32(p.encode()) for p, _, _ in EXPECTED_PAIRS]


def test_featurizer_enhanced_query_ids(features, pairs):
    q_ids, kq_ids = features["q_ids"], features["kq_ids"]
    assert q_ids.shape == kq_ids.shape == (5, 16)
    assert features["kq_mask"].shape == (5, 16)
    for i, (_, q, kw) in enumerate(EXPECTED_PAIRS):
        assert np.array_equal(q_ids[i], kq_ids[i]) == (q == kw), i
    # an enhanced query has more real tokens than its raw query
    added = [i for i, (_, q, kw) in enumerate(EXPECTED_PAIRS) if q != kw]
    assert added == [0, 2, 3]
    assert all(features["kq_mask"][i].sum() > features["q_mask"][i].sum() for i in added)
    assert features["image"].shape == (5, 32, 32, 3) and not features["has_image"].any()


# --- same-product and same-query rows are not negatives ----------------------------------------------------

SCALE = 10.0
# rows 0/1: the same product (different queries); rows 2/3: the same query text (different products)
LOSS_IDS = torch.tensor([[1, 101], [1, 102], [3, 200], [4, 200]])


def _loss_out() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    q = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    p = F.normalize(q + 0.5 * torch.randn(4, 8, generator=g), dim=-1)
    p[1] = F.normalize(q[0] + 0.05 * torch.randn(8, generator=g), dim=0)  # hard candidates for each other's rows
    p[3] = F.normalize(q[2] + 0.05 * torch.randn(8, generator=g), dim=0)
    return {"query": q, "product": p, "title": F.normalize(torch.randn(4, 8, generator=g), dim=-1),
            "image": F.normalize(torch.randn(4, 8, generator=g), dim=-1), "logit_scale": torch.tensor(SCALE),
            "has_image": torch.tensor([True, True, True, True])}


def _reference_pair(a: torch.Tensor, b: torch.Tensor, excluded: set[frozenset[int]]) -> float:
    """Symmetric InfoNCE by hand; ``excluded`` pairs of rows are not each other's negatives."""

    def one_way(x, y):
        total = 0.0
        for i in range(4):
            logits = [SCALE * float(x[i].double() @ y[j].double())
                      for j in [i, *(j for j in range(4) if j != i and frozenset((i, j)) not in excluded)]]
            m = max(logits)
            total += m + math.log(sum(math.exp(v - m) for v in logits)) - logits[0]
        return total / 4

    return 0.5 * (one_way(a, b) + one_way(b, a))


def test_same_product_and_same_query_rows_are_not_negatives():
    out = _loss_out()
    both = _reference_pair(out["query"], out["product"], {frozenset((0, 1)), frozenset((2, 3))})
    product_only = _reference_pair(out["query"], out["product"], {frozenset((0, 1))})
    assert abs(both - product_only) > 0.1  # the same-query mask matters on this data
    cfg = LossConfig(visual_task="none", memory_bank=0, keyword_enhancement=True)
    got = make_loss(out, LOSS_IDS, cfg)
    assert math.isclose(float(got["query_product"]), both, rel_tol=1e-5, abs_tol=1e-6)
    assert math.isclose(float(got["query_title"]),
                        _reference_pair(out["query"], out["title"], {frozenset((0, 1)), frozenset((2, 3))}),
                        rel_tol=1e-5, abs_tol=1e-6)
    # title <-> image never masks same-query rows (titles and images belong to products, not queries)
    assert math.isclose(float(got["title_image"]), _reference_pair(out["title"], out["image"], {frozenset((0, 1))}),
                        rel_tol=1e-5, abs_tol=1e-6)


def test_without_keyword_enhancement_only_same_product_rows_are_masked():
    out = _loss_out()
    product_only = _reference_pair(out["query"], out["product"], {frozenset((0, 1))})
    cfg = LossConfig(visual_task="none", memory_bank=0, keyword_enhancement=False)
    got = make_loss(out, LOSS_IDS, cfg)
    assert math.isclose(float(got["query_product"]), product_only, rel_tol=1e-5, abs_tol=1e-6)
