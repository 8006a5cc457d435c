"""``vitrine ensemble``: two model directories registered as one MLflow version, then evaluated through the registry
like any model (real Ray, real MLflow on sqlite, the Home Depot sample)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from vitrine import registry
from vitrine.cli import main
from vitrine.config import TrackingConfig

SAMPLE = Path(__file__).resolve().parents[2] / "platform" / "vitrine" / "sample"


@pytest.fixture(scope="module")
def members(tiny_models) -> list[Path]:
    """Two real model directories from different seeds (conftest)."""
    return tiny_models


def test_ensemble_registers_and_evaluates_like_a_model(members, tmp_path):
    work = tmp_path / "w"
    rc = main(["ensemble", f"--members={members[0]},{members[1]}", f"--workdir={work}",
               "--tracking.model_name=ens", "--tracking.alias=challenger"])
    assert rc == 0
    registry.setup(TrackingConfig(model_name="ens"), work)
    resolved = registry.resolve_model("models:/ens@challenger", work / "cache")
    assert resolved.version == "1" and resolved.tags["ensemble_members"] == f"{members[0]},{members[1]}"
    meta = json.loads((resolved.local_dir / "vitrine_model.json").read_text())
    assert [e["dir"] for e in meta["ensemble"]] == ["members/0", "members/1"] and meta["model"]["embed_dim"] == 64

    out = tmp_path / "m.json"
    rc = main(["evaluate", "--model", "models:/ens@challenger", "--catalog", str(SAMPLE / "homedepot_products.parquet"),
               "--judgments", str(SAMPLE / "homedepot_judgments.parquet"), "--k", "10", "--output", str(out),
               f"--workdir={work}"])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["metrics"]["catalog_products"] == 1889 and 0.2 < result["metrics"]["ndcg@10"] <= 1.0
    vectors = pq.read_table(result["embeddings"])
    emb = np.stack(vectors.column("embedding").to_numpy(zero_copy_only=False))
    assert emb.shape == (1889, 64)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    halves = np.linalg.norm(emb[:, :32], axis=1), np.linalg.norm(emb[:, 32:], axis=1)
    np.testing.assert_allclose(halves[0], 2 ** -0.5, atol=1e-4)  # each member's unit vector, scaled by 1/sqrt(2)
    np.testing.assert_allclose(halves[1], 2 ** -0.5, atol=1e-4)


@pytest.mark.parametrize("members_arg, message", [
    ("{a}", "name at least 2 trained models"),
    ("{a},{a}", "names one model twice"),
    ("{a},{missing}", "neither models:/<name>@<alias>"),
])
def test_bad_members_are_one_clear_error(members, tmp_path, capsys, members_arg, message):
    arg = members_arg.format(a=members[0], missing=tmp_path / "nope")
    assert main(["ensemble", f"--members={arg}", f"--workdir={tmp_path / 'w'}"]) == 2
    assert message in capsys.readouterr().err
