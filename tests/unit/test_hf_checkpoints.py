"""Any local Hugging Face checkpoint can replace the shipped encoders (tiny BERT + tiny ViT made on the spot)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel, ViTConfig, ViTModel

from vitrine.config import DataConfig, LossConfig, ModelConfig
from vitrine.features import Featurizer
from vitrine.losses import make_loss
from vitrine.model.encoders import resolve_text_encoder
from vitrine.model.make import MakeModel
from vitrine.model.store import load_model_dir, save_model_dir
from vitrine.train.loop import row_ids


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64))
    bert.save_pretrained(root / "bert")
    AutoTokenizer.from_pretrained(str(resolve_text_encoder("minilm"))).save_pretrained(str(root / "bert"))
    vit = ViTModel(ViTConfig(image_size=96, patch_size=32, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=64))
    vit.save_pretrained(root / "vit")
    return root


def test_local_text_and_vision_checkpoints_train_and_round_trip(checkpoints, sample_catalog, tmp_path):
    cfg = ModelConfig(text_encoder=str(checkpoints / "bert"), image_encoder=str(checkpoints / "vit"), embed_dim=16)
    model = MakeModel(cfg)
    assert model.query_encoder.dim == 32 and model.image_encoder.dim == 32
    rows = pq.read_table(sample_catalog).slice(0, 4).to_pydict()
    rows["query"] = [t.lower() for t in rows["title"]]
    f = Featurizer(str(checkpoints / "bert"), 96, 16, 32)(rows)
    batch = {k: torch.as_tensor(v) for k, v in f.items() if k != "product_id"}
    out = model(batch, mask_ratio=0.25)
    assert out["visual_pred"].shape == (4 * 2, 32)  # 3x3 patch grid, 2 masked cells per image
    terms = make_loss(out, row_ids(batch), LossConfig())
    terms["loss"].backward()
    assert model.image_encoder.backbone.embeddings.patch_embeddings.projection.weight.grad is not None
    path = save_model_dir(model, DataConfig(), tmp_path / "m")
    loaded, meta = load_model_dir(path)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(batch)["product"], loaded(batch)["product"], atol=1e-5)
    assert meta["model"]["image_encoder"] == str(checkpoints / "vit")
