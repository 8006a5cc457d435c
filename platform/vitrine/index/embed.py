"""Product-tower embedding as a Ray Data ``map_batches`` callable class (one model load per actor)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from vitrine.faults import crash_point
from vitrine.features import Featurizer, Tokenize, trim_padding
from vitrine.model.store import TOKENIZER, load_model_dir

log = logging.getLogger(__name__)
CPU_CHUNK = 16  # rows per CPU forward pass: fastest of 8 / 16 / 32 / 64 on 1 and 2 threads (MiniLM + MobileNetV2)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask on Linux, else the machine's count)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


class ProductEmbedder:
    """Catalog rows -> ``product_id``, ``embedding`` (D float32), ``title_weight``, ``image_weight`` and flags.

    Each batch is encoded in chunks of ``chunk`` rows taken in title-length order, so a chunk pads its titles
    only to its own longest one; on CPU small chunks are also faster for the CNN (its activations stay in
    cache). ``chunk`` 0 means 16 rows on CPU and the whole batch on GPU. Vectors match a one-pass encoding to
    float rounding (``bench/embed/throughput.py`` measures the gain). ``torch_threads`` sets the intra-op
    threads; 0 shares this machine's CPUs among ``actors`` embedders (Ray alone would hold an actor that
    reserves one CPU to one thread, leaving the rest of a node idle while reads are cheap).
    """

    def __init__(self, model_dir: str, torch_threads: int = 0, chunk: int = 0, actors: int = 1) -> None:
        torch.set_num_threads(torch_threads or max(1, usable_cpus() // max(1, actors)))
        if chunk < 0:
            raise ValueError(f"chunk must be 0 (automatic) or a positive number of rows, got {chunk}")
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, meta = load_model_dir(model_dir, self.device)
        pre = meta["preprocess"]
        self.featurize = Featurizer(str(Path(model_dir) / TOKENIZER), pre["image_size"], pre["max_query_len"],
                                    pre["max_title_len"])
        self.chunk = chunk or (CPU_CHUNK if self.device.type == "cpu" else 1 << 30)
        self.batches = 0

    @torch.inference_mode()
    def encode(self, f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Featurised rows -> ``embedding`` and ``modal_weights`` arrays, in the rows' order."""
        order = np.argsort(f["t_mask"].sum(axis=1), kind="stable")
        if not len(order):
            return {"embedding": np.zeros((0, self.model.cfg.embed_dim), np.float32),
                    "modal_weights": np.zeros((0, 2), np.float32)}
        vectors, weights = [], []
        for start in range(0, len(order), self.chunk):
            rows = order[start:start + self.chunk]
            ids, mask = trim_padding(f["t_ids"][rows], f["t_mask"][rows])
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                out = self.model.encode_product(
                    torch.as_tensor(ids, device=self.device), torch.as_tensor(mask, device=self.device),
                    torch.as_tensor(f["image"][rows], device=self.device),
                    torch.as_tensor(f["has_image"][rows], device=self.device))
            vectors.append(out["product"].float().cpu().numpy())
            weights.append(out["modal_weights"].float().cpu().numpy())
        back = np.argsort(order)
        return {"embedding": np.concatenate(vectors)[back].astype(np.float32),
                "modal_weights": np.concatenate(weights)[back]}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Embed one batch of catalog rows."""
        self.batches += 1
        crash_point("embed_batch", self.batches)  # fault injection for tests; off unless $VITRINE_FAULT is set
        if not len(batch["product_id"]):  # the tokenizer refuses an empty list
            f = {"product_id": np.asarray([], dtype=object), "t_mask": np.zeros((0, 1), np.int64),
                 "has_image": np.zeros(0, bool), "image_failed": np.zeros(0, bool)}
        else:
            f = self.featurize(batch)
        out = self.encode(f)
        return {
            "product_id": f["product_id"],
            "embedding": out["embedding"],
            "title_weight": out["modal_weights"][:, 0],
            "image_weight": out["modal_weights"][:, 1],
            "has_image": f["has_image"],
            "image_failed": f["image_failed"],
        }


class QueryEncoder:
    """The query tower on its own: texts -> (B, D) float32 unit vectors (used by Serve and evaluation).

    ``precision`` ``int8`` quantizes the tower for CPU (``vitrine.model.quantize``); on a GPU the tower runs in
    bf16 and ``int8`` is ignored with a warning.
    """

    def __init__(self, model_dir: str | Path, device: str | None = None, precision: str = "fp32") -> None:
        from vitrine.model.quantize import check_precision, quantize_query_towers

        self.precision = check_precision(precision)  # before the model loads
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model, self.meta = load_model_dir(model_dir, self.device)
        if self.device.type != "cpu":
            if precision == "int8":
                log.warning("query precision int8 is for CPU replicas; this one runs on %s in bf16", self.device)
            self.precision = "bf16"
        elif precision == "int8":
            quantize_query_towers(self.model)
        self.tokenize = Tokenize(Path(model_dir) / TOKENIZER)
        self.max_len = self.meta["preprocess"]["max_query_len"]

    @torch.inference_mode()
    def __call__(self, texts: list[str]) -> np.ndarray:
        """Encode a list of query strings."""
        ids, mask = trim_padding(*self.tokenize(texts, self.max_len))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            q = self.model.encode_query(torch.as_tensor(ids, device=self.device),
                                        torch.as_tensor(mask, device=self.device))["query"]
        return q.float().cpu().numpy()


class ZeroShotTextEncoder:
    """A pretrained text encoder as it ships (mean pooling, L2-normalised): the zero-shot baseline."""

    def __init__(self, name: str = "minilm", batch_size: int = 256) -> None:
        from vitrine.model.encoders import TextEncoder, resolve_text_encoder

        source = resolve_text_encoder(name)
        self.encoder = TextEncoder(source=source).eval()
        self.tokenize = Tokenize(source)
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(self, texts: list[str], progress: str | None = None) -> np.ndarray:
        """Encode texts in batches -> (N, H) float32 unit vectors."""
        from tqdm import tqdm

        out = []
        starts = range(0, len(texts), self.batch_size)
        for i in tqdm(starts, desc=progress, unit="batch", disable=progress is None):
            ids, mask = trim_padding(*self.tokenize(texts[i:i + self.batch_size], 64))
            vec = self.encoder(torch.as_tensor(ids), torch.as_tensor(mask))
            out.append(torch.nn.functional.normalize(vec, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.encoder.dim), np.float32)
