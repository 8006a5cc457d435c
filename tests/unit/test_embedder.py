"""The catalog embedder: length-sorted chunks give the one-pass vectors, in the rows' own order."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.embed_index import embedder_kwargs
from vitrine.config import DataConfig, IndexConfig, IndexJob, ModelConfig
from vitrine.errors import ConfigError
from vitrine.index.embed import CPU_CHUNK, ProductEmbedder
from vitrine.model.make import MakeModel
from vitrine.model.store import save_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    return save_model_dir(MakeModel(ModelConfig()).eval(), DataConfig(), tmp_path_factory.mktemp("m") / "m")


@pytest.fixture(scope="module")
def rows(sample_catalog):
    table = pq.read_table(sample_catalog, columns=["product_id", "title", "image"]).slice(0, 40)
    batch = {c: np.asarray(table.column(c).to_pylist(), dtype=object) for c in table.column_names}
    batch["title"][3] = batch["title"][3] + " with a much longer title than any other product in this batch"
    batch["image"][7] = None  # one product without an image
    return batch


def one_pass(embedder: ProductEmbedder, batch: dict) -> np.ndarray:
    """The whole batch in one forward pass, padded to its longest title: the reference."""
    f = embedder.featurize(batch)
    with torch.inference_mode():
        out = embedder.model.encode_product(*(torch.as_tensor(f[k]) for k in ("t_ids", "t_mask", "image",
                                                                               "has_image")))
    return out["product"].numpy()


def test_chunks_in_length_order_give_the_one_pass_vectors_in_row_order(model_dir, rows):
    small = ProductEmbedder(str(model_dir), chunk=3)
    out = small(rows)
    assert small.chunk == 3 and out["embedding"].shape == (40, 256)
    assert out["product_id"].tolist() == [str(p) for p in rows["product_id"]]
    np.testing.assert_allclose(out["embedding"], one_pass(small, rows), atol=2e-5)
    assert out["title_weight"][7] == 1.0 and out["image_weight"][7] == 0.0  # the image-less row kept its place
    assert (out["image_weight"][:7] > 0).all()


def test_automatic_chunk_and_empty_batch(model_dir, rows):
    auto = ProductEmbedder(str(model_dir))
    assert auto.chunk == CPU_CHUNK
    empty = {k: v[:0] for k, v in rows.items()}
    out = auto(empty)
    assert out["embedding"].shape == (0, 256) and len(out["product_id"]) == 0


@pytest.mark.parametrize("key,value", [("embed_chunk", -1), ("embed_concurrency", 0), ("embed_batch_size", 0),
                                       ("embed_threads", -2)])
def test_bad_embedding_settings_name_the_key(model_dir, key, value):
    job = IndexJob(index=IndexConfig(**{key: value}))
    with pytest.raises(ConfigError, match=f"index.{key} must be >= .*got {value}"):
        embedder_kwargs(model_dir, job)
