"""Bulk formatting of compact trace records (`devmodel.trace.CompactLog`) by the native `tt_render`
(harness/native/tlbi_trap.c), for the jsonl and text sinks (harness/trace/sinks.py).

A sink registers the template of each payload it meets (the pieces of its line and the holes between them,
what its own Python template fills in: `_LineSink._template_parts`) and gets a template number; the log holds
`number, seq, ts, values...` per record, and `render` turns a whole log into bytes in C, a megabyte at a time,
which go straight to the file's binary buffer. Only integers are kept (the log refuses anything else), and an
integer's text is what Python's `str()` or `%#x` gives, so the bytes are the Python template's
(tests/harness/test_trace_compact.py compares them); a record with an int beyond 64 bits is formatted by the
Python template.

`submit` hands a packed log to the writer's thread (`_Thread`), which renders and writes it while the guest
runs on (ctypes and the file's write release the GIL): one log at a time, so the bytes are in the order they
were handed over, and the caller waits for it (`settle`) before it writes anything else to the file, before
a template is added (`add`: the thread reads the template arrays) and at close (`stop` joins the thread).
An exception in the thread is raised by the next `settle` on the caller's thread, where a write error of a
synchronous `render` would have come; a log handed over after it is not written (no gap in the file).
"""
from __future__ import annotations

import ctypes
import threading
from array import array
from typing import Any, Callable

__all__ = ["CompactWriter", "writer", "HOLE_SEQ", "HOLE_TS", "HOLE_VALUE", "HOLE_HEX"]

HOLE_SEQ, HOLE_TS, HOLE_VALUE, HOLE_HEX = 0, 1, 2, 0x100     # tlbi_trap.c's hole kinds
_INT_TEXT = 24                                              # ... and TT_INT_TEXT


def writer() -> "CompactWriter | None":
    """A writer on the native library, or None when it is not available (`SMMU_HARNESS_NATIVE=0`, no compiler):
    then the sinks format every record in Python."""
    from .. import native

    lib = native.tlbi_trap()
    return CompactWriter(lib) if lib is not None else None


