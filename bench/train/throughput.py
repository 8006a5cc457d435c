"""Pre-training throughput: the real job path (Ray Data -> Ray Train on JPEG catalog rows) vs a plain loop.

    python -m bench.train.throughput [--config configs/cpu.yaml] [--steps 60] [--key=value ...]

Side by side in one run, same model config and global batch:

* ``ray``: ``pipelines.pretrain``'s Ray Data pipeline (Parquet read, pair building, JPEG decode, tokenisation)
  feeding ``TorchTrainer`` workers. Rank 0 logs ``samples_per_s`` to a throw-away MLflow store every
  ``log_every`` steps; the steady-state rate is taken between step ``--warmup`` and the last logged step
  before the final one (start-up and the final checkpoint are reported apart, as end-to-end seconds).
* ``plain``: one process, all cores, ``vitrine.train.loop.train_step`` on one pre-featurised real batch of the
  same global size held in memory (no data loading): the ceiling. It runs before and after the Ray run and
  the mean is used, so a change in machine load during the run shows up as a gap between the two.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` over one training step (matmuls and
convolutions, forward + backward); MFU divides achieved FLOP/s by the peak stated in the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.train.machine import load_average, machine, peak_fp32_gflops, write_result
from pipelines.common import catalog_index, ray_session
from pipelines.pretrain import build_dataset, load_query_log
from vitrine import registry
from vitrine.catalog.keywords import mine_keywords
from vitrine.config import PretrainJob
from vitrine.config_io import flatten, load_config
from vitrine.features import Featurizer, PairBuilder
from vitrine.losses import MemoryBank
from vitrine.model.encoders import resolve_text_encoder
from vitrine.model.make import MakeModel
from vitrine.train.loop import build_optimizer, to_device, train_step
from vitrine.train.ray_train import run_trainer

REPO = Path(__file__).resolve().parents[2]

log = logging.getLogger("bench.train")
KEYS = ("q_ids", "q_mask", "t_ids", "t_mask", "image", "has_image", "pid_hash", "q_hash", "kq_ids", "kq_mask")


def real_batch(job: PretrainJob, size: int) -> dict[str, torch.Tensor]:
    """``size`` real (query, product) pairs from the job's catalog, featurised once, as torch tensors."""
    import pyarrow.parquet as pq

    catalog, _, files = catalog_index(job.data.catalog)
    queries, _ = load_query_log(job, catalog)
    keywords = mine_keywords(queries, catalog, k=job.loss.num_keywords) if job.loss.keyword_enhancement else None
    rows = pq.read_table(files[0], columns=["product_id", "title", "image"]).slice(0, size)
    pairs = PairBuilder(queries, keywords=keywords)(rows).slice(0, size)
    if pairs.num_rows < size:
        raise ValueError(f"only {pairs.num_rows} pairs in the first {size} catalog rows; lower --train.batch_size")
    feats = Featurizer(str(resolve_text_encoder(job.model.text_encoder)), job.data.image_size,
                       job.data.max_query_len, job.data.max_title_len)(
        {k: pairs.column(k).to_numpy(zero_copy_only=False) for k in pairs.column_names})
    return to_device({k: torch.as_tensor(feats[k]) for k in KEYS if k in feats}, torch.device("cpu"))


def plain_setup(job: PretrainJob) -> tuple[MakeModel, torch.optim.Optimizer, MemoryBank | None]:
    """The job's model, optimizer and memory bank (if any), built in this process as a training worker does."""
    torch.manual_seed(job.train.seed)
    model = MakeModel(job.model)
    model.set_temperature(job.train.temperature, job.train.learn_temperature)
    optimizer = build_optimizer(model, job.train)
    bank = MemoryBank(job.loss.memory_bank, job.model.embed_dim) if job.loss.memory_bank else None
    return model, optimizer, bank


def plain_loop(job: PretrainJob, batch: dict[str, torch.Tensor], steps: int, warmup: int) -> dict[str, Any]:
    """Train ``warmup + steps`` steps in this process on the same in-memory batch; time the last ``steps``."""
    model, optimizer, bank = plain_setup(job)
    for _ in range(warmup):
        train_step(model, batch, optimizer, job.loss, bank)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, batch, optimizer, job.loss, bank)
    seconds = time.perf_counter() - t0
    size = int(batch["q_ids"].shape[0])
    return {"steps": steps, "warmup_steps": warmup, "batch": size, "seconds": round(seconds, 3),
            "samples_per_s": round(steps * size / seconds, 3), "torch_threads": torch.get_num_threads()}


