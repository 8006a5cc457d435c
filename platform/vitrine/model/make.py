"""The MAKE three-tower model: query tower, title tower, image tower, and Modal Adaptation fusion.

MAKE (WWW 2023) states: separate query and title text encoders plus an image encoder, and a Modal Adaptation
module weighing title vs image per product. Where the abstract is silent, Vitrine chooses:
- the fusion weights come from the product's own projected title and image vectors (a small gate MLP), so
  the product vector is query-independent and can be indexed once;
- products without an image get weight (1, 0): their vector is exactly their title vector (no NaN/zero);
- query and title projections start from the *same* weights, so the untrained model equals the zero-shot
  MiniLM bi-encoder rather than random noise; training then specialises them.
The contrastive visual pre-training task (SIGIR 2023) is built here as masked patch prediction: grid cells
of the input image are painted over, the image tower encodes the masked image, and ``visual_head`` predicts
each masked cell's feature from the masked view; the targets are the same cells' features in the clean
view (detached). ``vitrine.losses.visual_loss`` scores it contrastively (or by regression, the baseline).
Beyond the papers, ``model.colour_bins`` adds a colour branch to the image tower (see ``colour_histogram``).
Models return dicts; losses consume them (see ``vitrine.losses``).
"""

from __future__ import annotations

import copy
import json
import math

import torch
import torch.nn.functional as F
from torch import nn

from vitrine.config import ModelConfig
from vitrine.errors import ConfigError
from vitrine.model.encoders import (
    ImageEncoder,
    TextEncoder,
    check_freeze_layers,
    resolve_image_weights,
    resolve_text_encoder,
)


