"""Cross-worker negatives in a real 2-process gloo group: each worker's loss and local gradients are those of
the single-process loss on the concatenated batch (the claim of ``vitrine.losses``' module docstring).

One module-scoped fixture spawns the two ranks once; every scenario runs in that group, each rank saves its
results to a file, and the tests below compare them with single-process references computed here.
"""

from __future__ import annotations

import math
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vitrine.config import LossConfig
from vitrine.losses import gather_with_grad, make_loss, world_size
from vitrine.train.loop import train_step

WORLD = 2
ROWS = 8
LOCAL = ROWS // WORLD
DIM = 16
SCALE = 7.5
KEYS = ("query", "product", "title", "image")
COMMON = {"memory_bank": 0, "visual_task": "none", "keyword_enhancement": True}
ATOL = 1e-6


def _data() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Fixed unit-normalised embeddings for 8 rows, (8, 2) ids and a has_image vector with one False.

    Rows 1 and 5 (on different ranks) are the same product and rows 2 and 6 (on different ranks) the same
    query text, so masking has to work across the gather.
    """
    g = torch.Generator().manual_seed(20240607)
    emb = {k: F.normalize(torch.randn(ROWS, DIM, generator=g), dim=-1) for k in KEYS}
    pid = torch.tensor([11, 12, 13, 14, 15, 12, 17, 18], dtype=torch.int64)
    qh = torch.tensor([21, 22, 23, 24, 25, 26, 23, 28], dtype=torch.int64)
    has = torch.tensor([True, True, True, False, True, True, True, True])
    return emb, torch.stack([pid, qh], dim=1), has


def _loss_run(rows: slice, gather: bool) -> dict:
    """make_loss on ``rows`` of the fixed data with fresh leaf tensors; backprop the total."""
    emb, ids, has = _data()
    out = {k: emb[k][rows].clone().requires_grad_() for k in KEYS}
    out["has_image"] = has[rows].clone()
    out["logit_scale"] = torch.tensor(SCALE)
    terms = make_loss(out, ids[rows].clone(), LossConfig(gather_negatives=gather, **COMMON))
    terms["loss"].backward()
    return {"terms": {k: v.detach().clone() for k, v in terms.items() if k != "objective"},
            "grads": {k: out[k].grad.clone() for k in KEYS}}


class _Tiny(nn.Module):
    """Stand-in for MakeModel in train_step: a shared projection (an 'encoder') and a learnable temperature."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.proj = nn.Parameter(torch.randn(DIM, DIM, generator=g) / math.sqrt(DIM))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(SCALE)))

    def forward(self, batch: dict[str, torch.Tensor], mask_ratio: float = 0.0) -> dict[str, torch.Tensor]:
        out = {k: F.normalize(batch[k] @ self.proj, dim=-1) for k in KEYS}
        out["has_image"] = batch["has_image"]
        out["logit_scale"] = self.logit_scale.exp()
        out["modal_weights"] = torch.full((batch["has_image"].shape[0], 2), 0.5)
        return out


def _train_batch(rows: slice) -> dict[str, torch.Tensor]:
    emb, ids, has = _data()
    batch = {k: emb[k][rows].clone() for k in KEYS}
    batch.update(q_ids=torch.zeros(ids[rows].shape[0], 1, dtype=torch.int64), pid_hash=ids[rows, 0].clone(),
                 q_hash=ids[rows, 1].clone(), has_image=has[rows].clone())
    return batch


def _train_step_run(model: nn.Module, rows: slice) -> dict:
    """One real train_step (SGD, gather_negatives) on ``rows``; returns the metrics and the parameter grads."""
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    opt = torch.optim.SGD(inner.parameters(), lr=0.0)  # lr 0: the step leaves the parameters alone
    metrics = train_step(model, _train_batch(rows), opt, LossConfig(gather_negatives=True, **COMMON))
    return {"loss": torch.tensor(metrics["loss"]), "proj_grad": inner.proj.grad.clone(),
            "scale_grad": inner.logit_scale.grad.clone()}


