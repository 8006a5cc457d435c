"""The three importers: a folder of images with a CSV / JSONL manifest, Home Depot and Myntra."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vitrine.catalog.importers import IMPORTERS, import_folder, import_homedepot, import_myntra
from vitrine.catalog.io import write_table
from vitrine.errors import CatalogError

SAMPLE = Path(__file__).resolve().parents[2] / "platform" / "vitrine" / "sample"
MYNTRA_SAMPLE = SAMPLE / "myntra_sample.parquet"

DUPLICATE = "duplicate product_id (first kept)"
EMPTY_TITLE = "missing or empty title"
MISSING_FILE = "image file missing or outside the image folder (product kept without image)"


# --- import_folder ---------------------------------------------------------------------------------


def write_folder(tmp_path: Path, sample_jpegs: dict[str, bytes]) -> list[dict]:
    """Two real JPEGs in tmp_path/img, manifest rows pointing at them, a missing file and a traversal."""
    (tmp_path / "img").mkdir()
    ids = list(sample_jpegs)
    for pid in ids:
        (tmp_path / "img" / f"{pid}.jpg").write_bytes(sample_jpegs[pid])
    (tmp_path / "x.jpg").write_bytes(sample_jpegs[ids[0]])  # exists, but outside the image folder
    return [
        {"product_id": ids[0], "title": "Nike Blue Cap", "image": f"{ids[0]}.jpg", "colour": "Blue"},
        {"product_id": ids[1], "title": "Nike White Shorts", "image": f"{ids[1]}.jpg", "colour": "White"},
        {"product_id": "m1", "title": "Lost Photo Shirt", "image": "nope.jpg", "colour": "Red"},
        {"product_id": "t1", "title": "Sneaky Traversal Tee", "image": "../x.jpg", "colour": "Black"},
        {"product_id": "n1", "title": "No Image Socks", "image": "", "colour": "Grey"},
    ]


def check_folder_import(catalog: pa.Table, report, sample_jpegs: dict[str, bytes]) -> None:
    ids = list(sample_jpegs)
    assert report.rows_in == 5
    assert report.rows_out == 5
    assert catalog.column("product_id").to_pylist() == [ids[0], ids[1], "m1", "t1", "n1"]
    assert catalog.column("image").to_pylist() == [sample_jpegs[ids[0]], sample_jpegs[ids[1]], None, None, None]
    assert catalog.column("colour").to_pylist() == ["Blue", "White", "Red", "Black", "Grey"]
    assert catalog.column("title").to_pylist()[2] == "Lost Photo Shirt"
    assert [(i.row, i.product_id, i.reason) for i in report.issues] == [
        (2, "m1", MISSING_FILE), (3, "t1", MISSING_FILE)]
    assert report.images_dropped == 2


def test_import_folder_csv_manifest(tmp_path, sample_jpegs):
    rows = write_folder(tmp_path, sample_jpegs)
    manifest = tmp_path / "img" / "products.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["product_id", "title", "image", "colour"])
        writer.writeheader()
        writer.writerows(rows)
    catalog, judgments, report = import_folder(manifest)
    assert judgments is None
    check_folder_import(catalog, report, sample_jpegs)


def test_import_folder_jsonl_manifest_with_image_dir(tmp_path, sample_jpegs):
    rows = write_folder(tmp_path, sample_jpegs)
    manifest = tmp_path / "products.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" +
                        "\n".join(json.dumps(r) for r in rows[2:]) + "\n")
    catalog, judgments, report = import_folder(manifest, image_dir=tmp_path / "img")
    assert judgments is None
    check_folder_import(catalog, report, sample_jpegs)


def test_import_folder_absolute_path_outside_folder_is_missing(tmp_path, sample_jpegs):
    rows = write_folder(tmp_path, sample_jpegs)
    manifest = tmp_path / "img" / "m.jsonl"
    manifest.write_text(json.dumps({**rows[0], "image": str(tmp_path / "x.jpg")}) + "\n")
    catalog, _, report = import_folder(manifest)
    assert catalog.column("image").to_pylist() == [None]
    assert [i.reason for i in report.issues] == [MISSING_FILE]


def test_import_folder_custom_image_column(tmp_path, sample_jpegs):
    pid, data = next(iter(sample_jpegs.items()))
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
    assert [(i.row, i.reason) for i in report.issues] == [(1, DUPLICATE)]
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


def test_import_myntra_full_shared_data(shared_data):
    src = shared_data / "myntra"
    assert len(sorted(src.glob("products-*.parquet"))) == 8
    catalog, _, report = import_myntra(src)
    assert report.rows_in == 44441
    # the full set has 7 products with a null title (ids below); every other row is kept
    assert report.counts == {EMPTY_TITLE: 7}
    assert report.rows_out == catalog.num_rows == 44434
    assert sorted(i.product_id for i in report.issues) == ["30991", "30992", "42863", "42878", "43119",
                                                           "45687", "45698"]
    assert catalog.column("image").null_count == 0
