"""Importers: Myntra and Home Depot Parquet from ../shared/data, and a CSV/JSONL manifest + image folder.

Each importer returns ``(catalog, judgments or None, report)`` in the project's contract (see ``schema``),
so everything downstream reads one format.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pyarrow as pa

from vitrine.catalog.io import read_table
from vitrine.catalog.schema import RowIssue, ValidationReport, clean_catalog, clean_judgments
from vitrine.errors import CatalogError

log = logging.getLogger(__name__)

MYNTRA_ATTRIBUTES = ("gender", "masterCategory", "subCategory", "articleType", "baseColour", "season",
                     "year", "usage")


def import_myntra(src: str | Path) -> tuple[pa.Table, None, ValidationReport]:
    """Myntra fashion products (``products-*.parquet``): already title + image + attributes."""
    table = read_table(src)
    catalog, report = clean_catalog(table, source=str(src))
    return catalog, None, report


def import_homedepot(src: str | Path) -> tuple[pa.Table, pa.Table, ValidationReport]:
    """Home Depot products (text only, no image column) and its human-judged queries."""
    src = Path(src)
    products = read_table(src / "products.parquet")
    if "image" not in products.schema.names:
        products = products.append_column("image", pa.nulls(products.num_rows, pa.binary()))
    catalog, report = clean_catalog(products, source=str(src / "products.parquet"))
    judgments, jreport = clean_judgments(
        read_table(src / "judgments.parquet"), set(catalog.column("product_id").to_pylist()),
        source=str(src / "judgments.parquet"),
    )
    report.issues.extend(RowIssue(i.row, i.product_id, f"judgments: {i.reason}") for i in jreport.issues)
    return catalog, judgments, report


def _read_manifest(path: Path) -> list[dict]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            rows = list(csv.DictReader(fh))
        for n, row in enumerate(rows, 2):
            if None in row:
                raise CatalogError(f"{path}:{n} has more fields than the header; quote titles that contain commas")
        return rows
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        with path.open(encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CatalogError(f"{path}:{n} is not valid JSON ({exc.msg}); fix or remove that line") from None
                if not isinstance(row, dict):
                    raise CatalogError(f"{path}:{n} must be a JSON object with product_id and title")
                rows.append(row)
        return rows
    raise CatalogError(f"manifest '{path}' must be a .csv or .jsonl file")


def import_folder(manifest: str | Path, image_dir: str | Path | None = None,
                  image_column: str = "image") -> tuple[pa.Table, None, ValidationReport]:
    """A CSV/JSONL manifest (``product_id``, ``title``, optional image file name, attributes) + an image folder.

    Image paths are resolved against ``image_dir`` (default: the manifest's folder); a missing or
    unreadable file leaves the product without an image and is reported.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        what = "is a folder" if manifest.is_dir() else "does not exist"
        raise CatalogError(f"manifest '{manifest}' {what}; pass a CSV or JSONL file listing product_id, title and "
                           "image path per row")
    base = Path(image_dir) if image_dir else manifest.parent
    rows = _read_manifest(manifest)
    if not rows:
        raise CatalogError(f"manifest '{manifest}' has no rows")
    names = sorted({k for r in rows for k in r if k != image_column})
    for required in ("product_id", "title"):
        if required not in names:
            raise CatalogError(f"manifest '{manifest}' lacks the '{required}' field; it has {names}")
    images: list[bytes | None] = []
    missing_files: list[tuple[int, str]] = []
    for n, r in enumerate(rows):
        rel = r.get(image_column)
        if not rel:
            images.append(None)
            continue
        path = (base / str(rel)).resolve()
        if not path.is_relative_to(base.resolve()) or not path.is_file():
            images.append(None)
            missing_files.append((n, str(r.get("product_id"))))
            continue
        images.append(path.read_bytes())
    columns = {k: pa.array([None if r.get(k) is None else str(r.get(k)) for r in rows], pa.string())
               for k in names}
    columns["image"] = pa.array(images, pa.binary())
    catalog, report = clean_catalog(pa.table(columns), source=str(manifest))
    dropped = {i.row for i in report.issues if "kept without image" not in i.reason}
    for n, pid in missing_files:
        if n in dropped:  # the row itself was dropped (and reported) by validation
            continue
        reason = "image file missing or outside the image folder (product kept without image)"
        report.issues.append(RowIssue(n, pid, reason))
        report.images_dropped += 1
    return catalog, None, report


IMPORTERS = {"myntra": import_myntra, "homedepot": import_homedepot, "folder": import_folder}
