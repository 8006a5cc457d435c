"""Which attributes a ranked run gets right: for each query, the share of its top-k results that share the
gender / article type / colour of the query's relevant products (their most common value). JSON out.

    python -m bench.quality.attribute_agreement --run ranked.parquet \
        --catalog data/myntra/val_sample/catalog.parquet --judgments data/myntra/val_sample/judgments.parquet
"""

from __future__ import annotations

import argparse
import json
import re
import sys

import pyarrow.parquet as pq

ATTRIBUTES = ("gender", "articleType", "baseColour")


def agreement(run: str, catalog: str, judgments: str, k: int = 10) -> dict:
    """Per attribute, the mean top-k agreement over all queries and over the queries that name a colour."""
    cat = pq.read_table(catalog, columns=["product_id", *ATTRIBUTES]).to_pandas()
    cat["product_id"] = cat["product_id"].astype(str)
    judged = pq.read_table(judgments).to_pandas()
    judged["product_id"] = judged["product_id"].astype(str)
    ranked = pq.read_table(run).to_pandas()
    ranked["product_id"] = ranked["product_id"].astype(str)
    wanted = judged.merge(cat, on="product_id").groupby("query")[list(ATTRIBUTES)].agg(
        lambda s: s.mode().iloc[0] if s.notna().any() else None)
    top = ranked[ranked["rank"] <= k].merge(cat, on="product_id").merge(
        wanted, left_on="query", right_index=True, suffixes=("", "_wanted"))
    colours = sorted({c.lower() for c in cat["baseColour"].dropna()}, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, colours)) + r")\b")
    names_colour = top["query"].str.lower().map(lambda q: bool(pattern.search(q)))
    out: dict = {"run": run, "k": k, "queries": int(top["query"].nunique()),
                 "queries_naming_a_colour": int(top.loc[names_colour, "query"].nunique())}
    for subset, rows in (("all", top), ("naming_a_colour", top[names_colour])):
        out[subset] = {a: round(float((rows[a] == rows[f"{a}_wanted"]).mean()), 4) for a in ATTRIBUTES}
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: prints the agreement as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="ranked run Parquet from `vitrine evaluate --run-output`")
    p.add_argument("--catalog", required=True, help="catalog Parquet with gender / articleType / baseColour")
    p.add_argument("--judgments", required=True, help="judgments Parquet (query, product_id, label)")
    p.add_argument("--k", type=int, default=10)
    a = p.parse_args(argv)
    print(json.dumps(agreement(a.run, a.catalog, a.judgments, a.k), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
