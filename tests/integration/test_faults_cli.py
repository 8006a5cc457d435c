"""Bad catalog files and bad settings through the real ``vitrine`` command: one clear error line naming the
file and column or the setting, and the fix; exit status 2, and no Python traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

VITRINE = Path(sys.executable).parent / "vitrine"


def _bad_files(tmp: Path) -> dict[str, Path]:
    files = {"no_title": tmp / "no_title.parquet", "not_utf8": tmp / "not_utf8.parquet",
             "not_parquet": tmp / "not_parquet.parquet"}
    pq.write_table(pa.table({"product_id": ["a", "b"], "name": ["x", "y"]}), files["no_title"])
    titles = pa.array([b"ok", b"Caf\xe9"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"product_id": ["a", "b"], "title": titles}), files["not_utf8"])
    files["not_parquet"].write_text("product_id,title\na,red shirt\n")
    return files


@pytest.mark.parametrize(("command", "case", "message"), [
    ("pretrain", "no_title", "lacks required column(s) ['title']; it has ['product_id', 'name']"),
    ("index", "not_utf8", "column 'title' of '{path}' is typed string but 1 row(s) hold bytes that are not UTF-8"),
    ("index", "not_parquet", "'{path}' is not a readable Parquet file"),
])
def test_bad_catalog_file_is_one_clear_line(tmp_path, command, case, message):
    path = _bad_files(tmp_path)[case]
    args = [str(VITRINE), command, f"--workdir={tmp_path / 'w'}", f"--data.catalog={path}"]
    if command == "index":
        args.append(f"--model_uri={tmp_path}")  # a local directory: the catalog is checked before any model load
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    line = next((ln for ln in done.stderr.splitlines() if ln.startswith(f"vitrine {command}: error: ")), "")
    assert message.format(path=path) in line, done.stderr


@pytest.mark.parametrize(("flag", "message"), [
    ("--train.ema_decay=1", "train.ema_decay=1.0 must be >= 0 and below 1; use 0"),
    ("--train.lr_schedule=step", "train.lr_schedule='step' is not a schedule; use one of"),
    ("--model.freeze_text_layers=9", "model.freeze_text_layers=9: the text encoder has 6 transformer layers"),
    ("--model.colour_bins=20", "model.colour_bins=20: use 0 (off) or 1-16"),
])
def test_bad_training_setting_is_one_clear_line_before_any_work(tmp_path, flag, message):
    work = tmp_path / "w"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    done = subprocess.run([str(VITRINE), "pretrain", f"--workdir={work}", flag],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    line = next((ln for ln in done.stderr.splitlines() if ln.startswith("vitrine pretrain: error: ")), "")
    assert message in line, done.stderr
    assert not work.exists()  # refused before the workdir (MLflow database, Ray Train storage) was created
