"""Catalog contract: clean_catalog / clean_judgments row handling, schema errors, read_table errors."""

from __future__ import annotations

import pyarrow as pa
import pytest

from vitrine.catalog.io import read_table
from vitrine.catalog.schema import clean_catalog, clean_judgments
from vitrine.errors import CatalogError

MISSING_ID = "missing or non-UTF-8 product_id"
DUPLICATE = "duplicate product_id (first kept)"
EMPTY_TITLE = "missing or empty title"
BAD_UTF8_TITLE = "title is not valid UTF-8"
NOT_AN_IMAGE = "image bytes are not JPEG/PNG/WebP/GIF (product kept without image)"
EMPTY_IMAGE = "empty image bytes (product kept without image)"
# issues whose row is dropped from the catalog (the others only drop the image)
DROPPING = {MISSING_ID, DUPLICATE, EMPTY_TITLE, BAD_UTF8_TITLE}


def reasons_by_row(report) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for issue in report.issues:
        out.setdefault(issue.row, set()).add(issue.reason)
    return out


# --- clean_catalog ---------------------------------------------------------------------------------


def messy_catalog(jpeg: bytes, title_type: pa.DataType) -> pa.Table:
    """Nine rows, one per case; with a binary title column, row 7 holds non-UTF-8 title bytes."""
    binary = pa.types.is_binary(title_type)
    bad_title = b"\xff\xfe caf\xe9" if binary else "placeholder"
    titles = ["  Red   Cotton\tShirt ", "", "   \t ", "Another Shirt", "Orphan Product",
              "Blue Jeans", "Green Cap", bad_title, "Black Bag"]
    if binary:
        titles = [t if isinstance(t, bytes) else t.encode("utf-8") for t in titles]
    return pa.table({
        "product_id": pa.array(["p0", "p1", "p2", "p0", None, "p5", "p6", "p7", "p8"], pa.string()),
        "title": pa.array(titles, title_type),
        "image": pa.array([jpeg, None, None, jpeg, None, b"hello, not an image", b"", None, None],
                          pa.binary()),
        "baseColour": pa.array(["Red", "White", "Grey", "Pink", "Olive", "Blue", "Green", "Teal", "Black"]),
        "year": pa.array([2011, 2012, 2013, 2014, 2015, 2016, None, 2018, 2019], pa.int64()),
    })


def test_clean_catalog_binary_titles_every_case(sample_jpegs):
    jpeg = next(iter(sample_jpegs.values()))
    clean, report = clean_catalog(messy_catalog(jpeg, pa.binary()), source="messy")
    assert report.rows_in == 9
    assert report.rows_out == 4
    assert clean.num_rows == 4
    assert reasons_by_row(report) == {
        1: {EMPTY_TITLE},
        2: {EMPTY_TITLE},
        3: {DUPLICATE},
        4: {MISSING_ID},
        5: {NOT_AN_IMAGE},
        6: {EMPTY_IMAGE},
        7: {BAD_UTF8_TITLE},
    }
    assert [(i.row, i.product_id) for i in report.issues] == [
        (1, "p1"), (2, "p2"), (3, "p0"), (4, None), (5, "p5"), (6, "p6"), (7, "p7")]
    assert report.images_dropped == 2
    assert report.counts == {EMPTY_TITLE: 2, DUPLICATE: 1, MISSING_ID: 1, NOT_AN_IMAGE: 1, EMPTY_IMAGE: 1,
                             BAD_UTF8_TITLE: 1}
    assert report.rows_out + sum(n for r, n in report.counts.items() if r in DROPPING) == report.rows_in
    # the kept products, in input order, keep their attributes (cast to string) and valid images
    assert clean.schema.names == ["product_id", "title", "image", "baseColour", "year"]
    assert clean.schema.field("title").type == pa.string()
    assert clean.schema.field("year").type == pa.string()
    assert clean.to_pylist() == [
        {"product_id": "p0", "title": "Red Cotton Shirt", "image": jpeg, "baseColour": "Red", "year": "2011"},
        {"product_id": "p5", "title": "Blue Jeans", "image": None, "baseColour": "Blue", "year": "2016"},
        {"product_id": "p6", "title": "Green Cap", "image": None, "baseColour": "Green", "year": None},
        {"product_id": "p8", "title": "Black Bag", "image": None, "baseColour": "Black", "year": "2019"},
    ]
    summary = report.summary()
    assert summary.startswith("9 rows in, 4 kept; issues: ")
    assert "row 3 ('p0'): duplicate product_id (first kept)" in summary


def test_clean_catalog_string_titles_same_outcome(sample_jpegs):
    jpeg = next(iter(sample_jpegs.values()))
    table = messy_catalog(jpeg, pa.string())
    clean, report = clean_catalog(table)
    # row 7 has a valid string title here, so it is kept
    assert report.rows_out == 5
    assert reasons_by_row(report) == {1: {EMPTY_TITLE}, 2: {EMPTY_TITLE}, 3: {DUPLICATE}, 4: {MISSING_ID},
                                      5: {NOT_AN_IMAGE}, 6: {EMPTY_IMAGE}}
    assert clean.column("product_id").to_pylist() == ["p0", "p5", "p6", "p7", "p8"]
    assert clean.column("title").to_pylist() == ["Red Cotton Shirt", "Blue Jeans", "Green Cap", "placeholder",
                                                 "Black Bag"]


