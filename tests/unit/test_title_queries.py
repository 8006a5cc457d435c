"""Title pseudo-queries: word selection, rate, determinism, and how pretraining adds them to a judged log."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.pretrain import add_title_queries
from vitrine.catalog.derive import title_queries, title_words
from vitrine.config import PretrainJob
from vitrine.config_io import load_config
from vitrine.errors import ConfigError

SAMPLE = Path(__file__).resolve().parents[2] / "platform" / "vitrine" / "sample"


@pytest.fixture(scope="module")
def catalog() -> pa.Table:
    """The bundled real Home Depot sample's ids and titles."""
    return pq.read_table(SAMPLE / "homedepot_products.parquet", columns=["product_id", "title"])


def test_title_words_drop_stop_words_and_keep_units_with_numbers():
    assert title_words("Simpson Strong-Tie 12-Gauge Angle") == ["simpson", "strong-tie", "12-gauge", "angle"]
    assert title_words("Bay 72 in. Vanity in Caramel with Top") == ["bay", "72 in", "vanity", "caramel", "top"]
    assert title_words("Steves &amp; Sons Steel Door (2-Pack)") == ["steves", "sons", "steel", "door", "2-pack"]
    assert title_words("in ft. of the") == []
    assert title_words(None) == []


def test_title_queries_are_ordered_subsets_of_their_own_title(catalog):
    out = title_queries(catalog, rate=2.0, label=3.0, seed=0)
    titles = dict(zip(catalog.column("product_id").to_pylist(), catalog.column("title").to_pylist(), strict=True))
    assert out.num_rows == 2 * catalog.num_rows  # every sample title has a word
    assert set(out.column("label").to_pylist()) == {3.0}
    for row in out.to_pylist():
        tokens = " ".join(title_words(titles[row["product_id"]])).split()
        picked = row["query"].split()
        assert picked and _is_subsequence(picked, tokens), (row, tokens)
    lengths = [len(q.split()) for q in out.column("query").to_pylist()]
    assert min(lengths) >= 1 and max(lengths) <= 8  # at most 4 words, each at most "number unit"


def _is_subsequence(needle: list[str], hay: list[str]) -> bool:
    it = iter(hay)
    return all(any(w == h for h in it) for w in needle)


def test_title_queries_fractional_rate_and_determinism(catalog):
    half = title_queries(catalog, rate=0.5, seed=3)
    assert 0.3 * catalog.num_rows < half.num_rows < 0.7 * catalog.num_rows
    assert half.equals(title_queries(catalog, rate=0.5, seed=3))
    assert title_queries(catalog, rate=0.0).num_rows == 0
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="not a count"):
            title_queries(catalog, rate=bad)


def test_add_title_queries_labels_them_as_positives_of_the_log(catalog):
    log = pa.table({"query": ["angle bracket"], "product_id": [catalog.column("product_id")[0].as_py()],
                    "label": pa.array([2.67], pa.float32())})
    job = load_config(PretrainJob, None, ["--data.title_queries=1", "--data.min_label=2.3"])
    both, source = add_title_queries(job, catalog, log, "file:q.parquet")
    assert both.num_rows == 1 + catalog.num_rows
    assert both.slice(0, 1).to_pylist() == log.to_pylist()
    assert both.column("label").to_pylist()[1:] == pytest.approx([2.67] * catalog.num_rows)
    assert source == f"file:q.parquet + {catalog.num_rows} title pseudo-queries"
    off = load_config(PretrainJob, None, [])
    assert add_title_queries(off, catalog, log, "file:q.parquet") == (log, "file:q.parquet")
    for value in ("-0.5", "nan"):
        bad = load_config(PretrainJob, None, [f"--data.title_queries={value}"])
        with pytest.raises(ConfigError, match=f"data.title_queries={value}"):
            add_title_queries(bad, catalog, log, "file:q.parquet")
