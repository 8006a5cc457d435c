"""Collect trained product vectors (written by ``vitrine evaluate`` / ``vitrine index``) for the index benchmark.

    python -m bench.index.trained_vectors --tracking-uri sqlite:///runs/mlflow.db \
        --set myntra=<embeddings parquet>,models:/vitrine-myntra@challenger,data/myntra/val/judgments.parquet \
        --set homedepot=<embeddings parquet>,models:/vitrine-homedepot@challenger,data/homedepot/val/judgments.parquet

Each ``--set`` names an embeddings Parquet (``product_id``, ``embedding``), the registry model that wrote it and
a judgments file whose held-out validation queries are encoded with that model's query tower. The vectors of
all sets are stacked into ``products.npy`` (with ``product_ids.txt``) and the query vectors into
``queries.npy``; ``python -m bench.index.run --vectors <out> --query-source file`` benchmarks them.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]


def parse_set(text: str) -> tuple[str, Path, str, Path]:
    """``name=embeddings,model_uri,judgments`` -> its four parts (``SystemExit`` naming the bad value)."""
    name, sep, rest = text.partition("=")
    parts = rest.split(",")
    if not sep or len(parts) != 3:
        raise SystemExit(f"--set {text!r}: expected name=<embeddings parquet>,<model uri>,<judgments parquet>")
    return name, Path(parts[0]), parts[1], Path(parts[2])


def main(argv: list[str] | None = None) -> int:
    """Stack the sets' product vectors and encode their validation queries; print the summary as JSON."""
    import mlflow

    from vitrine import registry
    from vitrine.index.embed import QueryEncoder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", action="append", required=True, dest="sets", help="name=embeddings,model,judgments")
    p.add_argument("--tracking-uri", required=True, help="MLflow store holding the models")
    p.add_argument("--queries-per-set", type=int, default=500)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "vectors_trained")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    mlflow.set_tracking_uri(args.tracking_uri)
    args.out.mkdir(parents=True, exist_ok=True)
    vecs, ids, qvecs, summary = [], [], [], {"sets": {}}
    for name, emb_path, uri, judgments in map(parse_set, args.sets):
        for path in (emb_path, judgments):
            if not path.is_file():
                raise SystemExit(f"--set {name}: no file at {path}")
        table = pq.read_table(emb_path, columns=["product_id", "embedding"])
        vecs.append(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32))
        ids.extend(f"{name}:{pid}" for pid in table.column("product_id").to_pylist())
        queries = sorted(set(pq.read_table(judgments, columns=["query"]).column("query").to_pylist()))
        rng = np.random.default_rng(0)
        picked = [queries[i] for i in rng.permutation(len(queries))[:args.queries_per_set]]
        encode = QueryEncoder(registry.resolve_model(uri, args.out / "cache").local_dir, device="cpu")
        qvecs.append(np.concatenate([encode(picked[i:i + 256]) for i in range(0, len(picked), 256)]))
        summary["sets"][name] = {"products": table.num_rows, "queries": len(picked), "model": uri,
                                 "embeddings": str(emb_path), "judgments": str(judgments)}
        log.info("%s: %d products, %d queries", name, table.num_rows, len(picked))
    products, queries = np.concatenate(vecs), np.concatenate(qvecs)
    rng = np.random.default_rng(0)
    queries = queries[rng.permutation(len(queries))]  # sets interleaved: any prefix mixes the domains
    np.save(args.out / "products.npy", products)
    np.save(args.out / "queries.npy", queries)
    (args.out / "product_ids.txt").write_text("\n".join(ids))
    summary |= {"products": len(products), "unique_ids": len(set(ids)), "dim": int(products.shape[1]),
                "queries": len(queries), "query_source": "held-out validation queries through each set's own "
                "trained query tower", "model": "trained Vitrine models (one per set)"}
    (args.out / "embed.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
