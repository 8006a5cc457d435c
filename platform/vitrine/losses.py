"""Contrastive losses as pure functions of embeddings, an explicit cross-worker gather, and a memory bank.

Cross-device negatives (SIGIR 2023): ``gather_with_grad`` all-gathers embeddings from every worker and puts
the local tensor back in its slot, so the local slice keeps its gradient; every worker then computes the
loss over the *whole* gathered batch (all rows are anchors), which makes each worker's loss equal to the
single-process loss on the concatenated batch and its gradient w.r.t. local embeddings exact. DDP averages
parameter gradients over workers, so ``make_loss`` also returns an ``objective`` for the backward pass in
which the gathered terms are multiplied by the world size. Two parameters need care there: the temperature
enters every worker's gathered loss in full (each worker already holds its full-batch gradient), so in
those terms it is used through a gradient scaled by 1/W (value unchanged); and the visual task is computed
on local rows only, so it is left unscaled and DDP's average gives the global mean. At world size 1 the
gather is the identity and ``objective == loss``.

False negatives: candidates that share an id column with the anchor (the same product, or the same query
text) are masked, never negatives; ids are (B, K) int64 hashes. With ``loss.mask_satisfied`` a product that
*satisfies* another row's query is masked for it too: every term of the query occurs in the product's title
or term columns (``data.term_columns``, e.g. colour, type, gender). Why: batches packed by type
(``data.group_column``) hold many t-shirts, and "tshirts for men" then has dozens of true matches among its
"negatives"; pushing them away teaches the towers to contradict the judgments. Term containment is the
cheapest test that needs no model; it can only mask more (a missed match stays a negative, as before).

Judged hard negatives (``data.hard_negative_max_label``): each row may carry one product judged a non-match
for its query; their product vectors join the candidates of the query -> product terms (and the keyword
view's), gathered like the batch, so every query sees every worker's hard negatives. They are not added to
the title/image terms: the fused product vector is what retrieval serves.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vitrine.config import LossConfig


def world_size() -> int:
    """Number of training workers (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) local -> (W*B, ...) from all workers; gradient flows to the local slice only."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts, dim=0)


