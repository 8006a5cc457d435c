"""Bad values through ``vitrine`` (in process, real files): one clear error naming the value and the fix, exit
status 2, refused before any work, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.embed_index import write_vectors_meta
from vitrine.cli import main

SAMPLE = Path(__file__).resolve().parents[2] / "platform" / "vitrine" / "sample"
CATALOG, JUDGED = SAMPLE / "homedepot_products.parquet", SAMPLE / "homedepot_judgments.parquet"


@pytest.fixture(scope="module")
def models(tiny_models) -> list[Path]:
    """Two real model directories from different seeds (conftest)."""
    return tiny_models


def error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return next((ln for ln in err.splitlines() if ln.startswith(f"vitrine {command}: error: ")), err)


def evaluate(model: Path, tmp_path: Path, *extra: str) -> int:
    return main(["evaluate", "--model", str(model), "--catalog", str(CATALOG), "--judgments", str(JUDGED),
                 f"--workdir={tmp_path / 'w'}", *extra])


def test_evaluate_needs_the_top_10(models, tmp_path, capsys):
    assert evaluate(models[0], tmp_path, "--k", "5") == 2
    assert "--k 5: retrieve at least the top 10" in error_line(capsys, "evaluate")


def test_evaluate_refuses_files_that_are_not_this_models_vectors(models, tmp_path, capsys):
    assert evaluate(models[0], tmp_path, f"--embeddings={JUDGED}") == 2
    assert "no embedding column, so not product vectors" in error_line(capsys, "evaluate")

    ids = pq.read_table(CATALOG, columns=["product_id"]).column(0)
    vectors = np.random.default_rng(0).normal(size=(len(ids), 32)).astype(np.float32)
    folder = tmp_path / "vectors"
    folder.mkdir()
    pq.write_table(pa.table({"product_id": ids, "embedding": pa.FixedSizeListArray.from_arrays(vectors.ravel(), 32)}),
                   folder / "part-0.parquet")
    write_vectors_meta(folder, models[1])  # written by the other model
    assert evaluate(models[0], tmp_path, f"--embeddings={folder / 'part-0.parquet'}") == 2
    assert "these vectors were written by another model" in error_line(capsys, "evaluate")


def test_damaged_ranker_is_one_clear_error(models, tmp_path, capsys):
    folder = tmp_path / "ranker"
    folder.mkdir()
    (folder / "reranker.txt").write_text("tree\nnot a model\n")
    (folder / "reranker.json").write_text("{truncated")
    assert evaluate(models[0], tmp_path, f"--rerank={folder}") == 2
    assert "reranker.json is not valid JSON" in error_line(capsys, "evaluate")


def test_rerank_refuses_an_output_that_is_a_file_before_any_work(models, tmp_path, capsys):
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me")
    rc = main(["rerank", f"--model={models[0]}", f"--catalog={CATALOG}", f"--judgments={JUDGED}",
               f"--out={taken}", f"--workdir={tmp_path / 'w'}"])
    assert rc == 2 and taken.read_text() == "keep me"
    assert "a file is there; pass a folder" in error_line(capsys, "rerank")
    assert not (tmp_path / "w").exists()  # refused before the workdir was created


@pytest.mark.parametrize("flags, message", [
    (["--val-fraction", "1.5"], "--val-fraction 1.5: the share of queries held out"),
    (["--val-fraction", "0.2", "--eval-sample", "-5"], "--eval-sample -5: a number of products"),
])
def test_import_refuses_bad_split_settings_before_writing(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    source = tmp_path / "hd"
    source.mkdir()
    pq.write_table(pq.read_table(CATALOG), source / "products.parquet")
    pq.write_table(pq.read_table(JUDGED), source / "judgments.parquet")
    assert main(["import", "homedepot", str(source), "--out", str(out), *flags]) == 2
    assert message in error_line(capsys, "import")
    assert not out.exists()


def test_folder_import_refuses_a_split_before_writing(tmp_path, capsys):
    manifest, out = tmp_path / "products.csv", tmp_path / "out"
    manifest.write_text("product_id,title\n1,red cotton shirt\n")
    assert main(["import", "folder", str(manifest), "--out", str(out), "--val-fraction", "0.2"]) == 2
    assert "--val-fraction needs a judged or derivable dataset (homedepot, myntra)" in error_line(capsys, "import")
    assert not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["--query-precision", "int4"], "--query-precision='int4' is not one of ['fp32', 'int8']"),
    (["--query-precision=int8", "--model", "bm25"], "--query-precision int8 applies to a trained model's query"),
])
def test_evaluate_refuses_a_query_precision_it_cannot_apply(models, tmp_path, capsys, flags, message):
    assert evaluate(models[0], tmp_path, *flags) == 2
    assert message in error_line(capsys, "evaluate")
    assert not (tmp_path / "w").exists()


def test_import_without_a_usable_product_writes_nothing(tmp_path, capsys):
    source, out = tmp_path / "myntra", tmp_path / "out"
    source.mkdir()
    pq.write_table(pa.table({"product_id": ["1", "2"], "title": ["", "  "]}), source / "products-0.parquet")
    assert main(["import", "myntra", str(source), "--out", str(out)]) == 2
    assert "no usable product (2 rows in, 0 kept" in error_line(capsys, "import")
    assert not out.exists()
