"""Each bad-input class of the catalog contract, injected into a real Parquet file: reported with row ids,
skipped and counted (row faults) or refused with a clear ``CatalogError`` (file faults); nothing raises a raw
traceback and no product disappears without being counted. (Cases already covered row by row in
``test_catalog.py`` are combined here with the ones it lacks: 50 MB and corrupt images, non-UTF-8 bytes in a
string column, wrong id types, binary-typed text reaching the Ray Data featurizer.)"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vitrine.catalog.images import MAX_IMAGE_BYTES, decode_batch, decode_image
from vitrine.catalog.io import read_table
from vitrine.catalog.schema import clean_catalog, image_problem
from vitrine.errors import CatalogError

SAMPLE = Path(__file__).resolve().parents[2] / "platform" / "vitrine" / "sample" / "myntra_sample.parquet"
DROPPED = {"missing or non-UTF-8 product_id", "duplicate product_id (first kept)", "missing or empty title",
           "title is not valid UTF-8"}


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return pq.read_table(SAMPLE, columns=["image"]).column("image")[0].as_py()


def _catalog(jpeg: bytes) -> pa.Table:
    """Row per class: ok, truncated JPEG, non-image, 50 MB image, empty title, null title, non-UTF-8 title,
    duplicate id, missing id, non-UTF-8 id, ok."""
    rows = [
        (b"ok-1", b"Red Cotton Shirt", jpeg),
        (b"corrupt", b"Blue Shirt", jpeg[: len(jpeg) // 3]),
        (b"pdf", b"Green Shirt", b"%PDF-1.4 not a picture"),
        (b"huge", b"Black Shirt", jpeg + b"\0" * (50 * 1024 * 1024)),
        (b"empty-title", b"   ", jpeg),
        (b"null-title", None, jpeg),
        (b"latin1-title", "Caf\xe9 Shirt".encode("latin-1"), jpeg),
        (b"ok-1", b"Duplicate Of Row Zero", None),
        (None, b"Orphan Shirt", None),
        (b"\xff\xfeid", b"Bad Id Shirt", None),
        (b"ok-2", b"White Shirt", None),
    ]
    ids, titles, images = zip(*rows, strict=True)
    return pa.table({"product_id": pa.array(ids, pa.binary()), "title": pa.array(titles, pa.binary()),
                     "image": pa.array(images, pa.binary())})


def test_every_row_class_reported_with_row_and_id(tmp_path, jpeg):
    pq.write_table(_catalog(jpeg), tmp_path / "c.parquet")
    clean, report = clean_catalog(read_table(tmp_path / "c.parquet"), source="c.parquet")
    by_row = {i.row: (i.product_id, i.reason) for i in report.issues}
    assert by_row == {
        2: ("pdf", "image bytes are not JPEG/PNG/WebP/GIF (product kept without image)"),
        3: ("huge", "image larger than 20 MB (product kept without image)"),
        4: ("empty-title", "missing or empty title"),
        5: ("null-title", "missing or empty title"),
        6: ("latin1-title", "title is not valid UTF-8"),
        7: ("ok-1", "duplicate product_id (first kept)"),
        8: (None, "missing or non-UTF-8 product_id"),
        9: (None, "missing or non-UTF-8 product_id"),
    }
    assert clean.column("product_id").to_pylist() == ["ok-1", "corrupt", "pdf", "huge", "ok-2"]
    assert clean.column("title")[0].as_py() == "Red Cotton Shirt"  # the first of the duplicates is kept
    # nothing silent: every input row is either kept or named as dropped
    dropped = sum(n for reason, n in report.counts.items() if reason in DROPPED)
    assert report.rows_in == 11 and report.rows_out + dropped == report.rows_in
    assert report.images_dropped == 2
    assert "row 3 ('huge'): image larger than 20 MB" in report.summary()


def test_corrupt_and_oversized_images_are_counted_where_decoded(jpeg):
    truncated = jpeg[: len(jpeg) // 3]
    huge = jpeg + b"\0" * (50 * 1024 * 1024)
    assert image_problem(truncated) is None  # passes the cheap check (valid magic) ...
    assert decode_image(truncated, 64) is None  # ... and fails at decode, where it is counted
    assert len(huge) > MAX_IMAGE_BYTES and decode_image(huge, 64) is None
    assert decode_image(jpeg, 64).shape == (64, 64, 3)
    _, has, failed = decode_batch([jpeg, truncated, huge, b"%PDF", None], 32)
    assert has.tolist() == [True, False, False, False, False] and failed == 3


def test_non_utf8_bytes_in_a_string_column_refuse_the_file(tmp_path):
    titles = pa.array([b"fine", b"Caf\xe9", b"also fine", b"\xff"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"product_id": ["a", "b", "c", "d"], "title": titles}), tmp_path / "c.parquet")
    with pytest.raises(CatalogError, match=r"column 'title' of 'c.parquet' is typed string but 2 row\(s\) hold "
                                           r"bytes that are not UTF-8 \(rows \[1, 3\]\)"):
        clean_catalog(read_table(tmp_path / "c.parquet"), source="c.parquet")


@pytest.mark.parametrize(("column", "values", "expected"), [
    ("product_id", pa.array([1.5, 2.5]), "column 'product_id' of 'shop' has type double; it must be a string"),
    ("title", pa.array([1, 2]), "column 'title' of 'shop' has type int64; it must be a string"),
    ("image", pa.array(["a.jpg", "b.jpg"]), "column 'image' of 'shop' has type string; it must hold encoded"),
])
def test_wrong_column_types_refuse_the_file(column, values, expected):
    cols = {"product_id": pa.array(["a", "b"]), "title": pa.array(["x", "y"]), column: values}
    with pytest.raises(CatalogError, match=expected.replace("(", r"\(")):
        clean_catalog(pa.table(cols), source="shop")


def test_missing_required_columns_name_both(tmp_path):
    with pytest.raises(CatalogError, match=r"lacks required column\(s\) \['product_id', 'title'\]; it has "
                                           r"\['id', 'name'\]"):
        clean_catalog(pa.table({"id": ["a"], "name": ["b"]}), source="shop")


def test_binary_and_integer_text_reach_the_model_as_text():
    """Binary-typed titles/ids (valid per the contract) are tokenized as text, not as their bytes repr."""
    from vitrine.features import Featurizer, PairBuilder, as_text
    from vitrine.model.encoders import resolve_text_encoder

    assert [as_text(b"Caf\xc3\xa9"), as_text(7), as_text("x"), as_text(b"\xff")] == ["Café", "7", "x", "\ufffd"]
    f = Featurizer(str(resolve_text_encoder("minilm")), 32, 8, 8)
    as_bytes = f({"product_id": [b"p1"], "title": [b"red shirt"], "image": [None]})
    as_str = f({"product_id": ["p1"], "title": ["red shirt"], "image": [None]})
    assert as_bytes["product_id"].tolist() == ["p1"]
    assert (as_bytes["t_ids"] == as_str["t_ids"]).all()
    queries = pa.table({"query": ["shirt", "cap"], "product_id": ["p1", "7"], "label": [1.0, 1.0]})
    batch = pa.table({"product_id": pa.array([b"p1", b"p2"], pa.binary()), "title": pa.array([b"a", b"b"])})
    assert PairBuilder(queries)(batch).column("query").to_pylist() == ["shirt"]
    ints = pa.table({"product_id": pa.array([7, 8]), "title": ["cap", "hat"]})
    assert PairBuilder(queries)(ints).column("query").to_pylist() == ["cap"]
