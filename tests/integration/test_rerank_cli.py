"""``vitrine rerank`` + ``vitrine evaluate --rerank`` on the bundled Home Depot sample, via the CLI."""

from __future__ import annotations

import json
import os

import pytest

from vitrine.cli import main
from vitrine.rerank import PRF_FEATURES


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A ranker over BM25 + zero-shot MiniLM candidates, trained on the sample's judged queries."""
    work = tmp_path_factory.mktemp("rerank")
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # its own store in the workdir, whatever an earlier test left
    assert main(["rerank", "--model=pretrained", f"--workdir={work}", f"--out={work / 'ranker'}", "--trees=60"]) == 0
    return work


def _evaluate(work, *extra: str) -> dict:
    out = work / f"m{len(list(work.glob('m*.json')))}.json"
    assert main(["evaluate", "--model", "pretrained", "--output", str(out), f"--workdir={work}", *extra]) == 0
    return json.loads(out.read_text())


def test_rerank_trains_logs_and_lifts_its_training_queries(trained):
    """On the queries it was fitted to, the ranker must order judged products far above dense search alone
    (a wiring check: grades misaligned with candidates would leave it at the dense model's level)."""
    meta = json.loads((trained / "ranker" / "reranker.json").read_text())
    assert meta["model"] == "pretrained-minilm" and meta["queries"] == 300 and meta["candidate_recall"] > 0.9
    assert meta["char_depth"] == 200 and meta["feature_version"] == 3  # the trigram list is on by default
    assert meta["lexical"] == "product"  # and the word list analysed for product text
    assert (trained / "ranker" / "importance.png").stat().st_size > 10_000
    dense = _evaluate(trained)
    reranked = _evaluate(trained, "--rerank", str(trained / "ranker"))
    assert reranked["model"] == "rerank-product+pretrained-minilm"  # names the word list it was trained with
    assert reranked["metrics"]["ndcg@10"] > dense["metrics"]["ndcg@10"] + 0.05

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{trained / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.`vitrine.job` = 'rerank'")
    assert len(runs) == 1 and runs[0].data.metrics["candidates"] == meta["candidates"]
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id, "reranker")} >= {
        "reranker/reranker.txt", "reranker/reranker.json", "reranker/importance.png"}


def test_rerank_refuses_another_model_and_bad_input(trained, tmp_path, capsys):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(trained / "ranker", other)
    meta = json.loads((other / "reranker.json").read_text())
    (other / "reranker.json").write_text(json.dumps({**meta, "model": "vitrine/v7", "model_uri": "models:/vitrine@x"}))
    assert main(["evaluate", "--model", "pretrained", "--rerank", str(other), f"--workdir={tmp_path}"]) == 2
    assert "trained with the scores of vitrine/v7, not of pretrained-minilm" in capsys.readouterr().err
    assert main(["evaluate", "--model", "bm25", "--rerank", str(other), f"--workdir={tmp_path}"]) == 2
    assert "the re-ranker takes the dense model it was trained with" in capsys.readouterr().err
    assert main(["evaluate", "--model", "pretrained", "--rerank", str(tmp_path / "none"), f"--workdir={tmp_path}"]) == 2
    assert "not a reranker folder" in capsys.readouterr().err
    assert main(["rerank", "--model=hybrid:pretrained", f"--workdir={tmp_path}"]) == 2
    assert "the re-ranker needs the dense model whose scores it uses" in capsys.readouterr().err
    assert main(["rerank", "--model=pretrained", "--depth=5", f"--workdir={tmp_path}"]) == 2
    assert "--depth=5: use at least 1 tree and 10 candidates a side" in capsys.readouterr().err
    assert main(["rerank", "--model=pretrained", "--char_depth=-1", f"--workdir={tmp_path}"]) == 2
    assert "--char_depth=-1: use 0 (no character-trigram list) or a positive depth" in capsys.readouterr().err
    assert main(["rerank", "--model=pretrained", "--prf=-1", f"--workdir={tmp_path}"]) == 2
    assert "--prf=-1: use 0 (no neighbour-centroid features)" in capsys.readouterr().err
    assert main(["rerank", "--model=pretrained", "--lexical=bm26", f"--workdir={tmp_path}"]) == 2
    assert "--lexical='bm26': choose one of bm25, product" in capsys.readouterr().err
    assert main(["evaluate", "--model", "bm25-product", "--embeddings", "x.parquet", f"--workdir={tmp_path}"]) == 2
    assert "--embeddings applies to a trained model's vectors, not to --model bm25-product" in capsys.readouterr().err


