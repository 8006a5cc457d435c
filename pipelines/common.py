"""What every pipeline entry point shares: logging set-up, Ray start-up and catalog bookkeeping."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from vitrine.catalog.io import catalog_columns, parquet_files, read_table
from vitrine.catalog.schema import ValidationReport, clean_catalog

log = logging.getLogger(__name__)


def setup_logging(level: str = "INFO") -> None:
    """Configure logging for an entry point (library modules never do this)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("urllib3", "filelock", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.contextmanager
def ray_session() -> Iterator[None]:
    """Use the running Ray (or ``$RAY_ADDRESS``); else start a local instance for this job and stop it after.

    Each job gets its own local instance so that one job's leftovers (a Ray Train controller, a partly
    consumed training dataset holding its Ray Data resource grant) cannot starve the next job.
    """
    import ray

    started = not ray.is_initialized()
    if started:
        ensure_ray()
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def ensure_ray() -> None:
    """Connect to ``$RAY_ADDRESS`` if set (a cluster or a Ray Job), else start a local Ray instance."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
    else:
        # Logical CPUs >= 4 even on a 2-core machine: Ray Train workers hold CPUs for the whole run and
        # Ray Data's read/decode tasks must still be schedulable beside them (they would wait forever).
        cpus = max(4, os.cpu_count() or 1)
        # Ray starts workers at nice 15 by default; here they do the job's real work (training, embedding),
        # so they run at the driver's priority instead of losing the CPU to any other process.
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(num_cpus=cpus, include_dashboard=True, dashboard_host="127.0.0.1", configure_logging=False,
                 log_to_driver=True)


def catalog_index(path: str) -> tuple[pa.Table, ValidationReport, list[str]]:
    """Validate a catalog's ids and titles without loading its images: (id/title/attrs table, report, files).

    Image bytes are checked where they are decoded (Ray Data tasks) and counted there.
    """
    files = [str(f) for f in parquet_files(path)]
    names = catalog_columns(files)
    table = read_table(path, columns=[n for n in names if n != "image"])
    clean, report = clean_catalog(table, source=path)
    if report.issues:
        log.warning("catalog %s: %s", path, report.summary())
    if clean.num_rows == 0:
        from vitrine.errors import CatalogError

        raise CatalogError(f"catalog {path}: no usable product ({report.summary()}); "
                           "every row needs a non-empty product_id and title")
    return clean.drop_columns(["image"]), report, files


def absolute(path: str | Path) -> Path:
    """An absolute path (Ray workers may run elsewhere than the driver's cwd)."""
    return Path(path).expanduser().resolve()
