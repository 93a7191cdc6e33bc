"""One wall-clock watchdog per process: `arm(seconds, fn)` calls `fn()` from a long-lived daemon thread once
`seconds` of wall time have passed, unless `disarm(token)` came first; after `disarm` returns `fn` is not running
and will not run (it is called with the lock held). The scheduler arms it around every lone vCPU's uncounted
run (`fn` = that vCPU's `emu_stop`), which used to start a `threading.Timer`, a new thread per slice (~1 ms
wall on a loaded machine). Several stops may be armed at once (machines run from several threads), each
with its own token.

The thread starts at the first `arm` and is a daemon (harness/__main__.py's fast exit waits only for
non-daemon threads). A forked child (harness/parallel.py's workers) starts with a fresh, unarmed watchdog and
no thread: the parent's lock may have been held by its thread when it forked (`os.register_at_fork`). A
process whose watchdog thread runs is not thread-less for harness/parallel.py (it uses forkserver then): the
CLI's parent process does not run guests before it forks its workers.
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
        self._armed: dict[int, tuple[float, Callable[[], object]]] = {}   # token -> (deadline, fn)
        self._next = 0
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, fn: Callable[[], object]) -> int:
        """Call `fn()` after `seconds` of wall time unless `disarm(token)` comes first; returns the token."""
        with self._cond:
            self._next += 1
            self._armed[self._next] = (time.monotonic() + max(0.0, seconds), fn)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
                self._thread.start()
            self._cond.notify()
            return self._next

    def disarm(self, token: int) -> None:
        with self._cond:
            self._armed.pop(token, None)

    @property
    def armed(self) -> int:
        """How many stops are armed."""
        return len(self._armed)

    def _loop(self) -> None:
        cond = self._cond
        with cond:
            while True:
                if not self._armed:
                    cond.wait()
                    continue
                token, (deadline, fn) = min(self._armed.items(), key=lambda kv: kv[1][0])
                left = deadline - time.monotonic()
                if left > 0:
                    cond.wait(left)
                    continue
                del self._armed[token]
                try:
                    fn()
                except Exception:             # a stopped/closed engine: nothing left to stop
                    pass


WATCHDOG = Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=WATCHDOG._reset)

