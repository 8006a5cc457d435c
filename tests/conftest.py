"""Shared fixtures: the bundled sample and ../shared/data (skip when absent); offline settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "platform" / "vitrine" / "sample"
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("RAY_ADDRESS", None)


@pytest.fixture(scope="session")
def sample_catalog() -> Path:
    """The bundled 2,000-product Myntra sample (real products with images)."""
    return SAMPLE / "myntra_sample.parquet"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip the test with the reason."""
    if not (SHARED_DATA / "myntra").is_dir():
        pytest.skip(f"full datasets not present at {SHARED_DATA}")
    return SHARED_DATA


SQLITE = (".db", ".db-journal", ".db-wal", ".db-shm")


@pytest.fixture(scope="module", autouse=True)
def _free_module_scratch(request, tmp_path_factory):
    """Once all of a module's tests passed, delete the files its temp dirs hold (a full run writes GBs of
    checkpoints and model copies), but keep the small sqlite MLflow stores: MLflow keeps connections to a
    store open for the whole process, and a store deleted under them breaks later stores (readonly database).

    A module with a failure keeps everything for inspection.
    """
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed != failed:
        return
    for top in set(base.iterdir()) - before:
        for path in sorted(top.rglob("*"), reverse=True):  # children before their folders
            if path.is_symlink() or (path.is_file() and not path.name.endswith(SQLITE)):
                path.unlink(missing_ok=True)
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
