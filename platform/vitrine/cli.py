"""The ``vitrine`` command: one subcommand per pipeline, each with ``--config FILE`` and ``--key=value`` overrides.

    vitrine pretrain --config configs/cpu.yaml --train.max_steps=200
    vitrine index --index.factory=HNSW32
    vitrine serve --serve.port=8000
    vitrine demo
    vitrine rerank --model=models:/vitrine@champion --judgments=train_judgments.parquet
    vitrine import myntra ../shared/data/myntra --out data/myntra
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any

from vitrine.config import (
    DemoJob,
    EnsembleJob,
    EvaluateJob,
    IndexJob,
    PretrainJob,
    PromoteJob,
    ReportJob,
    RerankJob,
    ServeJob,
)
from vitrine.config_io import flatten, load_config
from vitrine.errors import ConfigError, VitrineError

JOBS: dict[str, tuple[type, str, str]] = {
    "pretrain": (PretrainJob, "pipelines.pretrain", "Pre-train the three towers with Ray Train; register the model."),
    "index": (IndexJob, "pipelines.embed_index", "Embed the catalog with Ray Data and build the FAISS index."),
    "serve": (ServeJob, "pipelines.serve", "Serve the query tower + index over HTTP with Ray Serve."),
    "demo": (DemoJob, "pipelines.demo", "Run pretrain -> index -> serve -> search on the bundled sample."),
    "ensemble": (EnsembleJob, "pipelines.ensemble",
                 "Register several trained models (e.g. seeds of one recipe) as one version: cosines averaged."),
    "promote": (PromoteJob, "pipelines.promote",
                "Move a registry alias to a candidate only if it passes the evaluation gate."),
    "evaluate": (EvaluateJob, "pipelines.evaluate",
                 "Score a model or baseline (bm25, bm25-product, pretrained, hybrid:<model>) on judged queries over "
                 "a full catalog."),
    "rerank": (RerankJob, "pipelines.rerank",
               "Train a LambdaMART re-ranker over BM25 + dense candidates on judged train queries."),
    "report": (ReportJob, "pipelines.report",
               "Train every ablation on one recipe and budget, evaluate, write a Markdown table + plot."),
}
# `vitrine evaluate --model X --catalog Y` (space-separated) is accepted besides --model=X.
EVALUATE_FLAGS = ("model", "catalog", "judgments", "k", "output", "run-output", "relevant-min", "gain-offset",
                  "embeddings", "hybrid-weight", "hybrid-depth", "hybrid-fusion", "rerank", "query-precision")

log = logging.getLogger("vitrine")


def _keys_epilog(cls: type) -> str:
    lines = ["config keys (override with --key=value; defaults shown):"]
    for key, value in flatten(cls()).items():
        lines.append(f"  --{key}={value!r}" if isinstance(value, str) else f"  --{key}={value}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (subcommands, each with --config and free-form overrides)."""
    parser = argparse.ArgumentParser(prog="vitrine", description="Vitrine: text-to-multimodal product search.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (cls, _, help_text) in JOBS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=_keys_epilog(cls),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", help="YAML file with config sections (see configs/)")
        if name == "evaluate":
            for flag in EVALUATE_FLAGS:
                p.add_argument(f"--{flag}", dest=f"eval_{flag.replace('-', '_')}", default=None)
        p.add_argument("overrides", nargs="*", metavar="--key=value", help="config overrides")
    sm = sub.add_parser("submit", help="Submit any command above as a Ray Job to a cluster and stream its logs.",
                        description="vitrine submit [--address URL] <command> [args...]: runs `vitrine <command> "
                                    "[args]` on the cluster through the Ray Jobs API.")
    sm.add_argument("--address", default=os.environ.get("RAY_JOB_ADDRESS", "http://127.0.0.1:8265"),
                    help="Ray dashboard address (default $RAY_JOB_ADDRESS or http://127.0.0.1:8265)")
    sm.add_argument("--no-wait", action="store_true", help="return after submitting")
    sm.add_argument("--pip", action="store_true", help="build the job env from requirements.lock on the cluster")
    sm.add_argument("job", choices=[*JOBS, "import"], help="the command to run on the cluster")
    imp = sub.add_parser("import", help="Import a dataset into the catalog contract (Parquet).",
                         description="Import Myntra / Home Depot Parquet or a CSV/JSONL manifest + image folder.")
    imp.add_argument("kind", choices=["myntra", "homedepot", "folder"])
    imp.add_argument("source", help="dataset dir (myntra, homedepot) or manifest .csv/.jsonl (folder)")
    imp.add_argument("--out", required=True, help="output directory (catalog.parquet [+ judgments.parquet])")
    imp.add_argument("--images", help="image folder for 'folder' imports (default: the manifest's folder)")
    imp.add_argument("--val-fraction", type=float, default=0.0,
                     help="also write train/queries.parquet and val/judgments.parquet split by query (e.g. 0.2); "
                          "for myntra the queries are derived and a colourless-title catalog is written too")
    imp.add_argument("--seed", type=int, default=0, help="split seed")
    imp.add_argument("--eval-sample", type=int, default=0,
                     help="myntra: also write val_sample/ (this many random products + their val judgments)")
    return parser


