"""Promotion job: move a registry alias to a candidate version only when it passes the gate.

    vitrine promote --candidate=challenger --to_alias=champion [--judgments=...] [--force=true]

Both the candidate and the current holder of ``to_alias`` are evaluated on the named judgments set (same
catalog, same harness as ``vitrine evaluate``). Gate: candidate nDCG@10 >= champion nDCG@10 x (1 -
max_ndcg_drop) and candidate Recall@100 - champion Recall@100 >= min_recall_gain. A failed gate leaves
the alias where it was and prints the comparison; ``--force=true`` moves it anyway and records that.
Rollback = promote the previous version with ``--force=true`` (or ``MlflowClient.set_registered_model_alias``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from pipelines import evaluate
from pipelines.common import absolute
from vitrine import registry
from vitrine.config import EvaluateJob, PromoteJob
from vitrine.errors import VitrineError

log = logging.getLogger(__name__)


class PromotionRefused(VitrineError):
    """The candidate did not pass the gate (the alias was left unchanged)."""


def _version(name: str, ref: str) -> str | None:
    """A version number from an alias or a number; None when an alias is not set."""
    from mlflow.exceptions import MlflowException

    if ref.isdigit():
        return ref
    try:
        return str(registry.client().get_model_version_by_alias(name, ref).version)
    except MlflowException:
        return None


def _evaluate(job: PromoteJob, version: str) -> dict[str, float]:
    ev = EvaluateJob(workdir=job.workdir, model=f"models:/{job.model_name}/{version}", catalog=job.catalog,
                     judgments=job.judgments, k=100, data=job.data, index=job.index, tracking=job.tracking)
    return evaluate.run(ev)["metrics"]


def gate(candidate: dict[str, float], champion: dict[str, float], job: PromoteJob) -> tuple[bool, list[str]]:
    """Apply the promotion rule; returns (passed, human-readable reasons)."""
    reasons = []
    floor = champion["ndcg@10"] * (1 - job.max_ndcg_drop)
    ok_ndcg = candidate["ndcg@10"] >= floor
    reasons.append(f"nDCG@10 {candidate['ndcg@10']:.4f} vs champion {champion['ndcg@10']:.4f} "
                   f"(floor {floor:.4f}): {'ok' if ok_ndcg else 'FAIL'}")
    gain = candidate["recall@100"] - champion["recall@100"]
    ok_recall = gain >= job.min_recall_gain
    reasons.append(f"Recall@100 {candidate['recall@100']:.4f} vs champion {champion['recall@100']:.4f} "
                   f"(gain {gain:+.4f}, need >= {job.min_recall_gain:+.4f}): {'ok' if ok_recall else 'FAIL'}")
    return ok_ndcg and ok_recall, reasons


def run(job: PromoteJob) -> dict[str, Any]:
    """Evaluate, compare, and move the alias (or refuse)."""
    exp_id = registry.setup(job.tracking, absolute(job.workdir))
    cand = _version(job.model_name, job.candidate)
    if cand is None:
        raise VitrineError(f"candidate '{job.candidate}' is not an alias of model '{job.model_name}'; "
                           "pass --candidate=<alias or version number>")
    champ = _version(job.model_name, job.to_alias)
    result: dict[str, Any] = {"model_name": job.model_name, "candidate_version": cand, "champion_version": champ}
    cand_metrics = _evaluate(job, cand)
    if champ is None or champ == cand:
        passed, reasons = True, [f"no current @{job.to_alias} to compare with: first promotion"]
        champ_metrics: dict[str, float] = {}
    else:
        champ_metrics = _evaluate(job, champ)
        passed, reasons = gate(cand_metrics, champ_metrics, job)
    run_id = registry.start_run(exp_id, f"promote-{job.model_name}-v{cand}", tags={"vitrine.job": "promote"})
    registry.log_params(run_id, {k: str(v) for k, v in dataclasses.asdict(job).items()
                                 if not isinstance(v, dict)} | {"candidate_version": cand,
                                                                 "champion_version": champ or ""})
    registry.log_metrics(run_id, {f"candidate_{k.replace('@', '_at_')}": v for k, v in cand_metrics.items()}
                         | {f"champion_{k.replace('@', '_at_')}": v for k, v in champ_metrics.items()})
    print("\n".join(["promotion gate:", *[f"  {r}" for r in reasons]]), flush=True)
    moved = passed or job.force
    decision = "promoted" if passed else ("forced" if job.force else "refused")
    registry.client().set_tag(run_id, "vitrine.decision", decision)
    registry.end_run(run_id)
    result.update(decision=decision, reasons=reasons, candidate=cand_metrics, champion=champ_metrics, run_id=run_id)
    if not moved:
        raise PromotionRefused(f"v{cand} not promoted to @{job.to_alias} (stays v{champ}): {'; '.join(reasons)}. "
                               "Use --force=true to override (it is logged).")
    registry.set_alias(job.model_name, job.to_alias, cand)
    registry.set_version_tag(job.model_name, cand, f"vitrine.promoted.{job.to_alias}",
                             f"{decision} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    print(f"@{job.to_alias} -> v{cand} ({decision}; was {'v' + champ if champ else 'unset'})", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m pipelines.promote``."""
    from vitrine.cli import main as cli_main

    return cli_main(["promote", *(argv or [])])
