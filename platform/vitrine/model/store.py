"""The model directory: safetensors weights + JSON configs + tokenizer files, self-contained and pickle-free.

Layout::

    model.safetensors     all weights (shared query/title weights stored once)
    vitrine_model.json    ModelConfig, preprocessing settings, encoder architecture configs, checksum
    tokenizer/            the text tokenizer's files

An ensemble directory (``vitrine.model.ensemble``) holds member directories of this layout under ``members/``.

Loading rebuilds the architecture from the JSON (no original checkpoint needed) and then loads the weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from vitrine.config import DataConfig, ModelConfig
from vitrine.errors import RegistryError
from vitrine.model.encoders import resolve_text_encoder
from vitrine.model.make import MakeModel

WEIGHTS = "model.safetensors"
META = "vitrine_model.json"
TOKENIZER = "tokenizer"
FORMAT = 1  # version of this directory layout; other versions are refused, not guessed at


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model_dir(model: MakeModel, data: DataConfig, out: str | Path, extra: dict[str, Any] | None = None
                   ) -> Path:
    """Write ``model`` to a self-contained directory and return it."""
    from transformers import AutoTokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)
    save_model(model, str(out / WEIGHTS))
    AutoTokenizer.from_pretrained(str(resolve_text_encoder(model.cfg.text_encoder))).save_pretrained(
        str(out / TOKENIZER))
    meta = {
        "format": FORMAT,
        "model": dataclasses.asdict(model.cfg),
        "preprocess": {"image_size": data.image_size, "max_query_len": data.max_query_len,
                       "max_title_len": data.max_title_len},
        "text_hf_config": model.query_encoder.hf_config(),
        "image_hf_config": model.image_encoder.hf_config(),
        "weights_sha256": file_sha256(out / WEIGHTS),
        **(extra or {}),
    }
    (out / META).write_text(json.dumps(meta, indent=1, default=str))
    return out


def read_meta(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a model directory, with a clear error if it is not one."""
    meta_path = Path(path) / META
    if not meta_path.is_file():
        raise RegistryError(f"'{path}' is not a Vitrine model directory (no {META}); "
                            "pass a directory written by `vitrine pretrain` or a models:/<name>@<alias> URI")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegistryError(f"'{meta_path}' is not valid JSON ({exc}); the artifact is corrupt. Re-download it or "
                            "re-run the job that wrote it.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        meta = meta if isinstance(meta, dict) else {}
        raise RegistryError(f"model directory '{path}' has format {meta.get('format')!r}; this Vitrine reads format "
                            f"{FORMAT}. Re-export it with this version (`vitrine pretrain`) or upgrade Vitrine.")
    return meta


def verify_model_dir(path: str | Path) -> dict[str, Any]:
    """The metadata of a model directory whose weights match their recorded checksum (else ``RegistryError``).

    Jobs call it in the driver before they start workers, so a corrupt artifact is one clear error, not a
    worker that dies while loading it.
    """
    path = Path(path)
    meta = read_meta(path)
    if "ensemble" in meta:  # several models served as one (vitrine.model.ensemble): each member checked
        from vitrine.model.ensemble import verify_ensemble_dir

        verify_ensemble_dir(path, meta)
        return meta
    missing = [k for k in ("weights_sha256", "model", "preprocess", "text_hf_config", "image_hf_config")
               if k not in meta]
    if missing:
        raise RegistryError(f"'{path / META}' lacks {', '.join(missing)}; the artifact is incomplete. Re-download "
                            "it or re-run `vitrine pretrain`.")
    if not (path / WEIGHTS).is_file():
        raise RegistryError(f"model directory '{path}' has no {WEIGHTS}; the artifact is incomplete. Re-download "
                            "it or re-run `vitrine pretrain`.")
    if file_sha256(path / WEIGHTS) != meta["weights_sha256"]:
        raise RegistryError(f"weights in '{path}' do not match the checksum in {META}; the artifact is "
                            "corrupt or was modified. Re-download it or re-run `vitrine pretrain`.")
    return meta


def load_model_dir(path: str | Path, device: str | torch.device = "cpu") -> tuple[MakeModel, dict[str, Any]]:
    """Rebuild a MakeModel (or an ensemble of them) from a model directory; refuses weights whose checksum does
    not match."""
    path = Path(path)
    meta = verify_model_dir(path)
    if "ensemble" in meta:
        from vitrine.model.ensemble import load_ensemble_dir

        return load_ensemble_dir(path, meta, device), meta
    cfg = ModelConfig(**meta["model"])
    model = MakeModel(cfg, pretrained=False, text_hf_config=meta["text_hf_config"],
                      image_hf_config=meta["image_hf_config"])
    try:  # safetensors only: a file that is not one (e.g. a pickle) is refused, never unpickled
        load_model(model, str(path / WEIGHTS), device=str(device))
    except (SafetensorError, RuntimeError) as exc:
        raise RegistryError(f"weights in '{path}' do not fit the architecture recorded in {META} or are not a "
                            f"safetensors file: {str(exc)[:300]}") from None
    model.to(device).eval()
    return model, meta
