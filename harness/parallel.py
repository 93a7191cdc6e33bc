"""Jobs in worker processes, for the commands that run many independent guests (`scenario report -j`,
`unittests -j`).

`run_jobs(fn, items, jobs, finished, failed, preload)` calls `fn(item)` for every item in a process pool and
`finished(i, result)` in the parent as each completes. The pool forks the parent when it has no other thread
(the CLI: the workers start with the `preload` modules imported once, in the parent, and no second interpreter
to start), else it uses the forkserver context (a parent with threads, pytest-xdist, must not fork), whose
server imports `preload`; a job whose worker died gives `failed(i, exc)`'s result instead. `fn` must be
picklable (a module-level function). On KeyboardInterrupt (or SIGTERM, handled alike) the queued jobs are
cancelled and the running ones finish before it propagates. Workers ignore ^C (the parent handles it) and exit
when the parent process dies (a watchdog thread: a killed parent would otherwise leave them, and the
forkserver, waiting on the job queue for ever).
"""
from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Sequence

__all__ = ["run_jobs"]


def _worker_init(parent: int) -> None:
    """In each worker: ^C is the parent's to handle (it cancels the queued jobs and lets the running ones
    finish); and a worker whose parent died (SIGKILL) exits instead of waiting on the job queue for ever (its
    own copies of the queue's pipes never reach EOF, and it holds the forkserver's alive pipe open)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)     # a forked worker inherits the parent's handler

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:      # the pid was reused by someone else's process: the parent is gone
                os._exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _terminate_as_interrupt(signum, frame):  # SIGTERM during a parallel run: as ^C (report what finished)
    raise KeyboardInterrupt


def _context(preload: Sequence[str]) -> Any:
    """fork from a parent with no other thread (module docstring), else forkserver."""
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        for name in preload:
            importlib.import_module(name)
        return multiprocessing.get_context("fork")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(preload))
    return ctx


def run_jobs(fn: Callable[[Any], Any], items: Sequence[Any], jobs: int, finished: Callable[[int, Any], None],
             failed: Callable[[int, BaseException], Any], preload: Sequence[str] = ()) -> None:
    """`fn(items[i])` in `min(jobs, len(items))` worker processes; see the module docstring."""
    ctx = _context(preload)
    in_main = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _terminate_as_interrupt) if in_main else None
    try:
        with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(items))), mp_context=ctx,
                                 initializer=_worker_init, initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            try:
                for f in as_completed(futures):
                    i = futures[f]
                    try:
                        res = f.result()
                    except Exception as e:  # noqa: BLE001 - a worker died (BrokenProcessPool ...)
                        res = failed(i, e)
                    finished(i, res)
            except KeyboardInterrupt:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old_term)
