"""Keyword mining for Keyword Enhancement (MAKE): per product, the title terms shoppers actually search with.

MAKE states that short queries are enriched with product keywords and that similar queries must not be
treated as each other's negatives; it does not say how keywords are mined. Vitrine's choice: a product's
keywords are its title terms that its own queries use (most-used first); when those give fewer than ``k``,
its other title terms that occur anywhere in the query log (terms shoppers type) fill in, most used first.
Stopwords, pure numbers and one-letter tokens are never keywords.

How training uses them (``loss.keyword_enhancement``): each (query, product) pair also yields an enhanced
query, "query + the product's keywords it lacks". The enhanced query is a second query view aligned with the
product (``keyword_product``), and the raw query is pulled towards it (``keyword_consistency``, the enhanced
side detached), so at serving time the raw query alone carries what the keywords taught. Rows whose query
text is the same (different products searched with the same words) are masked, never negatives; rows of
the same product always are. With the switch off, only duplicate products are masked.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import pyarrow as pa

TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
STOPWORDS = frozenset(
    "a an and are as at be by for from in into is it its of on or the to with without x".split())


def terms(text: str) -> list[str]:
    """Lowercase word tokens of a text, stopwords and bare numbers removed, order kept."""
    return [t for t in TOKEN.findall(str(text).lower()) if t not in STOPWORDS and len(t) > 1 and not t.isdigit()]


def mine_keywords(queries: pa.Table, catalog: pa.Table, k: int = 3, min_label: float = 0.0) -> dict[str, list[str]]:
    """``{product_id: [keyword, ...]}`` (at most ``k`` each) from a query log and the catalog titles."""
    per_product: dict[str, Counter] = defaultdict(Counter)
    vocabulary: Counter = Counter()
    for q, pid, label in zip(queries.column("query").to_pylist(), queries.column("product_id").to_pylist(),
                             queries.column("label").to_pylist(), strict=True):
        if label is None or label <= min_label:
            continue
        words = set(terms(q))
        per_product[pid].update(words)
        vocabulary.update(words)
    out: dict[str, list[str]] = {}
    for pid, title in zip(catalog.column("product_id").to_pylist(), catalog.column("title").to_pylist(),
                          strict=True):
        title_terms = list(dict.fromkeys(terms(title)))  # unique, in title order
        used = per_product.get(pid, Counter())
        ranked = sorted(title_terms, key=lambda t: (-used[t], -vocabulary[t], title_terms.index(t)))
        chosen = [t for t in ranked if used[t] > 0][:k]
        chosen += [t for t in ranked if t not in chosen and vocabulary[t] > 0][: k - len(chosen)]
        out[pid] = chosen
    return out


def enhance(query: str, keywords: list[str]) -> str:
    """The keyword-enhanced query: the query followed by the keywords it does not already contain."""
    have = set(terms(query))
    extra = [kw for kw in keywords if kw not in have]
    return f"{query} {' '.join(extra)}".strip() if extra else query
