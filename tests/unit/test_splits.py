"""Query-level splits, derived judgments, the colourless catalog and comma-separated catalog paths."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vitrine.catalog.derive import derive_queries
from vitrine.catalog.io import parquet_files, read_table
from vitrine.catalog.splits import colourless_catalog, derived_judgments, split_by_query, strip_colours
from vitrine.errors import ConfigError

SAMPLE = Path(__file__).resolve().parents[2] / "platform" / "vitrine" / "sample"
BIN = Path(sys.executable).parent


def test_split_is_by_query_disjoint_complete_and_stable():
    j = pq.read_table(SAMPLE / "homedepot_judgments.parquet")
    train, val = split_by_query(j, 0.25, seed=3)
    tq, vq = set(train.column("query").to_pylist()), set(val.column("query").to_pylist())
    assert not tq & vq
    assert train.num_rows + val.num_rows == j.num_rows
    share = len(vq) / (len(tq) + len(vq))
    assert 0.15 < share < 0.35, share
    again, _ = split_by_query(j, 0.25, seed=3)
    assert again.equals(train)
    other, _ = split_by_query(j, 0.25, seed=4)
    assert set(other.column("query").to_pylist()) != tq
    # the split does not depend on case or spacing, nor on which other rows exist
    case = pa.table({"query": ["Red  Shirt", "red shirt"], "product_id": ["a", "b"], "label": [3.0, 3.0]})
    a, b = split_by_query(case, 0.5, seed=0)
    assert {a.num_rows, b.num_rows} == {0, 2}


def test_split_rejects_bad_fraction():
    j = pa.table({"query": ["q"], "product_id": ["p"], "label": [3.0]})
    with pytest.raises(ConfigError, match="val_fraction"):
        split_by_query(j, 1.5)


def test_derived_judgments_are_attribute_containment():
    catalog = pa.table({
        "product_id": ["1", "2", "3", "4"],
        "title": ["a", "b", "c", "d"],
        "gender": ["Men", "Men", "Women", "Men"],
        "baseColour": ["Blue", "Red", "Blue", "Blue"],
        "articleType": ["Jeans", "Jeans", "Jeans", "Shirts"],
        "usage": ["Casual"] * 4,
    })
    queries = pa.table({"query": ["blue jeans", "men jeans", "green jeans"], "product_id": ["1", "1", "1"],
                        "label": [3.0] * 3,
                        "attrs": ["baseColour=Blue|articleType=Jeans", "articleType=Jeans|gender=Men",
                                  "baseColour=Green|articleType=Jeans"]})
    j, dropped = derived_judgments(catalog, queries)
    got = {(q, p) for q, p in zip(j.column("query").to_pylist(), j.column("product_id").to_pylist(), strict=True)}
    assert got == {("blue jeans", "1"), ("blue jeans", "3"), ("men jeans", "1"), ("men jeans", "2")}
    assert dropped == 1  # "green jeans" matches nothing
    assert set(j.column("label").to_pylist()) == {3.0}
    _, too_broad = derived_judgments(catalog, queries, max_relevant=1)
    assert too_broad == 3


def test_strip_colours_removes_whole_colour_words_only():
    assert strip_colours("Turtle Check Men Navy Blue Shirt") == "Turtle Check Men Shirt"
    assert strip_colours("Puma Men Black-White Sneakers") == "Puma Men Sneakers"
    assert strip_colours("Fabindia Off-Shoulder Top") == "Fabindia Off-Shoulder Top"  # 'shoulder' is no colour
    assert strip_colours("Redtape Men Shoes") == "Redtape Men Shoes"  # 'Red' inside a brand is kept
    assert strip_colours("Nike Women RED shoes") == "Nike Women shoes"


def test_colourless_catalog_on_the_real_sample():
    cat = pq.read_table(SAMPLE / "myntra_sample.parquet")
    out = colourless_catalog(cat)
    assert out.num_rows == cat.num_rows and out.schema == cat.schema
    colours = {str(c).lower() for c in cat.column("baseColour").to_pylist() if c}
    single = {c for c in colours if " " not in c}
    titles = [t.lower().split() for t in out.column("title").to_pylist()]
    assert all(t for t in titles)
    assert not any(w in single for t in titles for w in t)
    before = sum(w in single for t in cat.column("title").to_pylist() for w in t.lower().split())
    assert before > 500  # the variant really removed something


def test_comma_separated_paths_are_the_union(tmp_path):
    a = SAMPLE / "myntra_sample.parquet"
    b = SAMPLE / "homedepot_products.parquet"
    assert parquet_files(f"{a},{b}") == [a, b]
    both = read_table(f"{a}, {b}", columns=["product_id", "title"])
    assert both.num_rows == pq.read_metadata(a).num_rows + pq.read_metadata(b).num_rows


def test_import_with_val_fraction_writes_splits(tmp_path):
    src = tmp_path / "hd"
    src.mkdir()
    shutil.copy(SAMPLE / "homedepot_products.parquet", src / "products.parquet")
    shutil.copy(SAMPLE / "homedepot_judgments.parquet", src / "judgments.parquet")
    done = subprocess.run([str(BIN / "vitrine"), "import", "homedepot", str(src), "--out", str(tmp_path / "o"),
                           "--val-fraction", "0.2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    train = pq.read_table(tmp_path / "o" / "train" / "queries.parquet")
    val = pq.read_table(tmp_path / "o" / "val" / "judgments.parquet")
    assert not set(train.column("query").to_pylist()) & set(val.column("query").to_pylist())
    assert train.num_rows + val.num_rows == pq.read_metadata(tmp_path / "o" / "judgments.parquet").num_rows
    assert pq.read_table(tmp_path / "o" / "train" / "judgments.parquet").equals(train)

    myn = tmp_path / "my"
    myn.mkdir()
    shutil.copy(SAMPLE / "myntra_sample.parquet", myn / "products-00.parquet")
    done = subprocess.run([str(BIN / "vitrine"), "import", "myntra", str(myn), "--out", str(tmp_path / "m"),
                           "--val-fraction", "0.2", "--eval-sample", "500"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    cat = pq.read_table(tmp_path / "m" / "catalog.parquet")
    derived = derive_queries(cat, per_product=3, seed=0)
    train = pq.read_table(tmp_path / "m" / "train" / "queries.parquet")
    val = pq.read_table(tmp_path / "m" / "val" / "judgments.parquet")
    assert 0 < train.num_rows < derived.num_rows
    assert not set(train.column("query").to_pylist()) & set(val.column("query").to_pylist())
    assert set(val.column("product_id").to_pylist()) <= set(cat.column("product_id").to_pylist())
    # train judgments: every product whose attributes contain a train query, so each training pair is one
    train_j = pq.read_table(tmp_path / "m" / "train" / "judgments.parquet")
    judged_pairs = set(zip(train_j.column("query").to_pylist(), train_j.column("product_id").to_pylist(), strict=True))
    train_pairs = set(zip(train.column("query").to_pylist(), train.column("product_id").to_pylist(), strict=True))
    kept = {q for q, _ in judged_pairs}
    assert kept and {p for p in train_pairs if p[0] in kept} <= judged_pairs
    assert len(judged_pairs) > len({p for p in train_pairs if p[0] in kept})
    colourless = pq.read_table(tmp_path / "m" / "colourless" / "catalog.parquet")
    assert colourless.num_rows == cat.num_rows
    assert colourless.column("title").to_pylist() != cat.column("title").to_pylist()
    part = pq.read_table(tmp_path / "m" / "val_sample" / "catalog.parquet")
    part_val = pq.read_table(tmp_path / "m" / "val_sample" / "judgments.parquet")
    assert part.num_rows == 500
    assert set(part_val.column("product_id").to_pylist()) <= set(part.column("product_id").to_pylist())
    assert set(part_val.column("query").to_pylist()) <= set(val.column("query").to_pylist())
