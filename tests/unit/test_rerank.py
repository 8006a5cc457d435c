"""The learned re-ranker's pieces: tokens and match features by hand, candidates and grades, save / load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from vitrine.errors import ConfigError
from vitrine.evaluate import BM25Retriever, CharGramRetriever, Relevance, char_grams
from vitrine.rerank import (
    FEATURES,
    PRF_FEATURES,
    CandidateBuilder,
    Reranker,
    RerankRetriever,
    grades,
    tokens,
    unit_rows,
)
from vitrine.rerank_features import TitleIndex, competition_ranks, word_trigrams

SAMPLE = Path(__file__).resolve().parents[2] / "platform" / "vitrine" / "sample"

REL = Relevance(2.0, 1.0)


class _Fixed:
    """A retriever answering the same ranked rows for every query."""

    def __init__(self, name: str, rows: list[int], scores: list[float]) -> None:
        self.name, self.rows, self.scores = name, rows, scores

    def search(self, queries: list[str], k: int):
        n = len(queries)
        return np.tile(np.array(self.scores[:k], np.float32), (n, 1)), np.tile(np.array(self.rows[:k]), (n, 1))

    top = search  # the lexical side's candidate call


def reference_match(query_tokens: list[str], title_tokens: list[str]) -> list[float]:
    """The title-match features of one (query, title) pair, written per pair as the features are defined."""
    qset, tset = set(query_tokens), set(title_tokens)
    common = qset & tset
    title_text = " ".join(title_tokens)
    bigrams = [f"{a} {b}" for a, b in zip(query_tokens, query_tokens[1:], strict=False)]
    numbers = {t for t in qset if any(c.isdigit() for c in t)}
    positions = [title_tokens.index(t) / len(title_tokens) for t in common]
    fuzzy = 0.0
    for t in qset - tset:
        g = word_trigrams(t)
        fuzzy += max((len(g & word_trigrams(u)) / len(g | word_trigrams(u)) for u in tset), default=0.0)
    return [len(common) / max(len(qset), 1), sum(b in title_text for b in bigrams) / max(len(bigrams), 1),
            len(numbers & tset) / len(numbers) if numbers else -1.0,
            float(bool(query_tokens) and query_tokens[-1] in tset),
            float(bool(query_tokens) and query_tokens[0] in tset), float(len(query_tokens)), float(len(title_tokens)),
            min(positions) if positions else 1.0, float(bool(query_tokens) and " ".join(query_tokens) in title_text),
            (len(common) + fuzzy) / max(len(qset), 1)]


def match_features(query_tokens: list[str], title_tokens: list[str]) -> list[float]:
    """``TitleIndex.match`` of one pair (the code under test), through a one-title index."""
    return TitleIndex([" ".join(title_tokens)]).match(query_tokens, np.array([0]))[0].tolist()


def test_tokens_and_match_features_by_hand():
    q = tokens("3/4 in. Copper Pipes")
    assert q == ["3", "4", "in", "copper", "pipe"]
    t = tokens("Copper Pipe 3/4 in. x 10 ft.")
    f = dict(zip(FEATURES[8:18], match_features(q, t), strict=True))
    assert f == {"query_coverage": 1.0, "bigram_coverage": 0.75, "number_match": 1.0, "last_token_match": 1.0,
                 "first_token_match": 1.0, "query_tokens": 5.0, "title_tokens": 8.0, "first_match_position": 0.0,
                 "phrase_match": 0.0, "fuzzy_coverage": 1.0}
    # a misspelt word counts by its trigram Jaccard: #toliet# vs #toilet# share {#to, et#} of 10 trigrams
    f = dict(zip(FEATURES[8:18], match_features(tokens("toliet seat"), tokens("Round Toilet Seat")), strict=True))
    assert f["query_coverage"] == 0.5 and f["number_match"] == -1.0 and f["first_token_match"] == 0.0
    assert f["first_match_position"] == pytest.approx(2 / 3) and f["fuzzy_coverage"] == pytest.approx(0.6)


def test_candidates_are_the_union_and_grades_follow_the_labels():
    titles = ["bolt", "nut", "washer", "screw", "anchor"]
    lexical = _Fixed("bm25", [0, 1, 2, 3], [4.0, 2.0, 1.0, 0.0])  # row 3 scored 0: no term matched, not a hit
    dense = _Fixed("dense", [4, 0, 2, 1], [0.9, 0.8, 0.5, 0.1])
    x, rows = CandidateBuilder(lexical, dense, titles, depth=10).build(["bolt"])
    assert rows == [[0, 1, 2, 4]] and x.shape == (4, len(FEATURES))
    col = {f: x[:, i] for i, f in enumerate(FEATURES)}
    assert col["bm25_rel_top"].tolist() == [1.0, 0.5, 0.25, 0.0]
    assert col["in_both"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert col["dense_minmax"].tolist() == pytest.approx([0.875, 0.0, 0.5, 1.0])
    assert col["query_agreement"].tolist() == [3.0] * 4
    ids = ["p0", "p1", "p2", "p3", "p4"]
    judged = {"bolt": {"p0": 3.0, "p1": 2.33, "p2": 1.67}}  # p4 unjudged
    assert grades(rows, ["bolt"], ids, judged, REL).tolist() == [3, 2, 0, 0]


def test_reranker_orders_by_what_it_learned_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    n_q, per_q = 60, 8
    x = rng.normal(size=(n_q * per_q, len(FEATURES))).astype(np.float32)
    y = (x[:, FEATURES.index("number_match")] > 0.8).astype(np.int32) * 3  # relevance lives in one feature
    ranker = Reranker.fit(x, y, [per_q] * n_q, {"model": "m", "depth": 10, "char_depth": 0}, trees=40)
    assert max(ranker.importance(), key=ranker.importance().get) == "number_match"
    loaded = Reranker.load(ranker.save(tmp_path / "r"))
    assert np.allclose(loaded.score(x), ranker.score(x)) and loaded.meta["model"] == "m"

    titles = ["a", "b", "c"]
    builder = CandidateBuilder(_Fixed("bm25", [0, 1, 2], [3.0, 2.0, 1.0]), _Fixed("d", [0, 1, 2], [0.9, 0.5, 0.1]),
                               titles, depth=10)
    scores, pos = RerankRetriever(builder, loaded).search(["a", "b"], 5)
    assert pos.shape == (2, 5) and pos[:, 3:].tolist() == [[-1, -1], [-1, -1]]
    assert all(np.all(np.diff(s[:3]) <= 0) for s in scores)


def test_reranker_refusals(tmp_path):
    with pytest.raises(ConfigError, match="not a reranker folder"):
        Reranker.load(tmp_path)
    x = np.zeros((4, len(FEATURES)), np.float32)
    with pytest.raises(ConfigError, match="no candidate of any training query is judged relevant"):
        Reranker.fit(x, np.zeros(4, np.int32), [4], {})
    with pytest.raises(ConfigError, match="depth=5"):
        CandidateBuilder(None, None, [], depth=5)
    with pytest.raises(ConfigError, match="char_depth=-1"):
        CandidateBuilder(None, None, [], depth=10, char_depth=-1)
    with pytest.raises(ConfigError, match="char_depth=50: .* CharGramRetriever"):
        CandidateBuilder(None, None, [], depth=10, char_depth=50)  # a depth but no trigram retriever


def test_vectorised_match_features_equal_the_per_pair_definition_on_real_titles():
    """``TitleIndex.match`` over many candidates at once gives each pair's values as defined one pair at a time."""
    titles = pq.read_table(SAMPLE / "homedepot_products.parquet", columns=["title"]).column("title").to_pylist()
    queries = sorted(set(pq.read_table(SAMPLE / "homedepot_judgments.parquet", columns=["query"])
                         .column("query").to_pylist()))[:60]
    queries += ["toliet seat elongatd", "vynal plank 6 in", "", "zzqx 3/4", "in wall", "the the"]
    index = TitleIndex(titles + ["", "3/4 in. x 10 ft. the the"])
    rng = np.random.default_rng(0)
    for query in queries:
        rows = np.sort(rng.choice(len(titles) + 2, 150, replace=False))
        rows[-1] = len(titles)  # an empty title
        got = index.match(tokens(query), rows)
        want = [reference_match(tokens(query), tokens(index.texts[r])) for r in rows]
        assert np.allclose(got, want, rtol=1e-12, atol=0), query
        assert np.array_equal(got.astype(np.float32), np.asarray(want, np.float32)), query
    fuzzy = FEATURES.index("fuzzy_coverage") - FEATURES.index("query_coverage")
    # "seat" matches; "toliet" ~ "toilet" share #to and et# of 10 trigrams: 0.2; "elongatd" ~ "elongated": 6/11
    assert match_features(tokens("toliet seat elongatd"), tokens("Toilet Seat Elongated White"))[fuzzy] == \
        pytest.approx((1 + 2 / 10 + 6 / 11) / 3)


