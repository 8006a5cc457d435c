"""Image decoding: encoded bytes -> fixed-size RGB uint8 arrays; undecodable images become None (counted)."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

MAX_PIXELS = 64_000_000  # refuse decompression bombs before decoding
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # larger encoded images are refused unread (validation reports them too)
PAD_COLOUR = (255, 255, 255)  # catalog photos sit on white; padding keeps aspect without inventing content


def decode_image(data: bytes | None, size: int) -> np.ndarray | None:
    """Decode and letterbox one image to ``(size, size, 3)`` uint8, or None if it cannot be decoded."""
    if not data or len(data) > MAX_IMAGE_BYTES:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    return None
                img.draft("RGB", (size * 2, size * 2))  # JPEG: decode at reduced scale when possible
                rgb = img.convert("RGB")
        out = ImageOps.pad(rgb, (size, size), method=Image.Resampling.BILINEAR, color=PAD_COLOUR)
        return np.asarray(out, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning, SyntaxError):
        return None


def decode_batch(images: list[bytes | None], size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode a batch: ``(N, size, size, 3)`` uint8, a has-image mask, and how many present images failed."""
    out = np.full((len(images), size, size, 3), 255, dtype=np.uint8)
    has = np.zeros(len(images), dtype=bool)
    failed = 0
    for i, data in enumerate(images):
        arr = decode_image(data, size)
        if arr is not None:
            out[i] = arr
            has[i] = True
        elif data:
            failed += 1
    return out, has, failed
