"""Contrastive losses against hand-written references."""

import math

import torch
import torch.nn.functional as F

from vitrine.losses import gather_with_grad, info_nce, make_loss, symmetric_info_nce


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
    ids = torch.arange(5)
    got = info_nce(a, b, torch.tensor(10.0), ids, ids)
    assert math.isclose(float(got), _reference_info_nce(a, b, 10.0), rel_tol=1e-5)


def test_duplicate_products_are_not_negatives():
    torch.manual_seed(1)
    a = F.normalize(torch.randn(4, 8), dim=-1)
    b = F.normalize(torch.randn(4, 8), dim=-1)
    ids = torch.tensor([7, 7, 3, 4])  # rows 0 and 1 are the same product
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
    ids = torch.arange(4)
    valid = torch.tensor([1.0, 1.0, 0.0, 1.0])
    got = symmetric_info_nce(a, b, torch.tensor(5.0), ids, valid)
    keep = [0, 1, 3]
    ref = 0.5 * (_reference_info_nce(a[keep], b[keep], 5.0) + _reference_info_nce(b[keep], a[keep], 5.0))
    assert math.isclose(float(got), ref, rel_tol=1e-5)


def test_make_loss_has_gradient_for_every_term():
    torch.manual_seed(3)
    out = {k: F.normalize(torch.randn(6, 8), dim=-1).requires_grad_() for k in ("query", "product", "title", "image")}
    out["logit_scale"] = torch.tensor(20.0)
    out["has_image"] = torch.tensor([True, True, False, True, True, True])
    terms = make_loss(out, torch.arange(6))
    terms["loss"].backward()
    for k in ("query", "product", "title", "image"):
        assert out[k].grad is not None and out[k].grad.abs().sum() > 0
    total = float(terms["query_product"].detach()) + 0.5 * float(terms["title_image"].detach())
    assert math.isclose(float(terms["loss"].detach()), total, rel_tol=1e-6)
