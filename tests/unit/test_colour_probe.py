"""bench.quality.colour_probe: HSV bins checked on solid colours, and a probe that must separate them."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from bench.quality.colour_probe import features, hsv_histogram, probe

SOLID = {"Red": (255, 0, 0), "Green": (0, 255, 0), "Blue": (0, 0, 255), "White": (255, 255, 255)}


def solid(rgb: tuple[int, int, int], side: int = 8) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.uint8).expand(1, side, side, 3).clone()


def test_hsv_histogram_puts_a_solid_colour_in_its_own_bin():
    hue, sat, val = 6, 2, 2
    for rgb, (h, s, v) in (((255, 0, 0), (0, 1, 1)), ((0, 255, 0), (2, 1, 1)), ((0, 0, 255), (4, 1, 1)),
                           ((255, 255, 255), (0, 0, 1)), ((0, 0, 0), (0, 0, 0))):
        hist = hsv_histogram(solid(rgb), hue, sat, val)[0]
        assert int(hist.argmax()) == (h * sat + s) * val + v, rgb
        # one bin holds all the weight: sqrt(1) * sqrt(bins) there, zero elsewhere
        assert hist.max().item() == pytest.approx((hue * sat * val) ** 0.5)
        assert (hist > 0).sum().item() == 1


def test_features_concatenate_variants_and_refuse_unknown_ones():
    image = solid((10, 200, 30))
    assert features(image, "rgb4").shape == (1, 64)
    assert features(image, "rgb2+hsv6x2x2").shape == (1, 8 + 24)
    with pytest.raises(ValueError, match="rgbN"):
        features(image, "lab8")


def test_probe_separates_solid_colours_and_skips_rows_without_colour(tmp_path):
    rng = np.random.default_rng(0)
    images, colours = [], []
    for i in range(160):
        name = list(SOLID)[i % 4]
        pixel = np.clip(np.array(SOLID[name]) + rng.integers(-20, 21, 3), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(np.broadcast_to(pixel, (16, 16, 3)).copy()).save(buf, format="PNG")
        images.append(buf.getvalue())
        colours.append(name)
    images.append(images[0])
    colours.append(None)  # no colour: skipped and counted
    path = tmp_path / "catalog.parquet"
    pq.write_table(pa.table({"image": pa.array(images, pa.binary()), "baseColour": colours}), path)
    out = probe(str(path), products=1000, train_share=0.75, image_size=16, variants=["rgb4", "hsv6x2x2"])
    assert out["products"] == 160 and out["skipped_without_image_or_colour"] == 1
    assert out["majority_class"]["accuracy"] == pytest.approx(0.25)
    assert out["accuracy"]["rgb4"]["accuracy"] == 1.0
    assert out["accuracy"]["hsv6x2x2"]["accuracy"] == 1.0


def test_probe_names_a_missing_colour_column(tmp_path):
    path = tmp_path / "catalog.parquet"
    pq.write_table(pa.table({"product_id": ["1"], "image": pa.array([b""], pa.binary())}), path)
    with pytest.raises(ValueError, match=r"no \['baseColour'\] column"):
        probe(str(path), products=100, train_share=0.75, image_size=16, variants=["rgb4"])
