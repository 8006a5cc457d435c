"""``vitrine evaluate`` on a small real slice (Home Depot sample): baselines and a model dir, via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from vitrine.cli import main
from vitrine.config import DataConfig, ModelConfig
from vitrine.model.make import MakeModel
from vitrine.model.store import save_model_dir

SAMPLE_QUERIES = 40


@pytest.fixture(scope="module")
def slice_files(tmp_path_factory):
    sample = Path(__file__).resolve().parents[2] / "platform" / "vitrine" / "sample"
    judgments = pq.read_table(sample / "homedepot_judgments.parquet")
    queries = sorted(set(judgments.column("query").to_pylist()))[:SAMPLE_QUERIES]
    judgments = judgments.filter(pc.is_in(judgments.column("query"), pc.cast(queries, judgments.schema.field(
        "query").type)))
    products = pq.read_table(sample / "homedepot_products.parquet")
    out = tmp_path_factory.mktemp("hd")
    pq.write_table(products, out / "products.parquet")  # the whole sample catalog: retrieval over all of it
    pq.write_table(judgments, out / "judgments.parquet")
    return out


@pytest.mark.parametrize("model", ["bm25", "pretrained"])
def test_evaluate_baselines(slice_files, tmp_path, model):
    out = tmp_path / "m.json"
    ranked = tmp_path / "r.parquet"
    rc = main(["evaluate", "--model", model, "--catalog", str(slice_files / "products.parquet"),
               "--judgments", str(slice_files / "judgments.parquet"), "--k", "20", "--output", str(out),
               "--run-output", str(ranked), f"--workdir={tmp_path / 'w'}"])
    assert rc == 0
    result = json.loads(out.read_text())
    m = result["metrics"]
    assert "embeddings" not in result  # a baseline has no product vectors to reuse
    assert m["queries"] > 30 and m["catalog_products"] == 1889
    assert 0.2 < m["ndcg@10"] <= 1.0 and m["recall@20"] >= m["recall@10"]
    table = pq.read_table(ranked)
    assert table.schema.names == ["query", "product_id", "rank", "score"]
    assert table.num_rows == len(set(table.column("query").to_pylist())) * 20
    first = table.slice(0, 20).to_pydict()
    assert first["rank"] == list(range(1, 21)) and first["score"] == sorted(first["score"], reverse=True)


def test_evaluate_model_dir_matches_zero_shot_direction(slice_files, tmp_path):
    """An untrained MAKE model starts as the zero-shot bi-encoder: its nDCG is in the same range."""
    torch.manual_seed(0)
    model_dir = save_model_dir(MakeModel(ModelConfig()), DataConfig(), tmp_path / "model")
    out = tmp_path / "m.json"
    rc = main(["evaluate", "--model", str(model_dir), "--catalog", str(slice_files / "products.parquet"),
               "--judgments", str(slice_files / "judgments.parquet"), "--k", "10", "--output", str(out),
               f"--workdir={tmp_path / 'w'}"])
    assert rc == 0
    result = json.loads(out.read_text())
    m = result["metrics"]
    assert m["catalog_products"] == 1889 and 0.2 < m["ndcg@10"] <= 1.0
    # the report names the vectors it wrote; handed back with --embeddings they give the same metrics
    assert Path(result["embeddings"]).is_dir() and Path(result["embeddings"]).is_relative_to(tmp_path / "w")
    again = tmp_path / "again.json"
    rc = main(["evaluate", "--model", str(model_dir), "--catalog", str(slice_files / "products.parquet"),
               "--judgments", str(slice_files / "judgments.parquet"), "--k", "10", "--output", str(again),
               f"--workdir={tmp_path / 'w'}", "--embeddings", result["embeddings"]])
    assert rc == 0
    reused = json.loads(again.read_text())
    assert reused["metrics"] == m and reused["embeddings"] == result["embeddings"]
    # the same vectors searched with the query tower as an int8 CPU replica serves it: close, not identical
    int8 = tmp_path / "int8.json"
    rc = main(["evaluate", "--model", str(model_dir), "--catalog", str(slice_files / "products.parquet"),
               "--judgments", str(slice_files / "judgments.parquet"), "--k", "10", "--output", str(int8),
               f"--workdir={tmp_path / 'w'}", "--embeddings", result["embeddings"], "--query-precision", "int8"])
    assert rc == 0
    quantized = json.loads(int8.read_text())
    assert quantized["query_precision"] == "int8" and "query_precision" not in result
    assert abs(quantized["metrics"]["ndcg@10"] - m["ndcg@10"]) < 0.05
    assert quantized["metrics"] != m


def test_evaluate_without_model_is_a_clear_error(capsys):
    assert main(["evaluate"]) == 2
    assert "--model" in capsys.readouterr().err


def test_evaluate_unknown_fusion_is_a_clear_error_before_any_work(capsys, tmp_path):
    rc = main(["evaluate", "--model", "hybrid:pretrained", "--hybrid-fusion", "sum", f"--workdir={tmp_path / 'w'}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--hybrid-fusion 'sum'" in err and "rrf, convex" in err
    assert not (tmp_path / "w").exists()
