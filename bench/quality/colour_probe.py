"""How much of Myntra's `baseColour` a colour histogram carries: a linear probe (logistic regression) per
histogram variant, trained on the first products of the catalog and scored on the next ones. JSON out.

    python -m bench.quality.colour_probe --catalog data/myntra/catalog.parquet --products 12000

Why: the image tower's colour branch (`model.colour_bins`) is a parameter-free histogram; the probe says
whether a finer or a hue-based histogram would hand the projection more colour than the shipped 4x4x4 RGB one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from vitrine.catalog.images import decode_batch
from vitrine.model.make import centre_weight, colour_histogram

DEFAULT_VARIANTS = ("rgb4", "rgb6", "rgb8", "hsv12x3x3", "hsv18x4x4", "rgb4+hsv12x3x3")


def hsv_histogram(images: torch.Tensor, hue: int, sat: int, val: int) -> torch.Tensor:
    """(B, S, S, 3) uint8 -> (B, hue*sat*val) square-rooted HSV histogram, centre-weighted like the RGB one."""
    f = images.float() / 255
    mx, _ = f.max(-1)
    mn, _ = f.min(-1)
    d = (mx - mn).clamp_min(1e-6)
    r, g, b = f.unbind(-1)
    h = torch.where(mx == r, ((g - b) / d) % 6, torch.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) / 6
    s = (mx - mn) / mx.clamp_min(1e-6)
    hi = (h.clamp(0, 0.9999) * hue).long()
    si = (s.clamp(0, 0.9999) * sat).long()
    vi = (mx.clamp(0, 0.9999) * val).long()
    idx = (hi * sat + si) * val + vi  # (B, S, S)
    n, side = images.shape[0], images.shape[1]
    weight = centre_weight(side).expand(n, side, side)
    hist = torch.zeros(n, hue * sat * val)
    hist.scatter_add_(1, idx.reshape(n, -1), weight.reshape(n, -1))
    return hist.sqrt() * (hue * sat * val) ** 0.5


def features(images: torch.Tensor, variant: str) -> np.ndarray:
    """One variant's features: ``rgbN`` (the model's branch, N bins a channel), ``hsvHxSxV``, or ``a+b``."""
    parts = []
    for part in variant.split("+"):
        if part.startswith("rgb") and part[3:].isdigit():
            parts.append(colour_histogram(images, int(part[3:])).numpy())
        elif part.startswith("hsv") and len(dims := part[3:].split("x")) == 3 and all(x.isdigit() for x in dims):
            parts.append(hsv_histogram(images, *map(int, dims)).numpy())
        else:
            raise ValueError(f"unknown variant part {part!r}: use rgbN (e.g. rgb4) or hsvHxSxV (e.g. hsv12x3x3)")
    return np.concatenate(parts, axis=1)


def probe(catalog: str, products: int, train_share: float, image_size: int, variants: list[str]) -> dict:
    """Held-out accuracy of a logistic-regression probe per variant, with the majority-class accuracy."""
    for variant in variants:  # refuse a bad variant before decoding thousands of images
        features(torch.zeros(1, 2, 2, 3, dtype=torch.uint8), variant)
    missing = {"image", "baseColour"} - set(pq.read_schema(catalog).names)
    if missing:
        raise ValueError(f"{catalog} has no {sorted(missing)} column: the probe needs a catalog with images and "
                         "a baseColour attribute, e.g. data/myntra/catalog.parquet")
    table = pq.read_table(catalog, columns=["image", "baseColour"]).slice(0, products)
    decoded, has_image, _ = decode_batch(table.column("image").to_pylist(), image_size)
    colours = np.array([c or "" for c in table.column("baseColour").to_pylist()])
    keep = has_image & (colours != "")
    images, colours = torch.from_numpy(decoded[keep]), colours[keep]
    train = np.arange(len(colours)) < int(train_share * len(colours))
    if train.sum() < 2 or (~train).sum() < 1 or len(np.unique(colours[train])) < 2:
        raise ValueError(f"{len(colours)} of {table.num_rows} products have an image and a colour: too few to "
                         "probe; raise --products")
    values, counts = np.unique(colours[~train], return_counts=True)
    out: dict = {"catalog": catalog, "image_size": image_size, "products": int(len(colours)),
                 "skipped_without_image_or_colour": int((~keep).sum()), "train": int(train.sum()),
                 "test": int((~train).sum()), "colours": int(len(np.unique(colours))),
                 "majority_class": {"colour": str(values[counts.argmax()]),
                                    "accuracy": round(float(counts.max() / counts.sum()), 4)},
                 "accuracy": {}}
    for variant in variants:
        start = time.perf_counter()
        x = StandardScaler().fit(f := features(images, variant)).transform(f)
        clf = LogisticRegression(max_iter=3000).fit(x[train], colours[train])
        out["accuracy"][variant] = {"dim": int(x.shape[1]), "accuracy": round(float(clf.score(x[~train],
                                                                                           colours[~train])), 4),
                                    "seconds": round(time.perf_counter() - start, 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: prints the probe accuracies as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--catalog", required=True, help="catalog Parquet with image and baseColour columns")
    p.add_argument("--products", type=int, default=12000, help="first N products of the catalog")
    p.add_argument("--train-share", type=float, default=0.75)
    p.add_argument("--image-size", type=int, default=96, help="the recipe's data.image_size")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma-separated, e.g. rgb4,hsv12x3x3")
    a = p.parse_args(argv)
    if a.products < 100 or not 0 < a.train_share < 1:
        p.error(f"--products {a.products} / --train-share {a.train_share}: use >= 100 products and a share in (0, 1)")
    try:
        print(json.dumps(probe(a.catalog, a.products, a.train_share, a.image_size, a.variants.split(",")),
                         indent=1))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
