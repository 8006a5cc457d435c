"""Training ingest: an idle back-off for Ray Data's streaming executor, so a waiting pipeline stops burning a core.

Why: Ray Data's scheduling loop (ray 2.60, ``StreamingExecutor.run``) blocks in ``ray.wait`` only while some
task is pending: a task that has finished but whose output the backpressure policy will not read yet counts
as ready, so ``ray.wait`` returns at once. In training the consumers are slow (a CPU step takes seconds), so
the read and featurize operators soon fill their output budget; from then on the loop spins, holding the GIL
of the actor that runs it (``SplitCoordinator`` under Ray Train). Seen with py-spy on the
2-core machine during an 800-step Myntra run: that actor at ~60% of one core, most of it in
``_scheduling_loop_step``, i.e. about a third of the CPU the two training workers need. ``IdleBackoff`` is a
Ray Data ``ExecutionCallback`` (the supported hook, ``DataContext.custom_execution_callback_classes``) that
keeps loop steps at least the period apart: a step that came back sooner sleeps the rest, one that waited in
``ray.wait`` is not slowed. It reads only the executor's data context, and without one it does nothing.
A step dispatches every task it can, so a 20 ms period delays a dispatch by at most that, negligible beside a
training step. ``data.idle_backoff_ms`` sets it (0 = Ray's own loop, for the ablation);
``python -m bench.train.ingest_idle`` measures the coordinator's CPU both ways. The spinning is situational:
short recipe runs did not show it, and there the back-off left the step time as it was (docs/quality.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ray.data._internal.execution.execution_callback import ExecutionCallback

CONFIG_KEY = "vitrine.idle_backoff_s"  # DataContext key-value config the callback reads, in seconds


class IdleBackoff(ExecutionCallback):
    """Keeps the executor's scheduling steps at least ``vitrine.idle_backoff_s`` apart (the dataset's context)."""

    sleeps = 0  # back-offs taken in this process (the driver's executors; under Ray Train, the coordinator's)

    def __init__(self) -> None:
        self._last = 0.0

    def on_execution_step(self, executor: Any) -> None:
        """Called after every scheduling step: a step that came back sooner than the period sleeps the rest."""
        context = getattr(executor, "_data_context", None)
        period = context.get_config(CONFIG_KEY, 0.0) if context is not None else 0.0
        now = time.perf_counter()
        wait = period - (now - self._last)
        if period > 0 and wait > 0:
            IdleBackoff.sleeps += 1
            time.sleep(wait)
            now = time.perf_counter()
        self._last = now


def install(context: Any, idle_ms: float) -> None:
    """Register the back-off on a Ray Data ``DataContext`` before a dataset is built with it; 0 removes it."""
    classes = [c for c in context.custom_execution_callback_classes if c is not IdleBackoff]
    context.custom_execution_callback_classes = classes + ([IdleBackoff] if idle_ms > 0 else [])
    context.set_config(CONFIG_KEY, idle_ms / 1000)


@contextmanager
def installed(context: Any, idle_ms: float) -> Iterator[None]:
    """The back-off on ``context`` while a dataset is built (a dataset deep-copies the context it starts from),
    then the context as it was, so later datasets of the same process keep Ray's own loop."""
    classes, period = list(context.custom_execution_callback_classes), context.get_config(CONFIG_KEY)
    install(context, idle_ms)
    try:
        yield
    finally:
        context.custom_execution_callback_classes = classes
        if period is None:
            context.remove_config(CONFIG_KEY)
        else:
            context.set_config(CONFIG_KEY, period)
