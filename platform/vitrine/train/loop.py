"""The training step, optimizer and checkpoint state: plain PyTorch, no Ray, no MLflow."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitrine.config import LossConfig, TrainConfig
from vitrine.errors import ConfigError
from vitrine.features import trim_padding
from vitrine.losses import MemoryBank, gather_with_grad, make_loss

BATCH_KEYS = ("q_ids", "q_mask", "t_ids", "t_mask", "image", "has_image")
STATE = "train_state.pt"


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with two groups: pretrained encoders at ``lr``, new heads (projections, gate, scale) at ``head_lr``."""
    enc, head = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (enc if "_encoder." in name else head).append(p)
    groups = [{"params": enc, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
              {"params": head, "lr": cfg.head_lr, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, fused=torch.cuda.is_available())


LR_SCHEDULES = ("constant", "linear", "cosine")


def check_schedule(cfg: TrainConfig) -> None:
    """Refuse step counts below 1, an unknown ``train.use_gpu`` or ``train.lr_schedule``, or a warm-up that is
    negative or not shorter than the run (all before Ray starts: workers would fail minutes later)."""
    for key, low in (("max_steps", 1), ("batch_size", 1), ("checkpoint_every", 1), ("log_every", 1),
                     ("num_workers", 1), ("shuffle_buffer", 0), ("torch_threads", 0)):
        if getattr(cfg, key) < low:
            raise ConfigError(f"train.{key}={getattr(cfg, key)} must be >= {low}; e.g. --train.{key}="
                              f"{getattr(TrainConfig, key)} (the default)")
    if not cfg.cpus_per_worker > 0:
        raise ConfigError(f"train.cpus_per_worker={cfg.cpus_per_worker} must be above 0; e.g. 0.5 (the default)")
    if cfg.use_gpu.lower() not in ("auto", "true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"train.use_gpu={cfg.use_gpu!r}: use auto (a GPU when the cluster has one), true or false")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"train.lr_schedule={cfg.lr_schedule!r} is not a schedule; use one of {list(LR_SCHEDULES)}")
    if not 0 <= cfg.warmup_steps < max(cfg.max_steps, 1):
        raise ConfigError(f"train.warmup_steps={cfg.warmup_steps} must be >= 0 and below "
                          f"train.max_steps={cfg.max_steps}; use 0 for no warm-up")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rates for the update that makes step ``step`` (0-based).

    A pure function of the step rather than a torch scheduler, so a resumed run needs no scheduler state:
    linear warm-up over ``warmup_steps``, then ``constant``, or ``linear`` / ``cosine`` decay reaching 0
    at ``max_steps``. Why offer decay: with a constant rate the last checkpoint is taken at full step size,
    i.e. mid-oscillation; annealing lets the final steps settle (the run's budget is fixed in advance).
    """
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    if cfg.lr_schedule == "constant":
        return 1.0
    span = max(cfg.max_steps - cfg.warmup_steps, 1)
    done = min((step - cfg.warmup_steps) / span, 1.0)
    return 1.0 - done if cfg.lr_schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * done))


def apply_lr(optimizer: torch.optim.Optimizer, step: int, cfg: TrainConfig) -> float:
    """Set every group's rate to its base rate (kept as ``initial_lr``) times ``lr_factor``; return the factor."""
    factor = lr_factor(step, cfg)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * factor
    return factor


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Trim padding and move the model inputs of a batch to ``device``."""
    out = dict(batch)
    for ids, mask in (("q_ids", "q_mask"), ("t_ids", "t_mask"), ("kq_ids", "kq_mask"), ("n_ids", "n_mask")):
        if ids in out:
            out[ids], out[mask] = trim_padding(out[ids], out[mask])
    keys = [k for k in (*BATCH_KEYS, "kq_ids", "kq_mask", "pid_hash", "q_hash", "q_terms", "p_terms", "n_ids",
                        "n_mask", "n_hash", "has_neg") if k in out]
    return {k: out[k].to(device, non_blocking=True) for k in keys}


def regroup(batches: Iterable[dict[str, torch.Tensor]], window: int,
            generator: torch.Generator | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Pool ``window`` batches, sort their rows by ``g_hash`` (random order inside a group) and cut them again.

    Why: random in-batch negatives rarely share a product type with the positive, so the towers learn type and
    gender (easy) and barely colour (hard). Packing rows of the same group (e.g. Myntra's articleType) into a
    batch makes the other t-shirts the negatives of a "navy blue t-shirts" query. The new batches come out
    in random order, and as many as went in (resume counts batches). Batches without ``g_hash`` pass through.
    """
    pool: list[dict[str, torch.Tensor]] = []

    def flush() -> Iterator[dict[str, torch.Tensor]]:
        size = len(pool[0]["g_hash"])
        rows = {k: torch.cat([b[k] for b in pool]) for k in pool[0]}
        shuffled = torch.randperm(len(rows["g_hash"]), generator=generator)
        order = shuffled[torch.argsort(rows["g_hash"][shuffled], stable=True)]
        cuts = order.split(size)
        for i in torch.randperm(len(cuts), generator=generator).tolist():
            yield {k: v[cuts[i]] for k, v in rows.items()}
        pool.clear()

    for batch in batches:
        if window <= 1 or "g_hash" not in batch:
            yield batch
            continue
        pool.append(batch)
        if len(pool) == window:
            yield from flush()
    if pool:
        yield from flush()


def row_ids(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, 2) id hashes per row: product id and query text (for masking false negatives)."""
    q_hash = batch.get("q_hash", batch["pid_hash"])
    return torch.stack([batch["pid_hash"], q_hash], dim=1)


def hard_negative_ids(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(B, 2) id hashes of each row's judged hard negative and its (B,) validity; None without them.

    The second column is -3, which no query hash equals: the negative must stay a negative of every row
    with its query's text (only an anchor whose own positive is that product masks it)."""
    if "n_hash" not in batch:
        return None
    ids = torch.stack([batch["n_hash"], torch.full_like(batch["n_hash"], -3)], dim=1)
    return ids, batch["has_neg"].float()


def train_step(model: nn.Module, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
               loss_cfg: LossConfig, bank: MemoryBank | None = None) -> dict[str, float]:
    """One optimisation step; returns every loss term, in-batch top-1 accuracy and temperature as floats.

    The loss is computed over the batch gathered from all workers; the backward pass uses ``make_loss``'s
    ``objective``, scaled for DDP's gradient averaging (see ``vitrine.losses``). The bank is filled after.
    """
    model.train()
    use_bf16 = batch["q_ids"].is_cuda
    mask_ratio = loss_cfg.mask_ratio if loss_cfg.visual_task != "none" else 0.0
    if not loss_cfg.keyword_enhancement:
        batch = {k: v for k, v in batch.items() if k not in ("kq_ids", "kq_mask")}
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
        out = model(batch, mask_ratio=mask_ratio)
    ids = row_ids(batch)
    query_terms = (batch["q_terms"], batch["p_terms"]) if "q_terms" in batch else None
    terms = make_loss(out, ids, loss_cfg, bank, query_terms, hard_negative_ids(batch))
    optimizer.zero_grad(set_to_none=True)
    terms.pop("objective").backward()
    optimizer.step()
    if bank is not None:
        gather = gather_with_grad if loss_cfg.gather_negatives else (lambda x: x)
        bank.enqueue(gather(out["product"].detach()), gather(ids))
    with torch.no_grad():
        acc = (out["query"] @ out["product"].t()).argmax(1).eq(torch.arange(len(out["query"]),
                                                                          device=out["query"].device))
    metrics = {k: float(v.detach()) for k, v in terms.items()}
    metrics["inbatch_acc"] = float(acc.float().mean())
    metrics["temperature"] = float(1.0 / out["logit_scale"].detach())
    if "has_neg" in batch:
        metrics["hard_negative_rows"] = float(batch["has_neg"].float().mean())
    has = out["has_image"]
    metrics["image_weight"] = float(out["modal_weights"].detach()[:, 1][has].mean()) if bool(has.any()) else 0.0
    return metrics


def save_state(path: Path, optimizer: torch.optim.Optimizer, step: int, epoch: int,
               extra: dict[str, Any] | None = None) -> None:
    """Optimizer state and counters, for resuming (our own file, loaded with ``weights_only``)."""
    torch.save({"optimizer": optimizer.state_dict(), "step": step, "epoch": epoch, **(extra or {})}, path / STATE)


def load_state(path: Path) -> dict[str, Any]:
    """Read what ``save_state`` wrote."""
    return torch.load(path / STATE, map_location="cpu", weights_only=True)