def test_stock_word_list_ranker_and_the_product_list_alone(trained):
    """``--lexical=bm25`` (the ablation switch, and what rankers saved before it used) trains and evaluates, and
    ``--model bm25-product`` scores the analysed word list alone above the stock BM25 baseline on the sample."""
    out = trained / "ranker-stock-words"
    assert main(["rerank", "--model=pretrained", f"--workdir={trained}", f"--out={out}", "--trees=60",
                 "--lexical=bm25"]) == 0
    assert json.loads((out / "reranker.json").read_text())["lexical"] == "bm25"
    reranked = _evaluate(trained, "--rerank", str(out))
    assert reranked["metrics"]["ndcg@10"] > _evaluate(trained)["metrics"]["ndcg@10"] + 0.05
    out_p, out_b = trained / "bm25-product.json", trained / "bm25.json"
    for model, path in (("bm25-product", out_p), ("bm25", out_b)):
        assert main(["evaluate", "--model", model, "--output", str(path), f"--workdir={trained}"]) == 0
    scores = {p: json.loads(p.read_text()) for p in (out_p, out_b)}
    assert scores[out_p]["model"] == "bm25-product"
    assert scores[out_p]["metrics"]["ndcg@10"] > scores[out_b]["metrics"]["ndcg@10"] + 0.01


def test_rerank_with_and_without_neighbour_centroids(trained):
    """``--prf=N`` (3 by default): six features from each list's top-N centroid in the product vector space; the
    ranker records them, ``vitrine evaluate --rerank`` rebuilds them from the vectors and still lifts the dense
    model. ``--prf=0`` (the ablation switch) trains on the same candidates without them."""
    full = json.loads((trained / "ranker" / "reranker.json").read_text())
    assert full["prf"] == 3 and full["features"][-6:] == list(PRF_FEATURES)  # the default ranker has them
    out = trained / "ranker-no-prf"
    assert main(["rerank", "--model=pretrained", f"--workdir={trained}", f"--out={out}", "--trees=60",
                 "--prf=0"]) == 0
    meta = json.loads((out / "reranker.json").read_text())
    assert meta["prf"] == 0 and not set(PRF_FEATURES) & set(meta["features"])
    assert meta["candidates"] == full["candidates"]  # the same candidates, fewer features
    reranked = _evaluate(trained, "--rerank", str(out))
    assert reranked["metrics"]["ndcg@10"] > _evaluate(trained)["metrics"]["ndcg@10"] + 0.05


def test_rerank_without_the_trigram_list(trained):
    """``--char_depth=0`` (the ablation switch): candidates from BM25 and the dense model only, fewer of them."""
    out = trained / "ranker-no-trigrams"
    assert main(["rerank", "--model=pretrained", f"--workdir={trained}", f"--out={out}", "--trees=60",
                 "--char_depth=0"]) == 0
    meta = json.loads((out / "reranker.json").read_text())
    full = json.loads((trained / "ranker" / "reranker.json").read_text())
    assert meta["char_depth"] == 0 and meta["candidates"] < full["candidates"]
    reranked = _evaluate(trained, "--rerank", str(out))
    assert reranked["metrics"]["ndcg@10"] > _evaluate(trained)["metrics"]["ndcg@10"] + 0.05


