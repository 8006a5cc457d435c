"""Derived query logs for catalogs without one (Myntra): short shopper-style queries built from attributes;
and title pseudo-queries (``title_queries``) that widen a small judged log (Home Depot).

The queries are *derived*, not real shopper queries; every report that uses them says so. Each product gets
several phrasings (colour + type, type + gender, usage + type, ...), mimicking how short, attribute-heavy
e-commerce queries are. Relevance of a derived query is attribute containment: a product is relevant to
"blue jeans for men" when its colour is blue, its type jeans and its gender men.
"""

from __future__ import annotations

import html
import math
import random

import pyarrow as pa

GENDER_WORDS = {"Men": "men", "Women": "women", "Boys": "boys", "Girls": "girls", "Unisex": "unisex"}
TEMPLATES = (
    ("{colour} {article}", ("baseColour", "articleType")),
    ("{article} for {gender}", ("articleType", "gender")),
    ("{gender} {colour} {article}", ("gender", "baseColour", "articleType")),
    ("{usage} {article}", ("usage", "articleType")),
    ("{article}", ("articleType",)),
    ("{colour} {article} {gender}", ("baseColour", "articleType", "gender")),
)


def _words(value: str | None) -> str:
    return " ".join(str(value or "").lower().replace("-", " ").split())


def derive_queries(catalog: pa.Table, per_product: int = 3, seed: int = 0) -> pa.Table:
    """Build ``(query, product_id, label, attrs)`` rows, ``per_product`` phrasings per product.

    Products lacking the attributes a template needs get only the templates they can fill; a product
    without any attribute gets a query from the first three title words so no product is left out.
    """
    rng = random.Random(seed)
    cols = set(catalog.schema.names)
    rows = catalog.select([c for c in ("product_id", "title", "gender", "baseColour", "articleType", "usage")
                           if c in cols]).to_pylist()
    out_q: list[str] = []
    out_p: list[str] = []
    out_attrs: list[str] = []
    for r in rows:
        values = {
            "colour": _words(r.get("baseColour")),
            "article": _words(r.get("articleType")),
            "gender": GENDER_WORDS.get(str(r.get("gender")), _words(r.get("gender"))),
            "usage": _words(r.get("usage")),
        }
        key = {"baseColour": "colour", "articleType": "article", "gender": "gender", "usage": "usage"}
        usable = [(t, need) for t, need in TEMPLATES if all(values[key[n]] for n in need)]
        if not usable:
            out_q.append(" ".join(_words(r["title"]).split()[:3]))
            out_p.append(r["product_id"])
            out_attrs.append("")
            continue
        for template, need in rng.sample(usable, min(per_product, len(usable))):
            out_q.append(template.format(**values))
            out_p.append(r["product_id"])
            out_attrs.append("|".join(f"{n}={r.get(n)}" for n in need))
    return pa.table({
        "query": pa.array(out_q, pa.string()),
        "product_id": pa.array(out_p, pa.string()),
        "label": pa.array([1.0] * len(out_q), pa.float32()),
        "attrs": pa.array(out_attrs, pa.string()),
    })


STOP_WORDS = frozenset({"a", "an", "and", "&", "-", "/", "by", "for", "in", "of", "on", "or", "per", "the", "to",
                        "w/", "with", "x"})
UNITS = frozenset({"in", "ft", "lb", "oz", "gal", "qt", "pt", "sq", "cu", "yd", "mm", "cm", "m", "v", "w", "amp",
                   "watt", "volt", "btu", "psi", "gpm", "pc", "pack", "count", "ct", "mil", "gauge"})


def title_words(title: str | None) -> list[str]:
    """A title's query words: lowercased, stop words dropped, a unit kept with its number ("72 in", "1/2 in")."""
    words: list[str] = []
    for token in html.unescape(str(title or "")).lower().split():
        word = token.strip(".,;:()[]\"'")
        if word in UNITS and words and any(ch.isdigit() for ch in words[-1]):
            words[-1] = f"{words[-1]} {word}"
        elif word and word not in STOP_WORDS and word not in UNITS:
            words.append(word)
    return words


def title_queries(catalog: pa.Table, rate: float, label: float = 1.0, seed: int = 0,
                  min_words: int = 2, max_words: int = 4) -> pa.Table:
    """Pseudo-queries cut from product titles: ``rate`` per product on average (0.5 = every other product).

    A pseudo-query keeps ``min_words``..``max_words`` of the title's words in title order ("Simpson Strong-Tie
    12-Gauge Angle" -> "strong-tie angle"), the shape of a short shopper query that names a brand, a size or a
    type. They widen a small judged log with pairs for every catalog product, so the towers see more query
    phrasings than the log's few thousand (Home Depot overfits its 7.6k train queries). Only titles are read:
    no judged query, so validation queries stay unseen. Rows carry ``label`` (a positive on the log's scale).
    """
    if not (math.isfinite(rate) and rate >= 0):
        raise ValueError(f"title query rate {rate} is not a count; use 0 (off) or more")
    rng = random.Random(seed)
    out_q: list[str] = []
    out_p: list[str] = []
    for pid, title in zip(catalog.column("product_id").to_pylist(), catalog.column("title").to_pylist(),
                          strict=True):
        words = title_words(title)
        if not words:
            continue
        count = int(rate) + (1 if rng.random() < rate - int(rate) else 0)
        for _ in range(count):
            n = min(len(words), rng.randint(min_words, max_words))
            keep = sorted(rng.sample(range(len(words)), n))
            out_q.append(" ".join(words[i] for i in keep))
            out_p.append(pid)
    return pa.table({
        "query": pa.array(out_q, pa.string()),
        "product_id": pa.array(out_p, pa.string()),
        "label": pa.array([label] * len(out_q), pa.float32()),
    })
