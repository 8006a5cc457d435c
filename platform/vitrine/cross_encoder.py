"""Cross-encoder stage (beyond the papers): one transformer reads query and title together and re-scores the
learned ranker's top few candidates.

Why: every earlier signal sees the query and the title apart (BM25 counts shared words, the two towers compare
pooled vectors), so none can tell that "1/2 in. copper elbow" wants the elbow and not the 1/2 in. copper pipe
that shares every word but one. A cross-encoder attends across both texts. It costs one forward pass per
(query, candidate) pair, so it only re-scores the ranker's top ``top`` (30 by default) and its score is blended
with the ranker's rather than replacing it: alone it ranks below the ranker (it reads titles only, the ranker
also the retrievers' evidence).

Training (``fit``): the judged TRAIN pairs, target ``gain / max gain``, plus ``negatives`` unjudged products
from the word list's top ``pool`` per query, target 0 (hard negatives: they share the query's words; or, with
``--cross_pool_from=ranker``, from the first ranker's top ``pool``: the products the blend will re-score; with
``mix``, from the union of both tops);
pointwise binary cross-entropy with soft targets, one pass with warm-up then linear decay. Initialised from
the shipped MiniLM (``"minilm"``) or any local Hugging Face checkpoint, mean pooling plus a linear head.

Blend (``blend``): per query, over the top ``top`` by ranker score, ``(1 - w) * z(ranker) + w * z(cross)`` with
``z`` the z-score within the query (the two scores live on unrelated scales). ``w`` is chosen on held-out TRAIN
queries that neither the ranker nor the cross-encoder trained on (``choose_weight``), so it is not fitted to
the in-sample scores both models give their own training queries.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from vitrine.errors import ConfigError

log = logging.getLogger(__name__)
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)  # the blend weights ``choose_weight`` tries


class CrossEncoder(nn.Module):
    """A Hugging Face text encoder over ``[CLS] query [SEP] title [SEP]``, mean pooled, then a linear score."""

    def __init__(self, backbone: nn.Module, tokenizer: Any, max_length: int = 48) -> None:
        super().__init__()
        self.backbone, self.tokenizer, self.max_length = backbone, tokenizer, max_length
        self.head = nn.Linear(int(backbone.config.hidden_size), 1)

    @classmethod
    def pretrained(cls, name: str = "minilm", max_length: int = 48) -> CrossEncoder:
        """A fresh head on ``name``'s weights (``"minilm"``: the shipped MiniLM; else a local checkpoint dir)."""
        from transformers import AutoModel, AutoTokenizer

        from vitrine.model.encoders import resolve_text_encoder

        path = resolve_text_encoder(name)
        return cls(AutoModel.from_pretrained(str(path)), AutoTokenizer.from_pretrained(str(path)), max_length)

    def forward(self, queries: list[str], titles: list[str]) -> torch.Tensor:
        """(B,) relevance logits of the pairs."""
        device = self.head.weight.device
        batch = self.tokenizer(queries, titles, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(device)
        hidden = self.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               token_type_ids=batch.get("token_type_ids")).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)).squeeze(-1).float()

    @torch.no_grad()
    def score(self, queries: list[str], titles: list[str], batch: int = 256, progress: str | None = None
              ) -> np.ndarray:
        """Logits of many pairs, in batches (bf16 autocast on a GPU)."""
        self.eval()
        cuda = self.head.weight.device.type == "cuda"
        out = []
        steps = range(0, len(queries), batch)
        for s in tqdm(steps, desc=progress, unit="batch", disable=progress is None):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                out.append(self(queries[s:s + batch], titles[s:s + batch]).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def fit(self, pairs: list[tuple[str, str, float]], batch: int = 32, lr: float = 5e-5, steps: int = 0,
            seed: int = 0, progress: str | None = None) -> dict[str, float]:
        """Pointwise BCE on ``(query, title, target in [0, 1])`` pairs; ``steps`` 0 = one pass. Returns figures."""
        if not pairs:
            raise ConfigError("cross-encoder: no training pairs; check --judgments (it must judge --catalog's "
                              "products)")
        rng = random.Random(seed)
        torch.manual_seed(seed)
        order = list(pairs)
        rng.shuffle(order)
        per_pass = max(1, math.ceil(len(order) / batch))
        total = steps or per_pass
        warmup = min(50, max(1, total // 10))
        opt = torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1.0 - s / total))
        self.train()
        losses = []
        for step in tqdm(range(total), desc=progress, unit="step", disable=progress is None):
            start = (step % per_pass) * batch
            chunk = order[start:start + batch]
            target = torch.tensor([c[2] for c in chunk], dtype=torch.float32, device=self.head.weight.device)
            loss = nn.functional.binary_cross_entropy_with_logits(self([c[0] for c in chunk],
                                                                       [c[1] for c in chunk]), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        self.eval()
        return {"cross_steps": total, "cross_pairs": len(order), "cross_loss_last100": float(np.mean(losses[-100:]))}

    def save(self, folder: str | Path, meta: dict[str, Any]) -> Path:
        """Write the backbone and tokenizer (Hugging Face format), ``head.pt`` and ``cross_encoder.json``."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(str(out))
        self.tokenizer.save_pretrained(str(out))
        torch.save(self.head.state_dict(), out / "head.pt")
        (out / "cross_encoder.json").write_text(json.dumps({**meta, "max_length": self.max_length}, indent=1))
        return out

    @classmethod
    def load(cls, folder: str | Path) -> CrossEncoder:
        """Read a folder written by ``save``; a clear error when it is not one."""
        from transformers import AutoModel, AutoTokenizer

        path = Path(folder)
        if not (path / "head.pt").is_file() or not (path / "cross_encoder.json").is_file():
            raise ConfigError(f"{folder}: not a cross-encoder folder (needs head.pt + cross_encoder.json + a Hugging "
                              "Face model); retrain the ranker with `vitrine rerank --cross_top=30`")
        try:
            meta = json.loads((path / "cross_encoder.json").read_text(encoding="utf-8"))
            model = cls(AutoModel.from_pretrained(str(path)), AutoTokenizer.from_pretrained(str(path)),
                        int(meta.get("max_length", 48)))
            model.head.load_state_dict(torch.load(path / "head.pt", map_location="cpu", weights_only=True))
        except (OSError, ValueError, RuntimeError, AttributeError, pickle.UnpicklingError) as exc:  # JSON, HF, head
            raise ConfigError(f"{folder}: a damaged cross-encoder folder ({type(exc).__name__}: {str(exc)[:200]}); "
                              "retrain the ranker with `vitrine rerank --cross_top=30`") from None
        if torch.cuda.is_available():
            model.to("cuda")
        return model.eval()


def training_pairs(queries: list[str], judged: dict[str, dict[str, float]], ids: list[str], titles: list[str],
                   pool_rows: np.ndarray, negatives: int, gain, seed: int = 0  # noqa: ANN001 - Relevance.gain
                   ) -> list[tuple[str, str, float]]:
    """Each query's judged pairs (target ``gain / max gain``) plus ``negatives`` unjudged products drawn from
    its ``pool_rows`` (row positions, -1 pads), target 0."""
    rng = random.Random(seed)
    row_of = {p: i for i, p in enumerate(ids)}
    top = max((gain(v) for labels in judged.values() for v in labels.values()), default=0.0) or 1.0
    out = []
    for q, rows in zip(queries, pool_rows, strict=True):
        labels = judged.get(q, {})
        out += [(q, titles[row_of[p]], gain(v) / top) for p, v in labels.items() if p in row_of]
        pool = [int(r) for r in rows if r >= 0 and ids[int(r)] not in labels]
        out += [(q, titles[r], 0.0) for r in rng.sample(pool, min(negatives, len(pool)))]
    return out


def union_pools(first: list[np.ndarray] | np.ndarray, second: np.ndarray) -> np.ndarray:
    """Per query, the rows of ``first`` then those of ``second`` not already in it (-1 pads dropped, then
    padded again to one width): the ``mix`` pool, both lists' tops in one draw."""
    merged = [list(dict.fromkeys(int(r) for r in (*a, *b) if r >= 0)) for a, b in zip(first, second, strict=True)]
    out = np.full((len(merged), max(map(len, merged), default=0)), -1, np.int64)
    for i, m in enumerate(merged):
        out[i, :len(m)] = m
    return out


def zscore(v: np.ndarray) -> np.ndarray:
    """``v`` centred and scaled within itself (a constant vector becomes zeros)."""
    v = np.asarray(v, np.float64)
    return (v - v.mean()) / (v.std() or 1.0) if len(v) else v


def blend(ranker: np.ndarray, cross: np.ndarray, weight: float) -> np.ndarray:
    """One query's blended scores of its top candidates: ``(1 - w) * z(ranker) + w * z(cross)``."""
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"cross-encoder weight={weight}: use a value in [0, 1] (0 = the ranker alone)")
    return (1.0 - weight) * zscore(ranker) + weight * zscore(cross)


def order_top(scores: np.ndarray, rows: list[int], top: int, cross_scores, weight: float  # noqa: ANN001
              ) -> tuple[np.ndarray, np.ndarray]:
    """One query's candidates re-ordered: the ranker's top ``top`` by blended score (``cross_scores(rows)`` gives
    their cross-encoder logits), then the rest in ranker order. Returns (scores, rows), blended scores shifted
    above the rest so the order reads off the scores."""
    from vitrine.rerank import top_k

    s, r = top_k(np.asarray(scores), rows, len(rows))
    head = min(top, len(r))
    if head < 2:
        return s, r
    mixed = blend(s[:head], cross_scores(r[:head].tolist()), weight)
    idx = np.argsort(-mixed, kind="stable")
    tail = s[head:]
    lift = (float(tail.max()) - float(mixed.min()) + 1.0) if len(tail) else 0.0
    return np.r_[mixed[idx] + lift, tail].astype(np.float32), np.r_[r[:head][idx], r[head:]]


def choose_weight(per_query: list[tuple[np.ndarray, np.ndarray, list[str]]], labels: list[dict[str, float]],
                  metric, weights: tuple[float, ...] = WEIGHTS) -> tuple[float, dict[str, float]]:  # noqa: ANN001
    """The blend weight with the best mean ``metric(ranked ids, labels)`` over held-out queries, each given as
    (ranker scores, cross scores, candidate ids) of its top candidates; ties go to the smaller weight."""
    curve = {}
    for w in weights:
        vals = []
        for (s, c, cand), lab in zip(per_query, labels, strict=True):
            idx = np.argsort(-blend(s, c, w), kind="stable")
            vals.append(metric([cand[i] for i in idx], lab))
        curve[f"{w:g}"] = float(np.mean(vals)) if vals else 0.0
    best = max(weights, key=lambda w: (round(curve[f"{w:g}"], 6), -w))
    return best, curve