def test_rerank_with_a_cross_encoder(trained, capsys):
    """``--cross_top=N``: a MiniLM cross-encoder trained beside the ranker re-scores its top N; the blend weight is
    chosen on held-out training queries (the curve is saved), or taken from ``--cross_weight``."""
    out = trained / "ranker-cross"
    assert main(["rerank", "--model=pretrained", f"--workdir={trained}", f"--out={out}", "--trees=60",
                 "--cross_top=10", "--cross_steps=20", "--cross_holdout=0.2"]) == 0
    meta = json.loads((out / "reranker.json").read_text())
    assert meta["cross_top"] == 10 and meta["cross_steps"] == 20 and 40 <= meta["cross_held_queries"] <= 80
    assert set(meta["cross_curve"]) == {"0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.8", "1"}
    assert meta["cross_curve"][f"{meta['cross_weight']:g}"] == max(meta["cross_curve"].values())
    assert (out / "cross_encoder" / "head.pt").is_file() and (out / "cross_encoder" / "config.json").is_file()
    forced = trained / "ranker-cross-forced"
    assert main(["rerank", "--model=pretrained", f"--workdir={trained}", f"--out={forced}", "--trees=60",
                 "--cross_top=10", "--cross_steps=20", "--cross_holdout=0.2", "--cross_weight=1"]) == 0
    assert json.loads((forced / "reranker.json").read_text())["cross_weight"] == 1
    import shutil

    ranker_only = trained / "ranker-cross-weight0"  # the same ranker, the cross-encoder's weight set to 0
    shutil.copytree(forced, ranker_only)
    meta0 = json.loads((ranker_only / "reranker.json").read_text())
    (ranker_only / "reranker.json").write_text(json.dumps({**meta0, "cross_weight": 0.0}))
    plain, cross = trained / "plain.parquet", trained / "cross.parquet"
    _evaluate(trained, "--rerank", str(ranker_only), f"--run-output={plain}")
    reranked = _evaluate(trained, "--rerank", str(forced), f"--run-output={cross}")
    import pyarrow.parquet as pq

    def top10(path):
        rows = sorted(pq.read_table(path).to_pylist(), key=lambda r: (r["query"], r["rank"]))
        out: dict[str, list] = {}
        for r in rows:
            out.setdefault(r["query"], []).append(r["product_id"])
        return {q: v[:10] for q, v in out.items()}

    a, b = top10(plain), top10(cross)
    assert sum(a[q] != b[q] for q in a) > len(a) // 2  # weight 1: the cross-encoder orders each top 10
    assert all(set(a[q]) == set(b[q]) for q in a)  # ... of the candidates the ranker put there
    assert reranked["metrics"]["ndcg@10"] > _evaluate(trained)["metrics"]["ndcg@10"]
    from_ranker = trained / "ranker-cross-pool"  # negatives from the first ranker's top 30, not the word list's
    assert main(["rerank", "--model=pretrained", f"--workdir={trained}", f"--out={from_ranker}", "--trees=60",
                 "--cross_top=10", "--cross_steps=5", "--cross_holdout=0.2", "--cross_pool_from=ranker"]) == 0
    pooled = json.loads((from_ranker / "reranker.json").read_text())
    assert pooled["cross_pool_from"] == "ranker" and meta["cross_pool_from"] == "words"
    # the same judged pairs; the ranker's candidates (three lists, 200 deep) always hold 4 unjudged products a
    # query, the word list's top 30 over the small sample catalog not always
    assert pooled["cross_pairs"] > meta["cross_pairs"]
    mixed = trained / "mix-cross-pool"  # both tops in one pool: never fewer negatives than either alone
    assert main(["rerank", "--model=pretrained", f"--workdir={trained}", f"--out={mixed}", "--trees=60",
                 "--cross_top=10", "--cross_steps=5", "--cross_holdout=0.2", "--cross_pool_from=mix"]) == 0
    both = json.loads((mixed / "reranker.json").read_text())
    assert both["cross_pool_from"] == "mix" and both["cross_pairs"] == pooled["cross_pairs"]
    assert main(["rerank", "--model=pretrained", "--cross_top=10", "--cross_pool_from=bm25",
                 f"--workdir={trained}"]) == 2
    assert "--cross_pool_from='bm25'" in capsys.readouterr().err
    assert main(["rerank", "--model=pretrained", "--cross_top=5", f"--workdir={trained}"]) == 2
    assert "the cross-encoder re-scores at least 10 candidates" in capsys.readouterr().err
    assert main(["rerank", "--model=pretrained", "--cross_top=30", f"--cross_encoder={trained / 'nope'}",
                 f"--workdir={trained}"]) == 2
    err = capsys.readouterr().err  # refused before the ranker's features (their progress bar) and fit
    assert "--cross_encoder=" in err and "local Hugging Face checkpoint" in err and "candidates + features" not in err
