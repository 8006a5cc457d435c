"""Train / validation splits by query, derived Myntra judgments, and the colourless-title catalog variant.

Splits are by *query text*, never by row: a validation query's judgments are all held out, so the model is
scored on queries it never saw. The split is a stable hash of the normalised query (plus a seed), so it is
the same on every machine and does not move when rows are added.

Derived judgments (Myntra has no query log) use attribute containment: a derived query built from
``{colour, article, gender, usage}`` is relevant (label 3.0) to every catalog product with those attribute
values. Reports that use them say "derived".
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc

from vitrine.errors import ConfigError

DERIVED_LABEL = 3.0
# Colour vocabulary removed from titles in the colourless variant: Myntra's baseColour values plus common
# colour words and modifiers that appear in its titles.
COLOUR_WORDS = frozenset("""
beige black blue bronze brown burgundy charcoal coffee copper cream fluorescent gold green grey gray khaki
lavender lime magenta maroon mauve metallic multi mushroom mustard navy nude off olive orange peach pink
purple red rose rust sea silver skin tan taupe teal turquoise white yellow violet indigo fuchsia coral aqua
cyan ivory melange neon dark light multicoloured multicolored steel
""".split())


def query_bucket(query: str, seed: int = 0) -> float:
    """A stable number in [0, 1) for a query (normalised: lower case, single spaces)."""
    norm = " ".join(query.lower().split())
    digest = hashlib.sha1(f"{seed}:{norm}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_query(judgments: pa.Table, val_fraction: float = 0.2, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """(train, validation) rows of a judgments / query-log table, split by query text."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}; e.g. --val-fraction 0.2")
    buckets = {q: query_bucket(q, seed) for q in set(judgments.column("query").to_pylist())}
    is_val = pa.array([buckets[q] < val_fraction for q in judgments.column("query").to_pylist()], pa.bool_())
    return judgments.filter(pc.invert(is_val)), judgments.filter(is_val)


def _attr_key(attrs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(tuple(a.split("=", 1)) for a in attrs.split("|") if "=" in a))


def derived_judgments(catalog: pa.Table, queries: pa.Table, max_relevant: int = 2000) -> tuple[pa.Table, int]:
    """Judgments for derived queries: every product whose attributes contain the query's (label 3.0).

    Queries matching more than ``max_relevant`` products (e.g. "tshirts") say little about ranking and are
    dropped; returns (judgments, number of queries dropped).
    """
    names = [n for n in ("gender", "baseColour", "articleType", "usage") if n in catalog.schema.names]
    index: dict[tuple[str, str], set[int]] = defaultdict(set)
    cols = {n: catalog.column(n).to_pylist() for n in names}
    for n in names:
        for i, v in enumerate(cols[n]):
            index[(n, str(v))].add(i)
    ids = catalog.column("product_id").to_pylist()
    per_query: dict[str, tuple[tuple[str, str], ...]] = {}
    for q, attrs in zip(queries.column("query").to_pylist(), queries.column("attrs").to_pylist(), strict=True):
        if attrs:
            per_query.setdefault(q, _attr_key(attrs))
    out_q: list[str] = []
    out_p: list[str] = []
    dropped = 0
    for q, key in sorted(per_query.items()):
        rows = set.intersection(*(index.get(kv, set()) for kv in key)) if key else set()
        if not rows or len(rows) > max_relevant:
            dropped += 1
            continue
        out_q += [q] * len(rows)
        out_p += [ids[i] for i in sorted(rows)]
    table = pa.table({"query": pa.array(out_q, pa.string()), "product_id": pa.array(out_p, pa.string()),
                      "label": pa.array([DERIVED_LABEL] * len(out_q), pa.float32())})
    return table, dropped


def _is_colour(token: str) -> bool:
    parts = [p for p in re.split(r"[-/&]", token.strip(",.()").lower()) if p]
    return bool(parts) and all(p in COLOUR_WORDS for p in parts)


def strip_colours(title: str) -> str:
    """The title without colour words (case-insensitive whole words; "Black-White" counts), spaces collapsed."""
    return " ".join(w for w in title.split() if not _is_colour(w))


def colourless_catalog(catalog: pa.Table) -> pa.Table:
    """The catalog with colour words removed from every title (colour then lives only in the image)."""
    titles = [strip_colours(t or "") or (t or "") for t in catalog.column("title").to_pylist()]
    i = catalog.schema.get_field_index("title")
    return catalog.set_column(i, "title", pa.array(titles, pa.string()))


def write_splits(kind: str, catalog: pa.Table, judgments: pa.Table | None, out: str, val_fraction: float,
                 seed: int = 0, eval_sample: int = 0) -> dict[str, str]:
    """Write ``train/queries.parquet``, ``train/judgments.parquet`` and ``val/judgments.parquet`` (+ the
    colourless Myntra catalog).

    Home Depot: its human judgments split by query (the train part is both files). Myntra: a derived query log
    split by query; training pairs from the train queries, attribute-containment judgments for the train
    queries (what ``vitrine rerank`` learns from) and for the validation queries. With
    ``eval_sample`` > 0 (Myntra), also ``val_sample/``: a random slice of that many products and the
    validation queries judged within it, for quick comparisons such as the ablation report.
    """
    from pathlib import Path

    from vitrine.catalog.derive import derive_queries
    from vitrine.catalog.io import write_table

    root = Path(out)
    written: dict[str, str] = {}
    if kind == "homedepot" and judgments is not None:
        train, val = split_by_query(judgments, val_fraction, seed)
        train_judged = train
    elif kind == "myntra":
        derived = derive_queries(catalog, per_product=3, seed=seed)
        derived = derived.set_column(derived.schema.get_field_index("label"), "label",
                                     pa.array([DERIVED_LABEL] * derived.num_rows, pa.float32()))
        train, val_pairs = split_by_query(derived, val_fraction, seed)
        val, dropped = derived_judgments(catalog, val_pairs)
        written["val_queries_dropped_too_broad"] = str(dropped)
        train_judged, _ = derived_judgments(catalog, train)
        written["catalog_colourless"] = str(write_table(colourless_catalog(catalog),
                                                        root / "colourless" / "catalog.parquet"))
        if eval_sample:
            import random

            rows = sorted(random.Random(seed).sample(range(catalog.num_rows), min(eval_sample, catalog.num_rows)))
            part = catalog.take(rows)
            part_val, _ = derived_judgments(part, val_pairs)
            written["val_sample_catalog"] = str(write_table(part, root / "val_sample" / "catalog.parquet"))
            written["val_sample_colourless"] = str(write_table(colourless_catalog(part),
                                                               root / "val_sample" / "colourless.parquet"))
            written["val_sample_judgments"] = str(write_table(part_val, root / "val_sample" / "judgments.parquet"))
    else:
        raise ConfigError(f"--val-fraction needs a judged or derivable dataset (homedepot, myntra), not '{kind}'")
    written["train_queries"] = str(write_table(train, root / "train" / "queries.parquet"))
    written["train_judgments"] = str(write_table(train_judged, root / "train" / "judgments.parquet"))
    written["val_judgments"] = str(write_table(val, root / "val" / "judgments.parquet"))
    written["train_query_count"] = str(len(set(train.column("query").to_pylist())))
    written["val_query_count"] = str(len(set(val.column("query").to_pylist())))
    return written
