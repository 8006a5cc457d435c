"""Product-tower embedding as a Ray Data ``map_batches`` callable class (one model load per actor)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vitrine.faults import crash_point
from vitrine.features import Featurizer, Tokenize, trim_padding
from vitrine.model.store import TOKENIZER, load_model_dir


class ProductEmbedder:
    """Catalog rows -> ``product_id``, ``embedding`` (D float32), ``title_weight``, ``image_weight`` and flags."""

    def __init__(self, model_dir: str, torch_threads: int = 0) -> None:
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, meta = load_model_dir(model_dir, self.device)
        pre = meta["preprocess"]
        self.featurize = Featurizer(str(Path(model_dir) / TOKENIZER), pre["image_size"], pre["max_query_len"],
                                    pre["max_title_len"])
        self.batches = 0

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Embed one batch of catalog rows."""
        self.batches += 1
        crash_point("embed_batch", self.batches)  # fault injection for tests; off unless $VITRINE_FAULT is set
        f = self.featurize(batch)
        f["t_ids"], f["t_mask"] = trim_padding(f["t_ids"], f["t_mask"])
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            out = self.model.encode_product(
                torch.as_tensor(f["t_ids"], device=self.device), torch.as_tensor(f["t_mask"], device=self.device),
                torch.as_tensor(f["image"], device=self.device), torch.as_tensor(f["has_image"], device=self.device))
        weights = out["modal_weights"].float().cpu().numpy()
        return {
            "product_id": f["product_id"],
            "embedding": out["product"].float().cpu().numpy().astype(np.float32),
            "title_weight": weights[:, 0],
            "image_weight": weights[:, 1],
            "has_image": f["has_image"],
            "image_failed": f["image_failed"],
        }


class QueryEncoder:
    """The query tower on its own: texts -> (B, D) float32 unit vectors (used by Serve and evaluation)."""

    def __init__(self, model_dir: str | Path, device: str | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model, self.meta = load_model_dir(model_dir, self.device)
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
