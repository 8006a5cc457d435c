"""The whole training stack timed end to end: pretrain, the evaluation that embeds the catalog, the re-ranker, its
evaluation; each a `vitrine` command run one after another, as a user runs them.

    python -m bench.quality.stack --config configs/recipes/myntra.yaml --workdir runs/k1 \\
        --catalog data/myntra/catalog.parquet --train-judgments data/myntra/train/judgments.parquet \\
        --val-judgments data/myntra/val/judgments.parquet -- --train.seed=1

Arguments after ``--`` go to ``vitrine pretrain`` (overrides of the recipe). The model is the recipe's
``tracking.model_name`` at alias ``challenger``, in ``--workdir``'s registry, so use a fresh workdir. With
``--seeds N`` (N > 1) the recipe is trained N times (``--train.seed=0 .. N-1``, versions 1 .. N) and
``vitrine ensemble`` registers them as ``<name>-ensemble@challenger``, the model every later stage uses. Prints JSON
(seconds per stage, minutes in all against ``--budget-min``, both evaluations' metrics) and writes it to
``<workdir>/stack.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


def stage(name: str, args: list[str], times: dict[str, float]) -> None:
    """Run one `vitrine` command (this interpreter's), timing it; exits with its status when it fails."""
    vitrine = Path(sys.executable).with_name("vitrine")
    start = time.monotonic()
    rc = subprocess.run([str(vitrine), *args], check=False).returncode
    times[name] = round(time.monotonic() - start, 1)
    if rc:
        raise SystemExit(f"error: stage {name} failed (exit {rc}): vitrine {' '.join(args)}")


def model_name(config: Path, overrides: list[str]) -> str:
    """The registry name the pretrain run will use: the recipe's ``tracking.model_name`` unless overridden."""
    for arg in overrides:
        if arg.startswith("--tracking.model_name="):
            return arg.split("=", 1)[1]
    try:
        name = (yaml.safe_load(config.read_text()) or {}).get("tracking", {}).get("model_name")
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"error: --config {config}: {exc}") from None
    if not name:
        raise SystemExit(f"error: --config {config} names no tracking.model_name; add one or pass "
                         "-- --tracking.model_name=<name>")
    return name


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m bench.quality.stack``."""
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag in ("--config", "--workdir", "--catalog", "--train-judgments", "--val-judgments"):
        p.add_argument(flag, required=True)
    p.add_argument("--budget-min", type=float, default=60.0)
    p.add_argument("--seeds", type=int, default=1, help="train the recipe this many times and ensemble them")
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    for flag in ("config", "catalog", "train_judgments", "val_judgments"):
        if not Path(getattr(args, flag)).exists():
            raise SystemExit(f"error: --{flag.replace('_', '-')} {getattr(args, flag)}: no such file or directory")
    work = Path(args.workdir)
    if (work / "mlflow.db").exists():
        raise SystemExit(f"error: --workdir {work} already holds a registry; use a fresh one so the stack's model "
                         "is the one it trains")
    if args.seeds < 1 or (args.seeds > 1 and any(a.startswith("--train.seed=") for a in extra)):
        raise SystemExit(f"error: --seeds {args.seeds}: use 1, or 2 and more without --train.seed after --")
    name = model_name(Path(args.config), extra)
    uri = f"models:/{name}@challenger"
    data = [f"--catalog={args.catalog}", f"--workdir={work}"]
    times: dict[str, float] = {}
    for seed in range(args.seeds):
        seed_arg = [f"--train.seed={seed}"] if args.seeds > 1 else []
        stage(f"pretrain_seed{seed}" if args.seeds > 1 else "pretrain",
              ["pretrain", f"--config={args.config}", f"--workdir={work}", *extra, *seed_arg], times)
    if args.seeds > 1:
        members = ",".join(f"models:/{name}/{v}" for v in range(1, args.seeds + 1))
        stage("ensemble", ["ensemble", f"--members={members}", f"--workdir={work}",
                           f"--tracking.model_name={name}-ensemble", "--tracking.alias=challenger"], times)
        uri = f"models:/{name}-ensemble@challenger"
    stage("evaluate", ["evaluate", f"--model={uri}", *data, f"--judgments={args.val_judgments}",
                       f"--output={work / 'val_dense.json'}"], times)
    vectors = json.loads((work / "val_dense.json").read_text())["embeddings"]
    stage("rerank", ["rerank", f"--model={uri}", *data, f"--judgments={args.train_judgments}",
                     f"--embeddings={vectors}", f"--out={work / 'reranker'}"], times)
    stage("evaluate_rerank", ["evaluate", f"--model={uri}", f"--rerank={work / 'reranker'}", *data,
                              f"--embeddings={vectors}", f"--judgments={args.val_judgments}",
                              f"--output={work / 'val_rerank.json'}"], times)
    total = sum(times.values()) / 60
    report = {"config": args.config, "pretrain_overrides": extra, "seeds": args.seeds, "model": uri, "seconds": times,
              "total_min": round(total, 1), "budget_min": args.budget_min, "within_budget": total <= args.budget_min}
    for name in ("dense", "rerank"):
        metrics = json.loads((work / f"val_{name}.json").read_text())["metrics"]
        report[name] = {k: round(metrics[k], 4) for k in METRICS}
    report["command"] = "python -m bench.quality.stack " + " ".join(argv)
    (work / "stack.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
