"""^C during a run: Python runs its SIGINT handler only between bytecodes of the main thread, and a vCPU inside
`emu_start` runs no Python code until its next callback - never, for a guest spinning alone (uncounted, no
timeout: harness/scheduler.py) - so without this a run could not be interrupted and `main`'s status 130 was
not reached. `stoppable(machine)` (around `Machine.run`) points the signal module's wakeup fd at a pipe that a
watcher thread reads (one per process, started at the first run; ctypes releases the GIL during `emu_start`):
on SIGINT it calls `emu_stop` on the vCPU that runs (`Scheduler.running`), `emu_start` returns (its
observation point delivers the console buffer, harness/observe.py) and the main thread raises
KeyboardInterrupt as usual. Only in the main thread and while SIGINT has Python's default handler (a caller
with its own handler, or one that ignores SIGINT - the parallel runner's workers - keeps its own behaviour).
Like a `--timeout`, the stop is asynchronous: it ends the run.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from .machine import Machine

__all__ = ["stoppable"]


_running: list["Machine"] = []      # the machines whose `run` is under way in the main thread (innermost last)
_pipe: tuple[int, int] | None = None  # the wakeup pipe, read by one watcher thread for the whole process


def _watch(fd: int) -> None:
    while True:
        data = os.read(fd, 64)
        if signal.SIGINT in data and _running:
            v = _running[-1].scheduler.running
            if v is not None:
                try:
                    v.uc.emu_stop()
                except Exception:         # the slice just ended: the main thread raises at once anyway
                    pass


def _wakeup_pipe() -> int:
    """The write end of the wakeup pipe, its watcher started on first use."""
    global _pipe
    if _pipe is None:
        r, w = os.pipe()
        os.set_blocking(w, False)
        threading.Thread(target=_watch, args=(r,), name="sigint-watch", daemon=True).start()
        _pipe = (r, w)
    return _pipe[1]


@contextmanager
def stoppable(machine: "Machine") -> Iterator[None]:
    """While the body runs, SIGINT also stops the running vCPU's `emu_start` (module docstring)."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    old = signal.set_wakeup_fd(_wakeup_pipe(), warn_on_full_buffer=False)
    _running.append(machine)
    try:
        yield
    finally:
        _running.pop()
        signal.set_wakeup_fd(old)