def _run_import(args: argparse.Namespace) -> dict[str, Any]:
    from pathlib import Path

    from vitrine.catalog.importers import IMPORTERS
    from vitrine.catalog.io import write_table

    if not 0 <= args.val_fraction < 1:  # also refuses nan
        raise ConfigError(f"--val-fraction {args.val_fraction}: the share of queries held out for validation, in "
                          "[0, 1), e.g. 0.2 (0 = no split)")
    if args.val_fraction and args.kind == "folder":
        raise ConfigError("--val-fraction needs a judged or derivable dataset (homedepot, myntra), not a folder of "
                          "images; drop --val-fraction and evaluate with your own --judgments")
    if args.eval_sample < 0:
        raise ConfigError(f"--eval-sample {args.eval_sample}: a number of products, 0 (none) or more, e.g. 8000")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out}: a file is there; pass a folder for the imported catalog")
    fn = IMPORTERS[args.kind]
    catalog, judgments, report = fn(args.source, args.images) if args.kind == "folder" else fn(args.source)
    if catalog.num_rows == 0:
        raise ConfigError(f"{args.kind} import of {args.source}: no usable product ({report.summary()}); is this a "
                          f"{args.kind} folder? Nothing was written")
    out = Path(args.out)
    write_table(catalog, out / "catalog.parquet")
    if judgments is not None:
        write_table(judgments, out / "judgments.parquet")
    print(f"catalog: {report.summary()}")
    if args.val_fraction:
        from vitrine.catalog.splits import write_splits

        for key, value in write_splits(args.kind, catalog, judgments, args.out, args.val_fraction, args.seed,
                                      args.eval_sample).items():
            print(f"{key}: {value}")
    print(f"wrote {out / 'catalog.parquet'}" + (f" and {out / 'judgments.parquet'}" if judgments is not None else ""))
    return {"rows": catalog.num_rows, "issues": report.counts}


def main(argv: list[str] | None = None) -> int:
    """Parse, configure logging, run the job; user errors print one line and exit 2."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("urllib3", "filelock", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "submit":
            from vitrine.jobs import submit

            return submit([args.job, *unknown], args.address, wait=not args.no_wait, pip=args.pip)
        if args.command == "import":
            if unknown:
                parser.error(f"unrecognized arguments: {' '.join(unknown)}")
            _run_import(args)
            return 0
        cls, module, _ = JOBS[args.command]
        bad = [u for u in unknown if not (u.startswith("--") and "=" in u)]
        if bad:
            parser.error(f"unrecognized arguments: {' '.join(bad)} (overrides look like --train.max_steps=10)")
        flags = [f"--{k[5:]}={v}" for k, v in vars(args).items() if k.startswith("eval_") and v is not None]
        job = load_config(cls, args.config, [*args.overrides, *unknown, *flags])
        importlib.import_module(module).run(job)
        return 0
    except VitrineError as exc:
        print(f"vitrine {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vitrine {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
