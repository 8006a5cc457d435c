"""Query-tower cost of a seed ensemble against one member, in-process, side by side in one run.

Each query is encoded alone (batch 1, what one request costs) and in batches of 8 (what ``@serve.batch``
groups under load), by the first member and by the ensemble of all members, alternating, on this machine's
threads. Prints JSON: p50 / p95 ms per call and the ensemble's p50 ratio.

    python -m bench.serve.ensemble_cost --queries data/homedepot/val/judgments.parquet \\
        --member runs/g2/cache/vitrine-homedepot/1/model --member runs/g3/cache/vitrine-homedepot/1/model \\
        --member runs/g4/cache/vitrine-homedepot/1/model
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m bench.serve.ensemble_cost``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", required=True, help="Parquet with a query column (its distinct queries)")
    p.add_argument("--member", action="append", required=True, help="a model directory (repeat, 2 or more)")
    p.add_argument("--n", type=int, default=400, help="queries timed")
    args = p.parse_args(argv)

    import pyarrow.parquet as pq
    import torch

    from vitrine.errors import VitrineError
    from vitrine.index.embed import QueryEncoder
    from vitrine.model.ensemble import save_ensemble_dir

    queries = sorted(set(pq.read_table(args.queries, columns=["query"]).column("query").to_pylist()))[:args.n]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ens_dir = save_ensemble_dir(args.member, Path(tmp) / "model")
        except VitrineError as exc:
            raise SystemExit(f"error: {exc}") from None
        encoders = {"single": QueryEncoder(args.member[0], device="cpu"), "ensemble": QueryEncoder(ens_dir, "cpu")}
        for enc in encoders.values():  # warm-up
            enc(queries[:8])
        times: dict[str, dict[int, list[float]]] = {k: {1: [], 8: []} for k in encoders}
        for batch in (1, 8):
            for start in range(0, len(queries) - batch + 1, batch):
                chunk = queries[start:start + batch]
                for name, enc in encoders.items():
                    t0 = time.perf_counter()
                    enc(chunk)
                    times[name][batch].append((time.perf_counter() - t0) * 1000)
    report = {"members": len(args.member), "queries": len(queries), "torch_threads": torch.get_num_threads()}
    for batch in (1, 8):
        row = {name: {"p50_ms": round(float(np.percentile(t[batch], 50)), 2),
                      "p95_ms": round(float(np.percentile(t[batch], 95)), 2)} for name, t in times.items()}
        row["p50_ratio"] = round(row["ensemble"]["p50_ms"] / row["single"]["p50_ms"], 2)
        report[f"batch_{batch}"] = row
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
