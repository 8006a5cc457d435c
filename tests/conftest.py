"""Shared fixtures: the bundled sample and ../shared/data (skip when absent); offline settings."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
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


@pytest.fixture(scope="session")
def sample_jpegs(sample_catalog: Path) -> dict[str, bytes]:
    """Real JPEG bytes of the first two products of the bundled Myntra sample, keyed by product id."""
    rows = pq.read_table(sample_catalog, columns=["product_id", "image"]).slice(0, 2).to_pylist()
    out = {r["product_id"]: r["image"] for r in rows}
    assert all(b.startswith(b"\xff\xd8\xff") for b in out.values())
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> list[Path]:
    """Two real model directories from seeds 0 and 1 (shipped MiniLM, text only, 32-d vectors)."""
    import torch

    from vitrine.config import DataConfig, ModelConfig
    from vitrine.model.make import MakeModel
    from vitrine.model.store import save_model_dir

    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        out.append(save_model_dir(MakeModel(ModelConfig(embed_dim=32, use_images=False)), DataConfig(),
                                  tmp_path_factory.mktemp(f"tiny{seed}") / "model"))
    return out
