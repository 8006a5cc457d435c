"""The shipped Serve configs match the app each layout builds, and a bad layout is refused before Ray starts."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from deployments import search_app
from deployments.search_app import SearchAppArgs
from vitrine.cli import main

REPO = Path(__file__).resolve().parents[2]
LAYOUT_DEPLOYMENTS = {"split": {"QueryTower", "IndexSearcher", "SearchIngress"}, "colocated": {"SearchIngress"}}


def _reconfigure_keys(cls: type) -> set[str]:
    """The user_config keys a deployment class reads (quoted literals in its ``reconfigure``)."""
    src = inspect.getsource(cls.reconfigure)
    return {k for k in ("max_batch_size", "batch_wait_timeout_s", "search_params") if f'"{k}"' in src}


@pytest.mark.parametrize("path", sorted((REPO / "deployments").glob("serve_config*.yaml")), ids=lambda p: p.name)
def test_serve_config_matches_its_layout(path):
    app = yaml.safe_load(path.read_text())["applications"][0]
    assert app["import_path"] == "deployments.search_app:build_app"
    args = SearchAppArgs(**app["args"])  # every argument is one the builder takes, with a valid value
    names = {d["name"] for d in app["deployments"]}
    assert names == LAYOUT_DEPLOYMENTS[args.layout], f"{path.name}: deployments {names} for layout {args.layout}"
    for dep in app["deployments"]:
        cls = getattr(search_app, dep["name"]).func_or_class
        if dep["name"] == "SearchIngress" and args.layout == "colocated":  # forwards to the tower and the index
            readable = _reconfigure_keys(search_app.QueryTower.func_or_class) | _reconfigure_keys(
                search_app.IndexSearcher.func_or_class)
        else:
            readable = _reconfigure_keys(cls) if hasattr(cls, "reconfigure") else set()
        assert set(dep.get("user_config", {})) <= readable, (path.name, dep["name"])


def test_both_layouts_shipped():
    layouts = {yaml.safe_load(p.read_text())["applications"][0]["args"].get("layout", "split")
               for p in (REPO / "deployments").glob("serve_config*.yaml")}
    assert layouts == set(LAYOUT_DEPLOYMENTS)


def test_unknown_layout_refused_before_ray_starts(tmp_path, capsys):
    assert main(["serve", f"--workdir={tmp_path}", "--serve.layout=fused"]) == 2
    err = capsys.readouterr().err
    assert "serve.layout='fused'" in err and "colocated" in err and "Traceback" not in err
    assert not (tmp_path / "mlflow.db").exists()  # refused before the registry or Ray were touched
