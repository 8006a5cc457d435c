"""Derived query logs for catalogs without one (Myntra): short shopper-style queries built from attributes.

The queries are *derived*, not real shopper queries; every report that uses them says so. Each product gets
several phrasings (colour + type, type + gender, usage + type, ...), mimicking how short, attribute-heavy
e-commerce queries are. Relevance of a derived query is attribute containment: a product is relevant to
"blue jeans for men" when its colour is blue, its type jeans and its gender men.
"""

from __future__ import annotations

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