def test_bm25_top_keeps_the_library_scores_orders_ties_by_row_and_drops_non_matches():
    titles = ["steel bolt", "brass bolt", "bolt", "nut", "steel washer", "steel bolt", "the of"]
    ids = [f"p{i}" for i in range(len(titles))]
    bm25 = BM25Retriever(ids, titles)
    scores, rows = bm25.top(["steel bolt", "bolt", "washer nut", "the"], 5)
    lib_scores, _ = bm25.search(["steel bolt", "bolt", "washer nut"], 5)
    for i in range(3):  # the same scores rank by rank, wherever they are positive
        hits = scores[i] > 0
        assert np.allclose(scores[i][hits], lib_scores[i][:hits.sum()])
    assert rows[0].tolist()[:2] == [0, 5]  # the two "steel bolt" titles tie: row order
    assert rows[1].tolist()[:1] == [2] and sorted(rows[1].tolist()[1:4]) == [0, 1, 5]
    assert rows[1].tolist()[4] == -1 and scores[1][4] == 0  # only 4 titles hold "bolt": -1 pads
    assert sorted(rows[2].tolist()[:2]) == [3, 4] and rows[2].tolist()[2:] == [-1] * 3
    assert rows[3].tolist() == [-1] * 5  # a stopword-only query matches nothing
    allowed = np.array([False, True, True, True, True, False, True])
    _, rows = bm25.top(["steel bolt"], 5, allowed)
    assert sorted(rows[0][:3].tolist()) == [1, 2, 4] and rows[0][3:].tolist() == [-1, -1]  # 0 and 5 filtered out


