"""MemoryBank: a bounded FIFO of detached product embeddings whose ids keep duplicates of a positive masked."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vitrine.config import LossConfig
from vitrine.losses import MemoryBank, info_nce, make_loss, pair_loss

DIM = 4
SCALE = 10.0


def _marked(markers: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Row for marker m: features (m, m + .1, m + .2, m + .3) and ids (m, 1000 + m)."""
    m = torch.tensor(markers, dtype=torch.int64)
    feats = m.float().unsqueeze(1) + torch.arange(DIM, dtype=torch.float32) / 10
    return feats, torch.stack([m, 1000 + m], dim=1)


def _assert_holds(bank: MemoryBank, markers: list[int]) -> None:
    feats, ids = bank.negatives()
    ref_feats, ref_ids = _marked(markers)
    assert len(bank) == len(markers)
    assert torch.equal(feats, ref_feats.reshape(len(markers), DIM)), (feats, markers)
    assert torch.equal(ids, ref_ids.reshape(len(markers), 2)), (ids, markers)


def test_fifo_returns_newest_entries_oldest_first():
    bank = MemoryBank(5, DIM)
    _assert_holds(bank, [])
    bank.enqueue(*_marked([1, 2, 3]))
    _assert_holds(bank, [1, 2, 3])
    bank.enqueue(*_marked([4, 5]))
    _assert_holds(bank, [1, 2, 3, 4, 5])
    bank.enqueue(*_marked([6, 7, 8]))
    _assert_holds(bank, [4, 5, 6, 7, 8])


def test_size_bound_never_exceeded():
    bank = MemoryBank(5, DIM)
    seen: list[int] = []
    next_marker = 1
    for n in (1, 4, 2, 7, 3, 5, 6, 1, 9, 2):
        markers = list(range(next_marker, next_marker + n))
        next_marker += n
        bank.enqueue(*_marked(markers))
        seen += markers
        feats, ids = bank.negatives()
        assert len(bank) == min(len(seen), 5)
        assert feats.shape == (len(bank), DIM) and ids.shape == (len(bank), 2)
        _assert_holds(bank, seen[-5:])


def test_batch_bigger_than_bank_keeps_its_last_rows():
    bank = MemoryBank(5, DIM)
    bank.enqueue(*_marked(list(range(10, 18))))  # 8 rows into an empty bank of 5
    _assert_holds(bank, [13, 14, 15, 16, 17])
    bank.enqueue(*_marked([1, 2]))
    bank.enqueue(*_marked(list(range(20, 27))))  # 7 rows into a partly rotated bank
    _assert_holds(bank, [22, 23, 24, 25, 26])
    bank.enqueue(*_marked([99]))
    _assert_holds(bank, [23, 24, 25, 26, 99])


def test_enqueued_tensors_are_stored_detached():
    torch.manual_seed(0)
    leaf = F.normalize(torch.randn(3, DIM), dim=-1).requires_grad_()
    derived = leaf * 0.5  # non-leaf with a grad_fn
    bank = MemoryBank(5, DIM)
    bank.enqueue(leaf, torch.tensor([[1, 11], [2, 12], [3, 13]]))
    bank.enqueue(derived[:2], torch.tensor([[4, 14], [5, 15]]))
    feats, _ = bank.negatives()
    assert not feats.requires_grad and feats.grad_fn is None
    assert torch.equal(feats, torch.cat([leaf.detach(), 0.5 * leaf.detach()[:2]]))
    # the bank holds a copy: changing the source afterwards does not change the bank
    with torch.no_grad():
        leaf.add_(1.0)
    assert torch.equal(bank.negatives()[0], feats)
    with torch.no_grad():
        leaf.sub_(1.0)

    a = F.normalize(torch.randn(2, DIM), dim=-1).requires_grad_()
    b = F.normalize(torch.randn(2, DIM), dim=-1).requires_grad_()
    ids = torch.tensor([[7, 17], [8, 18]])
    neg_feats, neg_ids = bank.negatives()
    with_bank = pair_loss(a, b, torch.tensor(SCALE), ids, bank=(neg_feats, neg_ids))
    without = pair_loss(a, b, torch.tensor(SCALE), ids)
    assert abs(float(with_bank.detach()) - float(without.detach())) > 1e-3  # the bank entries do act as negatives
    with_bank.backward()
    assert leaf.grad is None
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_size_zero_bank_stays_empty():
    bank = MemoryBank(0, DIM)
    bank.enqueue(*_marked([1, 2, 3]))
    bank.enqueue(*_marked([4]))
    feats, ids = bank.negatives()
    assert len(bank) == 0
    assert feats.shape == (0, DIM) and ids.shape == (0, 2)
    torch.manual_seed(1)
    out = {k: F.normalize(torch.randn(3, DIM), dim=-1) for k in ("query", "product", "title", "image")}
    out.update(logit_scale=torch.tensor(SCALE), has_image=torch.tensor([True, True, True]))
    row_ids = torch.tensor([[1, 11], [2, 12], [3, 13]])
    cfg = LossConfig(visual_task="none", memory_bank=0)
    assert torch.equal(make_loss(out, row_ids, cfg, bank)["loss"], make_loss(out, row_ids, cfg)["loss"])


