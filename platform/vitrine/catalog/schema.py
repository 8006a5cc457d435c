"""The catalog and judgments contracts, and validation that names every bad row.

Catalog (Parquet): ``product_id`` string, unique, non-empty; ``title`` string, non-empty; ``image`` encoded
JPEG/PNG/WebP/GIF bytes or null (products without an image are normal); any further columns are attributes.
Judgments / query log (Parquet): ``query`` string, ``product_id`` string, ``label`` float (> 0 = relevant).

Schema errors (a missing column, a column of the wrong type, a string column holding bytes that are not
UTF-8, which breaks the file's own type) refuse the whole file with ``CatalogError``. Row errors (missing or
empty title, duplicate id, non-UTF-8 bytes in a binary text column, bad image bytes) are reported with row
numbers and ids; bad rows are dropped and counted, a product whose only fault is its image keeps its title
and loses the image.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from vitrine.catalog.images import MAX_IMAGE_BYTES
from vitrine.errors import CatalogError

CATALOG_REQUIRED = ("product_id", "title")
JUDGMENTS_REQUIRED = ("query", "product_id", "label")
NON_UTF8 = "\x00non-utf8"  # placeholder for undecodable bytes (never a valid, printable value)
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"RIFF")
MAX_REPORTED = 20


@dataclass
class RowIssue:
    """One bad row: its position in the input, its id (if readable) and what is wrong."""

    row: int
    product_id: str | None
    reason: str


@dataclass
class ValidationReport:
    """What validation found: rows in, rows kept, and each issue by row."""

    rows_in: int = 0
    rows_out: int = 0
    issues: list[RowIssue] = field(default_factory=list)
    images_dropped: int = 0

    @property
    def counts(self) -> dict[str, int]:
        """Issue counts by reason."""
        return dict(Counter(i.reason for i in self.issues))

    def summary(self) -> str:
        """One human line plus the first few bad rows."""
        head = f"{self.rows_in} rows in, {self.rows_out} kept"
        if not self.issues:
            return head + ", no issues"
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))
        shown = "; ".join(f"row {i.row} ({i.product_id!r}): {i.reason}" for i in self.issues[:MAX_REPORTED])
        more = f" (+{len(self.issues) - MAX_REPORTED} more)" if len(self.issues) > MAX_REPORTED else ""
        return f"{head}; issues: {parts}. {shown}{more}"


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def check_columns(schema: pa.Schema, required: tuple[str, ...], what: str, source: str) -> None:
    """Raise CatalogError if a required column is missing."""
    missing = [c for c in required if c not in schema.names]
    if missing:
        raise CatalogError(
            f"{what} '{source}' lacks required column(s) {missing}; it has {schema.names}. "
            f"Rename or import it with `vitrine import` so it has {list(required)}."
        )


def image_problem(data: bytes | None) -> str | None:
    """Cheap check of encoded image bytes (size, magic number); None when they look like an image."""
    if data is None:
        return None
    if len(data) == 0:
        return "empty image bytes"
    if len(data) > MAX_IMAGE_BYTES:
        return f"image larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB"
    if not data.startswith(IMAGE_MAGIC):
        return "image bytes are not JPEG/PNG/WebP/GIF"
    return None


def _decode(raws: list[bytes | None]) -> list[str | None]:
    """Bytes -> str; None stays None, bytes that are not UTF-8 become the ``NON_UTF8`` placeholder."""
    out: list[str | None] = []
    for raw in raws:
        try:
            out.append(None if raw is None else raw.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(NON_UTF8)
    return out


def _text_column(table: pa.Table, name: str, source: str) -> list[str | None]:
    """Decode a string or binary column to Python str, None where missing, ``NON_UTF8`` where not UTF-8."""
    col = table.column(name)
    if _is_string(col.type):
        try:
            return col.to_pylist()
        except (UnicodeDecodeError, pa.ArrowException):
            raw = pc.cast(col, pa.large_binary() if pa.types.is_large_string(col.type) else pa.binary())
            values = _decode(raw.to_pylist())
            rows = [i for i, v in enumerate(values) if v == NON_UTF8]
            raise CatalogError(
                f"column '{name}' of '{source}' is typed string but {len(rows)} row(s) hold bytes that are not "
                f"UTF-8 (rows {rows[:MAX_REPORTED]}); the file breaks its own schema. Re-encode those values "
                "as UTF-8, or store the column as binary so that validation skips and counts the bad rows."
            ) from None
    if _is_binary(col.type):
        return _decode(col.to_pylist())
    if pa.types.is_integer(col.type) and name == "product_id":
        return [None if v is None else str(v) for v in col.to_pylist()]
    raise CatalogError(
        f"column '{name}' of '{source}' has type {col.type}; it must be a string. Cast it before import."
    )


def clean_catalog(table: pa.Table, source: str = "catalog") -> tuple[pa.Table, ValidationReport]:
    """Validate a catalog table and return the usable rows plus a report naming each bad row."""
    check_columns(table.schema, CATALOG_REQUIRED, "catalog", source)
    if "image" in table.schema.names and not (_is_binary(table.schema.field("image").type)
                                                or pa.types.is_null(table.schema.field("image").type)):
        raise CatalogError(
            f"column 'image' of '{source}' has type {table.schema.field('image').type}; "
            "it must hold encoded image bytes (binary) or be null."
        )
    report = ValidationReport(rows_in=table.num_rows)
    ids = _text_column(table, "product_id", source)
    titles = _text_column(table, "title", source)
    images = table.column("image").to_pylist() if "image" in table.schema.names else [None] * len(ids)
    seen: set[str] = set()
    keep: list[int] = []
    clean_ids: list[str] = []
    clean_titles: list[str] = []
    clean_images: list[bytes | None] = []
    for row, (pid, title, image) in enumerate(zip(ids, titles, images, strict=True)):
        pid_s = pid.strip() if isinstance(pid, str) else None
        if not pid_s or pid_s == NON_UTF8:
            report.issues.append(RowIssue(row, None, "missing or non-UTF-8 product_id"))
            continue
        if pid_s in seen:
            report.issues.append(RowIssue(row, pid_s, "duplicate product_id (first kept)"))
            continue
        if title == NON_UTF8:
            report.issues.append(RowIssue(row, pid_s, "title is not valid UTF-8"))
            continue
        title_s = " ".join(title.split()) if isinstance(title, str) else ""
        title_s = "".join(ch for ch in title_s if ch.isprintable())
        if not title_s:
            report.issues.append(RowIssue(row, pid_s, "missing or empty title"))
            continue
        problem = image_problem(image)
        if problem:
            report.issues.append(RowIssue(row, pid_s, f"{problem} (product kept without image)"))
            report.images_dropped += 1
            image = None
        seen.add(pid_s)
        keep.append(row)
        clean_ids.append(pid_s)
        clean_titles.append(title_s)
        clean_images.append(image)
    attrs = [c for c in table.schema.names if c not in ("product_id", "title", "image")]
    kept = table.select(attrs).take(pa.array(keep, type=pa.int64())) if attrs else None
    columns = {
        "product_id": pa.array(clean_ids, pa.string()),
        "title": pa.array(clean_titles, pa.string()),
        "image": pa.array(clean_images, pa.binary()),
    }
    for name in attrs:
        col = kept.column(name)  # type: ignore[union-attr]
        columns[name] = col.cast(pa.string()) if not _is_string(col.type) else col
    out = pa.table(columns)
    report.rows_out = out.num_rows
    return out, report


def clean_judgments(
    table: pa.Table, product_ids: set[str] | None = None, source: str = "judgments"
) -> tuple[pa.Table, ValidationReport]:
    """Validate a judgments / query-log table; rows with empty queries or unknown products are dropped and counted."""
    check_columns(table.schema, JUDGMENTS_REQUIRED, "judgments", source)
    label_type = table.schema.field("label").type
    if not (pa.types.is_floating(label_type) or pa.types.is_integer(label_type)):
        raise CatalogError(f"column 'label' of '{source}' has type {label_type}; it must be numeric")
    report = ValidationReport(rows_in=table.num_rows)
    queries = _text_column(table, "query", source)
    pids = _text_column(table, "product_id", source)
    labels = pc.cast(table.column("label"), pa.float32()).to_pylist()
    keep_q: list[str] = []
    keep_p: list[str] = []
    keep_l: list[float] = []
    for row, (q, pid, label) in enumerate(zip(queries, pids, labels, strict=True)):
        q_s = " ".join(q.split()) if isinstance(q, str) and q != NON_UTF8 else ""
        if not q_s:
            report.issues.append(RowIssue(row, pid, "missing or empty query"))
        elif not pid:
            report.issues.append(RowIssue(row, None, "missing product_id"))
        elif label is None or label != label:  # None or NaN
            report.issues.append(RowIssue(row, pid, "missing label"))
        elif product_ids is not None and pid not in product_ids:
            report.issues.append(RowIssue(row, pid, "product_id not in catalog"))
        else:
            keep_q.append(q_s)
            keep_p.append(pid)
            keep_l.append(float(label))
    out = pa.table({"query": pa.array(keep_q, pa.string()), "product_id": pa.array(keep_p, pa.string()),
                    "label": pa.array(keep_l, pa.float32())})
    report.rows_out = out.num_rows
    return out, report
