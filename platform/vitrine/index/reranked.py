"""Re-ranking at serve time: the ``vitrine rerank`` ranker attached to a registry version orders BM25 (words and,
when the ranker was trained with them, character trigrams) + index candidates for each query, as
``vitrine evaluate --rerank`` does offline.

A ranker is attached with ``vitrine rerank --attach=true``: a ``vitrine.reranker_uri`` tag on the registry version
whose scores it was trained with. The server loads it with that version (so on promotion, or on a redeploy for
the version it already serves) and refuses a ranker trained with another version's scores (its dense features
would mean something else). Differences from the offline path, by design: the dense candidates come from the
served index (exact only for ``Flat``; an approximate index returns its own top ``depth``), and attribute
filters restrict every list before ranking (each BM25 list and the index take their top among the matching
products). When fewer than k candidates exist, the answer continues in dense order, marked ``stage="dense"``. A ranker
trained with a cross-encoder (``vitrine rerank --cross_top=N``) re-scores its top N with it, as offline.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from vitrine.errors import RegistryError

log = logging.getLogger(__name__)


class ServedReranker:
    """BM25 over a served catalog's titles + the trained ranker, answering one query vector at a time."""

    def __init__(self, catalog: Any, reranker: Any, uri: str = "") -> None:  # serving.Catalog, rerank.Reranker
        from vitrine.rerank import candidate_builder

        self.catalog, self.reranker, self.uri = catalog, reranker, uri
        self.depth, self.char_depth = int(reranker.meta["depth"]), int(reranker.meta["char_depth"])
        self.builder = candidate_builder(list(catalog.index.product_ids), catalog.titles, None, self.depth,
                                         self.char_depth, reranker.meta.get("lexical", "bm25"), catalog.index.index,
                                         int(reranker.meta.get("prf", 0)))  # centroids read the index's vectors
        self.lexical, self.chars = self.builder.lexical, self.builder.chars
        log.info("re-ranking with %s (%s, depth %d, character trigrams %d, word list %s, %s trees)", uri,
                 reranker.meta.get("model"), self.depth, self.char_depth, reranker.meta.get("lexical", "bm25"),
                 reranker.meta.get("trees"))

    def info(self) -> dict[str, Any]:
        """What ``GET /model`` shows of the ranker."""
        keep = ("model", "depth", "char_depth", "lexical", "prf", "trees", "queries", "candidate_recall", "judgments",
                "catalog", "cross_top", "cross_weight", "cross_encoder")
        return {"uri": self.uri, **{k: self.reranker.meta[k] for k in keep if k in self.reranker.meta}}

    def search(self, query: str, vector: np.ndarray, k: int, allowed: np.ndarray | None = None
               ) -> list[tuple[int, float, str]]:
        """Top-k ``(row, score, stage)`` of one query: ranker-ordered candidates, then dense hits if short."""
        ls, lr = self.lexical.top([query], self.depth, allowed)  # a filtered-out product scores 0: dropped
        ls, lr = ls[0], np.asarray(lr[0], np.int64)
        ds, dr = self.catalog.index.search(vector[None, :], max(self.depth, k), allowed)
        ds, dr = ds[0], dr[0]
        grams = None
        if self.chars is not None:
            cs, cr = self.chars.top([query], self.char_depth, allowed)
            grams = (cs[0], np.asarray(cr[0], np.int64))
        x, rows = self.builder.candidates(query, (ls, lr), (ds[:self.depth], dr[:self.depth]), grams)
        (scores, best), = self.reranker.order([query], [self.reranker.score(x)], [rows], self.catalog.titles, k)
        out = [(int(r), float(s), "rerank") for s, r in zip(scores, best, strict=True)]
        if len(out) < k:
            pool = set(rows)
            out += [(int(r), float(s), "dense") for s, r in zip(ds, dr, strict=True)
                    if r >= 0 and int(r) not in pool][:k - len(out)]
        return out


def fetch_version_reranker(model: Any, cache_dir: str | Path) -> Any:
    """The ``Reranker`` attached to a resolved registry version (None when it has none), downloaded once per
    attached URI (re-attaching a new ranker to a version downloads it again); refuses another version's."""
    import hashlib
    import shutil

    from vitrine import registry
    from vitrine.errors import ConfigError
    from vitrine.index.serving import cache_lock
    from vitrine.rerank import Reranker

    uri = model.reranker_uri
    if not uri:
        return None
    key = hashlib.sha1(uri.encode()).hexdigest()[:16]
    local = Path(cache_dir) / model.name / model.version / "reranker_dl" / key
    with cache_lock(Path(cache_dir), f"{model.name}-{model.version}-reranker-{key}"):
        if not (local / "reranker" / "reranker.json").is_file():
            tmp = local.with_name(key + ".part")
            shutil.rmtree(tmp, ignore_errors=True)
            registry.download(uri, tmp)
            shutil.rmtree(local, ignore_errors=True)
            tmp.rename(local)
    try:
        ranker = Reranker.load(local / "reranker")
    except ConfigError as exc:
        raise RegistryError(f"model {model.name} version {model.version}: its '{registry.RERANKER_TAG}' tag "
                            f"({uri}) is not a usable ranker: {exc}") from None
    expected = f"{model.name}/v{model.version}"
    if ranker.meta.get("model") != expected:
        raise RegistryError(f"model {model.name} version {model.version}: the attached ranker ({uri}) was trained "
                            f"with the scores of {ranker.meta.get('model')}, not of {expected}; retrain it with "
                            f"`vitrine rerank --model=models:/{model.name}/{model.version} --attach=true`, or "
                            "delete the tag")
    return ranker


def load_version_reranker(model: Any, cache_dir: str | Path, catalog: Any) -> ServedReranker | None:
    """``fetch_version_reranker`` plus BM25 over the served catalog: what a replica answers with."""
    from vitrine.errors import ConfigError

    ranker = fetch_version_reranker(model, cache_dir)
    try:
        return None if ranker is None else ServedReranker(catalog, ranker, model.reranker_uri)
    except ConfigError as exc:  # e.g. a --prf ranker over an index that cannot return its vectors
        raise RegistryError(f"model {model.name} version {model.version}: its attached ranker cannot serve over this "
                            f"index: {exc}") from None
