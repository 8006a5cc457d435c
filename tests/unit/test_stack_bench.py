"""bench.quality.stack refuses what would time the wrong model, before any stage runs."""

from __future__ import annotations

import pytest

from bench.quality.stack import main, model_name

REPO_CONFIG = "configs/recipes/myntra.yaml"


def test_model_name_comes_from_the_recipe_or_its_override(tmp_path):
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / REPO_CONFIG
    assert model_name(config, []) == "vitrine-myntra"
    assert model_name(config, ["--train.seed=1", "--tracking.model_name=other"]) == "other"
    bare = tmp_path / "bare.yaml"
    bare.write_text("train:\n  max_steps: 5\n")
    with pytest.raises(SystemExit, match="names no tracking.model_name"):
        model_name(bare, [])


def test_missing_inputs_and_a_used_workdir_are_refused(tmp_path):
    config = tmp_path / "r.yaml"
    config.write_text("tracking:\n  model_name: m\n")
    files = {name: tmp_path / f"{name}.parquet" for name in ("catalog", "train", "val")}
    for path in files.values():
        path.write_bytes(b"")
    args = ["--config", str(config), "--workdir", str(tmp_path / "w"), "--catalog", str(files["catalog"]),
            "--train-judgments", str(files["train"]), "--val-judgments", str(files["val"])]
    with pytest.raises(SystemExit, match="--val-judgments .*nope.parquet: no such file"):
        main([*args[:-1], str(tmp_path / "nope.parquet")])
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "mlflow.db").write_bytes(b"")
    with pytest.raises(SystemExit, match="already holds a registry; use a fresh one"):
        main([*args, "--", "--train.seed=1"])


@pytest.mark.parametrize("seeds, extra", [("0", []), ("2", ["--", "--train.seed=3"])])
def test_seed_count_that_cannot_be_ensembled_is_refused(tmp_path, seeds, extra):
    config = tmp_path / "r.yaml"
    config.write_text("tracking:\n  model_name: m\n")
    for name in ("catalog", "train", "val"):
        (tmp_path / f"{name}.parquet").write_bytes(b"")
    args = ["--config", str(config), "--workdir", str(tmp_path / "w"), "--catalog", str(tmp_path / "catalog.parquet"),
            "--train-judgments", str(tmp_path / "train.parquet"), "--val-judgments", str(tmp_path / "val.parquet")]
    with pytest.raises(SystemExit, match=f"--seeds {seeds}: use 1, or 2 and more without --train.seed"):
        main([*args, "--seeds", seeds, *extra])