def centre_weight(side: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(side, side) Gaussian pixel weights summing to 1, sigma a quarter of the side: the product sits mid-frame."""
    axis = torch.linspace(-1.0, 1.0, side, device=device)
    weight = torch.exp(-(axis.view(-1, 1) ** 2 + axis.view(1, -1) ** 2) / (2 * 0.5 ** 2))
    return weight / weight.sum()


def colour_histogram(images: torch.Tensor, bins: int) -> torch.Tensor:
    """(B, S, S, 3) uint8 -> (B, bins**3) square-rooted RGB histogram, pixels weighted towards the centre.

    Why: ImageNet CNNs are trained with colour jitter, so their pooled features are partly colour-invariant,
    while shoppers type colours ("navy blue kurta"). Products sit mid-frame on plain backgrounds, so a
    Gaussian centre weight (sigma = a quarter of the side) favours the product's pixels. The square root
    (Hellinger map) keeps one dominant background colour from swamping the rest; scaled by sqrt(bins**3) so a
    bin's RMS is about 1, like a pooled CNN feature, and the projection starts by hearing both. No parameters:
    the image projection learns which bins matter. Off by default; the ablation measures it (docs/quality.md).
    """
    b, s = images.shape[0], images.shape[1]
    q = (images.long() * bins) // 256  # (B, S, S, 3) bin per channel
    idx = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]  # (B, S, S)
    weight = centre_weight(s, images.device).expand(b, s, s)
    hist = torch.zeros(b, bins ** 3, device=images.device)
    hist.scatter_add_(1, idx.reshape(b, -1), weight.reshape(b, -1))
    return hist.sqrt() * bins ** 1.5


def check_colour_bins(bins: int) -> None:
    """Refuse a ``model.colour_bins`` outside 0-16."""
    if bins < 0 or bins > 16:
        raise ConfigError(f"model.colour_bins={bins}: use 0 (off) or 1-16 bins per RGB channel (4 = 64 colours)")


def check_init_image_weight(weight: float) -> None:
    """Refuse a ``model.modal_init_image_weight`` outside (0, 1)."""
    if not 0.0 < weight < 1.0:
        raise ConfigError(f"model.modal_init_image_weight={weight}: use a value strictly between "
                          "0 and 1 (0.12 = title-led, 0.5 = balanced)")


def check_model_config(cfg: ModelConfig) -> None:
    """Refuse bad model settings in the driver, before Ray starts workers that would each fail on them.

    Reads only the text checkpoint's ``config.json`` (for its layer count); no weights are loaded.
    """
    check_colour_bins(cfg.colour_bins)
    check_init_image_weight(cfg.modal_init_image_weight)
    text_dir = resolve_text_encoder(cfg.text_encoder)
    resolve_image_weights(cfg.image_encoder)
    if cfg.freeze_text_layers:
        layers = json.loads((text_dir / "config.json").read_text()).get("num_hidden_layers")
        if isinstance(layers, int):  # other architectures are checked when the model is built
            check_freeze_layers(cfg.freeze_text_layers, layers)


class ModalAdaptation(nn.Module):
    """Per-product convex weights over (title, image) from the product's own projected features.

    The gate starts at the same weights for every product, ``init_image_weight`` on the image (default 0.12:
    title-led, since titles carry most of what shoppers type); its last layer starts at zero so training
    moves each product away from that prior. Measured: on colourless titles a short run keeps the title-led
    prior and loses to the fixed mean (the ablation report), hence the switch.
    """

    def __init__(self, dim: int, enabled: bool = True, init_image_weight: float = 0.12) -> None:
        super().__init__()
        check_init_image_weight(init_image_weight)
        self.enabled = enabled
        self.gate = nn.Sequential(nn.Linear(2 * dim, dim // 4), nn.GELU(), nn.Linear(dim // 4, 2))
        nn.init.zeros_(self.gate[2].weight)
        with torch.no_grad():  # softmax([0, b]) puts init_image_weight on the image
            self.gate[2].bias.copy_(torch.tensor([0.0, math.log(init_image_weight / (1 - init_image_weight))]))

    def forward(self, title: torch.Tensor, image: torch.Tensor, has_image: torch.Tensor) -> torch.Tensor:
        """(B, D), (B, D), (B,) bool -> (B, 2) weights summing to 1; (1, 0) where there is no image."""
        if self.enabled:
            logits = self.gate(torch.cat([title, image], dim=-1)).float()
        else:
            logits = torch.zeros(title.shape[0], 2, device=title.device)
        logits = logits.masked_fill(~has_image.unsqueeze(-1) & torch.tensor([False, True], device=title.device),
                                    float("-inf"))
        return logits.softmax(dim=-1)


class MakeModel(nn.Module):
    """Query, title and image towers with fused, L2-normalised product vectors."""

    def __init__(self, cfg: ModelConfig, pretrained: bool = True, text_hf_config: dict | None = None,
                 image_hf_config: dict | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        text_src = resolve_text_encoder(cfg.text_encoder) if pretrained else None
        self.query_encoder = TextEncoder(text_hf_config, source=text_src)
        if cfg.share_text_encoders:
            self.title_encoder = self.query_encoder
        else:
            self.title_encoder = copy.deepcopy(self.query_encoder)
        if cfg.freeze_text_embeddings:
            self.query_encoder.freeze_embeddings()
            self.title_encoder.freeze_embeddings()
        self.query_encoder.freeze_layers(cfg.freeze_text_layers)
        self.title_encoder.freeze_layers(cfg.freeze_text_layers)
        kind = "mobilenet_v2" if cfg.image_encoder == "mobilenet_v2" else "hf"
        image_src = resolve_image_weights(cfg.image_encoder) if pretrained else None
        self.image_encoder = ImageEncoder(kind, cfg.freeze_image_layers, source=image_src,
                                          hf_config=image_hf_config)
        d = cfg.embed_dim
        self.query_proj = nn.Linear(self.query_encoder.dim, d)
        nn.init.orthogonal_(self.query_proj.weight)
        nn.init.zeros_(self.query_proj.bias)
        self.title_proj = copy.deepcopy(self.query_proj)
        check_colour_bins(cfg.colour_bins)
        self.image_proj = nn.Linear(self.image_encoder.dim + cfg.colour_bins ** 3, d)
        self.modal = ModalAdaptation(d, enabled=cfg.modal_adaptation, init_image_weight=cfg.modal_init_image_weight)
        f = self.image_encoder.dim
        self.visual_head = nn.Sequential(nn.Linear(f, f), nn.GELU(), nn.Linear(f, f))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.05)))

    def set_temperature(self, temperature: float, learnable: bool) -> None:
        """Initial softmax temperature, and whether training may change it."""
        with torch.no_grad():
            self.logit_scale.fill_(math.log(1 / temperature))
        self.logit_scale.requires_grad_(learnable)

    def encode_query(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Query tower: (B, L) tokens -> {"query": (B, D) unit vectors}."""
        q = self.query_proj(self.query_encoder(input_ids, attention_mask))
        return {"query": F.normalize(q.float(), dim=-1)}

    def encode_product(self, title_ids: torch.Tensor, title_mask: torch.Tensor, image: torch.Tensor,
                       has_image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Product tower: title tokens + uint8 images -> fused, title and image unit vectors and modal weights."""
        title = F.normalize(self.title_proj(self.title_encoder(title_ids, title_mask)).float(), dim=-1)
        has_image = has_image.bool() & self.cfg.use_images
        grid = None
        if bool(has_image.any()):
            pooled, grid = self.image_encoder(image)
            if self.cfg.colour_bins:
                pooled = torch.cat([pooled, colour_histogram(image, self.cfg.colour_bins).to(pooled.dtype)], -1)
            img = F.normalize(self.image_proj(pooled).float(), dim=-1)
        else:  # a whole batch without images: skip the CNN
            img = torch.zeros_like(title)
        weights = self.modal(title, img, has_image)  # (B, 2)
        img = torch.where(has_image.unsqueeze(-1), img, torch.zeros_like(img))
        fused = weights[:, :1] * title + weights[:, 1:] * img
        out = {"product": F.normalize(fused, dim=-1), "title": title, "image": img,
               "modal_weights": weights, "has_image": has_image}
        if grid is not None:
            out["image_grid"] = grid
        return out

    def masked_patches(self, image: torch.Tensor, has_image: torch.Tensor, grid: torch.Tensor,
                       mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask grid cells of each image; predict their clean features: (M, F) predictions and targets."""
        b, n, _ = grid.shape
        side = int(round(n ** 0.5))
        if side * side != n:
            raise ValueError(f"image encoder grid of {n} patches is not square; the visual task needs one")
        k = max(1, round(mask_ratio * n))
        cells = torch.rand(b, n, device=image.device).argsort(dim=1)[:, :k]  # (B, k) masked cells per image
        cell_mask = torch.zeros(b, n, dtype=torch.bool, device=image.device)
        cell_mask.scatter_(1, cells, True)
        cell_mask &= has_image.bool().unsqueeze(1)
        size = image.shape[1]
        pixel = cell_mask.view(b, 1, side, side).float()
        pixel = F.interpolate(pixel, size=(size, size), mode="nearest").bool().squeeze(1)  # (B, S, S)
        fill = torch.tensor([124, 116, 104], dtype=image.dtype, device=image.device)  # ImageNet mean colour
        masked = torch.where(pixel.unsqueeze(-1), fill, image)
        _, masked_grid = self.image_encoder(masked)
        return self.visual_head(masked_grid[cell_mask]), grid[cell_mask].detach()

    def forward(self, batch: dict[str, torch.Tensor], mask_ratio: float = 0.0) -> dict[str, torch.Tensor]:
        """A training batch -> every embedding the losses need, plus the logit scale.

        With ``kq_ids`` (keyword-enhanced queries) the query tower also encodes that view (``query_kw``);
        with ``mask_ratio > 0`` the masked-patch predictions of the visual task are added; with ``n_ids`` (judged
        hard negatives' titles) their product vectors, title only, as ``neg_product``.
        """
        out = self.encode_query(batch["q_ids"], batch["q_mask"])
        if "kq_ids" in batch:
            out["query_kw"] = self.encode_query(batch["kq_ids"], batch["kq_mask"])["query"]
        out.update(self.encode_product(batch["t_ids"], batch["t_mask"], batch["image"], batch["has_image"]))
        if mask_ratio > 0 and "image_grid" in out:
            out["visual_pred"], out["visual_target"] = self.masked_patches(
                batch["image"], out["has_image"], out.pop("image_grid"), mask_ratio)
        out.pop("image_grid", None)
        if "n_ids" in batch:
            no_image = torch.zeros(batch["n_ids"].shape[0], dtype=torch.bool, device=batch["n_ids"].device)
            neg = self.encode_product(batch["n_ids"], batch["n_mask"], batch["image"], no_image)
            out["neg_product"] = neg["product"]
        out["logit_scale"] = self.logit_scale.exp().clamp(max=100.0)
        return out
