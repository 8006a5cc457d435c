"""Several trained models served as one: their unit vectors concatenated and scaled by 1/sqrt(n), so one inner
product is the mean of the members' cosines.

Why score averaging rather than weight averaging or distillation: members trained from one recipe with
different seeds disagree on many queries, and averaging their scores is the cheapest variance reduction a
retrieval team has. Weight averaging across seeds is not sound for fine-tuned towers whose projection heads
start from different random draws; distillation would cost another training. The price is paid at query time
(n query towers) and in memory (n x the vector width), both measured in ``docs/quality.md``.

An ensemble directory holds each member's model directory unchanged under ``members/<i>/`` (each still checked
against its own checksum) plus a ``vitrine_model.json`` that lists them; the members must share the tokenizer
and preprocessing, since every job featurises a catalog row once.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitrine.errors import RegistryError

MEMBERS = "members"


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    """What jobs read off a model's ``cfg``: the vector width, and the members' own configs."""

    embed_dim: int
    members: int
    use_images: bool


class EnsembleModel(nn.Module):
    """The members' query and product vectors side by side; the modal weights are the members' mean."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise RegistryError(f"an ensemble needs at least 2 member models, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.scale = len(members) ** -0.5
        self.cfg = EnsembleConfig(embed_dim=sum(m.cfg.embed_dim for m in members), members=len(members),
                                  use_images=any(m.cfg.use_images for m in members))

    def encode_query(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Query towers: (B, L) tokens -> {"query": (B, sum D) unit vectors}."""
        parts = [F.normalize(m.encode_query(input_ids, attention_mask)["query"].float(), dim=-1)
                 for m in self.members]
        return {"query": torch.cat(parts, dim=-1) * self.scale}

    def encode_product(self, title_ids: torch.Tensor, title_mask: torch.Tensor, image: torch.Tensor,
                       has_image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Product towers: the members' fused, title and image vectors side by side, their modal weights averaged."""
        outs = [m.encode_product(title_ids, title_mask, image, has_image) for m in self.members]
        joined = {key: torch.cat([F.normalize(o[key].float(), dim=-1) for o in outs], dim=-1) * self.scale
                  for key in ("product", "title", "image")}
        joined["modal_weights"] = torch.stack([o["modal_weights"].float() for o in outs]).mean(0)
        joined["has_image"] = outs[0]["has_image"]
        return joined


def member_dirs(path: Path, meta: dict[str, Any]) -> list[Path]:
    """The member model directories an ensemble's metadata lists, each checked to lie inside ``path``."""
    entries = meta.get("ensemble")
    if not isinstance(entries, list) or len(entries) < 2 or not all(
            isinstance(e, dict) and isinstance(e.get("dir"), str) and "weights_sha256" in e for e in entries):
        raise RegistryError(f"ensemble '{path}' has a malformed member list in its metadata; the artifact was "
                            "modified. Re-create it with `vitrine ensemble`.")
    dirs = []
    for entry in entries:
        d = (path / entry["dir"]).resolve()
        if path.resolve() not in d.parents:
            raise RegistryError(f"ensemble '{path}' lists member '{entry['dir']}' outside its directory; the "
                                "artifact was modified. Re-create it with `vitrine ensemble`.")
        dirs.append(d)
    return dirs


def verify_ensemble_dir(path: Path, meta: dict[str, Any]) -> None:
    """Each member's weights match their checksum, and the member is the one the ensemble recorded."""
    from vitrine.model.store import verify_model_dir

    for entry, d in zip(meta["ensemble"], member_dirs(path, meta), strict=True):
        member = verify_model_dir(d)
        if member["weights_sha256"] != entry["weights_sha256"]:
            raise RegistryError(f"ensemble member '{d}' is not the model the ensemble was built from (weights "
                                "checksum differs). Re-create it with `vitrine ensemble`.")


def load_ensemble_dir(path: Path, meta: dict[str, Any], device: str | torch.device) -> EnsembleModel:
    """Load every member and wrap them (checksums already verified by the caller)."""
    from vitrine.model.store import load_model_dir

    return EnsembleModel([load_model_dir(d, device)[0] for d in member_dirs(path, meta)]).to(device).eval()


def check_members(members: list[str | Path]) -> list[dict[str, Any]]:
    """The members' metadata, once each is a verified single model that featurises like the first and no two are
    the same weights (else ``RegistryError`` naming the member)."""
    from vitrine.model.store import verify_model_dir

    if len(members) < 2:
        raise RegistryError(f"an ensemble needs at least 2 member models, got {len(members)}")
    metas = [verify_model_dir(m) for m in members]
    for m, meta in zip(members, metas, strict=True):
        if "ensemble" in meta:
            raise RegistryError(f"ensemble member '{m}' is itself an ensemble; list its members instead")
    for key in ("preprocess", "text_hf_config"):
        for m, meta in zip(members[1:], metas[1:], strict=True):
            if meta[key] != metas[0][key]:
                raise RegistryError(f"ensemble member '{m}' has a different {key} from '{members[0]}'; members "
                                    "must share the text encoder and preprocessing (train them from one recipe)")
    seen: dict[str, str | Path] = {}
    for m, meta in zip(members, metas, strict=True):
        if meta["weights_sha256"] in seen:
            raise RegistryError(f"ensemble members '{seen[meta['weights_sha256']]}' and '{m}' are the same model "
                                "(identical weights); list distinct models")
        seen[meta["weights_sha256"]] = m
    return metas


def save_ensemble_dir(members: list[str | Path], out: str | Path, labels: list[str] | None = None) -> Path:
    """Copy member model directories into one ensemble directory; refuses members that featurise differently."""
    from vitrine.model.store import FORMAT, META, TOKENIZER

    metas = check_members(members)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise RegistryError(f"ensemble output '{out}' exists and is not empty; pass a new directory")
    (out / MEMBERS).mkdir(parents=True)
    shutil.copytree(Path(members[0]) / TOKENIZER, out / TOKENIZER)
    entries = []
    for i, (m, meta) in enumerate(zip(members, metas, strict=True)):
        shutil.copytree(m, out / MEMBERS / str(i))
        entries.append({"dir": f"{MEMBERS}/{i}", "weights_sha256": meta["weights_sha256"],
                        "source": (labels or [str(x) for x in members])[i],
                        "embed_dim": meta["model"]["embed_dim"]})
    meta = {"format": FORMAT, "ensemble": entries, "preprocess": metas[0]["preprocess"],
            "model": {"embed_dim": sum(e["embed_dim"] for e in entries), "members": len(entries)},
            "weights_sha256": json.dumps([e["weights_sha256"] for e in entries])}
    (out / META).write_text(json.dumps(meta, indent=1))
    return out
