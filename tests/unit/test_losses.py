"""Contrastive losses against hand-written references."""

import math

import torch
import torch.nn.functional as F

from vitrine.config import LossConfig
from vitrine.losses import gather_with_grad, info_nce, make_loss, pair_loss, visual_loss


def _reference_info_nce(a, b, scale):
    """Textbook InfoNCE row by row: -log softmax(scale * a_i . b)_i."""
    total = 0.0
    for i in range(a.shape[0]):
        logits = [scale * float(a[i] @ b[j]) for j in range(b.shape[0])]
        m = max(logits)
        lse = m + math.log(sum(math.exp(x - m) for x in logits))
        total += lse - logits[i]
    return total / a.shape[0]


def test_info_nce_matches_reference():
    torch.manual_seed(0)
    a = F.normalize(torch.randn(5, 8), dim=-1)
    b = F.normalize(torch.randn(5, 8), dim=-1)
    ids = torch.arange(5).unsqueeze(1)
    got = info_nce(a, b, torch.tensor(10.0), ids, ids)
    assert math.isclose(float(got), _reference_info_nce(a, b, 10.0), rel_tol=1e-5)


def test_duplicate_products_are_not_negatives():
    torch.manual_seed(1)
    a = F.normalize(torch.randn(4, 8), dim=-1)
    b = F.normalize(torch.randn(4, 8), dim=-1)
    ids = torch.tensor([[7], [7], [3], [4]])  # rows 0 and 1 are the same product
    got = info_nce(a, b, torch.tensor(10.0), ids, ids)
    # reference: row 0 ignores candidate 1 and row 1 ignores candidate 0
    expected = 0.0
    for i in range(4):
        negatives = [j for j in range(4) if ids[j] != ids[i]]
        expected += _reference_info_nce(a[i:i + 1], b[[i, *negatives]], 10.0)  # positive first
    assert math.isclose(float(got), expected / 4, rel_tol=1e-5)


def test_gather_is_identity_without_process_group():
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x


def test_invalid_rows_are_excluded():
    torch.manual_seed(2)
    a = F.normalize(torch.randn(4, 8), dim=-1)
    b = F.normalize(torch.randn(4, 8), dim=-1)
    ids = torch.arange(4).unsqueeze(1)
    valid = torch.tensor([1.0, 1.0, 0.0, 1.0])
    got = pair_loss(a, b, torch.tensor(5.0), ids, valid)
    keep = [0, 1, 3]
    ref = 0.5 * (_reference_info_nce(a[keep], b[keep], 5.0) + _reference_info_nce(b[keep], a[keep], 5.0))
    assert math.isclose(float(got), ref, rel_tol=1e-5)


def test_make_loss_has_gradient_for_every_term():
    torch.manual_seed(3)
    keys = ("query", "query_kw", "product", "title", "image")
    out = {k: F.normalize(torch.randn(6, 8), dim=-1).requires_grad_() for k in keys}
    out["visual_pred"] = torch.randn(5, 12, requires_grad=True)
    out["visual_target"] = torch.randn(5, 12)
    out["logit_scale"] = torch.tensor(20.0)
    out["has_image"] = torch.tensor([True, True, False, True, True, True])
    cfg = LossConfig()
    terms = make_loss(out, torch.stack([torch.arange(6), torch.arange(6) + 100], 1), cfg)
    assert set(terms) == {"query_product", "query_title", "query_image", "title_image", "keyword_product",
                          "keyword_consistency", "visual", "loss", "objective"}
    assert torch.equal(terms["objective"], terms["loss"])  # world size 1: nothing to rescale
    terms["loss"].backward()
    for k in (*keys, "visual_pred"):
        assert out[k].grad is not None and out[k].grad.abs().sum() > 0, k
    weights = {"query_product": cfg.w_query_product, "query_title": cfg.w_query_title,
               "query_image": cfg.w_query_image, "title_image": cfg.w_title_image, "keyword_product": cfg.w_keyword,
               "keyword_consistency": cfg.w_keyword, "visual": cfg.w_visual}
    total = sum(w * float(terms[k].detach()) for k, w in weights.items())
    assert math.isclose(float(terms["loss"].detach()), total, rel_tol=1e-6)


def test_switches_remove_terms():
    torch.manual_seed(4)
    out = {k: F.normalize(torch.randn(4, 8), dim=-1) for k in ("query", "query_kw", "product", "title", "image")}
    out.update(logit_scale=torch.tensor(20.0), has_image=torch.ones(4, dtype=torch.bool),
               visual_pred=torch.randn(4, 6), visual_target=torch.randn(4, 6))
    ids = torch.stack([torch.arange(4), torch.arange(4)], 1)
    terms = make_loss(out, ids, LossConfig(visual_task="none", keyword_enhancement=False))
    assert "visual" not in terms and "keyword_product" not in terms


def test_visual_contrastive_vs_regression():
    torch.manual_seed(5)
    target = torch.randn(6, 10)
    perfect = visual_loss(target.clone(), target, torch.tensor(50.0), "contrastive")
    shuffled = visual_loss(target[torch.randperm(6)], target, torch.tensor(50.0), "contrastive")
    assert float(perfect) < 0.01 < float(shuffled)
    assert float(visual_loss(target.clone(), target, torch.tensor(1.0), "regression")) < 1e-10
    scaled = visual_loss(3 * target, target, torch.tensor(1.0), "regression")  # scale-free: normalised
    assert float(scaled) < 1e-10
    empty = visual_loss(torch.zeros(0, 10), torch.zeros(0, 10), torch.tensor(1.0), "contrastive")
    assert float(empty) == 0.0
