"""Quality against training steps: reads the metrics JSON `vitrine evaluate --output` wrote for each
checkpoint of one run (and for baselines), writes `curve.json` and `curve.png` (one line per metric).

    python -m bench.quality.learning_curve --point 200=eval_200.json --point 800=eval_800.json \
        --baseline BM25=eval_bm25.json --output reports/learning-curve-myntra-colourless
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

METRICS = ("ndcg@10", "recall@100")


def _read_metrics(path: str) -> dict[str, float]:
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"error: cannot read metrics from {path}: {exc}; pass a file `vitrine evaluate "
                         "--output` wrote") from None
    if not isinstance(result, dict) or "metrics" not in result:
        raise SystemExit(f"error: {path} has no 'metrics' key; pass a file `vitrine evaluate --output` wrote")
    return result["metrics"]


def _pairs(values: list[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"error: {flag} {value!r}: expected NAME=metrics.json")
        out.append((name, path))
    return out


def build(points: list[tuple[int, str]], baselines: list[tuple[str, str]],
          metrics: tuple[str, ...] = METRICS) -> dict:
    """The curve as a dict: per step the chosen metrics, per baseline the same metrics."""
    curve = {"steps": [], "baselines": {}}
    for step, path in sorted(points):
        got = _read_metrics(path)
        missing = [m for m in metrics if m not in got]
        if missing:
            raise SystemExit(f"error: {path} lacks {missing}; evaluate with --k 100 or more")
        curve["steps"].append({"step": step, **{m: got[m] for m in metrics}})
    for name, path in baselines:
        got = _read_metrics(path)
        curve["baselines"][name] = {m: got[m] for m in metrics if m in got}
    return curve


def plot(curve: dict, path: Path, title: str) -> None:
    """One panel per metric: the run's points joined by a line, each baseline a dashed horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [k for k in curve["steps"][0] if k != "step"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6))
    steps = [p["step"] for p in curve["steps"]]
    for ax, metric in zip(axes if len(metrics) > 1 else [axes], metrics, strict=True):
        ax.plot(steps, [p[metric] for p in curve["steps"]], marker="o", label="Vitrine")
        for i, (name, values) in enumerate(curve["baselines"].items()):
            if metric in values:
                ax.axhline(values[metric], linestyle="--", color=f"C{i + 1}", label=name)
        ax.set_xlabel("training steps")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--point", action="append", default=[], help="STEP=metrics.json (one per checkpoint)")
    ap.add_argument("--baseline", action="append", default=[], help="NAME=metrics.json")
    ap.add_argument("--output", required=True, help="folder for curve.json and curve.png")
    ap.add_argument("--title", default="Quality against training steps")
    args = ap.parse_args(argv)
    points = []
    for step, path in _pairs(args.point, "--point"):
        if not step.isdigit():
            raise SystemExit(f"error: --point {step}={path}: the step must be a whole number")
        points.append((int(step), path))
    if not points:
        raise SystemExit("error: pass at least one --point STEP=metrics.json")
    steps = [step for step, _ in points]
    if len(set(steps)) != len(steps):
        raise SystemExit(f"error: --point steps repeat ({sorted(steps)}); pass one metrics file per step")
    curve = build(points, _pairs(args.baseline, "--baseline"))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "curve.json").write_text(json.dumps(curve, indent=1))
    plot(curve, out / "curve.png", args.title)
    print(json.dumps(curve))
    return 0


if __name__ == "__main__":
    sys.exit(main())
