"""Reading and writing catalog / judgments Parquet (a file or a directory of part files)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vitrine.errors import CatalogError


def parquet_files(path: str | Path) -> list[Path]:
    """The Parquet files behind ``path`` (itself, or the sorted ``*.parquet`` files of a directory).

    A comma-separated list of such paths names their union (e.g. two catalogs trained together).
    """
    if "," in str(path):
        return [f for part in str(path).split(",") if part.strip() for f in parquet_files(part.strip())]
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(p.glob("*.parquet"))
        if files:
            return files
        raise CatalogError(f"directory '{path}' holds no *.parquet files; point at a Parquet file or part dir")
    raise CatalogError(f"'{path}' does not exist; pass a Parquet file or a directory of Parquet part files")


def read_schema(path: str | Path) -> pa.Schema:
    """The schema of one Parquet file, with a clear error for a file that is not Parquet."""
    try:
        return pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise CatalogError(f"'{path}' is not a readable Parquet file: {exc}") from None


def catalog_columns(files: list[str] | list[Path]) -> list[str]:
    """The union of these Parquet files' column names, first-seen order (catalogs read together may differ)."""
    return list(dict.fromkeys(n for f in files for n in read_schema(f).names))


def has_images(files: list[str] | list[Path]) -> bool:
    """Whether any row of these catalog files holds image bytes (an all-null ``image`` column holds none).

    Reads the Parquet null counts; a row group without them has just its image column read, and the first
    image found ends the scan."""
    for f in files:
        pf = pq.ParquetFile(f)
        if "image" not in pf.schema_arrow.names:
            continue
        for r in range(pf.metadata.num_row_groups):
            group = pf.metadata.row_group(r)
            col = next(group.column(c) for c in range(group.num_columns) if group.column(c).path_in_schema == "image")
            stats = col.statistics
            if stats is not None and stats.has_null_count:
                nulls = stats.null_count
            else:
                nulls = pf.read_row_group(r, columns=["image"]).column(0).null_count
            if nulls < group.num_rows:
                return True
    return False


def read_table(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet file or directory into one table, with a clear error for unreadable files."""
    tables = []
    for f in parquet_files(path):
        try:
            schema = pq.read_schema(f)
            cols = [c for c in columns if c in schema.names] if columns else None
            tables.append(pq.read_table(f, columns=cols))
        except (pa.ArrowInvalid, OSError) as exc:
            raise CatalogError(f"'{f}' is not a readable Parquet file: {exc}") from None
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowInvalid as exc:
        raise CatalogError(f"the part files of '{path}' have incompatible schemas: {exc}") from None


def write_table(table: pa.Table, path: str | Path, row_group_size: int = 1024) -> Path:
    """Write a table to one Parquet file, creating parent directories."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, p, row_group_size=row_group_size)
    return p
