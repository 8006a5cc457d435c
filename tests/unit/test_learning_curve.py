"""bench.quality.learning_curve: points sorted by step, baselines kept, bad input refused with a message."""

import json

import pytest

from bench.quality.learning_curve import main


def _metrics(path, ndcg, r100):
    path.write_text(json.dumps({"model": "m", "metrics": {"ndcg@10": ndcg, "recall@100": r100, "mrr@10": 0.1}}))
    return str(path)


def test_curve_json_and_plot(tmp_path):
    a = _metrics(tmp_path / "a.json", 0.5, 0.8)
    b = _metrics(tmp_path / "b.json", 0.6, 0.9)
    bm25 = _metrics(tmp_path / "bm25.json", 0.2, 0.7)
    assert main(["--point", f"400={b}", "--point", f"200={a}", "--baseline", f"BM25={bm25}",
                 "--output", str(tmp_path / "out")]) == 0
    curve = json.loads((tmp_path / "out" / "curve.json").read_text())
    assert curve["steps"] == [{"step": 200, "ndcg@10": 0.5, "recall@100": 0.8},
                              {"step": 400, "ndcg@10": 0.6, "recall@100": 0.9}]
    assert curve["baselines"] == {"BM25": {"ndcg@10": 0.2, "recall@100": 0.7}}
    assert (tmp_path / "out" / "curve.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, message", [
    (["--point", "two=x.json"], "whole number"),
    (["--point", "200"], "expected NAME=metrics.json"),
    (["--point", "200=missing.json"], "cannot read metrics"),
    ([], "at least one --point"),
])
def test_bad_input_is_refused_with_a_message(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as err:
        main([*args, "--output", str(tmp_path / "out")])
    assert message in str(err.value)


def test_metrics_file_without_recall_at_100_is_refused(tmp_path):
    path = tmp_path / "k10.json"
    path.write_text(json.dumps({"metrics": {"ndcg@10": 0.5}}))
    with pytest.raises(SystemExit, match="lacks"):
        main(["--point", f"100={path}", "--output", str(tmp_path / "out")])


def test_non_object_json_and_repeated_steps_are_refused(tmp_path):
    number = tmp_path / "n.json"
    number.write_text("3")
    with pytest.raises(SystemExit, match="no 'metrics' key"):
        main(["--point", f"100={number}", "--output", str(tmp_path / "out")])
    a = _metrics(tmp_path / "a.json", 0.5, 0.8)
    with pytest.raises(SystemExit, match="steps repeat"):
        main(["--point", f"100={a}", "--point", f"100={a}", "--output", str(tmp_path / "out")])
