"""The three-tower model with the shipped weights: shapes, fusion rules, save/load round trip."""

import pyarrow.parquet as pq
import pytest
import torch

from vitrine.config import DataConfig, ModelConfig
from vitrine.errors import RegistryError
from vitrine.features import Featurizer
from vitrine.model.encoders import resolve_text_encoder
from vitrine.model.make import MakeModel
from vitrine.model.store import WEIGHTS, load_model_dir, save_model_dir


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MakeModel(ModelConfig()).eval()


@pytest.fixture(scope="module")
def batch(sample_catalog):
    rows = pq.read_table(sample_catalog).slice(0, 6).to_pydict()
    rows["query"] = [t.lower() for t in rows["title"]]
    rows["image"][5] = None  # one product without an image
    f = Featurizer(str(resolve_text_encoder("minilm")), 96, 16, 32)(rows)
    return {k: torch.as_tensor(f[k]) for k in ("q_ids", "q_mask", "t_ids", "t_mask", "image", "has_image")}


def test_outputs_are_unit_vectors_and_weights_convex(model, batch):
    with torch.no_grad():
        out = model(batch)
    for key in ("query", "product", "title"):
        assert out[key].shape == (6, 256)
        assert torch.allclose(out[key].norm(dim=-1), torch.ones(6), atol=1e-5)
    w = out["modal_weights"]
    assert torch.all(w >= 0) and torch.allclose(w.sum(-1), torch.ones(6))
    assert not torch.isnan(out["product"]).any()


def test_missing_image_means_title_only(model, batch):
    with torch.no_grad():
        out = model(batch)
    assert out["modal_weights"][5].tolist() == [1.0, 0.0]
    assert torch.allclose(out["product"][5], out["title"][5], atol=1e-6)
    assert not torch.allclose(out["product"][0], out["title"][0], atol=1e-3)


def test_untrained_model_matches_query_to_its_own_title(model, batch):
    """Query and title towers start identical, so a title-as-query finds its own product."""
    with torch.no_grad():
        out = model(batch)
    sims = out["query"] @ out["product"].t()
    assert sims.argmax(1).tolist() == list(range(6))


def test_save_load_round_trip_and_checksum(model, batch, tmp_path):
    path = save_model_dir(model, DataConfig(), tmp_path / "m")
    loaded, meta = load_model_dir(path)
    assert meta["preprocess"]["image_size"] == 96
    with torch.no_grad():
        assert torch.allclose(model(batch)["product"], loaded(batch)["product"], atol=1e-6)
    raw = bytearray((path / WEIGHTS).read_bytes())
    raw[-1] ^= 0xFF
    (path / WEIGHTS).write_bytes(bytes(raw))
    with pytest.raises(RegistryError, match="checksum"):
        load_model_dir(path)


def test_bad_encoder_path_is_a_clear_error():
    from vitrine.errors import ConfigError

    with pytest.raises(ConfigError, match="local Hugging Face"):
        MakeModel(ModelConfig(text_encoder="/nonexistent/ckpt"))


@pytest.mark.parametrize("init", [0.12, 0.5, 0.9])
def test_modal_adaptation_starts_at_the_configured_image_weight(init):
    from vitrine.model.make import ModalAdaptation

    gate = ModalAdaptation(8, init_image_weight=init)
    title, image = torch.randn(4, 8), torch.randn(4, 8)
    w = gate(title, image, torch.tensor([True, True, True, False]))
    assert w[:3, 1].tolist() == pytest.approx([init] * 3, abs=1e-6)  # same prior for every product
    assert w[3].tolist() == [1.0, 0.0]  # no image: the title alone


def test_modal_init_image_weight_out_of_range_is_refused():
    from vitrine.errors import ConfigError
    from vitrine.model.make import ModalAdaptation

    with pytest.raises(ConfigError, match="modal_init_image_weight=1.0"):
        ModalAdaptation(8, init_image_weight=1.0)


def test_colour_histogram_sees_the_product_colour_and_ignores_the_border():
    from vitrine.model.make import colour_histogram

    img = torch.full((2, 32, 32, 3), 255, dtype=torch.uint8)  # white background
    img[0, 8:24, 8:24] = torch.tensor([200, 20, 20], dtype=torch.uint8)  # red product mid-frame
    img[1, 8:24, 8:24] = torch.tensor([20, 20, 200], dtype=torch.uint8)  # blue product
    h = colour_histogram(img, 4)
    red, blue, white = (3 * 4 + 0) * 4 + 0, (0 * 4 + 0) * 4 + 3, 63
    assert h.shape == (2, 64)
    assert h[0, red] > h[0, white] and h[1, blue] > h[1, white]  # centre weighting favours the product
    assert h[0, blue] == 0 and h[1, red] == 0
    assert (h ** 2).sum(-1).tolist() == pytest.approx([64.0, 64.0], rel=1e-5)  # bin RMS 1: sum of squares = bins^3


def test_colour_bins_change_the_image_vector_and_survive_save_load(batch, tmp_path):
    torch.manual_seed(0)
    model = MakeModel(ModelConfig(colour_bins=4)).eval()
    assert model.image_proj.in_features == model.image_encoder.dim + 64
    path = save_model_dir(model, DataConfig(), tmp_path / "m")
    loaded, meta = load_model_dir(path)
    assert meta["model"]["colour_bins"] == 4
    with torch.no_grad():
        out = model(batch)
        assert torch.allclose(out["product"], loaded(batch)["product"], atol=1e-6)
        model.image_proj.weight[:, -64:] = 0  # silence the colour bins: the image vectors must move
        assert not torch.allclose(model(batch)["image"][:5], out["image"][:5], atol=1e-3)


@pytest.mark.parametrize("bins", [-1, 17])
def test_colour_bins_out_of_range_is_refused(bins):
    from vitrine.errors import ConfigError

    with pytest.raises(ConfigError, match=f"model.colour_bins={bins}"):
        MakeModel(ModelConfig(colour_bins=bins))
