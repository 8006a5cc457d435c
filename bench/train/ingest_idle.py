"""Ray Data ingest idle back-off: CPU of the split coordinator and consumer throughput, with and without it.

    python -m bench.train.ingest_idle [--seconds 60] [--idle-ms 0,20] [--work-ms 400]

Per setting, on a fresh local Ray with 2 CPUs: a Ray Data pipeline (rows -> a ``map_batches`` actor that
makes 96x96 image-sized arrays) feeds ``streaming_split(2, equal=True)``, as ``pipelines.pretrain`` does
under Ray Train, to two consumer actors that spend ``--work-ms`` of CPU on every 64-row batch (a stand-in for
a training step). Once the pipeline has filled its buffers (``--warmup`` s), the ``SplitCoordinator`` actor's
CPU time (``/proc/<pid>/stat``, Linux) and the batches consumed are counted over ``--seconds``. Printed as JSON
and saved to ``bench/results/ingest_idle.json``; ``vitrine.train.ingest`` says why the back-off exists.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.train.machine import load_average, machine, write_result

OUT = Path(__file__).resolve().parents[1] / "results" / "ingest_idle.json"


class MakeImages:
    """``map_batches`` callable: each row id -> a uint8 (side, side, 3) array, like decoded product images."""

    def __init__(self, side: int) -> None:
        self.side = side

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One image-sized array per row."""
        ids = batch["id"]
        shape = (len(ids), self.side, self.side, 3)
        return {"id": ids, "image": np.random.default_rng(int(ids[0])).integers(0, 255, shape, dtype=np.uint8)}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _coordinator_pid() -> int:
    """The pid of the (one) live ``ray::SplitCoordinator`` process, found by its process title."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::SplitCoordinator"):
                return int(proc.name)
        except OSError:
            continue
    raise RuntimeError("no ray::SplitCoordinator process found; is the split being consumed?")


def run_setting(idle_ms: float, seconds: float, warmup: float, work_ms: float, side: int) -> dict[str, Any]:
    """One setting on its own local Ray: coordinator CPU share and consumer batches/s over ``seconds``."""
    import ray
    import ray.data

    from vitrine.train import ingest

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ingest.install(ctx, idle_ms)

        @ray.remote(num_cpus=0.25)  # logical: leaves the read task (1 CPU) and the map actor room on 2 CPUs
        class Consumer:
            def __init__(self) -> None:
                self.batches = 0

            def count(self) -> int:
                return self.batches

            def consume(self, shard: Any, work_s: float) -> int:
                a = np.random.default_rng(0).random((256, 256))
                for _ in shard.iter_batches(batch_size=64, batch_format="numpy"):
                    end = time.process_time() + work_s
                    while time.process_time() < end:
                        a = a @ a / 256.0
                    self.batches += 1
                return self.batches

        ds = ray.data.range(1_000_000, override_num_blocks=4000).map_batches(
            MakeImages, fn_constructor_kwargs={"side": side}, batch_size=64,
            compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.25)
        shards = ds.streaming_split(2, equal=True)
        consumers = [Consumer.options(max_concurrency=2).remote() for _ in shards]
        for c, s in zip(consumers, shards, strict=True):
            c.consume.remote(s, work_ms / 1000)  # runs until the consumers are killed below
        time.sleep(warmup)
        pid = _coordinator_pid()
        cpu0, n0, t0 = _cpu_seconds(pid), sum(ray.get([c.count.remote() for c in consumers])), time.perf_counter()
        time.sleep(seconds)
        cpu1, n1, t1 = _cpu_seconds(pid), sum(ray.get([c.count.remote() for c in consumers])), time.perf_counter()
        for c in consumers:
            ray.kill(c)
        wall = t1 - t0
        return {"idle_backoff_ms": idle_ms, "seconds": round(wall, 1),
                "coordinator_cpu_share_of_one_core": round((cpu1 - cpu0) / wall, 3),
                "consumer_batches_per_s": round((n1 - n0) / wall, 3)}
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    """Measure every ``--idle-ms`` setting one after the other and print the side-by-side JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=30.0)
    p.add_argument("--idle-ms", default="0,20", help="comma-separated back-off settings (0 = Ray's own loop)")
    p.add_argument("--work-ms", type=float, default=400.0, help="consumer CPU per 64-row batch")
    p.add_argument("--side", type=int, default=96, help="image side of the stand-in rows (96: the CPU recipes)")
    p.add_argument("--output", type=Path, default=OUT)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        settings = [float(x) for x in args.idle_ms.split(",") if x.strip()]
    except ValueError:
        print(f"error: --idle-ms={args.idle_ms!r} is not a comma-separated list of numbers, e.g. 0,20",
              file=sys.stderr)
        return 2
    if not settings or min(settings) < 0 or args.seconds <= 0 or min(args.warmup, args.work_ms) < 0 or args.side < 1:
        print("error: --idle-ms values, --warmup and --work-ms must be >= 0, --seconds > 0 and --side >= 1",
              file=sys.stderr)
        return 2
    try:
        rows = [run_setting(ms, args.seconds, args.warmup, args.work_ms, args.side) for ms in settings]
    except (RuntimeError, OSError) as e:  # no coordinator found, or no /proc (Linux only)
        print(f"error: {e}; run it on Linux, with a --warmup long enough for the split to start", file=sys.stderr)
        return 2
    base = next((r for r in rows if r["idle_backoff_ms"] == 0), None)
    for r in rows:
        if base and r is not base and base["consumer_batches_per_s"]:
            r["consumer_speedup_vs_off"] = round(r["consumer_batches_per_s"] / base["consumer_batches_per_s"], 3)
    write_result({"bench": "ingest_idle", "machine": machine(), "load_average": load_average(),
                  "work_ms_per_batch": args.work_ms, "image_side": args.side, "settings": rows}, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
