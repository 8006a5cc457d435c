"""Ray Train glue: the per-worker loop around ``vitrine.train.loop`` and the ``TorchTrainer`` that runs it.

Rank 0 logs metrics to MLflow and writes checkpoints (model dir + optimizer state + counters + memory bank);
every worker reports at the same steps, so ``ray.train.report`` stays a barrier. When a worker dies, Ray Train
restarts the group (``FailureConfig``) and every worker resumes from the last checkpoint: the step counter,
optimizer moments and memory bank continue, and the interrupted epoch only runs the batches it had left, so
epoch boundaries fall on the same steps as in an uninterrupted run. The steps after the last checkpoint are
redone (at most ``checkpoint_every``); the resumed epoch's remaining batches come from a fresh shuffle.
With ``train.ema_decay`` > 0 rank 0 also keeps a moving average of the weights (``vitrine.train.averaging``):
a checkpoint's ``model/`` is then the average (what gets registered) and ``trained_model/`` the last weights.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from vitrine import registry
from vitrine.config import PretrainJob
from vitrine.config_io import from_dict, to_dict
from vitrine.faults import crash_point
from vitrine.train.averaging import WeightAverage
from vitrine.train.loop import apply_lr, build_optimizer, load_state, regroup, save_state, to_device, train_step

log = logging.getLogger(__name__)
TRAINED = "trained_model"  # with train.ema_decay: the last weights beside the averaged model/ of a checkpoint


def _resolve_use_gpu(value: str) -> bool:
    if value == "auto":
        import ray

        return ray.cluster_resources().get("GPU", 0) > 0
    return value.lower() in ("true", "1", "yes")


def _bank_state(bank: Any) -> dict[str, Any]:
    """The memory bank's queue (its buffers are not module state, so they are saved by hand)."""
    if bank is None:
        return {}
    return {"bank_feats": bank.feats.cpu(), "bank_ids": bank.ids.cpu(), "bank_ptr": bank.ptr,
            "bank_count": bank.count}


def _restore_bank(bank: Any, state: dict[str, Any]) -> None:
    """Refill the memory bank from a checkpoint written with the same bank size."""
    if bank is None or "bank_feats" not in state or state["bank_feats"].shape != bank.feats.shape:
        return
    bank.feats.copy_(state["bank_feats"])
    bank.ids.copy_(state["bank_ids"])
    bank.ptr, bank.count = int(state["bank_ptr"]), int(state["bank_count"])


