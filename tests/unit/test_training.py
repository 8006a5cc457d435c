"""Training behaviour of the full model: every loss term is trainable; 50 steps learn from chance."""

from __future__ import annotations

import copy
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from vitrine.catalog.derive import derive_queries
from vitrine.catalog.keywords import mine_keywords
from vitrine.config import LossConfig, ModelConfig, TrainConfig
from vitrine.errors import ConfigError
from vitrine.features import Featurizer, PairBuilder
from vitrine.losses import MemoryBank, make_loss
from vitrine.model.encoders import resolve_text_encoder
from vitrine.model.make import MakeModel
from vitrine.train.loop import build_optimizer, row_ids, to_device, train_step

KEYS = ("q_ids", "q_mask", "t_ids", "t_mask", "image", "has_image", "pid_hash", "q_hash", "kq_ids", "kq_mask")


def featurize(catalog: pa.Table, queries: pa.Table, keywords: dict | None = None) -> dict[str, torch.Tensor]:
    pairs = PairBuilder(queries, keywords=keywords)(catalog)
    rows = Featurizer(str(resolve_text_encoder("minilm")), 96, 16, 32)(
        {k: pairs.column(k).to_pylist() for k in pairs.column_names})
    return to_device({k: torch.as_tensor(rows[k]) for k in KEYS if k in rows}, torch.device("cpu"))


def terms_of(model: MakeModel, batch: dict, cfg: LossConfig) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)  # the same visual mask every time
    terms = make_loss(model(batch, mask_ratio=cfg.mask_ratio), row_ids(batch), cfg)
    terms.pop("objective")
    return terms


@pytest.fixture(scope="module")
def small_batch(sample_catalog):
    catalog = pq.read_table(sample_catalog).take(list(range(0, 2000, 250)))  # 8 products, 8 article types
    queries = derive_queries(catalog, per_product=1, seed=1)
    return featurize(catalog, queries, mine_keywords(queries, catalog))


def test_one_step_on_each_term_lowers_that_term(small_batch):
    torch.manual_seed(0)
    base = MakeModel(ModelConfig()).eval()  # eval: no dropout, so before/after are comparable
    cfg = LossConfig()
    before = {k: float(v) for k, v in terms_of(base, small_batch, cfg).items()}
    assert set(before) == {"query_product", "query_title", "query_image", "title_image", "keyword_product",
                           "keyword_consistency", "visual", "loss"}
    for term in before:
        model = copy.deepcopy(base)
        opt = build_optimizer(model, TrainConfig(lr=1e-4, head_lr=1e-3))
        terms_of(model, small_batch, cfg)[term].backward()
        opt.step()
        after = float(terms_of(model, small_batch, cfg)[term])
        assert after < before[term], f"{term}: {before[term]:.4f} -> {after:.4f}"


def test_regression_visual_task_also_trains(small_batch):
    torch.manual_seed(0)
    model = MakeModel(ModelConfig()).eval()
    cfg = LossConfig(visual_task="regression")
    before = float(terms_of(model, small_batch, cfg)["visual"])
    opt = build_optimizer(model, TrainConfig())
    terms_of(model, small_batch, cfg)["visual"].backward()
    opt.step()
    assert float(terms_of(model, small_batch, cfg)["visual"]) < before


def test_frozen_text_embeddings_stay_put_while_the_rest_trains(small_batch):
    torch.manual_seed(0)
    model = MakeModel(ModelConfig(freeze_text_embeddings=True))
    emb = model.title_encoder.backbone.embeddings.word_embeddings.weight
    layer = model.title_encoder.backbone.encoder.layer[0].attention.self.query.weight
    emb_before, layer_before = emb.detach().clone(), layer.detach().clone()
    opt = build_optimizer(model, TrainConfig(lr=1e-4))
    assert all(p is not emb for g in opt.param_groups for p in g["params"])  # not even weight decay touches them
    train_step(model, small_batch, opt, LossConfig())
    assert torch.equal(emb, emb_before)
    assert torch.equal(model.query_encoder.backbone.embeddings.word_embeddings.weight,
                       MakeModel(ModelConfig()).query_encoder.backbone.embeddings.word_embeddings.weight)
    assert not torch.equal(layer, layer_before)  # the transformer layers above still learn


