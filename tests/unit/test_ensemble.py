"""An ensemble directory: its inner product is the mean of the members' cosines, it loads wherever a model
directory does, and a tampered or mismatched member is refused with the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vitrine.errors import RegistryError
from vitrine.index.embed import QueryEncoder
from vitrine.model.ensemble import save_ensemble_dir
from vitrine.model.store import META, WEIGHTS, load_model_dir

QUERIES = ["cordless drill", "blue denim jacket", "white subway tile 3x6"]


@pytest.fixture(scope="module")
def members(tiny_models) -> list[Path]:
    """Two real model directories from different seeds (conftest)."""
    return tiny_models


@pytest.fixture(scope="module")
def ensemble(members, tmp_path_factory) -> Path:
    return save_ensemble_dir(members, tmp_path_factory.mktemp("e") / "model")


def test_inner_product_is_the_mean_of_member_cosines(members, ensemble):
    qs = [QueryEncoder(m, device="cpu")(QUERIES) for m in members]
    qe = QueryEncoder(ensemble, device="cpu")(QUERIES)
    assert qe.shape == (len(QUERIES), 64)
    np.testing.assert_allclose(np.linalg.norm(qe, axis=1), 1.0, atol=1e-5)
    mean_cos = (qs[0] @ qs[0].T + qs[1] @ qs[1].T) / 2  # query-to-query stands in for query-to-product
    np.testing.assert_allclose(qe @ qe.T, mean_cos, atol=1e-5)
    assert not np.allclose(qs[0] @ qs[0].T, qs[1] @ qs[1].T, atol=1e-3)  # the members really differ


def test_product_tower_concatenates_and_averages_modal_weights(members, ensemble):
    ens, meta = load_model_dir(ensemble)
    assert ens.cfg.embed_dim == meta["model"]["embed_dim"] == 64
    one = [load_model_dir(m)[0] for m in members]
    ids = torch.randint(1000, 2000, (3, 8))
    mask, image, has = torch.ones(3, 8, dtype=torch.long), torch.zeros(3, 32, 32, 3, dtype=torch.uint8), \
        torch.zeros(3, dtype=torch.bool)
    with torch.inference_mode():
        out = ens.encode_product(ids, mask, image, has)
        parts = [m.encode_product(ids, mask, image, has) for m in one]
    want = torch.cat([p["product"] for p in parts], -1) / np.sqrt(2)
    torch.testing.assert_close(out["product"], want, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["modal_weights"], (parts[0]["modal_weights"] + parts[1]["modal_weights"]) / 2)


def test_tampered_member_is_refused(ensemble, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(ensemble, copy)
    data = bytearray((copy / "members" / "1" / WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "members" / "1" / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="do not match the checksum"):
        load_model_dir(copy)


def test_swapped_member_is_refused(ensemble, members, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(ensemble, copy)
    shutil.rmtree(copy / "members" / "1")
    shutil.copytree(members[0], copy / "members" / "1")
    with pytest.raises(RegistryError, match="not the model the ensemble was built from"):
        load_model_dir(copy)


def test_member_outside_the_directory_is_refused(ensemble, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(ensemble, copy)
    meta = json.loads((copy / META).read_text())
    meta["ensemble"][0]["dir"] = "../../elsewhere"
    (copy / META).write_text(json.dumps(meta))
    with pytest.raises(RegistryError, match="outside its directory"):
        load_model_dir(copy)
    meta["ensemble"] = meta["ensemble"][:1]
    (copy / META).write_text(json.dumps(meta))
    with pytest.raises(RegistryError, match="malformed member list"):
        load_model_dir(copy)


def test_members_that_featurise_differently_are_refused(members, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(members[1], other)
    meta = json.loads((other / META).read_text())
    meta["preprocess"]["max_query_len"] += 1
    (other / META).write_text(json.dumps(meta))
    with pytest.raises(RegistryError, match="different preprocess"):
        save_ensemble_dir([members[0], other], tmp_path / "e")
    with pytest.raises(RegistryError, match="at least 2 member models"):
        save_ensemble_dir([members[0]], tmp_path / "e1")
    with pytest.raises(RegistryError, match="is not empty"):
        save_ensemble_dir(members, other)


def test_nested_or_repeated_members_are_refused(members, ensemble, tmp_path):
    with pytest.raises(RegistryError, match="is itself an ensemble"):
        save_ensemble_dir([ensemble, members[0]], tmp_path / "e")
    twin = tmp_path / "twin"
    shutil.copytree(members[0], twin)  # the same weights under another path
    with pytest.raises(RegistryError, match="are the same model"):
        save_ensemble_dir([members[0], twin], tmp_path / "e2")
    assert not (tmp_path / "e").exists() and not (tmp_path / "e2").exists()


@pytest.mark.parametrize("damage, message", [
    ("json", "is not valid JSON"), ("weights", "has no model.safetensors"), ("checksum", "lacks weights_sha256"),
])
def test_damaged_model_directory_is_one_clear_error(members, tmp_path, damage, message):
    copy = tmp_path / "m"
    shutil.copytree(members[0], copy)
    if damage == "json":
        (copy / META).write_text("{not json")
    elif damage == "weights":
        (copy / WEIGHTS).unlink()
    else:
        meta = json.loads((copy / META).read_text())
        del meta["weights_sha256"]
        (copy / META).write_text(json.dumps(meta))
    with pytest.raises(RegistryError, match=message):
        load_model_dir(copy)