def progress_line(step: int, max_steps: int, metrics: dict[str, Any], elapsed_s: float, start_step: int) -> str:
    """One human-readable training progress line: step, loss, in-batch accuracy, throughput and time left."""
    done = max(step - start_step, 1)
    left_s = elapsed_s / done * max(max_steps - step, 0)
    parts = [f"step {step}/{max_steps} ({100 * step / max(max_steps, 1):.0f}%)"]
    for key, label, fmt in (("loss", "loss", ".3f"), ("inbatch_acc", "in-batch acc", ".2f"),
                            ("samples_per_s", "samples/s", ".1f")):
        if key in metrics:
            parts.append(f"{label} {metrics[key]:{fmt}}")
    parts.append(f"elapsed {_duration(elapsed_s)}, left ~{_duration(left_s)}")
    return " | ".join(parts)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _quiet_report_dumps() -> None:
    """Ray Train logs every ``report`` as a full metrics dict at INFO, under a logger named by its file path
    (so ``RunConfig``'s log level does not reach it); rank 0's ``progress_line`` says the same in one line."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray Train layout: keep its default output
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _wait_reports_collected(timeout_s: float = 120.0) -> None:
    """Fault injection only: wait until Ray Train's controller has collected this worker's last report.

    The controller polls workers every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (2 s); a checkpoint counts only once
    polled, so a kill right after ``report`` would race that poll and sometimes resume from the one before. The
    injected fault models a worker lost after its checkpoint was registered; the queue is Ray's internal one,
    with a timed wait as the fallback should that move."""
    import os

    interval = float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2"))
    try:
        from ray.train.v2._internal.execution.context import get_train_context

        queue = get_train_context().get_result_queue()
    except Exception:  # private API: fall back to waiting out a few polls
        time.sleep(3 * interval)
        return
    deadline = time.monotonic() + timeout_s
    while not queue.empty() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(interval)  # the other ranks' reports are collected in the same poll round


def _save_models(model: Any, job: PretrainJob, out: Path, step: int, average: WeightAverage | None) -> None:
    """Write the checkpoint's model dir(s): ``model/`` is what gets registered (the average when
    ``train.ema_decay`` > 0); with averaging, ``trained_model/`` keeps the last weights, which a resume continues."""
    from vitrine.model.store import save_model_dir

    if average is None:
        save_model_dir(model, job.data, out / "model", extra={"train_step": step})
        return
    save_model_dir(model, job.data, out / TRAINED, extra={"train_step": step, "weights": "last"})
    with average.applied():
        save_model_dir(model, job.data, out / "model",
                       extra={"train_step": step, "weights": "moving average", "ema_decay": job.train.ema_decay})


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: build, maybe resume, train for ``max_steps``, checkpoint, report."""
    import ray.train
    import ray.train.torch
    from safetensors.torch import load_file, load_model

    from vitrine.losses import MemoryBank
    from vitrine.model.make import MakeModel
    from vitrine.model.store import WEIGHTS

    job = from_dict(PretrainJob, config["job"])
    tc = job.train
    if tc.torch_threads:
        torch.set_num_threads(tc.torch_threads)
    torch.manual_seed(tc.seed)
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    _quiet_report_dumps()
    model = MakeModel(job.model)
    model.set_temperature(tc.temperature, tc.learn_temperature)
    optimizer = build_optimizer(model, tc)
    step, epoch, epoch_step, resumed_from = 0, 0, 0, 0
    state: dict[str, Any] = {}
    averaged: dict[str, torch.Tensor] | None = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            trained = Path(d) / TRAINED if (Path(d) / TRAINED).is_dir() else Path(d) / "model"
            load_model(model, str(trained / WEIGHTS))
            if trained.name == TRAINED and tc.ema_decay and rank == 0:  # the average, kept by rank 0 only
                averaged = load_file(str(Path(d) / "model" / WEIGHTS))
            state = load_state(Path(d))
            optimizer.load_state_dict(state["optimizer"])
            step, epoch = int(state["step"]), int(state["epoch"])
            epoch_step = int(state.get("epoch_step", 0))
        resumed_from = step
        torch.manual_seed(tc.seed + step)  # fresh masks after a resume rather than replaying those of step 0
        log.info("rank %d resumed from step %d (epoch %d, %d batches into it)", rank, step, epoch, epoch_step)
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ddp = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
    average = None
    if tc.ema_decay and rank == 0:  # only rank 0 saves checkpoints, so only it keeps the average
        average = WeightAverage(model, tc.ema_decay, updates=step)
        if averaged is not None:
            average.load(averaged)
    bank = MemoryBank(job.loss.memory_bank, job.model.embed_dim).to(device) if job.loss.memory_bank else None
    _restore_bank(bank, state)
    shard = ray.train.get_dataset_shard("train")
    run_id = config.get("mlflow_run_id") if rank == 0 else None
    if run_id:
        import mlflow

        mlflow.set_tracking_uri(config["tracking_uri"])
    t0, seen = time.perf_counter(), 0
    generator = torch.Generator().manual_seed(tc.seed * 1000 + rank + step)  # batch regrouping (data.group_column)
    failed_images = 0
    skip = epoch_step  # batches of the interrupted epoch consumed before the checkpoint
    while step < tc.max_steps:
        batches = 0
        stream = shard.iter_torch_batches(batch_size=tc.batch_size, drop_last=True,
                                          local_shuffle_buffer_size=tc.shuffle_buffer or None)
        for batch in regroup(stream, job.data.group_window, generator):
            batches += 1
            if batches <= skip:
                continue
            failed_images += int(batch["image_failed"].sum())
            lr_scale = apply_lr(optimizer, step, tc)
            metrics = train_step(ddp, to_device(batch, device), optimizer, job.loss, bank)
            metrics["lr_factor"] = lr_scale
            if average is not None:
                metrics["ema_decay"] = average.update()
            step += 1
            epoch_step = batches
            crash_point("train_step", step, before_kill=_wait_reports_collected)
            seen += tc.batch_size
            metrics["samples_per_s"] = seen * ctx.get_world_size() / (time.perf_counter() - t0)
            metrics.update(epoch=epoch, step=step, images_undecodable=failed_images, resumed_from_step=resumed_from)
            last = step >= tc.max_steps
            reporting = step % tc.checkpoint_every == 0 or last or step % tc.log_every == 0
            if rank == 0 and reporting:
                log.info("%s", progress_line(step, tc.max_steps, metrics, time.perf_counter() - t0, resumed_from))
            if step % tc.checkpoint_every == 0 or last:
                with tempfile.TemporaryDirectory() as tmp:
                    if rank == 0:
                        _save_models(model, job, Path(tmp), step, average)
                        save_state(Path(tmp), optimizer, step, epoch,
                                   extra={"epoch_step": epoch_step, **_bank_state(bank)})
                        ckpt = ray.train.Checkpoint.from_directory(tmp)
                    else:
                        ckpt = None
                    ray.train.report(metrics, checkpoint=ckpt)
            elif step % tc.log_every == 0:
                ray.train.report(metrics)
            if run_id and (step % tc.log_every == 0 or last):
                try:
                    registry.log_metrics(run_id, {k: v for k, v in metrics.items() if k != "step"}, step=step)
                except Exception as exc:  # tracking is best effort: a tracking outage must not kill training
                    log.warning("could not log metrics to MLflow at step %d: %s", step, exc)
            if last:
                break
        if batches == 0:
            raise RuntimeError(f"rank {rank}: the training dataset shard yielded no batch of {tc.batch_size} "
                               "rows; lower train.batch_size or add data")
        if step < tc.max_steps:
            epoch += 1
        skip = 0


def run_trainer(job: PretrainJob, dataset: Any, storage: Path, run_name: str, mlflow_run_id: str | None
                ) -> Any:
    """Build and fit the ``TorchTrainer``; returns Ray Train's ``Result``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    use_gpu = _resolve_use_gpu(job.train.use_gpu)
    resources = {"CPU": job.train.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": to_dict(job), "mlflow_run_id": mlflow_run_id,
                           "tracking_uri": registry.resolve_tracking_uri(job.tracking, job.workdir)},
        scaling_config=ScalingConfig(num_workers=job.train.num_workers, use_gpu=use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=run_name, storage_path=str(storage.resolve()),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=2)),
        datasets={"train": dataset},
    )
    return trainer.fit()
