"""Row -> tensor preprocessing run inside Ray Data tasks: tokenize queries and titles, decode and resize images.

``Featurizer`` is a callable class so each Ray Data actor loads its tokenizer once, not once per batch.
``PairBuilder`` joins a (small, broadcast) query log onto streamed catalog batches; ``judged_negatives`` picks
the judged non-matches it attaches as hard negatives.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from vitrine.catalog.images import decode_batch
from vitrine.catalog.keywords import enhance, terms

QUERY_TERMS = 8  # hashed terms kept per query for the satisfied-candidate mask (longer queries: first 8)
PRODUCT_TERMS = 64  # hashed terms kept per product (title + term columns)


def id_hash(ids: list[str] | np.ndarray) -> np.ndarray:
    """Stable int64 hashes of product ids (used to mask duplicates of the positive across workers)."""
    return np.array([zlib.crc32(str(i).encode()) for i in ids], dtype=np.int64)


def term_hashes(texts: list[Any], width: int, pad: int) -> np.ndarray:
    """(B, width) int64 hashes of each text's distinct terms (``keywords.terms``, hyphens split), ``pad`` after."""
    out = np.full((len(texts), width), pad, dtype=np.int64)
    for i, text in enumerate(texts):
        seen = list(dict.fromkeys(terms(as_text(text).replace("-", " "))))[:width]
        out[i, : len(seen)] = [zlib.crc32(t.encode()) for t in seen]
    return out


def as_text(value: Any) -> str:
    """A text cell as str: binary columns arrive as bytes (undecodable bytes are replaced, not raised on)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def trim_padding(ids: Any, mask: Any) -> tuple[Any, Any]:
    """Drop padding columns no row uses (numpy or torch): rows are padded to the configured maximum, but
    most queries and titles are far shorter, and attention cost grows with the padded width."""
    width = max(1, int(mask.sum(1).max()))
    return ids[:, :width], mask[:, :width]


def judged_negatives(queries: pa.Table, catalog: pa.Table, max_label: float) -> dict[str, list[tuple[str, str]]]:
    """Query text -> [(product id, title)] of the products judged for it with ``label <= max_label``.

    Why: a judged non-match shares the query's words (it was shown for that query) yet is wrong, which random
    in-batch products rarely are; MAKE's hard cases are these near-misses. Titles travel with the query log
    (small) because the negative's catalog row is not in the streamed batch. Every query-log product is in the
    catalog (``clean_judgments`` dropped and counted the others), so none is lost here.
    """
    titles = dict(zip(catalog.column("product_id").to_pylist(), catalog.column("title").to_pylist(), strict=True))
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for q, pid, label in zip(queries.column("query").to_pylist(), queries.column("product_id").to_pylist(),
                             queries.column("label").to_pylist(), strict=True):
        if label is not None and label <= max_label and pid in titles:
            out[q].append((pid, as_text(titles[pid])))
    return dict(out)


class Tokenize:
    """A fast tokenizer loaded once; pads to a fixed length so batches stack without collation."""

    def __init__(self, tokenizer_dir: str | Path) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))

    def __call__(self, texts: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Texts -> (ids, mask), both (B, max_len) int64."""
        enc = self.tokenizer([as_text(t) for t in texts], padding="max_length", truncation=True, max_length=max_len,
                             return_tensors="np")
        return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