def _worker(rank: int, world: int, store_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    # a file rendezvous: no port is picked, so no other process can take it between picking and binding
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        res: dict = {"rank": dist.get_rank(), "world": world_size()}
        # gather_with_grad on rank-specific values, weighted backprop
        x = (torch.arange(LOCAL * 3, dtype=torch.float32).reshape(LOCAL, 3) + 100.0 * rank).requires_grad_()
        y = gather_with_grad(x)
        weights = torch.arange(ROWS * 3, dtype=torch.float32).reshape(ROWS, 3)
        (y * weights).sum().backward()
        res["gather"] = {"y": y.detach().clone(), "x_grad": x.grad.clone(),
                         "tracked": [fn is not None for fn, _ in y.grad_fn.next_functions]}
        y2 = gather_with_grad(x)
        y2.sum().backward()
        res["gather_ones_grad"] = x.grad.clone() - res["gather"]["x_grad"]
        # make_loss with and without cross-worker negatives
        local = slice(rank * LOCAL, (rank + 1) * LOCAL)
        res["gathered"] = _loss_run(local, gather=True)
        res["local_only"] = _loss_run(local, gather=False)
        # the real train_step under DDP (gradients averaged across ranks, backward scaled by world size)
        torch.manual_seed(0)
        ddp = DistributedDataParallel(_Tiny())
        res["ddp"] = _train_step_run(ddp, local)
        torch.save(res, Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()  # no rank tears the group down while the other still has collectives in flight
    finally:
        dist.destroy_process_group()


def _spawn_ranks(out_dir: Path) -> None:
    """Run both ranks once; join=True waits for both, and if one raises, spawn stops the other and re-raises."""
    store = out_dir / "store"
    store.unlink(missing_ok=True)
    mp.spawn(_worker, args=(WORLD, str(store), str(out_dir)), nprocs=WORLD, join=True)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("gloo")
    try:
        _spawn_ranks(out_dir)
    except mp.ProcessExitedException as exc:
        # A rank killed by a signal (a C++ abort inside gloo's transport, seen once in CI on a loaded 2-core
        # machine) says nothing about the code under test: run the group once more. A Python error in a rank
        # is not retried, and a second signal fails the tests.
        if not exc.signal_name:
            raise
        warnings.warn(f"gloo rank {exc.error_index} died by {exc.signal_name}; running the group once more",
                      RuntimeWarning, stacklevel=1)
        for f in out_dir.glob("rank*.pt"):
            f.unlink()
        _spawn_ranks(out_dir)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.fixture(scope="module")
def full() -> dict:
    """The single-process reference on the whole 8-row batch (no process group here: gather is the identity)."""
    assert not dist.is_initialized()
    return _loss_run(slice(0, ROWS), gather=True)


def test_world_size_one_without_process_group():
    assert not dist.is_initialized()
    assert world_size() == 1
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x


def test_group_is_real(ranks):
    assert [r["rank"] for r in ranks] == [0, 1]
    assert [r["world"] for r in ranks] == [WORLD, WORLD]


def test_gather_with_grad_concatenates_in_rank_order(ranks):
    base = torch.arange(LOCAL * 3, dtype=torch.float32).reshape(LOCAL, 3)
    expected = torch.cat([base, base + 100.0])
    for r in ranks:
        assert torch.equal(r["gather"]["y"], expected)


def test_gather_with_grad_gradient_reaches_local_slice_only(ranks):
    weights = torch.arange(ROWS * 3, dtype=torch.float32).reshape(ROWS, 3)
    for rank, r in enumerate(ranks):
        # d/dx sum(w * gather(x)) is exactly w at this rank's rows (not another rank's rows)
        assert torch.equal(r["gather"]["x_grad"], weights[rank * LOCAL:(rank + 1) * LOCAL])
        assert torch.equal(r["gather_ones_grad"], torch.ones(LOCAL, 3))
        # only the slot holding the local tensor is part of the graph; the other ranks' slices are constants
        assert r["gather"]["tracked"] == [i == rank for i in range(WORLD)]


def test_gathered_loss_equals_single_process_loss_on_every_rank(ranks, full):
    assert set(full["terms"]) == {"query_product", "query_title", "query_image", "title_image", "loss"}
    for r in ranks:
        got = r["gathered"]["terms"]
        assert set(got) == set(full["terms"])
        for k, v in full["terms"].items():
            assert torch.allclose(got[k], v, atol=ATOL, rtol=0), (r["rank"], k, float(got[k]), float(v))


def test_local_gradients_are_rows_of_single_process_gradient(ranks, full):
    for rank, r in enumerate(ranks):
        rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
        for k in KEYS:
            expected = full["grads"][k][rows]
            assert expected.abs().sum() > 0, k
            assert torch.allclose(r["gathered"]["grads"][k], expected, atol=ATOL, rtol=0), (rank, k)


def test_without_gather_each_rank_sees_only_its_own_rows(ranks, full):
    for rank, r in enumerate(ranks):
        own = _loss_run(slice(rank * LOCAL, (rank + 1) * LOCAL), gather=False)
        for k, v in own["terms"].items():
            assert torch.allclose(r["local_only"]["terms"][k], v, atol=ATOL, rtol=0), (rank, k)
        for k in KEYS:
            assert torch.allclose(r["local_only"]["grads"][k], own["grads"][k], atol=ATOL, rtol=0), (rank, k)
        # and it is a different objective from the gathered one
        assert abs(float(r["local_only"]["terms"]["loss"]) - float(full["terms"]["loss"])) > 1e-3


def test_ddp_train_step_encoder_gradient_equals_single_process(ranks):
    torch.manual_seed(0)
    ref = _train_step_run(_Tiny(), slice(0, ROWS))
    for r in ranks:
        assert torch.allclose(r["ddp"]["loss"], ref["loss"], atol=ATOL, rtol=0)
        # rank-local gradients scaled by the world size, then averaged by DDP: the full-batch gradient
        assert torch.allclose(r["ddp"]["proj_grad"], ref["proj_grad"], atol=ATOL, rtol=0)


def test_ddp_train_step_temperature_gradient_equals_single_process(ranks):
    torch.manual_seed(0)
    ref = _train_step_run(_Tiny(), slice(0, ROWS))
    assert ref["scale_grad"].abs() > 1e-3
    for r in ranks:
        assert torch.allclose(r["ddp"]["scale_grad"], ref["scale_grad"], atol=ATOL, rtol=0), (
            float(r["ddp"]["scale_grad"]), float(ref["scale_grad"]))
