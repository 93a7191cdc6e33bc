"""One wall-clock watchdog per process: `arm(seconds, fn)` calls `fn()` from a long-lived daemon thread once
`seconds` of wall time have passed, unless `disarm()` came first; after `disarm()` returns `fn` is not running
and will not run (it is called with the lock held). The scheduler arms it around every lone vCPU's uncounted
run (`fn` = that vCPU's `emu_stop`), which used to start a `threading.Timer`, a new thread per slice (~1 ms
wall on a loaded machine). One thread at a time is armed (`run` is not re-entrant across threads here).

The thread starts at the first `arm` and is a daemon (harness/__main__.py's fast exit waits only for
non-daemon threads). A forked child (harness/parallel.py's workers) starts with a fresh, unarmed watchdog and
no thread: the parent's lock may have been held by its thread when it forked (`os.register_at_fork`).
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable

__all__ = ["Watchdog", "WATCHDOG", "THREAD_NAME"]

THREAD_NAME = "harness-watchdog"


class Watchdog:
    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._deadline: float | None = None
        self._fn: Callable[[], object] | None = None
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, fn: Callable[[], object]) -> None:
        with self._cond:
            self._deadline = time.monotonic() + max(0.0, seconds)
            self._fn = fn
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
                self._thread.start()
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._deadline = self._fn = None

    @property
    def armed(self) -> bool:
        return self._fn is not None

    def _loop(self) -> None:
        cond = self._cond
        with cond:
            while True:
                if self._deadline is None:
                    cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    cond.wait(left)
                    continue
                fn, self._deadline, self._fn = self._fn, None, None
                try:
                    fn()
                except Exception:             # a stopped/closed engine: nothing left to stop
                    pass


WATCHDOG = Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=WATCHDOG._reset)


def is_watchdog(thread: threading.Thread) -> bool:
    """The watchdog's thread (harness/parallel.py does not count it as a reason not to fork)."""
    return thread is WATCHDOG._thread
