"""Embed the full Myntra + Home Depot catalogs (and real Home Depot queries) with the zero-shot product tower.

    python -m bench.index.embed_catalogs [--data ../shared/data] [--out runs/bench/vectors] [--limit 0]

The untrained MAKE model is the zero-shot MiniLM bi-encoder (query and title projections start equal) with
ImageNet MobileNetV2 for images. Writes ``products.npy`` (N, D), ``product_ids.txt``, ``queries.npy`` and a
``embed.json`` summary (counts, seconds); ``bench.index.run`` reads them.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]


def zero_shot_model_dir(out: Path) -> Path:
    """Write the untrained (zero-shot) MAKE model to ``out`` once and return it."""
    from vitrine.config import DataConfig, ModelConfig
    from vitrine.model.make import MakeModel
    from vitrine.model.store import META, save_model_dir

    if not (out / META).is_file():
        save_model_dir(MakeModel(ModelConfig(), pretrained=True), DataConfig(), out)
    return out


def catalog_batches(data: Path, batch_size: int, limit: int):  # noqa: ANN201 - generator of dict batches
    """Yield catalog batches (product_id, title, image or None) from the Myntra parts then Home Depot."""
    files = sorted((data / "myntra").glob("products-*.parquet")) + [data / "homedepot" / "products.parquet"]
    seen = 0
    for f in files:
        pf = pq.ParquetFile(f)
        cols = [c for c in ("product_id", "title", "image") if c in pf.schema_arrow.names]
        for rb in pf.iter_batches(batch_size=batch_size, columns=cols):
            t = pa.Table.from_batches([rb])
            batch = {"product_id": np.asarray(t.column("product_id").to_pylist(), dtype=object),
                     "title": np.asarray(t.column("title").to_pylist(), dtype=object),
                     "image": np.asarray(t.column("image").to_pylist() if "image" in cols else [None] * len(t),
                                         dtype=object)}
            if limit and seen + len(t) > limit:
                yield {k: v[:limit - seen] for k, v in batch.items()}
                return
            seen += len(t)
            yield batch


def main(argv: list[str] | None = None) -> int:
    """Embed the catalogs and the real queries; print the summary as JSON."""
    import torch

    from vitrine.index.embed import ProductEmbedder, QueryEncoder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "vectors")
    p.add_argument("--limit", type=int, default=0, help="stop after this many products (0 = all)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--queries", type=int, default=2000, help="real Home Depot queries to embed")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not (args.data / "myntra").is_dir():
        raise SystemExit(f"no catalogs at {args.data}; pass --data pointing at the shared data folder")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = zero_shot_model_dir(args.out / "model")
    embed = ProductEmbedder(str(model_dir))
    qenc = QueryEncoder(model_dir)
    queries_tbl = pq.read_table(args.data / "homedepot" / "judgments.parquet", columns=["query"])
    queries = sorted(set(queries_tbl.column("query").to_pylist()))
    queries = [queries[i] for i in np.random.default_rng(0).permutation(len(queries))[:args.queries]]
    t1 = time.perf_counter()
    qvec = np.concatenate([qenc(queries[i:i + 256]) for i in range(0, len(queries), 256)])
    np.save(args.out / "queries.npy", qvec.astype(np.float32))
    query_s = time.perf_counter() - t1
    vecs, ids, t0 = [], [], time.perf_counter()
    for batch in catalog_batches(args.data, args.batch_size, args.limit):
        out = embed(batch)
        vecs.append(out["embedding"])
        ids.extend(out["product_id"])
        log.info("%d products embedded (%.0f/s)", len(ids), len(ids) / (time.perf_counter() - t0))
        if len(vecs) % 20 == 0:  # partial results survive an interrupted run
            np.save(args.out / "products.npy", np.concatenate(vecs).astype(np.float32))
            (args.out / "product_ids.txt").write_text("\n".join(ids))
    embed_s = time.perf_counter() - t0
    products = np.concatenate(vecs)
    summary = {"products": len(ids), "unique_ids": len(set(ids)), "dim": int(products.shape[1]),
               "embed_seconds": round(embed_s, 1), "products_per_s": round(len(ids) / embed_s, 1),
               "queries": len(queries), "query_embed_seconds": round(query_s, 1),
               "model": "zero-shot MAKE (MiniLM-L6 + MobileNetV2, untrained heads)"}
    np.save(args.out / "products.npy", products.astype(np.float32))
    (args.out / "product_ids.txt").write_text("\n".join(ids))
    (args.out / "embed.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