class CompactWriter:
    """The template table and output buffer of one sink; `lib` is the loaded native library."""

    def __init__(self, lib: Any, cap: int = 1 << 20):
        self.lib = lib
        self.index = array("q")            # template number -> its offset in prog
        self.prog = array("q")
        self._blob = bytearray()             # every template's pieces (not copied per template: see _render)
        self._python: list[tuple[Callable[..., str], int]] = []   # number -> (Python renderer, values)
        self._res = (ctypes.c_long * 2)()
        self._thread: _Thread | None = None
        self._grow(cap)

    def _grow(self, cap: int) -> None:
        self.cap = cap
        self._out = bytearray(cap)
        self._out_addr = ctypes.addressof((ctypes.c_char * cap).from_buffer(self._out))

    def add(self, pieces: list[str], holes: list[Any], hexes: list[bool], python: Callable[..., str]) -> int:
        """Register a template (holes: "seq", "ts" or a dynamic value's index; `hexes[i]`: value i in hex);
        `python(seq, ts, values)` is the same line in Python (for a value beyond 64 bits)."""
        if self._thread is not None:
            self._thread.idle()               # it reads index, prog and the blob: no change while it renders
        enc = [piece.encode("utf-8") for piece in pieces]
        total = sum(len(e) for e in enc)
        tid = len(self.index)
        self.index.append(len(self.prog))
        self.prog.extend((len(hexes), len(holes), total))
        for e in enc:
            self.prog.extend((len(self._blob), len(e)))
            self._blob += e
        for h in holes:
            self.prog.append(HOLE_SEQ if h == "seq" else HOLE_TS if h == "ts" else
                             (HOLE_VALUE + h) | (HOLE_HEX if hexes[h] else 0))
        self._python.append((python, len(hexes)))
        need = 2 * (total + _INT_TEXT * len(holes))
        if need > self.cap:
            self._grow(need)
        return tid

    def render(self, data: list[int], write: Callable[[Any], Any]) -> int:
        """Format every record of `data` (a flat list: number, seq, ts, values...) and `write` the bytes;
        returns the number of records."""
        try:
            packed = array("q", data)
        except OverflowError:
            return self._render_mixed(data, write)
        return self._render(packed, write)

    def render_packed(self, data: array, write: Callable[[Any], Any]) -> int:
        """`render` of records already packed as int64s (`array("q")`)."""
        return self._render(data, write)

    def submit(self, log: Any, write: Callable[[Any], Any]) -> None:
        """`render_packed(log.packed, write)` on the writer's thread (started at the first call), `log.packed`
        given away for an empty array; returns once the log handed over before is done. The caller calls
        `settle` before anything else reaches the file."""
        if self._thread is None:
            self._thread = _Thread(self._render)
        self._thread.put(log, write)

    def settle(self) -> int:
        """Wait for the thread's log: the records it wrote since the last call; its exception, if it had one."""
        return self._thread.settle() if self._thread is not None else 0

    def stop(self) -> int:
        """`settle`, then end the thread (joined)."""
        t, self._thread = self._thread, None
        return t.stop() if t is not None else 0

    def _render(self, data: array, write: Callable[[Any], Any]) -> int:
        addr, n = data.buffer_info()
        index_addr, ntpl = self.index.buffer_info()
        prog_addr = self.prog.buffer_info()[0]
        out = memoryview(self._out)
        off = records = 0
        blob = (ctypes.c_char * len(self._blob)).from_buffer(self._blob)   # no copy; `add` waits for its release
        try:
            blob_addr = ctypes.addressof(blob)
            while off < n:
                used = self.lib.tt_render(addr + off * data.itemsize, n - off, index_addr, ntpl, prog_addr,
                                          blob_addr, self._out_addr, self.cap, self._res)
                if used <= 0:
                    raise ValueError(f"trace: compact record {data[off]} has no template")
                write(out[:self._res[0]])
                off += used
                records += self._res[1]
        finally:
            del blob
        return records

    def _render_mixed(self, data: list[int], write: Callable[[Any], Any]) -> int:
        """Some value does not fit 64 bits: those records by their Python renderer, the others in C."""
        chunk: list[int] = []
        i = records = 0
        while i < len(data):
            render, nval = self._python[data[i]]
            rec = data[i:i + 3 + nval]
            i += 3 + nval
            if all(-(1 << 63) <= v < (1 << 63) for v in rec):
                chunk.extend(rec)
                continue
            if chunk:
                records += self._render(array("q", chunk), write)
                chunk.clear()
            write(render(rec[1], rec[2], tuple(rec[3:])).encode("utf-8"))
            records += 1
        if chunk:
            records += self._render(array("q", chunk), write)
        return records


class _Thread:
    """The thread of a `CompactWriter`: renders one handed-over log at a time (`put`)."""

    def __init__(self, render: Callable[[array, Callable[[Any], Any]], int]):
        self._render, self._cv = render, threading.Condition()
        self._job: tuple[array, Callable[[Any], Any]] | None = None
        self._done, self._error, self._end = 0, None, False
        self._t = threading.Thread(target=self._run, name="trace-writer", daemon=True)
        self._t.start()

    def idle(self) -> None:
        with self._cv:
            self._idle()

    def _idle(self) -> None:
        """Wait (holding the lock) until the thread has no log. Every wait first wakes the thread: a Ctrl-C on
        this thread may have come between a hand-over and its `notify_all`."""
        self._cv.notify_all()
        self._cv.wait_for(lambda: self._job is None)

    def put(self, log: Any, write: Callable[[Any], Any]) -> None:
        fresh = array("q")
        with self._cv:
            self._idle()
            self._job, log.packed = (log.packed, write), fresh    # no call in between: Ctrl-C comes before or after
            self._cv.notify_all()

    def settle(self) -> int:
        with self._cv:
            self._idle()
            done, err, self._done, self._error = self._done, self._error, 0, None
        if err is not None:
            raise err
        return done

    def stop(self) -> int:
        try:
            return self.settle()
        finally:
            with self._cv:
                self._end = True
                self._cv.notify_all()
            self._t.join()

    def _run(self) -> None:
        cv = self._cv
        while True:
            with cv:
                cv.wait_for(lambda: self._job is not None or self._end)
                job = self._job
            if job is None:
                return
            n, err = 0, None
            try:
                if self._error is None:       # after a failed write none: the file would have a gap
                    n = self._render(*job)
            except BaseException as e:        # raised on the caller's thread by `settle`
                err = e
            job = None                        # not kept while waiting: the log and the file's write
            with cv:
                self._job, self._done = None, self._done + n
                if self._error is None:
                    self._error = err
                cv.notify_all()
