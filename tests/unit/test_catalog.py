"""Catalog contract: clean_catalog / clean_judgments row handling, schema errors, and the three importers."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vitrine.catalog.importers import IMPORTERS, import_folder, import_homedepot, import_myntra
from vitrine.catalog.io import read_table, write_table
from vitrine.catalog.schema import clean_catalog, clean_judgments
from vitrine.errors import CatalogError

SAMPLE = Path(__file__).resolve().parents[2] / "platform" / "vitrine" / "sample"
MYNTRA_SAMPLE = SAMPLE / "myntra_sample.parquet"

MISSING_ID = "missing or non-UTF-8 product_id"
DUPLICATE = "duplicate product_id (first kept)"
EMPTY_TITLE = "missing or empty title"
BAD_UTF8_TITLE = "title is not valid UTF-8"
NOT_AN_IMAGE = "image bytes are not JPEG/PNG/WebP/GIF (product kept without image)"
EMPTY_IMAGE = "empty image bytes (product kept without image)"
MISSING_FILE = "image file missing or outside the image folder (product kept without image)"
# issues whose row is dropped from the catalog (the others only drop the image)
DROPPING = {MISSING_ID, DUPLICATE, EMPTY_TITLE, BAD_UTF8_TITLE}


def shared_data() -> Path:
    """../shared/data next to the repository, or skip the test saying why."""
    path = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not (path / "myntra").is_dir():
        pytest.skip(f"full datasets not present at {path} (needs ../shared/data/myntra)")
    return path


@pytest.fixture(scope="module")
def jpegs() -> dict[str, bytes]:
    """Real JPEG bytes of the first two products of the bundled Myntra sample, keyed by product id."""
    rows = pq.read_table(MYNTRA_SAMPLE, columns=["product_id", "image"]).slice(0, 2).to_pylist()
    out = {r["product_id"]: r["image"] for r in rows}
    assert all(b.startswith(b"\xff\xd8\xff") for b in out.values())
    return out


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


def test_clean_catalog_binary_titles_every_case(jpegs):
    jpeg = next(iter(jpegs.values()))
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


def test_clean_catalog_string_titles_same_outcome(jpegs):
    jpeg = next(iter(jpegs.values()))
    table = messy_catalog(jpeg, pa.string())
    clean, report = clean_catalog(table)
    # row 7 has a valid string title here, so it is kept
    assert report.rows_out == 5
    assert reasons_by_row(report) == {1: {EMPTY_TITLE}, 2: {EMPTY_TITLE}, 3: {DUPLICATE}, 4: {MISSING_ID},
                                      5: {NOT_AN_IMAGE}, 6: {EMPTY_IMAGE}}
    assert clean.column("product_id").to_pylist() == ["p0", "p5", "p6", "p7", "p8"]
    assert clean.column("title").to_pylist() == ["Red Cotton Shirt", "Blue Jeans", "Green Cap", "placeholder",
                                                 "Black Bag"]


def test_clean_catalog_clean_input_has_no_issues(jpegs):
    ids = list(jpegs)
    table = pa.table({"product_id": ids, "title": ["A shirt", "A cap"],
                      "image": pa.array(list(jpegs.values()), pa.binary())})
    clean, report = clean_catalog(table)
    assert report.issues == []
    assert report.rows_in == report.rows_out == 2
    assert report.summary() == "2 rows in, 2 kept, no issues"
    assert clean.column("image").to_pylist() == list(jpegs.values())


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


# --- import_folder ---------------------------------------------------------------------------------


def write_folder(tmp_path: Path, jpegs: dict[str, bytes]) -> list[dict]:
    """Two real JPEGs in tmp_path/img, manifest rows pointing at them, a missing file and a traversal."""
    (tmp_path / "img").mkdir()
    ids = list(jpegs)
    for pid in ids:
        (tmp_path / "img" / f"{pid}.jpg").write_bytes(jpegs[pid])
    (tmp_path / "x.jpg").write_bytes(jpegs[ids[0]])  # exists, but outside the image folder
    return [
        {"product_id": ids[0], "title": "Nike Blue Cap", "image": f"{ids[0]}.jpg", "colour": "Blue"},
        {"product_id": ids[1], "title": "Nike White Shorts", "image": f"{ids[1]}.jpg", "colour": "White"},
        {"product_id": "m1", "title": "Lost Photo Shirt", "image": "nope.jpg", "colour": "Red"},
        {"product_id": "t1", "title": "Sneaky Traversal Tee", "image": "../x.jpg", "colour": "Black"},
        {"product_id": "n1", "title": "No Image Socks", "image": "", "colour": "Grey"},
    ]


def check_folder_import(catalog: pa.Table, report, jpegs: dict[str, bytes]) -> None:
    ids = list(jpegs)
    assert report.rows_in == 5
    assert report.rows_out == 5
    assert catalog.column("product_id").to_pylist() == [ids[0], ids[1], "m1", "t1", "n1"]
    assert catalog.column("image").to_pylist() == [jpegs[ids[0]], jpegs[ids[1]], None, None, None]
    assert catalog.column("colour").to_pylist() == ["Blue", "White", "Red", "Black", "Grey"]
    assert catalog.column("title").to_pylist()[2] == "Lost Photo Shirt"
    assert [(i.row, i.product_id, i.reason) for i in report.issues] == [
        (2, "m1", MISSING_FILE), (3, "t1", MISSING_FILE)]
    assert report.images_dropped == 2


def test_import_folder_csv_manifest(tmp_path, jpegs):
    rows = write_folder(tmp_path, jpegs)
    manifest = tmp_path / "img" / "products.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["product_id", "title", "image", "colour"])
        writer.writeheader()
        writer.writerows(rows)
    catalog, judgments, report = import_folder(manifest)
    assert judgments is None
    check_folder_import(catalog, report, jpegs)


def test_import_folder_jsonl_manifest_with_image_dir(tmp_path, jpegs):
    rows = write_folder(tmp_path, jpegs)
    manifest = tmp_path / "products.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" +
                        "\n".join(json.dumps(r) for r in rows[2:]) + "\n")
    catalog, judgments, report = import_folder(manifest, image_dir=tmp_path / "img")
    assert judgments is None
    check_folder_import(catalog, report, jpegs)


def test_import_folder_absolute_path_outside_folder_is_missing(tmp_path, jpegs):
    rows = write_folder(tmp_path, jpegs)
    manifest = tmp_path / "img" / "m.jsonl"
    manifest.write_text(json.dumps({**rows[0], "image": str(tmp_path / "x.jpg")}) + "\n")
    catalog, _, report = import_folder(manifest)
    assert catalog.column("image").to_pylist() == [None]
    assert [i.reason for i in report.issues] == [MISSING_FILE]


def test_import_folder_custom_image_column(tmp_path, jpegs):
    pid, data = next(iter(jpegs.items()))
    (tmp_path / "a.jpg").write_bytes(data)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"product_id": 5, "title": "Numbered", "file": "a.jpg"}) + "\n")
    catalog, _, report = import_folder(manifest, image_column="file")
    assert catalog.to_pylist() == [{"product_id": "5", "title": "Numbered", "image": data}]
    assert report.issues == []


def test_import_folder_malformed_jsonl_names_line(tmp_path):
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text('{"product_id": "a", "title": "ok"}\n\n{"product_id": "b", "title": \n')
    with pytest.raises(CatalogError, match=r"bad\.jsonl:3 is not valid JSON"):
        import_folder(manifest)


def test_import_folder_jsonl_line_must_be_object(tmp_path):
    manifest = tmp_path / "list.jsonl"
    manifest.write_text('{"product_id": "a", "title": "ok"}\n["b", "c"]\n')
    with pytest.raises(CatalogError, match=r"list\.jsonl:2 must be a JSON object"):
        import_folder(manifest)


def test_import_folder_manifest_errors(tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        import_folder(tmp_path / "absent.csv")
    (tmp_path / "m.txt").write_text("product_id,title\na,b\n")
    with pytest.raises(CatalogError, match="must be a .csv or .jsonl file"):
        import_folder(tmp_path / "m.txt")
    (tmp_path / "empty.csv").write_text("product_id,title\n")
    with pytest.raises(CatalogError, match="has no rows"):
        import_folder(tmp_path / "empty.csv")
    (tmp_path / "notitle.csv").write_text("product_id,name\na,b\n")
    with pytest.raises(CatalogError, match="lacks the 'title' field; it has \\['name', 'product_id'\\]"):
        import_folder(tmp_path / "notitle.csv")


def test_import_folder_csv_row_with_extra_field(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("product_id,title\na,Red, Shirt\n")
    with pytest.raises(CatalogError):
        import_folder(manifest)


def test_import_folder_missing_file_on_dropped_row_not_reported_as_kept(tmp_path):
    manifest = tmp_path / "d.jsonl"
    manifest.write_text('{"product_id": "a", "title": "ok"}\n'
                        '{"product_id": "a", "title": "dup", "image": "gone.jpg"}\n')
    catalog, _, report = import_folder(manifest)
    assert catalog.num_rows == 1
    assert reasons_by_row(report) == {1: {DUPLICATE}}
    assert report.images_dropped == 0


# --- import_homedepot ------------------------------------------------------------------------------


def test_import_homedepot_sample(tmp_path):
    shutil.copy(SAMPLE / "homedepot_products.parquet", tmp_path / "products.parquet")
    shutil.copy(SAMPLE / "homedepot_judgments.parquet", tmp_path / "judgments.parquet")
    raw_products = pq.read_table(tmp_path / "products.parquet")
    raw_judgments = pq.read_table(tmp_path / "judgments.parquet")
    catalog, judgments, report = import_homedepot(tmp_path)
    assert "image" not in raw_products.schema.names
    assert catalog.num_rows == raw_products.num_rows == report.rows_out == report.rows_in == 1889
    assert catalog.schema.names == ["product_id", "title", "image"]
    assert catalog.column("image").null_count == catalog.num_rows
    assert judgments.num_rows == raw_judgments.num_rows == 1915
    assert set(judgments.column("product_id").to_pylist()) <= set(catalog.column("product_id").to_pylist())
    assert judgments.schema == pa.schema([("query", pa.string()), ("product_id", pa.string()),
                                          ("label", pa.float32())])
    labels = judgments.column("label").to_pylist()
    assert min(labels) >= 1.0 and max(labels) <= 3.0
    assert report.issues == []


def test_import_homedepot_drops_judgments_of_unknown_products(tmp_path):
    shutil.copy(SAMPLE / "homedepot_products.parquet", tmp_path / "products.parquet")
    raw = pq.read_table(SAMPLE / "homedepot_judgments.parquet")
    extra = pa.table({"query": ["cordless drill", "  "],
                      "product_id": ["no-such-product", raw["product_id"][0]],
                      "label": pa.array([3.0, 2.0], pa.float32())}).cast(raw.schema)
    write_table(pa.concat_tables([raw, extra]), tmp_path / "judgments.parquet")
    catalog, judgments, report = import_homedepot(tmp_path)
    assert judgments.num_rows == raw.num_rows
    assert "no-such-product" not in judgments.column("product_id").to_pylist()
    assert [(i.row, i.reason) for i in report.issues] == [
        (raw.num_rows, "judgments: product_id not in catalog"), (raw.num_rows + 1, "judgments: missing or empty query")]


def test_import_homedepot_missing_files(tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        import_homedepot(tmp_path)


# --- import_myntra ---------------------------------------------------------------------------------


def test_import_myntra_sample():
    catalog, judgments, report = import_myntra(MYNTRA_SAMPLE)
    assert judgments is None
    assert report.rows_in == report.rows_out == catalog.num_rows == 2000
    assert report.issues == []
    assert report.summary() == "2000 rows in, 2000 kept, no issues"
    assert catalog.schema.names == ["product_id", "title", "image", "gender", "masterCategory", "subCategory",
                                    "articleType", "baseColour", "season", "year", "usage"]
    assert catalog.column("image").null_count == 0
    first = catalog.slice(0, 1).to_pylist()[0]
    assert first["product_id"] == "10014"
    assert first["title"] == "Nike Unisex Feather lite Blue Caps"
    assert first["articleType"] == "Caps"
    assert first["image"].startswith(b"\xff\xd8\xff")
    assert IMPORTERS["myntra"] is import_myntra


def test_import_myntra_full_shared_data():
    src = shared_data() / "myntra"
    assert len(sorted(src.glob("products-*.parquet"))) == 8
    catalog, _, report = import_myntra(src)
    dropped = sum(n for reason, n in report.counts.items() if reason in DROPPING)
    assert report.rows_in == 44441
    assert report.rows_out == catalog.num_rows
    assert report.rows_out + dropped == report.rows_in
    # the full set has 7 products with a null title (ids below); every other row is kept
    assert report.counts == {EMPTY_TITLE: 7}
    assert report.rows_out == 44434
    assert sorted(i.product_id for i in report.issues) == ["30991", "30992", "42863", "42878", "43119",
                                                           "45687", "45698"]
    assert catalog.column("image").null_count == 0


def test_read_table_errors(tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        read_table(tmp_path / "nothing")
    with pytest.raises(CatalogError, match="holds no \\*.parquet files"):
        read_table(tmp_path)
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(CatalogError, match="is not a readable Parquet file"):
        read_table(tmp_path / "broken.parquet")
