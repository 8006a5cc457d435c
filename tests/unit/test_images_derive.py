"""Image decoding (letterboxing, bad bytes), derived query logs, and the CLI's import and error paths."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vitrine.catalog.derive import derive_queries
from vitrine.catalog.images import MAX_PIXELS, decode_batch, decode_image
from vitrine.cli import main

SAMPLE = Path(__file__).resolve().parents[2] / "platform" / "vitrine" / "sample"
MYNTRA_SAMPLE = SAMPLE / "myntra_sample.parquet"


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    """JPEG bytes of the first three products of the bundled Myntra sample (60x80 portrait thumbnails)."""
    images = pq.read_table(MYNTRA_SAMPLE, columns=["image"]).slice(0, 3).column("image").to_pylist()
    for data in images:
        with Image.open(io.BytesIO(data)) as img:
            assert (img.format, img.size) == ("JPEG", (60, 80))
    return images


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


# --- decode_image ----------------------------------------------------------------------------------


def test_decode_real_jpeg_is_letterboxed_with_white_sides(jpegs):
    for data in jpegs:
        arr = decode_image(data, 96)
        assert arr.shape == (96, 96, 3)
        assert arr.dtype == np.uint8
        # 60x80 scaled to 72x96: 12 white columns on each side, none above or below
        assert (arr[:, :12] == 255).all()
        assert (arr[:, -12:] == 255).all()
        assert arr[:, 12:84].min() < 200  # the product photo itself is not blank


def test_decode_letterbox_geometry_exact():
    red = encode(Image.new("RGB", (60, 80), (200, 0, 0)), "PNG")
    arr = decode_image(red, 96)
    assert arr.shape == (96, 96, 3)
    assert (arr[:, :12] == 255).all() and (arr[:, 84:] == 255).all()
    assert (arr[:, 12:84] == np.array([200, 0, 0], dtype=np.uint8)).all()
    wide = decode_image(encode(Image.new("RGB", (80, 40), (0, 0, 100)), "PNG"), 32)
    # 80x40 landscape -> 32x16, white bands of 8 rows above and below
    assert (wide[:8] == 255).all() and (wide[24:] == 255).all()
    assert (wide[8:24] == np.array([0, 0, 100], dtype=np.uint8)).all()


def test_decode_other_formats_and_modes():
    rgba = Image.new("RGBA", (10, 10), (0, 128, 0, 255))
    gray = Image.new("L", (10, 10), 50)
    for img, fmt, colour in [(rgba, "PNG", (0, 128, 0)), (gray, "GIF", (50, 50, 50)),
                             (gray.convert("RGB"), "WEBP", None)]:
        arr = decode_image(encode(img, fmt), 16)
        assert arr.shape == (16, 16, 3) and arr.dtype == np.uint8
        if colour is not None:
            assert (arr == np.array(colour, dtype=np.uint8)).all()


def test_decode_other_sizes(jpegs):
    assert decode_image(jpegs[0], 224).shape == (224, 224, 3)
    assert decode_image(jpegs[0], 8).shape == (8, 8, 3)


def test_decode_bad_bytes_return_none(jpegs):
    rng = np.random.default_rng(0)
    corrupt = b"\xff\xd8\xff\xe0" + rng.bytes(2000)
    truncated = jpegs[0][: len(jpegs[0]) // 2]
    assert decode_image(corrupt, 96) is None
    assert decode_image(truncated, 96) is None
    assert decode_image(rng.bytes(4096), 96) is None
    assert decode_image(b"not an image at all", 96) is None
    assert decode_image(b"", 96) is None
    assert decode_image(None, 96) is None


def test_decode_pixel_limit(jpegs, monkeypatch):
    """Images above MAX_PIXELS are refused: lower the limit under a 60x80 thumbnail and it is refused."""
    monkeypatch.setattr("vitrine.catalog.images.MAX_PIXELS", 60 * 80 - 1)
    assert decode_image(jpegs[0], 96) is None
    monkeypatch.setattr("vitrine.catalog.images.MAX_PIXELS", 60 * 80)
    assert decode_image(jpegs[0], 96).shape == (96, 96, 3)


def test_decode_refuses_huge_images_before_decoding():
    """A PNG whose header claims 9000x9000 pixels (> MAX_PIXELS) is refused without decoding it."""
    png = encode(Image.new("RGB", (1, 1)), "PNG")
    ihdr = png.index(b"IHDR")
    fields = struct.pack(">II", 9000, 9000) + png[ihdr + 12: ihdr + 17]
    assert 9000 * 9000 > MAX_PIXELS
    patched = (png[: ihdr + 4] + fields + struct.pack(">I", zlib.crc32(b"IHDR" + fields))
               + png[ihdr + 21:])
    with Image.open(io.BytesIO(patched)) as img:
        assert img.size == (9000, 9000)
    assert decode_image(patched, 96) is None


# --- decode_batch ----------------------------------------------------------------------------------


def test_decode_batch_counts_only_present_bad_images(jpegs):
    corrupt = b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50
    batch = [jpegs[0], corrupt, None, jpegs[1], np.random.default_rng(1).bytes(512), b""]
    out, has, failed = decode_batch(batch, 96)
    assert out.shape == (6, 96, 96, 3)
    assert out.dtype == np.uint8
    assert has.tolist() == [True, False, False, True, False, False]
    assert failed == 2  # the corrupt and random bytes; None and empty bytes mean "no image"
    np.testing.assert_array_equal(out[0], decode_image(jpegs[0], 96))
    np.testing.assert_array_equal(out[3], decode_image(jpegs[1], 96))
    for i in (1, 2, 4, 5):
        assert (out[i] == 255).all()


def test_decode_batch_empty_and_all_missing():
    out, has, failed = decode_batch([], 32)
    assert out.shape == (0, 32, 32, 3) and has.shape == (0,) and failed == 0
    out, has, failed = decode_batch([None, None], 32)
    assert has.tolist() == [False, False] and failed == 0 and (out == 255).all()


# --- derive_queries --------------------------------------------------------------------------------


def three_products() -> pa.Table:
    return pa.table({
        "product_id": ["a", "b", "c"],
        "title": ["Nike Men Blue Running Shoes", "Plain Red T-Shirt", "Acme Cordless-Power Drill Kit"],
        "gender": ["Men", None, None],
        "baseColour": ["Navy Blue", "Red", None],
        "articleType": ["Sports Shoes", "T-Shirts", None],
        "usage": ["Sports", "", None],
        "season": ["Fall", "Summer", None],  # not used by any template
    })


A_ALL = {"navy blue sports shoes", "sports shoes for men", "men navy blue sports shoes",
         "sports sports shoes", "sports shoes", "navy blue sports shoes men"}


def queries_of(table: pa.Table, pid: str) -> list[str]:
    return [q for q, p in zip(table.column("query").to_pylist(), table.column("product_id").to_pylist(),
                              strict=True) if p == pid]


def test_derive_queries_counts_and_content():
    out = derive_queries(three_products(), per_product=3, seed=0)
    assert out.schema == pa.schema([("query", pa.string()), ("product_id", pa.string()),
                                    ("label", pa.float32()), ("attrs", pa.string())])
    # a: all 6 templates usable -> 3; b: only colour+article templates (2) -> 2; c: title fallback -> 1
    assert out.column("product_id").to_pylist() == ["a"] * 3 + ["b"] * 2 + ["c"]
    a, b, c = queries_of(out, "a"), queries_of(out, "b"), queries_of(out, "c")
    assert len(set(a)) == 3 and set(a) <= A_ALL
    assert all("sports shoes" in q for q in a)
    assert sorted(b) == ["red t shirts", "t shirts"]
    assert c == ["acme cordless power"]
    for q in out.column("query").to_pylist():
        assert q == q.lower()
        assert q == " ".join(q.split()) and q
    assert out.column("label").to_pylist() == [1.0] * 6
    attrs = dict(zip(out.column("query").to_pylist(), out.column("attrs").to_pylist(), strict=True))
    assert attrs["red t shirts"] == "baseColour=Red|articleType=T-Shirts"
    assert attrs["t shirts"] == "articleType=T-Shirts"
    assert attrs["acme cordless power"] == ""


def test_derive_queries_all_templates_when_per_product_large():
    out = derive_queries(three_products(), per_product=10, seed=3)
    assert set(queries_of(out, "a")) == A_ALL
    assert len(queries_of(out, "a")) == 6
    assert sorted(queries_of(out, "b")) == ["red t shirts", "t shirts"]
    assert queries_of(out, "c") == ["acme cordless power"]


def test_derive_queries_one_per_product():
    out = derive_queries(three_products(), per_product=1, seed=0)
    assert out.column("product_id").to_pylist() == ["a", "b", "c"]


def test_derive_queries_deterministic_for_fixed_seed():
    table = three_products()
    first = derive_queries(table, per_product=3, seed=7)
    assert derive_queries(table, per_product=3, seed=7).equals(first)
    # different seeds pick different phrasings for product a (20 ordered choices of 3 of 6 templates)
    picks = {tuple(queries_of(derive_queries(table, per_product=3, seed=s), "a")) for s in range(10)}
    assert len(picks) > 1


def test_derive_queries_catalog_without_attribute_columns():
    table = pa.table({"product_id": ["h1", "h2"], "title": ["DEWALT 20V Max Drill", "Hammer"]})
    out = derive_queries(table)
    assert out.column("query").to_pylist() == ["dewalt 20v max", "hammer"]
    assert out.column("product_id").to_pylist() == ["h1", "h2"]


def test_derive_queries_on_sample_mentions_attributes():
    catalog = pq.read_table(MYNTRA_SAMPLE, columns=["product_id", "title", "gender", "baseColour",
                                                    "articleType", "usage"]).slice(0, 50)
    out = derive_queries(catalog, per_product=2, seed=0)
    assert out.num_rows == 100
    article = dict(zip(catalog.column("product_id").to_pylist(), catalog.column("articleType").to_pylist(),
                       strict=True))
    for q, pid in zip(out.column("query").to_pylist(), out.column("product_id").to_pylist(), strict=True):
        assert article[pid].lower().replace("-", " ") in q


# --- CLI ---------------------------------------------------------------------------------------------


def test_cli_import_folder_writes_catalog(tmp_path, jpegs, capsys):
    (tmp_path / "shirt.jpg").write_bytes(jpegs[0])
    manifest = tmp_path / "products.jsonl"
    manifest.write_text(json.dumps({"product_id": "s1", "title": "Blue Shirt", "image": "shirt.jpg",
                                    "colour": "Blue"}) + "\n"
                        + json.dumps({"product_id": "s2", "title": "Bare Shirt"}) + "\n")
    out = tmp_path / "out"
    assert main(["import", "folder", str(manifest), "--out", str(out)]) == 0
    catalog = pq.read_table(out / "catalog.parquet")
    assert catalog.to_pylist() == [
        {"product_id": "s1", "title": "Blue Shirt", "image": jpegs[0], "colour": "Blue"},
        {"product_id": "s2", "title": "Bare Shirt", "image": None, "colour": None},
    ]
    assert not (out / "judgments.parquet").exists()
    stdout = capsys.readouterr().out
    assert "catalog: 2 rows in, 2 kept, no issues" in stdout
    assert f"wrote {out / 'catalog.parquet'}" in stdout


def test_cli_import_homedepot_writes_judgments(tmp_path, capsys):
    src = tmp_path / "hd"
    src.mkdir()
    shutil.copy(SAMPLE / "homedepot_products.parquet", src / "products.parquet")
    shutil.copy(SAMPLE / "homedepot_judgments.parquet", src / "judgments.parquet")
    out = tmp_path / "out"
    assert main(["import", "homedepot", str(src), "--out", str(out)]) == 0
    assert pq.read_table(out / "catalog.parquet").num_rows == 1889
    assert pq.read_table(out / "judgments.parquet").num_rows == 1915
    assert f"and {out / 'judgments.parquet'}" in capsys.readouterr().out


def test_cli_import_bad_manifest_returns_2(tmp_path, capsys):
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text("{oops\n")
    assert main(["import", "folder", str(manifest), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vitrine import: error: ")
    assert "bad.jsonl:1 is not valid JSON" in err
    assert not (tmp_path / "out").exists()


def test_cli_unknown_override_returns_2(capsys):
    assert main(["pretrain", "--train.nope=1"]) == 2
    err = capsys.readouterr().err
    assert "vitrine pretrain: error: unknown config key 'train.nope'" in err
    assert "Traceback" not in err


def test_cli_missing_config_file_returns_2(capsys):
    assert main(["pretrain", "--config", "/nonexistent.yaml"]) == 2
    err = capsys.readouterr().err
    assert "vitrine pretrain: error: config file '/nonexistent.yaml' does not exist" in err


def test_cli_ill_typed_override_returns_2(capsys):
    assert main(["index", "--index.embed_batch_size=lots"]) == 2
    assert "config key 'index.embed_batch_size' must be an integer, got 'lots'" in capsys.readouterr().err
