"""Artifacts are loaded only when they match their metadata: safetensors weights (never unpickled), checksums,
format and model versions; a tampered or mismatched model or index is refused with a clear error."""

from __future__ import annotations

import ast
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from vitrine.config import DataConfig, ModelConfig
from vitrine.errors import RegistryError
from vitrine.index.faiss_index import INDEX_FILE, META_FILE, IndexSpec, build_index, load_index, save_index
from vitrine.model.make import MakeModel
from vitrine.model.store import META, WEIGHTS, file_sha256, load_model_dir, save_model_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A real MAKE model directory (shipped MiniLM + MobileNetV2 weights)."""
    torch.manual_seed(0)
    return save_model_dir(MakeModel(ModelConfig()), DataConfig(), tmp_path_factory.mktemp("m") / "model")


@pytest.fixture()
def copy(model_dir, tmp_path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(model_dir, out)
    return out


def _edit_meta(path: Path, **changes) -> None:
    meta = json.loads((path / META).read_text())
    meta.update(changes)
    (path / META).write_text(json.dumps(meta))


def test_model_round_trip_is_exact(model_dir):
    model, meta = load_model_dir(model_dir)
    ref = MakeModel(ModelConfig(), pretrained=False, text_hf_config=meta["text_hf_config"],
                    image_hf_config=meta["image_hf_config"])
    from safetensors.torch import load_file

    saved = load_file(str(model_dir / WEIGHTS))
    state = model.state_dict()
    assert saved and all(torch.equal(state[k], v) for k, v in saved.items())
    assert set(saved) <= set(ref.state_dict())


def test_flipped_weight_byte_is_refused(copy):
    data = bytearray((copy / WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="do not match the checksum"):
        load_model_dir(copy)


def test_other_format_version_is_refused(copy):
    _edit_meta(copy, format=2)
    with pytest.raises(RegistryError, match="has format 2; this Vitrine reads format 1"):
        load_model_dir(copy)


def test_weights_not_fitting_recorded_architecture_are_refused(copy):
    meta = json.loads((copy / META).read_text())
    _edit_meta(copy, model={**meta["model"], "embed_dim": meta["model"]["embed_dim"] * 2})
    with pytest.raises(RegistryError, match="do not fit the architecture"):
        load_model_dir(copy)


class _Payload:
    """Unpickling this writes a marker file: the proof that a loader unpickled downloaded bytes."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def test_pickle_disguised_as_weights_is_never_unpickled(copy, tmp_path):
    marker = tmp_path / "pwned"
    (copy / WEIGHTS).write_bytes(pickle.dumps({"weight": _Payload(marker)}))
    _edit_meta(copy, weights_sha256=file_sha256(copy / WEIGHTS))  # an attacker controls the metadata too
    with pytest.raises(RegistryError, match="not a safetensors file"):
        load_model_dir(copy)
    assert not marker.exists()


def test_no_unpickling_loader_in_the_code():
    """pickle/joblib/cloudpickle loads and torch.load without weights_only=True appear nowhere."""
    offenders = []
    for root in ("platform", "pipelines", "deployments"):
        for path in (REPO / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                    continue
                owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
                if node.func.attr in ("load", "loads") and owner in ("pickle", "joblib", "cloudpickle", "dill"):
                    offenders.append(f"{path}:{node.lineno}")
                if node.func.attr == "load" and owner == "torch":
                    safe = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True
                               for k in node.keywords)
                    if not safe:
                        offenders.append(f"{path}:{node.lineno}")
    assert offenders == []


@pytest.fixture()
def index_dir(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    index = build_index(vectors, IndexSpec())
    products = pa.table({"product_id": [f"p{i}" for i in range(50)]})
    return save_index(tmp_path / "index", index, products, {"model_name": "m", "model_version": "3"})


def test_index_round_trip(index_dir):
    loaded = load_index(index_dir, expect_model_version="3")
    assert loaded.index.ntotal == 50 and loaded.product_ids[7] == "p7"


def test_index_with_flipped_byte_is_refused(index_dir):
    data = bytearray((index_dir / INDEX_FILE).read_bytes())
    data[-5] ^= 0x01
    (index_dir / INDEX_FILE).write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="does not match its recorded checksum"):
        load_index(index_dir)


def test_index_for_another_model_version_is_refused(index_dir):
    with pytest.raises(RegistryError, match="built for model version '3' but the query tower is version '4'"):
        load_index(index_dir, expect_model_version="4")


def test_index_without_metadata_is_refused(index_dir):
    (index_dir / META_FILE).unlink()
    with pytest.raises(RegistryError, match="not a Vitrine index directory"):
        load_index(index_dir)