# --- positives never appear as negatives -----------------------------------------------------------------

# query batch: products 1..4, query hashes 101..104
IDS = torch.tensor([[1, 101], [2, 102], [3, 103], [4, 104]])
# bank: entry 0 is product 1 (row 0's positive again), entry 2 shares row 2's query hash, entry 4 is product 2
BANK_IDS = torch.tensor([[1, 900], [7, 901], [8, 103], [9, 902], [2, 903]])
# bank entries that are negatives of each anchor, written out by hand
BANK_NEGATIVES = {0: [1, 2, 3, 4], 1: [0, 1, 2, 3], 2: [0, 1, 3, 4], 3: [0, 1, 2, 3, 4]}
# with product-only masking (keyword_enhancement=False) row 2 keeps bank entry 2
BANK_NEGATIVES_PID_ONLY = {0: [1, 2, 3, 4], 1: [0, 1, 2, 3], 2: [0, 1, 2, 3, 4], 3: [0, 1, 2, 3, 4]}


def _fixture() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    q = F.normalize(torch.randn(4, DIM, generator=g), dim=-1)
    p = F.normalize(q + 0.3 * torch.randn(4, DIM, generator=g), dim=-1)  # positives close to their query
    bank = F.normalize(torch.randn(5, DIM, generator=g), dim=-1)
    bank[0] = p[0]  # an exact duplicate of row 0's positive
    bank[4] = p[1]  # and of row 1's
    bank[2] = q[2]  # a hard candidate for row 2, which shares row 2's query hash
    return q, p, bank


def _nll(pos: float, negs: list[float]) -> float:
    logits = [SCALE * pos] + [SCALE * n for n in negs]
    m = max(logits)
    return m + math.log(sum(math.exp(x - m) for x in logits)) - logits[0]


