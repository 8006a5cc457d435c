"""Model lifecycle for real: a `ray start --head` cluster with `vitrine submit`, and an `mlflow server`
on loopback with the promotion gate, --force, rollback, and the loader following the alias."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import requests
import torch

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "platform" / "vitrine" / "sample"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_head(temp_dir: str) -> int:
    """SIGKILL the Ray processes of one head (their command lines name its ``--temp-dir``) and their children.

    ``ray stop`` would kill every Ray process on the machine, a user's own clusters and jobs included. Returns
    how many processes were killed."""
    procs: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
        procs[int(entry.name)] = (ppid, cmd)
    doomed = {pid for pid, (_, cmd) in procs.items() if f"={temp_dir}" in cmd or f"{temp_dir}/" in cmd}
    while True:
        children = {pid for pid, (ppid, _) in procs.items() if ppid in doomed} - doomed
        if not children:
            break
        doomed |= children
    doomed.discard(os.getpid())
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(doomed)


@pytest.fixture(scope="module")
def hd_slice(tmp_path_factory):
    """40 real Home Depot queries and exactly the products they judge."""
    out = tmp_path_factory.mktemp("slice")
    j = pq.read_table(SAMPLE / "homedepot_judgments.parquet")
    queries = sorted(set(j.column("query").to_pylist()))[:40]
    j = j.filter(pc.is_in(j.column("query"), pc.cast(queries, j.schema.field("query").type)))
    p = pq.read_table(SAMPLE / "homedepot_products.parquet")
    p = p.filter(pc.is_in(p.column("product_id"), j.column("product_id")))
    pq.write_table(j, out / "judgments.parquet")
    pq.write_table(p, out / "products.parquet")
    return out


def test_submit_pipeline_to_local_head(tmp_path, hd_slice):
    from ray.job_submission import JobStatus, JobSubmissionClient

    # the head runs jobs with the `python` on its PATH, as on a cluster node where Vitrine is installed
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    dash = free_port()
    temp_dir = tempfile.mkdtemp(prefix="vitrine-ray-")  # short: Ray's socket paths live under it
    start = [str(BIN / "ray"), "start", "--head", f"--port={free_port()}", "--node-ip-address=127.0.0.1",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2", "--disable-usage-stats",
             f"--temp-dir={temp_dir}"]
    # every fixed default port gets a free one, so the head starts beside any other Ray cluster on the host
    start += [f"--{opt}={free_port()}" for opt in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                   "metrics-export-port", "runtime-env-agent-port",
                                                   "ray-client-server-port")]
    address = f"http://127.0.0.1:{dash}"
    try:
        subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
        out = tmp_path / "metrics.json"
        cmd = [str(BIN / "vitrine"), "submit", "--address", address, "evaluate", "--model", "bm25",
               "--catalog", str(hd_slice / "products.parquet"), "--judgments", str(hd_slice / "judgments.parquet"),
               "--k", "10", "--output", str(out), f"--workdir={tmp_path / 'w'}"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "bm25: recall@10" in done.stdout and "SUCCEEDED" in done.stdout
        assert json.loads(out.read_text())["metrics"]["queries"] > 30
        failing = subprocess.run([str(BIN / "vitrine"), "submit", "--address", address, "evaluate"], env=env,
                                 capture_output=True, text=True, timeout=300)
        assert failing.returncode == 1 and "FAILED" in failing.stdout and "--model" in failing.stdout
        jobs = JobSubmissionClient(address).list_jobs()
        assert sorted(j.status for j in jobs) == sorted([JobStatus.SUCCEEDED, JobStatus.FAILED])
        good = next(j for j in jobs if j.status == JobStatus.SUCCEEDED)
        assert "bm25: recall@10" in JobSubmissionClient(address).get_job_logs(good.submission_id)
    finally:  # this head only: other Ray clusters on the machine keep running
        stop_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture()
def mlflow_server(tmp_path, monkeypatch):
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination",
         str(tmp_path / "artifacts")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start within 90 s")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    import mlflow

    mlflow.set_tracking_uri(None)


def _register(tmp_path: Path, tag: str, broken: bool) -> str:
    """Register a real MAKE model dir; ``broken`` scrambles the query head (a clearly worse model)."""
    from vitrine import registry
    from vitrine.config import DataConfig, ModelConfig, TrackingConfig
    from vitrine.model.make import MakeModel
    from vitrine.model.store import save_model_dir

    torch.manual_seed(0)
    model = MakeModel(ModelConfig())
    if broken:
        torch.nn.init.normal_(model.query_proj.weight, std=0.05)
    exp = registry.setup(TrackingConfig(), tmp_path)
    run = registry.start_run(exp, tag)
    registry.log_artifacts(run, save_model_dir(model, DataConfig(), tmp_path / tag), "model")
    registry.end_run(run)
    return registry.register_model("vitrine", run, "challenger")


def test_promotion_gate_against_mlflow_server(tmp_path, hd_slice, mlflow_server, capsys):
    from pipelines.promote import PromotionRefused
    from pipelines.promote import run as promote
    from vitrine import registry
    from vitrine.config import PromoteJob

    def job(**kw) -> PromoteJob:
        return PromoteJob(workdir=str(tmp_path), catalog=str(hd_slice / "products.parquet"),
                          judgments=str(hd_slice / "judgments.parquet"), **kw)

    assert _register(tmp_path, "good", broken=False) == "1"
    assert promote(job())["decision"] == "promoted"  # first promotion: nothing to compare with
    assert _register(tmp_path, "bad", broken=True) == "2"
    with pytest.raises(PromotionRefused, match="not promoted"):
        promote(job())
    assert "FAIL" in capsys.readouterr().out  # the comparison is printed
    champion = registry.resolve_model("models:/vitrine@champion", tmp_path / "cache")
    assert champion.version == "1"  # the refused candidate left the alias where it was
    assert _register(tmp_path, "good-again", broken=False) == "3"
    result = promote(job())
    assert result["decision"] == "promoted" and result["champion_version"] == "1"
    assert registry.resolve_model("models:/vitrine@champion", tmp_path / "cache").version == "3"
    forced = promote(job(candidate="2", force=True))
    assert forced["decision"] == "forced"
    assert registry.resolve_model("models:/vitrine@champion", tmp_path / "cache").version == "2"
    registry.set_alias("vitrine", "champion", "3")  # rollback = move the alias back
    assert registry.resolve_model("models:/vitrine@champion", tmp_path / "cache").version == "3"
    runs = registry.client().search_runs([registry.client().get_experiment_by_name("vitrine").experiment_id],
                                         "tags.`vitrine.job` = 'promote'")
    assert sorted(r.data.tags["vitrine.decision"] for r in runs) == ["forced", "promoted", "promoted", "refused"]
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
