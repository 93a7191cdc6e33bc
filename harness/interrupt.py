"""^C during a run: Python runs its SIGINT handler only between bytecodes of the main thread, and a vCPU inside
`emu_start` runs no Python code until its next callback - never, for a guest spinning alone (uncounted, no
timeout: harness/scheduler.py) - so without this a run could not be interrupted and `main`'s status 130 was
not reached. `stoppable(machine)` (around `Machine.run`) points the signal module's wakeup fd at a pipe that a
watcher thread reads (ctypes releases the GIL during `emu_start`): on SIGINT it calls `emu_stop` on the vCPU
that runs (`Scheduler.running`), `emu_start` returns (the observation point delivers the console buffer,
harness/observe.py) and the main thread raises KeyboardInterrupt as usual. Only in the main thread and while
SIGINT has Python's default handler (a caller with its own handler, or one that ignores SIGINT - the parallel
runner's workers - keeps its own behaviour). Like a `--timeout`, the stop is asynchronous: it ends the run.
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


def _watch(machine: "Machine", fd: int, state: dict) -> None:
    while True:
        data = os.read(fd, 64)
        if state["done"] or not data:
            return
        v = machine.scheduler.running
        if signal.SIGINT in data and v is not None:
            try:
                v.uc.emu_stop()
            except Exception:             # the slice just ended: the main thread raises at once anyway
                pass


@contextmanager
def stoppable(machine: "Machine") -> Iterator[None]:
    """While the body runs, SIGINT also stops the running vCPU's `emu_start` (module docstring)."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    state = {"done": False}
    t = threading.Thread(target=_watch, args=(machine, r, state), name="sigint-watch", daemon=True)
    t.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(old)
        state["done"] = True
        try:
            os.write(w, b"\0")
        except BlockingIOError:           # the pipe is full of signal bytes: the watcher has data to read
            pass
        t.join()
        os.close(r)
        os.close(w)
