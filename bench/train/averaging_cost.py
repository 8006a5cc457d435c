"""Cost of weight averaging (``train.ema_decay``): one average update against one training step, side by side.

    python -m bench.train.averaging_cost [--config configs/recipes/myntra.yaml] [--steps 10] [--key=value ...]

In one process with the training workers' thread count (``train.torch_threads``): the config's model trains
``--steps`` steps on one pre-featurised real batch of the per-worker size (``vitrine.train.loop.train_step``,
no data loading), and after each step the moving average is updated; both are timed separately. Only rank 0
keeps the average, so the update's share of a step is what the run pays for it. Printed as JSON and saved to
``bench/results/averaging_cost.json``.
"""

from __future__ import annotations

import argparse
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
from vitrine.train.averaging import WeightAverage
from vitrine.train.loop import train_step

REPO = Path(__file__).resolve().parents[2]
log = logging.getLogger("bench.train")


def main(argv: list[str] | None = None) -> int:
    """Time ``--steps`` training steps and the average update after each; print and save the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "recipes" / "myntra.yaml"))
    parser.add_argument("--steps", type=int, default=10, help="timed steps (one untimed step warms up first)")
    parser.add_argument("--decay", type=float, default=0.99, help="train.ema_decay of the average")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "averaging_cost.json"))
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    before = load_average()
    job = load_config(PretrainJob, args.config, overrides)
    if job.train.torch_threads:
        torch.set_num_threads(job.train.torch_threads)
    batch = real_batch(job, job.train.batch_size)
    model, optimizer, bank = plain_setup(job)
    train_step(model, batch, optimizer, job.loss, bank)
    average = WeightAverage(model, args.decay)
    step_s, update_s = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        train_step(model, batch, optimizer, job.loss, bank)
        t1 = time.perf_counter()
        average.update()
        step_s.append(t1 - t0)
        update_s.append(time.perf_counter() - t1)
    step_ms, update_ms = 1000 * sum(step_s) / len(step_s), 1000 * sum(update_s) / len(update_s)
    averaged = sum(t.numel() for t in average.shadow)
    log.info("train step %.0f ms, average update %.1f ms (%.1f%%)", step_ms, update_ms, 100 * update_ms / step_ms)
    result = {
        "benchmark": "weight averaging: one update of the moving average vs one training step (plain loop)",
        "command": " ".join(["python -m bench.train.averaging_cost", *(argv if argv is not None else sys.argv[1:])]),
        "device": machine(), "config": os.path.relpath(args.config, REPO),
        "torch_threads": torch.get_num_threads(), "batch": job.train.batch_size, "steps": args.steps,
        "tensors_averaged": len(average.shadow), "values_averaged": averaged,
        "train_step_ms": round(step_ms, 1), "average_update_ms": round(update_ms, 2),
        "update_share_of_step": round(update_ms / step_ms, 4),
        "load_average_before": before, "load_average_after": load_average(),
    }
    write_result(result, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