def grad_scaled(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` in value, ``factor * dL/dx`` in gradient."""
    if factor == 1.0:
        return x
    return x * factor + x.detach() * (1.0 - factor)


def satisfied_mask(q_terms: torch.Tensor, p_terms: torch.Tensor) -> torch.Tensor:
    """(B, N) bool: product j holds every term of query i. ``q_terms`` (B, Q) padded with -1, ``p_terms`` (N, P)
    padded with -2 (``features.term_hashes``); a query without terms is satisfied by nothing."""
    q_pad = q_terms == -1
    found = (q_terms[:, None, :, None] == p_terms[None, :, None, :]).any(-1) | q_pad[:, None, :]  # (B, N, Q)
    return found.all(-1) & ~q_pad.all(-1, keepdim=True)


def info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, a_ids: torch.Tensor, b_ids: torch.Tensor,
             valid: torch.Tensor | None = None, b_valid: torch.Tensor | None = None,
             also_drop: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE of anchors ``a`` (B, D) against candidates ``b`` (N >= B, D); row i's positive is b[i].

    ``a_ids`` (B, K) / ``b_ids`` (N, K): a candidate equal to the anchor in any id column is masked (a
    duplicate of the positive is never a negative). ``valid`` (B,) weights anchors (mean over valid rows;
    0 when none); ``b_valid`` (N,) > 0 marks usable candidates; ``also_drop`` (B, <= N) masks more candidates
    (the first columns; e.g. ``satisfied_mask``).
    """
    logits = scale * a @ b.t()  # (B, N)
    rows = torch.arange(a.shape[0], device=a.device)
    drop = (a_ids.unsqueeze(1) == b_ids.unsqueeze(0)).any(-1)  # (B, N)
    if b_valid is not None:
        drop |= ~(b_valid > 0).unsqueeze(0)
    if also_drop is not None:
        drop[:, : also_drop.shape[1]] |= also_drop
    drop[rows, rows] = False
    losses = F.cross_entropy(logits.masked_fill(drop, float("-inf")), rows, reduction="none")
    if valid is None:
        return losses.mean()
    return (losses * valid).sum() / valid.sum().clamp(min=1)


def pair_loss(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, ids: torch.Tensor,
              valid: torch.Tensor | None = None, bank: tuple[torch.Tensor, torch.Tensor] | None = None,
              satisfied: torch.Tensor | None = None,
              hard: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over already-gathered pairs (a_i, b_i); ``bank`` adds extra b-side negatives.

    ``satisfied`` (B, B): b_j is a true match of a_i (query anchors, product candidates), masked both ways.
    ``hard``: (M, D) more b-side negatives, their (M, K) ids and (M,) validity (judged hard negatives)."""
    b_cand, b_ids, b_valid = b, ids, valid
    for extra in (bank, hard):
        if extra is None or extra[0].shape[0] == 0:
            continue
        extra_valid = extra[2] if len(extra) > 2 else torch.ones(extra[0].shape[0], device=b.device)
        if b_valid is None and len(extra) > 2:
            b_valid = torch.ones(b_cand.shape[0], device=b.device)
        b_cand = torch.cat([b_cand, extra[0]])
        b_ids = torch.cat([b_ids, extra[1]])
        if b_valid is not None:
            b_valid = torch.cat([b_valid, extra_valid])
    forward = info_nce(a, b_cand, scale, ids, b_ids, valid, b_valid, satisfied)
    backward = info_nce(b, a, scale, ids, ids, valid, valid, None if satisfied is None else satisfied.t())
    return 0.5 * (forward + backward)


class MemoryBank(nn.Module):
    """FIFO queue of recent product embeddings (no gradient) used as extra negatives.

    The SIGIR 2023 paper names a memory bank without its staleness policy. Vitrine keeps a bounded queue
    (not a momentum encoder): entries are at most ``size / global_batch`` steps old, which with the small
    sizes used here keeps them close to the current encoder while multiplying the negatives per anchor;
    ``size=0`` turns it off. Each entry keeps its id hashes so duplicates of a positive stay masked.
    """

    def __init__(self, size: int, dim: int, id_cols: int = 2) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("feats", torch.zeros(size, dim), persistent=False)
        self.register_buffer("ids", torch.full((size, id_cols), -1, dtype=torch.int64), persistent=False)
        self.count = 0  # total entries ever enqueued
        self.ptr = 0

    def __len__(self) -> int:
        return min(self.count, self.size)

    def negatives(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Current entries, oldest first: (n, D) features and (n, K) ids."""
        n = len(self)
        if n < self.size:
            return self.feats[:n], self.ids[:n]
        order = torch.cat([torch.arange(self.ptr, self.size), torch.arange(0, self.ptr)]).to(self.feats.device)
        return self.feats[order], self.ids[order]

    @torch.no_grad()
    def enqueue(self, feats: torch.Tensor, ids: torch.Tensor) -> None:
        """Append a (gathered) batch, overwriting the oldest entries."""
        if self.size == 0:
            return
        feats, ids = feats.detach()[-self.size:], ids[-self.size:]
        idx = (torch.arange(feats.shape[0], device=feats.device) + self.ptr) % self.size
        self.feats[idx] = feats.to(self.feats.dtype)
        self.ids[idx] = ids
        self.ptr = int((self.ptr + feats.shape[0]) % self.size)
        self.count += feats.shape[0]


def visual_loss(pred: torch.Tensor, target: torch.Tensor, scale: torch.Tensor, task: str) -> torch.Tensor:
    """The visual pre-training task on masked patches: (M, F) predictions vs their true (detached) features.

    ``contrastive`` (the SIGIR 2023 choice): each prediction must pick its own patch's true feature among
    all masked patches of the batch (InfoNCE). ``regression``: the masked-feature-regression baseline
    (MSE between L2-normalised vectors).
    """
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    pred, target = F.normalize(pred.float(), dim=-1), F.normalize(target.float().detach(), dim=-1)
    if task == "regression":
        return (pred - target).pow(2).sum(-1).mean()
    logits = scale * pred @ target.t()
    return F.cross_entropy(logits, torch.arange(pred.shape[0], device=pred.device))


def make_loss(out: dict[str, torch.Tensor], ids: torch.Tensor, cfg: LossConfig, bank: MemoryBank | None = None,
              query_terms: tuple[torch.Tensor, torch.Tensor] | None = None,
              hard_ids: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Every weighted term of the pre-training objective, their sum as ``loss`` and ``objective`` to backprop.

    ``ids`` (B, 2): product-id hash and query-text hash per row. Negatives come from every worker when
    ``cfg.gather_negatives``; the memory bank adds product-side negatives to the query -> product terms, and
    so do judged hard negatives (``out["neg_product"]`` with ``hard_ids``: (B, 2) ids and (B,) validity).
    """
    gather = gather_with_grad if cfg.gather_negatives else (lambda x: x)
    workers = world_size() if cfg.gather_negatives else 1
    local_scale = out["logit_scale"]
    scale = grad_scaled(local_scale, 1.0 / workers)  # see the module docstring: same value, gradient / W
    q, p, t, im = (gather(out[k]) for k in ("query", "product", "title", "image"))
    all_ids = gather(ids)
    if not cfg.keyword_enhancement:
        all_ids = all_ids[:, :1]  # without Keyword Enhancement, only duplicates of the product are masked
    has = gather(out["has_image"].float())
    negatives = bank.negatives() if bank is not None and len(bank) else None
    if negatives is not None:
        negatives = (negatives[0], negatives[1][:, : all_ids.shape[1]])
    hard = None
    if "neg_product" in out and hard_ids is not None:
        hard = (gather(out["neg_product"]), gather(hard_ids[0])[:, : all_ids.shape[1]], gather(hard_ids[1]))
    sat = None
    if cfg.mask_satisfied and query_terms is not None:
        sat = satisfied_mask(gather(query_terms[0]), gather(query_terms[1]))
    terms = {
        "query_product": pair_loss(q, p, scale, all_ids, bank=negatives, satisfied=sat, hard=hard),
        "query_title": pair_loss(q, t, scale, all_ids, satisfied=sat),
        "query_image": pair_loss(q, im, scale, all_ids, valid=has, satisfied=sat),
        "title_image": pair_loss(t, im, scale, all_ids[:, :1], valid=has),
    }
    weights = {"query_product": cfg.w_query_product, "query_title": cfg.w_query_title,
               "query_image": cfg.w_query_image, "title_image": cfg.w_title_image}
    if cfg.keyword_enhancement and "query_kw" in out:
        qk = gather(out["query_kw"])
        terms["keyword_product"] = pair_loss(qk, p, scale, all_ids, bank=negatives, satisfied=sat, hard=hard)
        terms["keyword_consistency"] = (1.0 - (q * qk.detach()).sum(-1)).mean()
        weights["keyword_product"] = weights["keyword_consistency"] = cfg.w_keyword
    if cfg.visual_task != "none" and "visual_pred" in out:
        terms["visual"] = visual_loss(out["visual_pred"], out["visual_target"], local_scale, cfg.visual_task)
        weights["visual"] = cfg.w_visual
    gathered = sum(weights[k] * v for k, v in terms.items() if k != "visual")
    local = weights["visual"] * terms["visual"] if "visual" in terms else 0.0
    terms["loss"] = gathered + local
    terms["objective"] = gathered * workers + local
    return terms
