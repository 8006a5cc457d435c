"""pyproject.toml names every third-party package the code imports, pinned to the version requirements.lock installs."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"vitrine", "pipelines", "deployments", "bench", "tests"}
NOT_INSTALLED_ON_CPU = {"faiss-gpu-cu12"}  # the `gpu` extra: CUDA hosts only, outside the CPU lock


def _norm(name: str) -> str:
    return name.split("[")[0].strip().lower().replace("_", "-")


def _declared() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = project["dependencies"] + [p for extra in project["optional-dependencies"].values() for p in extra]
    return {_norm(p.split("==")[0]): p.split("==")[1] for p in pins}


def _locked() -> dict[str, str]:
    lines = (REPO / "requirements.lock").read_text().splitlines()
    pairs = [ln.split("#")[0].strip().split("==") for ln in lines if "==" in ln.split("#")[0]]
    return {_norm(name): version.strip() for name, version in pairs}


def _imported_modules() -> set[str]:
    found: set[str] = set()
    for folder in ("platform", "pipelines", "deployments", "bench", "tests"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module.split(".")[0])
    return found - FIRST_PARTY - set(sys.stdlib_module_names)


def test_every_pin_in_pyproject_is_the_locked_version():
    declared, locked = _declared(), _locked()
    wrong = {n: (v, locked.get(n)) for n, v in declared.items() if n not in NOT_INSTALLED_ON_CPU and locked.get(n) != v}
    assert not wrong, f"pyproject pin != requirements.lock (pyproject, lock): {wrong}"


def test_every_third_party_import_is_a_declared_dependency():
    declared, owners = _declared(), packages_distributions()
    modules = _imported_modules()
    assert {"torch", "ray", "faiss", "mlflow", "sklearn", "PIL"} <= modules  # the scan sees the real imports
    undeclared = {m: owners.get(m) for m in modules if not {_norm(d) for d in owners.get(m, [])} & declared.keys()}
    assert not undeclared, f"imported but not named in pyproject.toml (module: distributions): {undeclared}"
