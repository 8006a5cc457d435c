"""The int8 query tower: only the query encoder's linear layers are quantized, its vectors stay close to float32,
an ensemble's members are all converted, and a precision that is not offered is refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vitrine.errors import ConfigError
from vitrine.index.embed import QueryEncoder
from vitrine.model.ensemble import save_ensemble_dir
from vitrine.model.quantize import check_precision, quantize_query_towers
from vitrine.model.store import load_model_dir

QUERIES = ["cordless drill", "blue denim jacket", "white subway tile 3x6", "20 amp gfci outlet", "red tshirt",
           "toilet seat elongated", "ceiling fan with light", "kids running shoes"]


def linear_kinds(module: nn.Module) -> tuple[int, int]:
    """(float linear layers, dynamically quantized linear layers) inside ``module``."""
    quantized = sum(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic") for m in module.modules())
    return sum(type(m) is nn.Linear for m in module.modules()), quantized


def test_int8_tower_is_quantized_and_close_to_fp32(tiny_models):
    fp32 = QueryEncoder(tiny_models[0], device="cpu")
    int8 = QueryEncoder(tiny_models[0], device="cpu", precision="int8")
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    floats_before = linear_kinds(fp32.model.query_encoder)[0]
    assert floats_before > 30 and linear_kinds(int8.model.query_encoder) == (0, floats_before)
    # the product tower and the projection keep their float weights: the index's vectors stay valid
    assert linear_kinds(int8.model.title_encoder) == linear_kinds(fp32.model.title_encoder)
    assert type(int8.model.query_proj) is nn.Linear
    a, b = fp32(QUERIES), int8(QUERIES)
    assert b.shape == a.shape == (len(QUERIES), 32) and b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    cos = (a * b).sum(axis=1)
    assert cos.min() > 0.9, cos
    assert np.abs(a - b).max() > 1e-4  # the weights really changed
    # the geometry among queries is kept: their pairwise cosines correlate across the two towers (an untrained
    # random projection amplifies the rounding; a broken tower would give about 0)
    upper = np.triu_indices(len(QUERIES), 1)
    assert np.corrcoef((a @ a.T)[upper], (b @ b.T)[upper])[0, 1] > 0.8


def test_every_ensemble_member_is_quantized(tiny_models, tmp_path):
    model, _ = load_model_dir(save_ensemble_dir(tiny_models, tmp_path / "ens"))
    per_member = linear_kinds(model.members[0].query_encoder)[0]
    assert quantize_query_towers(model) == 2 * per_member
    assert all(linear_kinds(m.query_encoder) == (0, per_member) for m in model.members)


def test_a_model_without_query_tower_is_refused():
    with pytest.raises(ConfigError, match="no query encoder to quantize"):
        quantize_query_towers(nn.Sequential(nn.Linear(4, 4)))


@pytest.mark.parametrize("bad", ["int4", "FP32", ""])
def test_unknown_precision_is_refused_by_name(bad):
    with pytest.raises(ConfigError, match=rf"serve.query_precision='{bad}' is not one of \['fp32', 'int8'\]"):
        check_precision(bad, "serve.query_precision")
    with pytest.raises(ConfigError, match="is not one of"):
        QueryEncoder.__init__(object.__new__(QueryEncoder), "unused", device="cpu", precision=bad)


def test_gpu_device_runs_bf16_not_int8(tiny_models, caplog):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine: the bf16 fallback runs only on a GPU")
    enc = QueryEncoder(tiny_models[0], device="cuda", precision="int8")
    assert enc.precision == "bf16" and "for CPU replicas" in caplog.text
