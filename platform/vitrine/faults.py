"""Fault injection for the reliability tests: a process hard-kills itself once at a named point when asked.

Off unless ``$VITRINE_FAULT`` is set, e.g. ``VITRINE_FAULT=train_step=3,embed_batch=2`` with
``VITRINE_FAULT_DIR=/tmp/faults``: the first process (of the whole cluster) whose counter for a site reaches
its value creates ``<dir>/<site>.killed`` and SIGKILLs itself, so each fault fires exactly once per directory.
Ray workers inherit both variables from the process that started the local Ray instance.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

ENV = "VITRINE_FAULT"
DIR_ENV = "VITRINE_FAULT_DIR"

log = logging.getLogger(__name__)


def _armed(site: str) -> int | None:
    """The counter value at which ``site`` fires, or None when no fault is requested for it."""
    spec = os.environ.get(ENV, "")
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        if name == site and value.isdigit():
            return int(value)
    return None


def crash_point(site: str, count: int, before_kill: Callable[[], None] | None = None) -> None:
    """SIGKILL this process if ``site`` is armed at ``count`` and has not fired yet in ``$VITRINE_FAULT_DIR``.

    ``before_kill`` runs first (once the marker is written), e.g. to let the work already reported settle so the
    fault lands at a defined point rather than racing a background poll."""
    at = _armed(site)
    if at is None or count != at:
        return
    marker = Path(os.environ.get(DIR_ENV) or ".") / f"{site}.killed"
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    if before_kill is not None:
        before_kill()
    log.warning("fault injection: killing pid %d at %s=%d", os.getpid(), site, count)
    os.kill(os.getpid(), signal.SIGKILL)