def _dot(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(x.double() @ y.double())


def _reference(q, p, bank, bank_negatives) -> tuple[float, float]:
    """(query -> product with bank, product -> query) InfoNCE; in-batch ids are all distinct."""
    forward = 0.0
    for i in range(4):
        negs = [_dot(q[i], p[j]) for j in range(4) if j != i] + [_dot(q[i], bank[k]) for k in bank_negatives[i]]
        forward += _nll(_dot(q[i], p[i]), negs)
    backward = sum(_nll(_dot(p[i], q[i]), [_dot(p[i], q[j]) for j in range(4) if j != i]) for i in range(4))
    return forward / 4, backward / 4


def test_info_nce_drops_bank_entries_sharing_an_id_with_the_anchor():
    q, p, bank = _fixture()
    forward, _ = _reference(q, p, bank, BANK_NEGATIVES)
    got = info_nce(q, torch.cat([p, bank]), torch.tensor(SCALE), IDS, torch.cat([IDS, BANK_IDS]))
    assert math.isclose(float(got), forward, rel_tol=1e-5, abs_tol=1e-6)


def test_pair_loss_with_bank_matches_reference():
    q, p, bank = _fixture()
    forward, backward = _reference(q, p, bank, BANK_NEGATIVES)
    got = pair_loss(q, p, torch.tensor(SCALE), IDS, bank=(bank, BANK_IDS))
    assert math.isclose(float(got), 0.5 * (forward + backward), rel_tol=1e-5, abs_tol=1e-6)
    # the same with anchor weights: valid rows only, bank entries always usable
    valid = torch.tensor([1.0, 0.0, 1.0, 1.0])
    got = pair_loss(q, p, torch.tensor(SCALE), IDS, valid=valid, bank=(bank, BANK_IDS))
    fwd = sum(_nll(_dot(q[i], p[i]), [_dot(q[i], p[j]) for j in (0, 2, 3) if j != i]
                   + [_dot(q[i], bank[k]) for k in BANK_NEGATIVES[i]]) for i in (0, 2, 3)) / 3
    bwd = sum(_nll(_dot(p[i], q[i]), [_dot(p[i], q[j]) for j in (0, 2, 3) if j != i]) for i in (0, 2, 3)) / 3
    assert math.isclose(float(got), 0.5 * (fwd + bwd), rel_tol=1e-5, abs_tol=1e-6)


def _out(q: torch.Tensor, p: torch.Tensor) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    return {"query": q, "product": p, "title": F.normalize(torch.randn(4, DIM, generator=g), dim=-1),
            "image": F.normalize(torch.randn(4, DIM, generator=g), dim=-1), "logit_scale": torch.tensor(SCALE),
            "has_image": torch.tensor([True, True, True, True])}


def test_make_loss_query_product_term_with_bank_matches_reference():
    q, p, bank_feats = _fixture()
    bank = MemoryBank(5, DIM)
    bank.enqueue(bank_feats, BANK_IDS)
    assert abs(sum(_reference(q, p, bank_feats, BANK_NEGATIVES))
               - sum(_reference(q, p, bank_feats, BANK_NEGATIVES_PID_ONLY))) > 0.1  # the two settings differ
    for enhance, negatives in ((True, BANK_NEGATIVES), (False, BANK_NEGATIVES_PID_ONLY)):
        cfg = LossConfig(visual_task="none", memory_bank=5, keyword_enhancement=enhance)
        got = make_loss(_out(q, p), IDS, cfg, bank)["query_product"]
        forward, backward = _reference(q, p, bank_feats, negatives)
        assert math.isclose(float(got), 0.5 * (forward + backward), rel_tol=1e-5, abs_tol=1e-6), enhance


def test_bank_duplicate_of_the_positive_is_never_a_negative():
    q, p, bank = _fixture()
    scale = torch.tensor(SCALE)
    row0 = torch.tensor([1.0, 0.0, 0.0, 0.0])  # row 0's loss alone
    losses = []
    for entry in (p[0], -p[0], F.normalize(torch.ones(DIM), dim=0)):
        b = bank.clone()
        b[0] = entry  # bank entry 0 is product 1, row 0's own product
        losses.append(float(info_nce(q, torch.cat([p, b]), scale, IDS, torch.cat([IDS, BANK_IDS]), valid=row0)))
    forward0 = _nll(_dot(q[0], p[0]), [_dot(q[0], p[j]) for j in (1, 2, 3)]
                    + [_dot(q[0], bank[k]) for k in (1, 2, 3, 4)])
    for value in losses:
        assert math.isclose(value, forward0, rel_tol=1e-5, abs_tol=1e-6)
    # were it not masked, the duplicate (logit equal to the positive's) would raise the loss
    other = BANK_IDS.clone()
    other[0] = torch.tensor([55, 955])
    unmasked = float(info_nce(q, torch.cat([p, bank]), scale, IDS, torch.cat([IDS, other]), valid=row0))
    expected = _nll(_dot(q[0], p[0]), [_dot(q[0], p[j]) for j in (1, 2, 3)]
                    + [_dot(q[0], bank[k]) for k in (0, 1, 2, 3, 4)])
    assert math.isclose(unmasked, expected, rel_tol=1e-5, abs_tol=1e-6)
    assert unmasked > forward0 + 0.01