class Featurizer:
    """Ray Data ``map_batches`` callable: catalog (+ query) rows -> model-ready numpy columns."""

    def __init__(self, tokenizer_dir: str, image_size: int, max_query_len: int, max_title_len: int,
                 keep_ids: bool = True) -> None:
        self.keep_ids = keep_ids
        self.tokenize = Tokenize(tokenizer_dir)
        self.image_size = image_size
        self.max_query_len = max_query_len
        self.max_title_len = max_title_len

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Adds t_ids/t_mask/image/has_image/image_failed/pid_hash (and q_ids/q_mask when a query column exists)."""
        ids = [as_text(i) for i in batch["product_id"]]
        out: dict[str, np.ndarray] = {"product_id": np.asarray(ids, dtype=object)} if self.keep_ids else {}
        out["t_ids"], out["t_mask"] = self.tokenize(list(batch["title"]), self.max_title_len)
        images = list(batch["image"]) if "image" in batch else [None] * len(ids)
        out["image"], out["has_image"], _ = decode_batch(images, self.image_size)
        out["image_failed"] = np.array([bool(b) for b in images]) & ~out["has_image"]
        out["pid_hash"] = id_hash(ids)
        if "query" in batch:
            out["q_ids"], out["q_mask"] = self.tokenize(list(batch["query"]), self.max_query_len)
            out["q_hash"] = id_hash([str(q).lower() for q in batch["query"]])
        if "group" in batch:
            out["g_hash"] = id_hash([as_text(g) for g in batch["group"]])
        if "query_kw" in batch:
            out["kq_ids"], out["kq_mask"] = self.tokenize(list(batch["query_kw"]), self.max_query_len)
        if "neg_title" in batch:  # data.hard_negative_max_label: the row's judged non-match ("" = none)
            out["n_ids"], out["n_mask"] = self.tokenize(list(batch["neg_title"]), self.max_title_len)
            neg_ids = [as_text(i) for i in batch["neg_id"]]
            out["n_hash"] = id_hash(neg_ids)
            out["has_neg"] = np.array([bool(i) for i in neg_ids])
        if "query" in batch and "p_text" in batch:  # loss.mask_satisfied
            out["q_terms"] = term_hashes(list(batch["query"]), QUERY_TERMS, -1)
            out["p_terms"] = term_hashes(list(batch["p_text"]), PRODUCT_TERMS, -2)
        return out


class PairBuilder:
    """Ray Data ``map_batches`` callable: one output row per (query, product) pair of a catalog batch.

    The query log is passed in whole (it is text-only and small next to the image catalog) and indexed by
    product id once per actor; catalog rows then stream through without a shuffle join.
    """

    def __init__(self, queries: pa.Table, min_label: float = 0.0,
                 keywords: dict[str, list[str]] | None = None, group_column: str = "",
                 term_columns: tuple[str, ...] | None = None,
                 negatives: dict[str, list[tuple[str, str]]] | None = None) -> None:
        self.by_product: dict[str, list[str]] = defaultdict(list)
        for q, pid, label in zip(queries.column("query").to_pylist(), queries.column("product_id").to_pylist(),
                                 queries.column("label").to_pylist(), strict=True):
            if label is not None and label > min_label:
                self.by_product[pid].append(q)
        self.keywords = keywords
        self.group_column = group_column
        self.term_columns = term_columns
        self.negatives = negatives

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Catalog rows -> (query, product_id, title, image[, query_kw]) rows; products without queries emit none.

        With keywords, ``query_kw`` is the keyword-enhanced query (Keyword Enhancement's training view); with
        a group column, ``group`` is its value as text (empty when missing), the key batches are packed by; with
        term columns (``loss.mask_satisfied``), ``p_text`` is the title followed by those columns' values; with
        negatives, ``neg_id`` / ``neg_title`` name one judged non-match of the query ("" when it has none),
        chosen by a hash of (query, product) so a query's positives spread over its negatives, run to run alike.
        """
        take: list[int] = []
        queries: list[str] = []
        enhanced: list[str] = []
        for i, pid in enumerate(batch.column("product_id").to_pylist()):
            pid = as_text(pid)
            for q in self.by_product.get(pid, ()):
                take.append(i)
                queries.append(q)
                if self.keywords is not None:
                    enhanced.append(enhance(q, self.keywords.get(pid, [])))
        cols = [c for c in ("product_id", "title", "image") if c in batch.schema.names]
        rows = pa.array(take, pa.int64())
        out = batch.select(cols).take(rows)
        out = out.append_column("query", pa.array(queries, pa.string()))
        if self.keywords is not None:
            out = out.append_column("query_kw", pa.array(enhanced, pa.string()))
        if self.group_column:
            values = batch.column(self.group_column).take(rows).to_pylist()
            out = out.append_column("group", pa.array(["" if v is None else as_text(v) for v in values]))
        if self.term_columns is not None:
            parts = [batch.column(c).take(rows).to_pylist()
                     for c in ("title", *self.term_columns)]
            text = [" ".join(as_text(v) for v in row if v is not None) for row in zip(*parts, strict=True)]
            out = out.append_column("p_text", pa.array(text, pa.string()))
        if self.negatives is not None:
            picked = [self._negative(q, as_text(p)) for q, p in
                      zip(queries, out.column("product_id").to_pylist(), strict=True)]
            out = out.append_column("neg_id", pa.array([p[0] for p in picked], pa.string()))
            out = out.append_column("neg_title", pa.array([p[1] for p in picked], pa.string()))
        return out

    def _negative(self, query: str, pid: str) -> tuple[str, str]:
        """One judged non-match of ``query`` (id, title), or ("", "")."""
        options = self.negatives.get(query, ()) if self.negatives else ()
        if not options:
            return "", ""
        return options[zlib.crc32(f"{query}\x00{pid}".encode()) % len(options)]
