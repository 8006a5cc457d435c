"""Run lineage: what a training run read (files, row counts, content hashes) and which code and stack ran it.

Pure bookkeeping, no MLflow: ``vitrine.registry.log_lineage`` records the result on a run. A content hash is
the SHA-256 of the file's bytes, so a copy of the same data hashes the same wherever it lives.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vitrine.catalog.io import parquet_files

log = logging.getLogger(__name__)

# Distributions whose versions decide what a run computes; the first installed faiss build is reported.
STACK = ("torch", "torchvision", "ray", "mlflow", "transformers", "safetensors", "pyarrow", "numpy")
FAISS_DISTS = ("faiss-cpu", "faiss-gpu-cu12", "faiss-gpu", "faiss")
# Set by `vitrine submit` (the uploaded working dir has no .git) so cluster runs keep the submitter's commit.
ENV_COMMIT, ENV_DIRTY = "VITRINE_GIT_COMMIT", "VITRINE_GIT_DIRTY"


@dataclass(frozen=True)
class InputFile:
    """One input file of a run: its role, path, row count and content hash."""

    role: str  # "catalog" | "queries"
    path: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class DataSnapshot:
    """Every input file of a run plus one combined hash per role (order-independent over files)."""

    files: list[InputFile]
    query_source: str  # "file:<path>" or "derived from catalog attributes"
    derived_queries_sha256: str = ""  # content hash of a derived query log (no file to hash)

    def role_sha256(self, role: str) -> str:
        """A SHA-256 over the sorted per-file hashes of one role ('' when the role has no files)."""
        hashes = sorted(f.sha256 for f in self.files if f.role == role)
        return hashlib.sha256("\n".join(hashes).encode()).hexdigest() if hashes else ""

    def rows(self, role: str) -> int:
        """Total rows of one role's files."""
        return sum(f.rows for f in self.files if f.role == role)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``lineage/data.json`` artifact)."""
        return {"files": [asdict(f) for f in self.files], "query_source": self.query_source,
                "catalog_sha256": self.role_sha256("catalog"), "queries_sha256": self.role_sha256("queries"),
                "derived_queries_sha256": self.derived_queries_sha256}


@dataclass(frozen=True)
class CodeVersion:
    """The code that ran: a git commit (+ dirty flag) in a checkout, else the installed package version."""

    vitrine_version: str
    git_commit: str = ""
    git_dirty: bool | None = None  # None when not a git checkout
    source: str = ""  # "git" | "env" (set by `vitrine submit`) | "package"
    stack: dict[str, str] = field(default_factory=dict)
    python: str = ""

    @property
    def label(self) -> str:
        """``<commit>[+dirty]`` or ``vitrine==<version>``."""
        if self.git_commit:
            return self.git_commit + ("+dirty" if self.git_dirty else "")
        return f"vitrine=={self.vitrine_version}"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, streamed."""
    with Path(path).open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def describe_file(path: str | Path, role: str) -> InputFile:
    """Path, Parquet row count (from the footer, no data read), size and content hash of one file."""
    p = Path(path).resolve()
    try:
        rows = pq.ParquetFile(p).metadata.num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"cannot read the Parquet footer of {role} file '{p}': {exc}; "
                         "pass a readable Parquet file") from None
    return InputFile(role=role, path=str(p), rows=rows, bytes=p.stat().st_size, sha256=file_sha256(p))


def table_sha256(table: pa.Table) -> str:
    """Content hash of an in-memory table (Arrow IPC bytes): identifies a derived query log."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def data_snapshot(catalog: str, queries: str, query_source: str, derived: pa.Table | None = None) -> DataSnapshot:
    """Describe every catalog and query-log file; a derived query log is hashed in memory instead."""
    files = [describe_file(f, "catalog") for f in parquet_files(catalog)]
    if queries:
        files += [describe_file(f, "queries") for f in parquet_files(queries)]
    derived_sha = table_sha256(derived) if derived is not None and not queries else ""
    return DataSnapshot(files=files, query_source=query_source, derived_queries_sha256=derived_sha)


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(root: str | Path) -> tuple[str, bool] | None:
    """(commit, dirty) of the git checkout at ``root``; None when it is not one (or git is missing)."""
    root = Path(root)
    top = _git(root, "rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != root.resolve():
        return None  # not a checkout of this tree (e.g. an installed copy inside some other repository)
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    if not commit or status is None:
        return None
    return commit, bool(status)


def dist_version(name: str) -> str:
    """Installed version of a distribution, or '' when absent."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def stack_versions() -> dict[str, str]:
    """Versions of the libraries a run depends on (faiss under the key 'faiss', whichever build is installed)."""
    versions = {name: dist_version(name) for name in STACK}
    versions["faiss"] = next((f"{d}=={v}" for d in FAISS_DISTS if (v := dist_version(d))), "")
    return versions


def source_root() -> Path:
    """The folder holding ``platform/`` and ``pipelines/`` (a git checkout when developing)."""
    return Path(__file__).resolve().parents[2]


def code_version(root: str | Path | None = None) -> CodeVersion:
    """The code that runs now: git commit + dirty flag, else the submitter's commit from the env, else the version."""
    common = {"vitrine_version": dist_version("vitrine") or "unknown", "stack": stack_versions(),
              "python": platform.python_version()}
    state = git_state(root or source_root())
    if state:
        return CodeVersion(git_commit=state[0], git_dirty=state[1], source="git", **common)
    if os.environ.get(ENV_COMMIT):
        dirty = os.environ.get(ENV_DIRTY, "").lower() in ("1", "true", "yes")
        return CodeVersion(git_commit=os.environ[ENV_COMMIT], git_dirty=dirty, source="env", **common)
    return CodeVersion(source="package", **common)
