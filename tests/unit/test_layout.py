"""The repository layout never shadows the stdlib ``platform`` module."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_platform_folder_is_not_a_package():
    assert (REPO / "platform" / "vitrine" / "__init__.py").is_file()
    assert not (REPO / "platform" / "__init__.py").exists()


def test_stdlib_platform_still_imports_from_repo_root():
    code = ("import platform, vitrine, sysconfig, pathlib;"
            "std = pathlib.Path(sysconfig.get_paths()['stdlib']);"
            "assert pathlib.Path(platform.__file__).parent == std, platform.__file__;"
            "print(platform.system())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Linux"


def test_every_shipped_config_loads():
    from vitrine.config import PretrainJob
    from vitrine.config_io import load_config

    files = sorted((REPO / "configs").rglob("*.yaml"))
    assert len(files) >= 8
    for f in files:
        load_config(PretrainJob, str(f))