def test_frozen_text_layers_stay_put_while_the_layers_above_train(small_batch):
    torch.manual_seed(0)
    model = MakeModel(ModelConfig(freeze_text_layers=3))
    layers = model.title_encoder.backbone.encoder.layer
    low, high = layers[2].attention.self.query.weight, layers[3].attention.self.query.weight
    low_before, high_before = low.detach().clone(), high.detach().clone()
    emb = model.query_encoder.backbone.embeddings.word_embeddings.weight
    assert not emb.requires_grad  # frozen layers imply frozen embeddings, so backward stops at layer 3
    opt = build_optimizer(model, TrainConfig(lr=1e-4))
    train_step(model, small_batch, opt, LossConfig())
    assert torch.equal(low, low_before)
    assert not torch.equal(high, high_before)
    assert low.grad is None


def test_freezing_more_text_layers_than_exist_names_the_limit():
    with pytest.raises(ConfigError, match=r"freeze_text_layers=7.*0-6"):
        MakeModel(ModelConfig(freeze_text_layers=7))


def test_fifty_steps_learn_from_chance(shared_data):
    """A query head reset to noise starts at chance; 50 steps on real Myntra rows must lift held-out accuracy."""
    torch.manual_seed(0)
    catalog = pq.read_table(shared_data / "myntra" / "products-03.parquet").slice(0, 1200)
    seen, held = set(), []
    for i, r in enumerate(catalog.select(["articleType", "baseColour", "gender"]).to_pylist()):
        key = (r["articleType"], r["baseColour"], r["gender"])
        if key not in seen and len(held) < 32:
            seen.add(key)
            held.append(i)
    train_cat = catalog.take([i for i in range(catalog.num_rows) if i not in set(held)])
    eval_cat = catalog.take(held)  # 32 products, each the only match of its query in the eval batch
    queries = derive_queries(train_cat, seed=0)
    rows = featurize(train_cat, queries, mine_keywords(queries, train_cat))
    eval_q = pa.table({
        "query": [f"{r['gender'].lower()} {r['baseColour'].lower()} {r['articleType'].lower()}"
                  for r in eval_cat.to_pylist()],
        "product_id": eval_cat.column("product_id"), "label": [1.0] * 32})
    eval_batch = featurize(eval_cat, eval_q)

    def accuracy(model: MakeModel) -> float:
        model.eval()
        with torch.no_grad():
            out = model(eval_batch)
        return float((out["query"] @ out["product"].t()).argmax(1).eq(torch.arange(32)).float().mean())

    model = MakeModel(ModelConfig())
    torch.nn.init.normal_(model.query_proj.weight, std=0.05)  # forget the zero-shot start
    start = accuracy(model)
    opt = build_optimizer(model, TrainConfig())
    bank = MemoryBank(256, 256)
    order = torch.randperm(rows["q_ids"].shape[0])
    for step in range(50):
        idx = order[step * 16:(step + 1) * 16]
        train_step(model, {k: v[idx] for k, v in rows.items()}, opt, LossConfig(), bank)
    end = accuracy(model)
    assert start <= 3 / 32  # chance is 1/32
    assert end >= 0.5, f"held-out in-batch accuracy after 50 steps: {end:.2f} (from {start:.2f})"
    assert len(bank) == 256


def test_progress_line_by_hand():
    from vitrine.train.ray_train import progress_line

    line = progress_line(30, 120, {"loss": 2.9404, "inbatch_acc": 0.8125, "samples_per_s": 17.19}, 45.0, 0)
    # 30 steps in 45 s -> 1.5 s a step, 90 steps left -> 135 s
    assert line == "step 30/120 (25%) | loss 2.940 | in-batch acc 0.81 | samples/s 17.2 | elapsed 45s, left ~2m15s"
    resumed = progress_line(60, 100, {}, 20.0, 50)  # resumed at step 50: 10 steps in 20 s, 40 left -> 80 s
    assert resumed == "step 60/100 (60%) | elapsed 20s, left ~1m20s"


def test_ray_trains_per_report_dump_is_quieted():
    from ray.train.v2._internal.execution import context

    from vitrine.train.ray_train import _quiet_report_dumps

    logger = logging.getLogger(context.__file__)
    before = logger.level
    try:
        _quiet_report_dumps()
        assert not logger.isEnabledFor(logging.INFO) and logger.isEnabledFor(logging.WARNING)
    finally:
        logger.setLevel(before)