def step_flops(job: PretrainJob, batch: dict[str, torch.Tensor]) -> int:
    """FLOPs of one training step (forward + backward; matmul/conv only) on ``batch``."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(job.train.seed)
    model = MakeModel(job.model)
    optimizer = build_optimizer(model, job.train)
    train_step(model, batch, optimizer, job.loss)  # first step allocates optimizer state; count the second
    with FlopCounterMode(display=False) as counter:
        train_step(model, batch, optimizer, job.loss)
    return int(counter.get_total_flops())


def ray_run(job: PretrainJob, warmup: int) -> dict[str, Any]:
    """The pretrain job's Ray Data + Ray Train path; steady samples/s from rank 0's MLflow metric timestamps."""
    workdir = Path(job.workdir)
    exp = registry.setup(job.tracking, workdir)
    run_id = registry.start_run(exp, "bench-train")
    catalog, _, files = catalog_index(job.data.catalog)
    queries, _ = load_query_log(job, catalog)
    keywords = mine_keywords(queries, catalog, k=job.loss.num_keywords) if job.loss.keyword_enhancement else None
    t0 = time.perf_counter()
    with ray_session():
        result = run_trainer(job, build_dataset(job, files, queries, keywords), workdir / "ray_train",
                             "bench-train", run_id)
    total = time.perf_counter() - t0
    if result.error:
        raise result.error
    history = registry.client().get_metric_history(run_id, "samples_per_s")
    points = sorted((m.step, m.timestamp) for m in history)
    window = [p for p in points if warmup <= p[0] < job.train.max_steps]
    if len(window) < 2:
        raise ValueError(f"need >= 2 logged steps in [{warmup}, {job.train.max_steps}); got {points}: "
                         "raise --steps or lower --train.log_every")
    (s0, t_a), (s1, t_b) = window[0], window[-1]
    global_batch = job.train.batch_size * job.train.num_workers
    steady = (s1 - s0) * global_batch / ((t_b - t_a) / 1000)
    return {"steps": job.train.max_steps, "global_batch": global_batch, "window_steps": [s0, s1],
            "samples_per_s": round(steady, 3), "end_to_end_seconds": round(total, 3),
            "end_to_end_samples_per_s": round(job.train.max_steps * global_batch / total, 3),
            "worker_reported_samples_per_s": round(float(result.metrics.get("samples_per_s", 0.0)), 3),
            "catalog_rows": catalog.num_rows, "pairs": queries.num_rows}


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run plain -> Ray -> plain, print and save the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "cpu.yaml"))
    parser.add_argument("--steps", type=int, default=0, help="Ray Train steps (0 = the config's max_steps)")
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the steady-state window")
    parser.add_argument("--plain-steps", type=int, default=10, help="timed steps per plain-loop measurement")
    parser.add_argument("--peak-gflops", type=float, default=0.0,
                        help="peak FP32 GFLOP/s of the machine for MFU (0 = estimate from the CPU, see JSON)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "train_cpu.json"))
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    before = load_average()
    with tempfile.TemporaryDirectory(prefix="vitrine-bench-train-") as tmp:
        job = load_config(PretrainJob, args.config, overrides)
        train = dataclasses.replace(job.train, max_steps=args.steps or job.train.max_steps, use_gpu="false",
                                    checkpoint_every=args.steps or job.train.max_steps,
                                    log_every=min(job.train.log_every, 5))
        job = dataclasses.replace(job, workdir=tmp, train=train,
                                  tracking=dataclasses.replace(job.tracking, tracking_uri="", experiment="bench"))
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        global_batch = job.train.batch_size * job.train.num_workers
        batch = real_batch(job, global_batch)
        torch.set_num_threads(os.cpu_count() or 1)
        flops = step_flops(job, batch)
        plain_a = plain_loop(job, batch, args.plain_steps, warmup=1)
        log.info("plain loop (before): %.2f samples/s", plain_a["samples_per_s"])
        ray_ = ray_run(job, args.warmup)
        log.info("Ray Data + Ray Train: %.2f samples/s (steady)", ray_["samples_per_s"])
        torch.set_num_threads(os.cpu_count() or 1)
        plain_b = plain_loop(job, batch, args.plain_steps, warmup=1)
        log.info("plain loop (after): %.2f samples/s", plain_b["samples_per_s"])
    ceiling = (plain_a["samples_per_s"] + plain_b["samples_per_s"]) / 2
    peak, peak_note = (args.peak_gflops, "given by --peak-gflops") if args.peak_gflops else peak_fp32_gflops()
    per_sample = flops / global_batch

    def achieved(sps: float) -> dict[str, float]:
        gflops = per_sample * sps / 1e9
        return {"achieved_gflop_s": round(gflops, 2), "mfu": round(gflops / peak, 4) if peak else None}

    result = {
        "benchmark": "pretrain samples/s: Ray Data + Ray Train on real JPEG rows vs plain in-process loop",
        "command": " ".join(["python -m bench.train.throughput", *(argv if argv is not None else sys.argv[1:])]),
        "device": machine(),
        "config": {"file": os.path.relpath(args.config, REPO), **{k: v for k, v in flatten(job).items()
                                                                  if k.split(".")[0] in ("data", "model", "train")}},
        "ray": ray_ | achieved(ray_["samples_per_s"]),
        "plain_before": plain_a, "plain_after": plain_b,
        "plain_samples_per_s": round(ceiling, 3),
        "ratio_ray_over_plain": round(ray_["samples_per_s"] / ceiling, 3),
        "target_ratio": 0.85,
        "flops_per_step": flops, "flops_per_sample": round(per_sample),
        "flops_counted": "torch.utils.flop_counter.FlopCounterMode, one train_step (fwd+bwd, matmul/conv)",
        "plain": achieved(ceiling), "peak_fp32_gflop_s": peak, "peak_note": peak_note,
        "load_average_before": before, "load_average_after": load_average(),
        "note": "shared machine: other work ran beside this benchmark; see the load averages",
    }
    write_result(result, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
