"""Learning-rate schedules: hand-computed factors, both optimizer groups scaled, resume-safe, bad values refused."""

from __future__ import annotations

import math

import pytest
import torch

from vitrine.config import TrainConfig
from vitrine.errors import ConfigError
from vitrine.train.loop import apply_lr, check_schedule, lr_factor


def test_constant_schedule_keeps_the_rate():
    cfg = TrainConfig(max_steps=10)
    assert [lr_factor(s, cfg) for s in range(10)] == [1.0] * 10


def test_warmup_then_linear_decay_by_hand():
    cfg = TrainConfig(max_steps=10, warmup_steps=3, lr_schedule="linear")
    # warm-up: (s+1)/4 for s = 0, 1, 2; then 1 - (s-3)/7 down to 1/7 at the last update (step 9)
    expected = [0.25, 0.5, 0.75, 1.0, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7]
    assert [lr_factor(s, cfg) for s in range(10)] == pytest.approx(expected)


def test_cosine_decay_by_hand():
    cfg = TrainConfig(max_steps=4, lr_schedule="cosine")
    expected = [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))]
    assert [lr_factor(s, cfg) for s in range(4)] == pytest.approx(expected)
    assert lr_factor(4, cfg) == pytest.approx(0.0)  # past the end it stays at 0


def test_apply_lr_scales_both_groups_from_their_base_rates_and_survives_a_resume():
    cfg = TrainConfig(max_steps=10, lr=1e-4, head_lr=1e-3, lr_schedule="linear")
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))]
    opt = torch.optim.AdamW([{"params": [params[0]], "lr": cfg.lr}, {"params": [params[1]], "lr": cfg.head_lr}])
    for step in range(5):
        apply_lr(opt, step, cfg)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4 * 0.6, 1e-3 * 0.6])
    # a resumed optimizer carries its base rates in its state dict, so step 5 continues the same curve
    fresh = torch.optim.AdamW([{"params": [params[0]], "lr": cfg.lr}, {"params": [params[1]], "lr": cfg.head_lr}])
    fresh.load_state_dict(opt.state_dict())
    apply_lr(fresh, 5, cfg)
    assert [g["lr"] for g in fresh.param_groups] == pytest.approx([1e-4 * 0.5, 1e-3 * 0.5])


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"lr_schedule": "step"}, "train.lr_schedule='step'"),
    ({"warmup_steps": -1}, "train.warmup_steps=-1"),
    ({"warmup_steps": 10, "max_steps": 10}, "below train.max_steps=10"),
])
def test_bad_schedule_settings_are_refused_with_the_fix(kwargs, fragment):
    with pytest.raises(ConfigError, match="use ") as err:
        check_schedule(TrainConfig(**kwargs))
    assert fragment in str(err.value)


@pytest.mark.parametrize("field, value, message", [
    ("checkpoint_every", 0, "train.checkpoint_every=0 must be >= 1"),
    ("log_every", 0, "train.log_every=0 must be >= 1"),
    ("max_steps", 0, "train.max_steps=0 must be >= 1"),
    ("batch_size", 0, "train.batch_size=0 must be >= 1"),
    ("cpus_per_worker", 0.0, "train.cpus_per_worker=0.0 must be above 0"),
    ("use_gpu", "maybe", "train.use_gpu='maybe'"),
])
def test_bad_training_counts_are_refused_before_ray_starts(field, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check_schedule(TrainConfig(**{field: value}))
