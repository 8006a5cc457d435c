"""An int8 query tower for CPU serving: dynamic quantization of the query encoder's linear layers.

Why: on a CPU replica the query tower is most of a search's time (a MiniLM forward pass per batch), and the
linear layers are most of the tower. PyTorch's dynamic quantization stores their weights as int8, one scale per
output channel, and quantizes the activations on the fly, so no calibration data is needed and any trained
Vitrine model converts at load time. Per-channel scales rather than one per tensor: measured on the Home Depot
model they keep the query vectors closer to float32 (mean cosine 0.975 against 0.950) and lose less nDCG@10
(-0.006 against -0.016 for the dense model alone; docs/serving.md, "An int8 query tower"). Only the query
tower changes: the catalog's vectors stay float32, so a served version's index is reused as it is. Opt-in
(``serve.query_precision=int8``) because it costs the dense model alone some quality (behind the re-ranker the
loss is within noise); ``bench/serve/query_int8.py`` measures the speed and the quality side by side.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from vitrine.errors import ConfigError

log = logging.getLogger(__name__)
QUERY_PRECISIONS = ("fp32", "int8")


def check_precision(precision: str, setting: str = "query precision") -> str:
    """Return ``precision`` when it is a query-tower precision, else raise naming the setting and the choices."""
    if precision not in QUERY_PRECISIONS:
        raise ConfigError(f"{setting}={precision!r} is not one of {list(QUERY_PRECISIONS)}: int8 quantizes the "
                          "query tower for CPU serving, fp32 (the default) keeps it as trained")
    return precision


def quantize_query_towers(model: nn.Module) -> int:
    """Replace every query encoder inside ``model`` (one, or an ensemble's members') with a dynamic-int8 copy.

    Returns how many linear layers were quantized. A query encoder shared with the title tower is copied, so the
    product tower keeps its float32 weights.
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if torch.backends.quantized.engine == "none":
        raise ConfigError("this PyTorch build has no quantized CPU engine; serve with query precision fp32")
    towers = [m for m in model.modules() if hasattr(m, "query_encoder") and hasattr(m, "encode_query")]
    if not towers:
        raise ConfigError(f"{type(model).__name__} has no query encoder to quantize")
    done = 0
    for tower in towers:
        linear = sum(isinstance(m, nn.Linear) for m in tower.query_encoder.modules())
        with warnings.catch_warnings():  # the eager-mode API warns that it is moving to torchao; it still works
            warnings.simplefilter("ignore")
            try:
                tower.query_encoder = quantize_dynamic(tower.query_encoder,  # a copy
                                                       {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
            except (RuntimeError, NotImplementedError) as exc:
                raise ConfigError(f"this CPU's quantized engine ({torch.backends.quantized.engine}) cannot build an "
                                  f"int8 query tower ({exc}); serve with query precision fp32") from None
        done += linear
    log.info("query tower quantized to int8: %d linear layers in %d tower(s)", done, len(towers))
    return done