def test_clean_catalog_clean_input_has_no_issues(sample_jpegs):
    ids = list(sample_jpegs)
    table = pa.table({"product_id": ids, "title": ["A shirt", "A cap"],
                      "image": pa.array(list(sample_jpegs.values()), pa.binary())})
    clean, report = clean_catalog(table)
    assert report.issues == []
    assert report.rows_in == report.rows_out == 2
    assert report.summary() == "2 rows in, 2 kept, no issues"
    assert clean.column("image").to_pylist() == list(sample_jpegs.values())


def test_clean_catalog_ids_are_stripped_and_blank_ids_dropped():
    table = pa.table({"product_id": [" a1 ", "", "   ", "a1"], "title": ["x", "y", "z", "w"]})
    clean, report = clean_catalog(table)
    assert clean.column("product_id").to_pylist() == ["a1"]
    assert reasons_by_row(report) == {1: {MISSING_ID}, 2: {MISSING_ID}, 3: {DUPLICATE}}
    # no image column at all: every kept product gets a null binary image
    assert clean.schema.field("image").type == pa.binary()
    assert clean.column("image").to_pylist() == [None]


def test_clean_catalog_duplicate_of_a_dropped_row_is_kept():
    table = pa.table({"product_id": ["d", "d"], "title": ["", "Real title"]})
    clean, report = clean_catalog(table)
    assert clean.to_pylist() == [{"product_id": "d", "title": "Real title", "image": None}]
    assert reasons_by_row(report) == {0: {EMPTY_TITLE}}


def test_clean_catalog_integer_ids_become_strings():
    table = pa.table({"product_id": pa.array([7, None, 9], pa.int64()), "title": ["a", "b", "c"]})
    clean, report = clean_catalog(table)
    assert clean.column("product_id").to_pylist() == ["7", "9"]
    assert reasons_by_row(report) == {1: {MISSING_ID}}


def test_clean_catalog_null_typed_image_column():
    table = pa.table({"product_id": ["a"], "title": ["t"], "image": pa.nulls(1)})
    clean, report = clean_catalog(table)
    assert clean.column("image").type == pa.binary()
    assert clean.column("image").to_pylist() == [None]
    assert report.issues == []


@pytest.mark.parametrize("missing", ["product_id", "title"])
def test_clean_catalog_missing_required_column(missing):
    cols = {"product_id": ["a"], "title": ["t"], "brand": ["b"]}
    del cols[missing]
    with pytest.raises(CatalogError) as info:
        clean_catalog(pa.table(cols), source="shop.parquet")
    msg = str(info.value)
    assert f"catalog 'shop.parquet' lacks required column(s) ['{missing}']" in msg


def test_clean_catalog_int_image_column():
    table = pa.table({"product_id": ["a"], "title": ["t"], "image": pa.array([1], pa.int64())})
    with pytest.raises(CatalogError, match="column 'image' of 'catalog' has type int64"):
        clean_catalog(table)


def test_clean_catalog_float_title_column():
    table = pa.table({"product_id": ["a"], "title": pa.array([1.5])})
    msg = "column 'title' of 'catalog' has type double; it must be a string"
    with pytest.raises(CatalogError, match=msg):
        clean_catalog(table)


# --- clean_judgments -------------------------------------------------------------------------------


def test_clean_judgments_drops_and_names_bad_rows():
    table = pa.table({
        "query": ["red  shirt", "", "   ", "blue cap", "green bag", "black shoes"],
        "product_id": ["p1", "p1", "p2", "unknown", None, "p2"],
        "label": pa.array([3, 1, 2, 1, 1, None], pa.int64()),
    })
    clean, report = clean_judgments(table, {"p1", "p2"})
    assert report.rows_in == 6
    assert report.rows_out == 1
    assert clean.to_pylist() == [{"query": "red shirt", "product_id": "p1", "label": 3.0}]
    assert clean.schema.field("label").type == pa.float32()
    assert [(i.row, i.product_id, i.reason) for i in report.issues] == [
        (1, "p1", "missing or empty query"),
        (2, "p2", "missing or empty query"),
        (3, "unknown", "product_id not in catalog"),
        (4, None, "missing product_id"),
        (5, "p2", "missing label"),
    ]


def test_clean_judgments_without_catalog_keeps_any_product():
    table = pa.table({"query": ["q"], "product_id": ["anything"], "label": pa.array([2.5], pa.float64())})
    clean, report = clean_judgments(table)
    assert clean.to_pylist() == [{"query": "q", "product_id": "anything", "label": 2.5}]
    assert report.issues == []


def test_clean_judgments_non_numeric_label_type():
    table = pa.table({"query": ["q"], "product_id": ["p"], "label": ["relevant"]})
    msg = r"column 'label' of 'log\.parquet' has type string; it must be numeric"
    with pytest.raises(CatalogError, match=msg):
        clean_judgments(table, {"p"}, source="log.parquet")


def test_clean_judgments_missing_column():
    with pytest.raises(CatalogError, match=r"lacks required column\(s\) \['label'\]"):
        clean_judgments(pa.table({"query": ["q"], "product_id": ["p"]}))


# --- read_table ------------------------------------------------------------------------------------


def test_read_table_errors(tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        read_table(tmp_path / "nothing")
    with pytest.raises(CatalogError, match="holds no \\*.parquet files"):
        read_table(tmp_path)
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(CatalogError, match="is not a readable Parquet file"):
        read_table(tmp_path / "broken.parquet")
