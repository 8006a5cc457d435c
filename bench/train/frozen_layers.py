"""Cost of a training step against ``model.freeze_text_layers``: every setting side by side in one process.

    python -m bench.train.frozen_layers [--config configs/recipes/myntra.yaml] [--layers 0,2,3,6] [--steps 5]
        [--key=value ...]

The config's model (one per setting, the same seed) trains on one pre-featurised real batch of the
per-worker size (``vitrine.train.loop.train_step``: no data loading, no DDP) with the training workers'
thread count. The settings take turns, one step each, ``--steps`` rounds after one untimed warm-up round, so
a busy moment on the shared machine falls on all of them alike. Printed as JSON and saved to
``bench/results/frozen_layers.json``; the ratio is each setting's mean step against ``--layers``' first.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path

import torch

from bench.train.machine import load_average, machine, write_result
from bench.train.throughput import plain_setup, real_batch
from vitrine.config import PretrainJob
from vitrine.config_io import load_config
from vitrine.train.loop import train_step

REPO = Path(__file__).resolve().parents[2]
log = logging.getLogger("bench.train")


def main(argv: list[str] | None = None) -> int:
    """Time interleaved training steps for each frozen-layer count; print and save the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "recipes" / "myntra.yaml"))
    parser.add_argument("--layers", default="0,2,3,6", help="comma-separated model.freeze_text_layers values")
    parser.add_argument("--steps", type=int, default=5, help="timed rounds (one untimed round warms up first)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "frozen_layers.json"))
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        layers = [int(x) for x in args.layers.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--layers={args.layers!r}: use comma-separated whole numbers, e.g. 0,3")
    if not layers or args.steps < 1:
        parser.error("--layers needs at least one value and --steps at least 1")
    before = load_average()
    job = load_config(PretrainJob, args.config, overrides)
    if job.train.torch_threads:
        torch.set_num_threads(job.train.torch_threads)
    batch = real_batch(job, job.train.batch_size)
    setups = []
    for n in layers:
        one = dataclasses.replace(job, model=dataclasses.replace(job.model, freeze_text_layers=n))
        model, optimizer, bank = plain_setup(one)
        setups.append((n, model, optimizer, bank, sum(p.numel() for p in model.parameters() if p.requires_grad)))
    times: dict[int, list[float]] = {n: [] for n in layers}
    for round_ in range(args.steps + 1):
        for n, model, optimizer, bank, _ in setups:
            t0 = time.perf_counter()
            train_step(model, batch, optimizer, job.loss, bank)
            if round_:
                times[n].append(time.perf_counter() - t0)
    base = sum(times[layers[0]]) / args.steps
    rows = []
    for n, *_, trainable in setups:
        mean = sum(times[n]) / args.steps
        rows.append({"freeze_text_layers": n, "train_step_ms": round(1000 * mean, 1),
                     "ratio_to_first": round(mean / base, 3), "trainable_parameters": trainable})
        log.info("freeze_text_layers=%d: %.0f ms a step (%.2fx)", n, 1000 * mean, mean / base)
    result = {
        "benchmark": "training step vs model.freeze_text_layers (plain loop, settings interleaved)",
        "command": " ".join(["python -m bench.train.frozen_layers", *(argv if argv is not None else sys.argv[1:])]),
        "device": machine(), "config": os.path.relpath(args.config, REPO), "overrides": overrides,
        "torch_threads": torch.get_num_threads(), "batch": job.train.batch_size, "steps": args.steps,
        "settings": rows, "load_average_before": before, "load_average_after": load_average(),
    }
    write_result(result, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
