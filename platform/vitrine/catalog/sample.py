"""Cut the bundled sample from ../shared/data (run once by maintainers; the result is committed).

Myntra: ``n`` products stratified over the most common article types (with images, ~2 KB each).
Home Depot: ``n_queries`` judged queries with every product they judge (text only, no image).
"""

from __future__ import annotations

import argparse
import logging
import random
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from vitrine.catalog.importers import import_homedepot, import_myntra
from vitrine.catalog.io import write_table

log = logging.getLogger(__name__)


def make_sample(shared: Path, out: Path, n: int = 2000, n_queries: int = 300, seed: int = 0) -> None:
    """Write ``myntra_sample.parquet``, ``homedepot_products.parquet`` and ``homedepot_judgments.parquet``."""
    rng = random.Random(seed)
    catalog, _, _ = import_myntra(shared / "myntra")
    by_type: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(catalog.column("articleType").to_pylist()):
        by_type[str(t)].append(i)
    types = sorted(by_type, key=lambda t: -len(by_type[t]))[:40]
    per_type = n // len(types)
    picked: list[int] = []
    for t in types:
        picked.extend(rng.sample(by_type[t], min(per_type, len(by_type[t]))))
    rest = [i for t in types for i in by_type[t] if i not in set(picked)]
    picked.extend(rng.sample(rest, n - len(picked)))
    write_table(catalog.take(pa.array(sorted(picked))), out / "myntra_sample.parquet")

    products, judgments, _ = import_homedepot(shared / "homedepot")
    queries = sorted(set(judgments.column("query").to_pylist()))
    chosen = pa.array(rng.sample(queries, n_queries))
    j = judgments.filter(pc.is_in(judgments.column("query"), chosen))
    p = products.filter(pc.is_in(products.column("product_id"), j.column("product_id")))
    write_table(p.drop_columns(["image"]), out / "homedepot_products.parquet")
    write_table(j, out / "homedepot_judgments.parquet")
    log.info("sample: %d myntra products, %d home depot products, %d judgments", len(picked), p.num_rows,
             j.num_rows)


def main() -> None:
    """``python -m vitrine.catalog.sample --shared ../shared/data --out platform/vitrine/sample``."""
    logging.basicConfig(level=logging.INFO)
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "sample")
    args = ap.parse_args()
    make_sample(args.shared, args.out)


if __name__ == "__main__":
    main()
