"""Contrastive losses as pure functions of embeddings, with an explicit cross-worker gather.

``gather_with_grad`` all-gathers embeddings from every worker while keeping the local slice's gradient
(the cross-device negatives of the SIGIR 2023 paper); at world size 1 it is the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) local -> (W*B, ...) from all workers; gradient flows to the local part only."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts, dim=0)


def rank_offset(batch_size: int) -> int:
    """Index of this worker's first row in a gathered batch."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0
    return dist.get_rank() * batch_size


def info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, a_ids: torch.Tensor,
             b_ids: torch.Tensor, offset: int = 0, valid: torch.Tensor | None = None,
             b_valid: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE of local rows ``a`` (B, D) against candidates ``b`` (N, D); row i's positive is b[offset + i].

    Candidates sharing the positive's id (the same product twice in a batch) are masked, never negatives.
    ``valid`` (B,) / ``b_valid`` (N,) drop rows and candidates (e.g. products without an image); the mean
    is over valid rows, and zero (with a graph) when there are none.
    """
    logits = scale * a @ b.t()  # (B, N)
    rows = torch.arange(a.shape[0], device=a.device)
    target = rows + offset
    drop = a_ids.unsqueeze(1) == b_ids.unsqueeze(0)
    if b_valid is not None:
        drop |= ~(b_valid > 0).unsqueeze(0)
    drop[rows, target] = False
    losses = F.cross_entropy(logits.masked_fill(drop, float("-inf")), target, reduction="none")
    if valid is None:
        return losses.mean()
    return (losses * valid).sum() / valid.sum().clamp(min=1)


def symmetric_info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, ids: torch.Tensor,
                       valid: torch.Tensor | None = None) -> torch.Tensor:
    """Both directions of InfoNCE between paired rows, with negatives gathered from every worker."""
    a_all, b_all, ids_all = gather_with_grad(a), gather_with_grad(b), gather_with_grad(ids)
    v_all = gather_with_grad(valid) if valid is not None else None
    off = rank_offset(a.shape[0])
    return 0.5 * (info_nce(a, b_all, scale, ids, ids_all, off, valid, v_all)
                  + info_nce(b, a_all, scale, ids, ids_all, off, valid, v_all))


def make_loss(out: dict[str, torch.Tensor], ids: torch.Tensor, align_weight: float = 0.5
              ) -> dict[str, torch.Tensor]:
    """Query<->product InfoNCE plus title<->image alignment on products that have an image."""
    scale = out["logit_scale"]
    terms = {"query_product": symmetric_info_nce(out["query"], out["product"], scale, ids)}
    terms["title_image"] = symmetric_info_nce(out["title"], out["image"], scale, ids,
                                             out["has_image"].float())
    terms["loss"] = terms["query_product"] + align_weight * terms["title_image"]
    return terms