def test_tied_bm25_scores_share_their_rank_feature():
    assert competition_ranks(np.array([5.0, 3.0, 3.0, 3.0, 1.0, 1.0])).tolist() == [0, 1, 1, 1, 4, 4]
    assert competition_ranks(np.array([])).tolist() == []
    lexical = _Fixed("bm25", [0, 1, 2], [2.0, 2.0, 1.0])
    x, rows = CandidateBuilder(lexical, _Fixed("d", [0], [0.5]), ["a", "b", "c"], depth=10).build(["a"])
    rank = x[:, FEATURES.index("bm25_log_rank")]
    assert rows == [[0, 1, 2]] and rank[0] == rank[1] == 0.0 and rank[2] == pytest.approx(np.log1p(2))


def test_rankers_of_former_feature_versions_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, len(FEATURES))).astype(np.float32)
    meta = {"model": "m", "depth": 10, "char_depth": 200}
    ranker = Reranker.fit(x, (x[:, 0] > 0).astype(np.int32), [8] * 10, meta, trees=5)
    assert ranker.meta["feature_version"] == 3
    assert Reranker.load(ranker.save(tmp_path / "new")).meta["char_depth"] == 200
    v2 = dict(ranker.meta, feature_version=2, features=list(FEATURES[:19]))  # what a version-2 ranker saved
    del v2["char_depth"]
    ranker.meta = v2
    with pytest.raises(ConfigError, match=r"feature version 2 \(BM25 ties in row order, no character-trigram"
                                          r" list\), this version computes 3 .* retrain it"):
        Reranker.load(ranker.save(tmp_path / "v2"))
    del ranker.meta["feature_version"]  # what every ranker saved before version 2 looks like
    with pytest.raises(ConfigError, match="feature version 1 .* retrain it"):
        Reranker.load(ranker.save(tmp_path / "old"))


def test_char_grams_and_the_trigram_retriever_find_misspelt_split_and_joined_words():
    assert char_grams("Toliet  seat") == ["#to", "tol", "oli", "lie", "iet", "et#", "#se", "sea", "eat", "at#"]
    assert char_grams("a") == ["#a#"]
    titles = ["Round Toilet Seat", "Dishwasher Rack", "Hampton Bay Ceiling Fan", "Toilet Seat Round", "Nut"]
    chars = CharGramRetriever([f"p{i}" for i in range(len(titles))], titles)
    words = BM25Retriever([f"p{i}" for i in range(len(titles))], titles)
    queries = ["toliet seat", "dish washer", "hamptonbay fan", "zzqx"]
    scores, rows = chars.top(queries, 3)
    _, word_rows = words.top(queries, 3)
    assert rows[0][:2].tolist() == [0, 3] and scores[0][0] == scores[0][1]  # same grams: a tie, in row order
    assert rows[1][0] == 1 and word_rows[1].tolist() == [-1] * 3  # "dish washer": no word of the title
    assert rows[2][0] == 2 and rows[3].tolist() == [-1] * 3 and scores[3].tolist() == [0.0] * 3
    _, rows = chars.top(["toliet seat"], 3, np.array([False, True, True, True, True]))
    assert rows[0][0] == 3 and 0 not in rows[0].tolist()  # a filtered-out row never comes back


