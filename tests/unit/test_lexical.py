"""Product text analysis: units and dimensions by hand, spelling correction, the product word list on real titles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from vitrine.errors import ConfigError
from vitrine.evaluate import BM25Retriever, Relevance, judgments_by_query, score_run
from vitrine.lexical import ProductBM25Retriever, SpellCorrector, dictionary_words, word_retriever, words
from vitrine.rerank import FEATURES, Reranker

SAMPLE = Path(__file__).resolve().parents[2] / "platform" / "vitrine" / "sample"


@pytest.mark.parametrize(("text", "expected"), [
    ("2x4x8 Doug Fir", ["2", "x", "4", "x", "8", "doug", "fir"]),
    ("2 in. x 4 in. x 8 ft.", ["2", "in", "x", "4", "in", "x", "8", "ft"]),
    ("1-1/2in. PVC", ["1", "1/2", "in", "pvc"]),
    ('36" vanity', ["36", "in", "vanity"]),
    ("lumber 2in. x12in.x12 ft.", ["lumber", "2", "in", "x", "12", "in", "x", "12", "ft"]),
    ("600-Watt/3-Amp Timer", ["600", "watt", "3", "amp", "timer"]),
    ("5 gallons 1,000 sq. feet 90 degree", ["5", "gal", "1000", "sq", "ft", "90", "deg"]),
    ("8' ladder, 6 lbs", ["8", "ft", "ladder", "6", "lb"]),
    ("xbox in a box", ["xbox", "in", "a", "box"]),  # a unit word only after a number
])
def test_normalise_writes_sizes_and_units_one_way(text, expected):
    assert words(text) == expected


def test_stock_tokens_lose_what_the_product_analysis_keeps():
    titles = ["Charlotte Pipe 1/2 in. x 10 ft. PVC Pipe", "Charlotte Pipe 3/4 in. x 10 ft. PVC Pipe"]
    ids = ["a", "b"]
    stock = BM25Retriever(ids, titles).top(["1/2 pvc pipe"], 2)
    product = ProductBM25Retriever(ids, titles).top(["1/2in pvc pipe"], 2)
    assert stock[0][0][0] == stock[0][0][1]  # "1/2" is no token to bm25s: both pipes score alike
    assert product[1][0].tolist() == [0, 1] and product[0][0][0] > product[0][0][1]


def test_spell_corrector_fixes_unknown_words_only():
    sp = SpellCorrector(["Toilet Seat", "toilet tank", "Dremel rotary tool", "Weatherproof box", "Side panel", "back",
                        "side rail", "inches side", "Inches Guide", "6 inches", "doug fir", "driveway sealer",
                        "driveway"])
    assert sp.correct("toliet seat") == "toilet seat"        # transposition
    assert sp.correct("drumel tool") == "dremel tool"        # substitution
    assert sp.correct("watherproof box") == "weatherproof box"  # insertion
    assert sp.correct("driveway sealler") == "driveway sealer"  # deletion
    assert sp.correct("inchesside") == "inches side"         # two joined catalog words
    assert sp.correct("Doug fir 2x4") == "doug fir 2x4"      # known words and numbers as written
    assert sp.correct("zzzqqq box") == "zzzqqq box"          # nothing near: kept
    assert sp.correct("tol") == "tol"                        # under four letters: kept
    assert sp.correct("black dremel") == "back dremel"       # no catalog text holds "black" ...
    guarded = SpellCorrector(["back panel", "Dremel"], known=dictionary_words())
    assert guarded.correct("black dremell") == "black dremel"  # ... but a real word is kept, a typo corrected
    assert {"black", "doug", "toilet"} <= dictionary_words() and "toliet" not in dictionary_words()


def test_product_list_beats_stock_bm25_on_the_sample_judgments():
    catalog = pq.read_table(SAMPLE / "homedepot_products.parquet", columns=["product_id", "title"])
    ids, titles = catalog.column("product_id").to_pylist(), catalog.column("title").to_pylist()
    judged = judgments_by_query(pq.read_table(SAMPLE / "homedepot_judgments.parquet"))
    queries, rel = sorted(judged), Relevance()

    def ndcg(retriever) -> float:
        _, rows = retriever.top(queries, 100)
        run = {q: [ids[r] for r in rows[i] if r >= 0] for i, q in enumerate(queries)}
        return score_run(run, judged, rel, ks=(10, 100))["ndcg@10"]

    stock, product = ndcg(BM25Retriever(ids, titles)), ndcg(ProductBM25Retriever(ids, titles))
    assert product > stock + 0.01, (stock, product)


def test_word_list_switch_and_rankers_saved_before_it(tmp_path):
    assert word_retriever("bm25", ["a"], ["hex bolt"]).name == "bm25"
    assert word_retriever("product", ["a"], ["hex bolt"]).name == "bm25-product"
    with pytest.raises(ConfigError, match="lexical='bm26': choose one of bm25, product"):
        word_retriever("bm26", ["a"], ["hex bolt"])
    with pytest.raises(ConfigError, match="none holds a word or number"):
        word_retriever("product", ["a", "b"], ["", "the"])
    x = np.random.default_rng(0).normal(size=(80, len(FEATURES))).astype(np.float32)
    ranker = Reranker.fit(x, (x[:, 0] > 0).astype(np.int32), [8] * 10,
                          {"model": "m", "depth": 10, "char_depth": 0}, trees=5)
    assert Reranker.load(ranker.save(tmp_path / "old")).meta["lexical"] == "bm25"  # saved before the switch
    ranker.meta["lexical"] = "product"
    assert Reranker.load(ranker.save(tmp_path / "new")).meta["lexical"] == "product"
    ranker.meta["lexical"] = "bm99"
    with pytest.raises(ConfigError, match="unknown word list lexical='bm99'"):
        Reranker.load(ranker.save(tmp_path / "bad"))
