"""Weight averaging (``train.ema_decay``): an exponential moving average of the weights, kept beside training.

Why: the recipes train at a constant rate, so the last iterate is taken mid-oscillation. Decaying the rate to 0
(``train.lr_schedule=cosine``) removes the oscillation but also the large late steps that still learn (on Myntra
it scored 0.6% below the constant rate). Averaging the iterates keeps the full step size for learning and
averages the noise out of what is saved (Polyak averaging; the "EMA" of image and language model training).
Early steps would otherwise drag the average toward the pretrained start, so the decay warms up as
``min(decay, (1 + t) / (10 + t))`` after ``t`` updates: roughly the last tenth of the run until ``decay`` caps it.
Only what training changes is averaged: trainable parameters and floating-point buffers (batch-norm
statistics); frozen layers are the same in both. Pure PyTorch, no Ray.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from vitrine.errors import ConfigError


def check_decay(decay: float) -> None:
    """Refuse a ``train.ema_decay`` outside [0, 1): 0 switches averaging off, 1 would never move."""
    if not 0.0 <= decay < 1.0:
        raise ConfigError(f"train.ema_decay={decay} must be >= 0 and below 1; use 0 to save the last weights, "
                          "or e.g. 0.99 to average about the last 100 steps")


def warmed_decay(decay: float, updates: int) -> float:
    """The decay used for update number ``updates`` (1-based): the warm-up ``(1 + t) / (10 + t)``, capped."""
    return min(decay, (1 + updates) / (10 + updates))


class WeightAverage:
    """A moving average of ``model``'s trained tensors, updated after each optimizer step.

    ``updates`` counts the steps already averaged, so a run resumed at step ``s`` continues with ``updates=s``
    and the same decay sequence as an uninterrupted run.
    """

    def __init__(self, model: nn.Module, decay: float, updates: int = 0) -> None:
        check_decay(decay)
        self.decay, self.updates = decay, updates
        trained = {name for name, p in model.named_parameters() if p.requires_grad}
        trained |= {name for name, b in model.named_buffers() if b.is_floating_point()}
        live = model.state_dict()
        self.names = sorted(trained & live.keys())
        self.live = [live[n] for n in self.names]
        self.shadow = [t.detach().clone() for t in self.live]

    @torch.no_grad()
    def update(self) -> float:
        """Move the average toward the model's current tensors; returns the decay used."""
        self.updates += 1
        decay = warmed_decay(self.decay, self.updates)
        torch._foreach_lerp_(self.shadow, self.live, 1.0 - decay)
        return decay

    @torch.no_grad()
    def load(self, averaged: dict[str, torch.Tensor]) -> None:
        """Restore the average from a saved state dict (the averaged model of a checkpoint)."""
        missing = [n for n in self.names if n not in averaged]
        if missing:
            raise ValueError(f"the averaged weights lack {len(missing)} trained tensors, e.g. {missing[0]!r}; "
                             "the checkpoint was written by a different model config")
        for name, shadow in zip(self.names, self.shadow, strict=True):
            shadow.copy_(averaged[name])

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Inside the block the model holds the averaged weights; its own weights come back after."""
        with torch.no_grad():
            kept = [t.clone() for t in self.live]
            torch._foreach_copy_(self.live, self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.live, kept)
