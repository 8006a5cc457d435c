"""Ablation report: every variant trained on the same recipe, data and step budget, then evaluated.

    vitrine report --recipe=configs/recipes/myntra.yaml --judgments=data/myntra/val/judgments.parquet \\
        --max_steps=200 --label="Myntra, derived queries" --output=reports/myntra

Each variant is the recipe YAML, then ``<ablation_dir>/full.yaml`` (every idea of both papers switched on, so
a recipe's own tuned choices do not leak into the ablation), then ``<ablation_dir>/<name>.yaml`` (one change
against full), then ``--overrides``, then the step budget; the variant named ``recipe`` is the recipe as it
ships (no ablation YAML), for the tuned configuration beside the ablations. Each variant is registered as
``<model_name>-<name>`` and scored with the ``vitrine evaluate`` harness on the validation judgments over the
full catalog, beside the BM25 and zero-shot baselines. Writes ``report.md``
(a table with the change against ``full``, run ids and the reproduce command), ``report.json`` and
``report.png``. Finished variants in an existing ``report.json`` are kept (``--resume=false`` retrains).
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from pathlib import Path
from typing import Any

import yaml

from pipelines import evaluate, pretrain
from pipelines.common import absolute
from vitrine.config import EvaluateJob, PretrainJob, ReportJob
from vitrine.config_io import from_dict, merge, parse_overrides
from vitrine.errors import ConfigError

log = logging.getLogger(__name__)
RECIPE = "recipe"  # the variant that is the recipe as shipped
METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


def _yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"'{path}' does not exist; check --recipe / --ablation_dir / --ablations")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"'{path}' must hold a mapping at the top level")
    return data


def variant_job(job: ReportJob, name: str) -> PretrainJob:
    """The PretrainJob of one variant: recipe <- full.yaml <- ablation YAML <- overrides <- budget, its own
    model name (``recipe``: the recipe alone <- overrides <- budget)."""
    data = _yaml(Path(job.recipe))
    if name != RECIPE:
        full = Path(job.ablation_dir) / "full.yaml"
        data = merge(data, _yaml(full)) if full.is_file() else data
        data = merge(data, _yaml(Path(job.ablation_dir) / f"{name}.yaml"))
    data = merge(data, parse_overrides(list(job.overrides)))
    base = data.get("tracking", {}).get("model_name", "vitrine")
    data = merge(data, {"workdir": job.workdir, "train": {"max_steps": job.max_steps},
                         "tracking": {"model_name": f"{base}-{name}", "alias": "ablation"}})
    return from_dict(PretrainJob, data)


def _evaluate(job: ReportJob, model: str, pjob: PretrainJob) -> dict[str, Any]:
    ev = EvaluateJob(workdir=job.workdir, model=model, catalog=job.catalog or pjob.data.catalog,
                     judgments=job.judgments, k=100, data=pjob.data, tracking=pjob.tracking)
    out = evaluate.run(ev)
    return {"metrics": out["metrics"], "eval_run_id": out["run_id"], "model": out["model"]}


def write_report(job: ReportJob, rows: dict[str, dict[str, Any]], out: Path) -> None:
    """report.md (table + reproduce command), report.json and report.png from the finished rows."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({"job": {k: v for k, v in vars(job).items()}, "rows": rows},
                                                indent=1, default=str))
    full = rows.get("full", {}).get("metrics")
    lines = [f"# Ablation report: {job.label or job.recipe}", "",
             f"Recipe `{job.recipe}`, {job.max_steps} steps per variant, evaluated on `{job.judgments}` over "
             f"the full catalog `{job.catalog or 'of the recipe'}`.", "",
             "| variant | nDCG@10 | Recall@10 | Recall@100 | MRR@10 | nDCG@10 vs full | train min | run id |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        m = row["metrics"]
        delta = f"{(m['ndcg@10'] / full['ndcg@10'] - 1) * 100:+.1f}%" if full and full["ndcg@10"] else ""
        lines.append(f"| {name} | {m['ndcg@10']:.4f} | {m['recall@10']:.4f} | {m['recall@100']:.4f} | "
                     f"{m['mrr@10']:.4f} | {delta} | {row.get('train_minutes', '')} | "
                     f"`{row.get('train_run_id', row.get('eval_run_id', ''))}` |")
    cmd = ["vitrine", "report", f"--recipe={job.recipe}", f"--judgments={job.judgments}",
           f"--max_steps={job.max_steps}", f"--output={job.output}"]
    if job.catalog:
        cmd.append(f"--catalog={job.catalog}")
    if tuple(job.ablations) != ReportJob().ablations:
        cmd.append(f"--ablations=[{','.join(job.ablations)}]")
    if job.overrides:
        cmd.append(f"--overrides=[{','.join(job.overrides)}]")
    lines += ["", "Reproduce: `" + shlex.join(cmd) + "`", ""]
    (out / "report.md").write_text("\n".join(lines))
    _plot(rows, out / "report.png", job.label or job.recipe)


def _plot(rows: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names)), 4))
    width = 0.4
    for i, metric in enumerate(("ndcg@10", "recall@100")):
        xs = [n + (i - 0.5) * width for n in range(len(names))]
        ax.bar(xs, [rows[n]["metrics"][metric] for n in names], width, label=metric)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set(title=title, ylim=(0, 1))
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(job: ReportJob) -> dict[str, Any]:
    """Train and evaluate every variant (resuming finished ones), then the baselines; write the report."""
    if not job.judgments:
        raise ConfigError("pass --judgments=<validation judgments parquet> (e.g. data/myntra/val/judgments.parquet)")
    out = absolute(job.output)
    rows: dict[str, dict[str, Any]] = {}
    if job.resume and (out / "report.json").is_file():
        rows = json.loads((out / "report.json").read_text()).get("rows", {})
    jobs = {name: variant_job(job, name) for name in job.ablations}  # every YAML checked before training
    for name, pjob in jobs.items():
        if name in rows:
            log.info("report: %s already evaluated, kept (--resume=false to retrain)", name)
            continue
        t0 = time.monotonic()
        trained = pretrain.run(pjob)
        minutes = round((time.monotonic() - t0) / 60, 1)
        rows[name] = {**_evaluate(job, f"models:/{trained['model_name']}/{trained['version']}", pjob),
                      "train_run_id": trained["run_id"], "train_minutes": minutes}
        write_report(job, rows, out)
    base_job = jobs[next(iter(jobs))] if jobs else from_dict(PretrainJob, _yaml(Path(job.recipe)))
    for name in job.baselines:
        if name not in rows:
            rows[name] = _evaluate(job, name, base_job)
            write_report(job, rows, out)
    write_report(job, rows, out)
    print((out / "report.md").read_text(), flush=True)
    return {"rows": rows, "output": str(out)}


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m pipelines.report``."""
    from vitrine.cli import main as cli_main

    return cli_main(["report", *(argv or [])])
