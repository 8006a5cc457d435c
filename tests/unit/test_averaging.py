"""Weight averaging (train.ema_decay): hand-computed averages, what is averaged, swap-in/out, resume, bad values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitrine.errors import ConfigError
from vitrine.train.averaging import WeightAverage, check_decay, warmed_decay


def small_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 1))
    model[2].weight.requires_grad_(False)  # a frozen layer
    return model


def test_warmed_decay_by_hand():
    assert warmed_decay(0.99, 1) == pytest.approx(2 / 11)
    assert warmed_decay(0.99, 100) == pytest.approx(101 / 110)
    assert warmed_decay(0.99, 10_000) == 0.99  # capped once the warm-up passes the decay (t > 890)


def test_updates_are_the_hand_computed_average():
    model = small_model()
    w0 = model[0].weight.detach().clone()
    average = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert average.update() == pytest.approx(2 / 11)  # warm-up below the 0.5 cap
    with torch.no_grad():
        model[0].weight.add_(1.0)
    d2 = warmed_decay(0.5, 2)  # 3/12 = 0.25
    step1 = (2 / 11) * w0 + (9 / 11) * (w0 + 1)
    assert average.update() == pytest.approx(d2)
    shadow = dict(zip(average.names, average.shadow, strict=True))
    assert torch.allclose(shadow["0.weight"], d2 * step1 + (1 - d2) * (w0 + 2))


def test_only_what_training_changes_is_averaged():
    names = WeightAverage(small_model(), decay=0.9).names
    assert "0.weight" in names and "2.bias" in names
    assert "1.running_mean" in names and "1.running_var" in names  # float buffers move in training
    assert "2.weight" not in names  # frozen
    assert "1.num_batches_tracked" not in names  # an integer counter


def test_applied_swaps_the_average_in_and_the_weights_back_even_on_error():
    model = small_model()
    average = WeightAverage(model, decay=0.9)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.mul_(3.0)
    trained = model[0].weight.detach().clone()
    with average.applied():
        assert torch.equal(model[0].weight, start)  # no update yet: the average is the start
    assert torch.equal(model[0].weight, trained)
    with pytest.raises(RuntimeError), average.applied():
        raise RuntimeError("saving failed")
    assert torch.equal(model[0].weight, trained)


def test_a_resumed_average_continues_like_an_uninterrupted_one():
    def steps(model: nn.Module, average: WeightAverage, start: int, stop: int) -> None:
        for t in range(start, stop):
            with torch.no_grad():
                model[0].weight.add_(float(t))
            average.update()

    model = small_model()
    whole = WeightAverage(model, decay=0.9)
    steps(model, whole, 0, 3)
    saved = dict(zip(whole.names, [s.clone() for s in whole.shadow], strict=True))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    steps(model, whole, 3, 6)

    resumed_model = small_model()
    resumed_model.load_state_dict(weights)
    resumed = WeightAverage(resumed_model, decay=0.9, updates=3)
    resumed.load(saved)
    steps(resumed_model, resumed, 3, 6)
    assert resumed.updates == whole.updates == 6
    for a, b in zip(whole.shadow, resumed.shadow, strict=True):
        assert torch.allclose(a, b)


def test_loading_weights_of_another_model_is_refused():
    average = WeightAverage(small_model(), decay=0.9)
    with pytest.raises(ValueError, match="lack 6 trained tensors"):
        average.load({"0.weight": torch.zeros(2, 2)})


@pytest.mark.parametrize("decay", [1.0, -0.1, 1.5])
def test_bad_decay_is_refused_with_the_fix(decay):
    with pytest.raises(ConfigError, match=f"train.ema_decay={decay} .*use 0"):
        check_decay(decay)
    check_decay(0.0)
    check_decay(0.99)
