"""ray_cluster.yaml is a complete launcher config, and every command docs/cluster.md shows is real."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from vitrine.cli import JOBS, build_parser
from vitrine.config_io import load_config

REPO = Path(__file__).resolve().parents[2]
CLUSTER = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())
DOC = (REPO / "docs" / "cluster.md").read_text()
NODE_TYPES = {"head", "cpu_worker", "gpu_worker"}


def doc_commands(program: str) -> list[list[str]]:
    """Every command line of the doc's bash blocks that runs ``program`` (comments dropped), as argv lists."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", DOC, flags=re.S):
        for line in block.splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] == program:
                lines.append(argv)
    return lines


def yaml_commands(*sections: str) -> list[str]:
    return [c for s in sections for c in CLUSTER[s]]


def test_node_types_and_autoscaling_bounds():
    types = CLUSTER["available_node_types"]
    assert set(types) == NODE_TYPES and CLUSTER["head_node_type"] == "head"
    for name, spec in types.items():
        assert "InstanceType" in spec["node_config"], name
        assert 0 <= spec["min_workers"] <= spec["max_workers"], name
        assert f"`{name}`" in DOC, f"docs/cluster.md does not describe node type {name}"
    assert types["head"]["resources"] == {"CPU": 0}  # no training work on the head
    assert types["gpu_worker"]["resources"]["GPU"] >= 1 and "GPU" not in types["cpu_worker"]["resources"]
    assert types["cpu_worker"]["min_workers"] >= 1  # Ray Data needs CPUs from the start
    assert sum(t["max_workers"] for t in types.values()) <= CLUSTER["max_workers"]
    assert CLUSTER["provider"]["type"] and CLUSTER["idle_timeout_minutes"] > 0


def test_setup_installs_the_pinned_stack_and_vitrine_from_the_synced_checkout():
    (target, source), = CLUSTER["file_mounts"].items()
    assert (REPO / source).resolve() == REPO
    home_path = target.replace("/home/ubuntu", "~")
    setup = "\n".join(CLUSTER["setup_commands"])
    assert f"-r {home_path}/requirements.lock" in setup and (REPO / "requirements.lock").is_file()
    assert f"-e {home_path}" in setup and "python3.11 -m venv" in setup
    for cmd in yaml_commands("head_start_ray_commands", "worker_start_ray_commands"):
        assert cmd.split(";")[-1].strip().startswith("~/venv/bin/ray "), cmd  # the venv's Ray, same version


def _options(command) -> set[str]:  # noqa: ANN001 - a click command
    return {opt for p in command.params for opt in getattr(p, "opts", [])}


def _flags(cmd: str) -> set[str]:
    return {tok.split("=")[0] for tok in shlex.split(cmd) if tok.startswith("--")}


def test_ray_and_mlflow_commands_in_the_yaml_use_real_options():
    from mlflow.cli import server
    from ray.scripts.scripts import start

    starts = [c.split(";")[-1] for c in yaml_commands("head_start_ray_commands", "worker_start_ray_commands")
              if "ray start" in c]
    assert len(starts) == 2 and "--head" in starts[0] and "$RAY_HEAD_IP:6379" in starts[1]
    for cmd in starts:
        assert _flags(cmd) <= _options(start), _flags(cmd) - _options(start)
    mlflow_cmd = next(c for c in CLUSTER["head_setup_commands"] if "mlflow server" in c)
    mlflow_args = mlflow_cmd.split("bin/mlflow server", 1)[1].split(">")[0]
    assert _flags(mlflow_args) <= _options(server), _flags(mlflow_args) - _options(server)
    port = re.search(r"--port (\d+)", mlflow_cmd)[1]
    for cmd in yaml_commands("head_start_ray_commands", "worker_start_ray_commands"):
        if "ray start" in cmd:
            assert "MLFLOW_TRACKING_URI=http://" in cmd and f":{port} " in cmd, cmd


def test_every_vitrine_command_in_the_doc_parses_with_real_keys():
    parser = build_parser()
    commands = doc_commands("vitrine")
    seen = set()
    for argv in commands:
        args, rest = parser.parse_known_args(argv[1:])
        if args.command == "submit":
            assert args.job in JOBS, argv
            args, rest = parser.parse_known_args([args.job, *rest])
        seen.add(args.command)
        cls = JOBS[args.command][0]
        config = str(REPO / args.config) if args.config else None
        if config:
            assert Path(config).is_file(), argv
        load_config(cls, config, [*args.overrides, *rest])  # raises ConfigError naming any unknown key
    assert {"pretrain", "index", "serve", "promote"} <= seen
    named = set(re.findall(r"`vitrine (\w+)", DOC))  # prose mentions too
    assert named and named <= {*JOBS, "submit", "import"}, named - {*JOBS, "submit", "import"}
    assert sum(argv[1] == "submit" for argv in commands) >= 6


def test_every_ray_and_mlflow_command_in_the_doc_is_real():
    from mlflow.cli import server
    from ray.scripts.scripts import cli

    for argv in doc_commands("ray"):
        assert argv[1] in cli.commands, argv
        files = [a for a in argv if a.endswith(".yaml")]
        assert files == ["ray_cluster.yaml"], argv
        assert _flags(" ".join(argv)) <= _options(cli.commands[argv[1]]), argv
    assert {argv[1] for argv in doc_commands("ray")} >= {"up", "dashboard", "attach", "down"}
    servers = doc_commands("mlflow")
    assert len(servers) == 2 and {"sqlite", "postgresql"} == {
        a.split(":")[0] for argv in servers for a in argv if a.startswith(("sqlite:", "postgresql:"))}
    for argv in servers:
        assert argv[1] == "server" and _flags(" ".join(argv[2:])) <= _options(server), argv
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in DOC


@pytest.mark.parametrize("path", re.findall(r"`((?:configs|deployments|docs|tests)/[\w./-]+)`", DOC))
def test_files_named_in_the_doc_exist(path):
    assert (REPO / path).exists(), path
