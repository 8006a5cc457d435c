"""The training step, optimizer and checkpoint state: plain PyTorch, no Ray, no MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitrine.config import TrainConfig
from vitrine.features import trim_padding
from vitrine.losses import make_loss

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


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Trim padding and move the model inputs of a batch to ``device``."""
    out = dict(batch)
    out["q_ids"], out["q_mask"] = trim_padding(batch["q_ids"], batch["q_mask"])
    out["t_ids"], out["t_mask"] = trim_padding(batch["t_ids"], batch["t_mask"])
    return {k: out[k].to(device, non_blocking=True) for k in (*BATCH_KEYS, "pid_hash")}


def train_step(model: nn.Module, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
               cfg: TrainConfig) -> dict[str, float]:
    """One optimisation step; returns the loss terms, in-batch top-1 accuracy and temperature as floats."""
    model.train()
    use_bf16 = batch["q_ids"].is_cuda
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
        out = model(batch)
    terms = make_loss(out, batch["pid_hash"], align_weight=cfg.align_weight)
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    optimizer.step()
    with torch.no_grad():
        acc = (out["query"] @ out["product"].t()).argmax(1).eq(torch.arange(len(out["query"]),
                                                                          device=out["query"].device))
    metrics = {k: float(v.detach()) for k, v in terms.items()}
    metrics["inbatch_acc"] = float(acc.float().mean())
    metrics["temperature"] = float(1.0 / out["logit_scale"].detach())
    metrics["image_weight"] = float(out["modal_weights"].detach()[:, 1][out["has_image"]].mean()) if bool(
        out["has_image"].any()) else 0.0
    return metrics


def save_state(path: Path, optimizer: torch.optim.Optimizer, step: int, epoch: int) -> None:
    """Optimizer state and counters, for resuming (our own file, loaded with ``weights_only``)."""
    torch.save({"optimizer": optimizer.state_dict(), "step": step, "epoch": epoch}, path / STATE)


def load_state(path: Path) -> dict[str, Any]:
    """Read what ``save_state`` wrote."""
    return torch.load(path / STATE, map_location="cpu", weights_only=True)