def test_the_trigram_list_adds_candidates_and_its_own_features():
    titles = ["bolt", "nut", "washer", "screw", "anchor"]
    chars = _Fixed("chars", [3, 0, 1], [6.0, 3.0, 3.0])
    builder = CandidateBuilder(_Fixed("bm25", [0, 1], [4.0, 2.0]), _Fixed("d", [4, 0], [0.9, 0.8]), titles,
                               depth=10, chars=chars, char_depth=10)
    x, rows = builder.build(["bolt"])
    assert rows == [[0, 1, 3, 4]]  # row 3 only from the trigram list
    col = {f: x[:, i] for i, f in enumerate(FEATURES)}
    assert col["chargram"].tolist() == [3.0, 3.0, 6.0, 0.0]
    assert col["chargram_rel_top"].tolist() == [0.5, 0.5, 1.0, 0.0]
    assert col["chargram_log_rank"].tolist() == pytest.approx(np.log1p([1, 1, 0, 10]).tolist())  # tie shares 1
    assert col["in_both"].tolist() == [1.0, 0.0, 0.0, 0.0]  # still words and dense
    off, off_rows = CandidateBuilder(_Fixed("bm25", [0, 1], [4.0, 2.0]), _Fixed("d", [4, 0], [0.9, 0.8]), titles,
                                     depth=10).build(["bolt"])
    assert off_rows == [[0, 1, 4]]
    assert np.array_equal(off[:, :FEATURES.index("chargram")], x[[0, 1, 3], :FEATURES.index("chargram")])
    assert off[:, FEATURES.index("chargram_log_rank")].tolist() == pytest.approx([np.log1p(10)] * 3)


def test_neighbour_centroid_features_by_hand(tmp_path):
    """``prf``: each list's top-N centroid, the cosine of every candidate to it, raw and minus the query's best."""
    titles = ["bolt", "nut", "washer", "screw", "anchor"]
    vectors = np.array([[1, 0, 0], [0, 2, 0], [0, 0, 1], [1, 1, 0], [3, 0, 4]], np.float32)  # made unit length
    chars = _Fixed("chars", [3, 0, 1], [6.0, 3.0, 3.0])
    builder = candidate_builder_with(titles, chars, vectors, prf=2)
    x, rows = builder.build(["bolt"])
    assert rows == [[0, 1, 3, 4]] and x.shape == (4, len(FEATURES) + len(PRF_FEATURES))
    assert x[:, :len(FEATURES)].tolist() == builder_without(titles, chars).build(["bolt"])[0].tolist()
    col = {f: x[:, len(FEATURES) + i] for i, f in enumerate(PRF_FEATURES)}
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    words = (unit[0] + unit[1]) / np.linalg.norm(unit[0] + unit[1])  # the word list's top 2: rows 0, 1
    dense = (unit[4] + unit[0]) / np.linalg.norm(unit[4] + unit[0])  # the dense list's: rows 4, 0
    grams = (unit[3] + unit[0]) / np.linalg.norm(unit[3] + unit[0])  # the trigram list's: rows 3, 0
    for name, centre in (("prf_words", words), ("prf_dense", dense), ("prf_chars", grams)):
        expect = unit[[0, 1, 3, 4]] @ centre
        assert col[name].tolist() == pytest.approx(expect.tolist(), abs=1e-6)
        assert col[f"{name}_minus_top"].tolist() == pytest.approx((expect - expect.max()).tolist(), abs=1e-6)
    with pytest.raises(ConfigError, match="prf=2: .* one product vector per title"):
        CandidateBuilder(None, None, titles, depth=10, prf=2)  # no vectors
    with pytest.raises(ConfigError, match="prf=-1"):
        CandidateBuilder(None, None, titles, depth=10, prf=-1)
    ranker = Reranker.fit(x.repeat(20, 0), np.tile([3, 0, 0, 0], 20), [4] * 20, {"model": "m", "depth": 10,
                                                                              "char_depth": 10, "prf": 2}, trees=5)
    assert ranker.meta["features"] == [*FEATURES, *PRF_FEATURES] and len(ranker.importance()) == x.shape[1]
    loaded = Reranker.load(ranker.save(tmp_path / "r"))
    assert loaded.meta["prf"] == 2 and np.allclose(loaded.score(x), ranker.score(x))
    bad = tmp_path / "bad"
    ranker.save(bad)
    meta = json.loads((bad / "reranker.json").read_text())
    (bad / "reranker.json").write_text(json.dumps({**meta, "prf": 0}))  # features no longer match
    with pytest.raises(ConfigError, match="trained with other features"):
        Reranker.load(bad)


def candidate_builder_with(titles, chars, vectors, prf):
    return CandidateBuilder(_Fixed("bm25", [0, 1], [4.0, 2.0]), _Fixed("d", [4, 0], [0.9, 0.8]), titles,
                            depth=10, chars=chars, char_depth=10, vectors=unit_rows(vectors), prf=prf)


def builder_without(titles, chars):
    return CandidateBuilder(_Fixed("bm25", [0, 1], [4.0, 2.0]), _Fixed("d", [4, 0], [0.9, 0.8]), titles,
                            depth=10, chars=chars, char_depth=10)
