"""`TraceSession`: the `run` command's trace options (`--trace FILE --trace-format F --trace-events GLOBS
--expect-trace GOLDEN --update-golden`) turned into sinks on a `Tracer`, closed on every exit path.

    with TraceSession(trace="t.json", fmt="chrome", events="tlbi*,dvm*") as ts:
        ts.attach(machine.tracer, annotate=..., where=...)
        status = machine.run()
    if ts.diff: print(ts.diff)

Event selection: `events` globs (QEMU `--trace` style, `-name` removes); without it, the events named in the
golden file (also when rewriting it), or `tlbi*,dvm*`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from devmodel.trace import Record, Tracer, select

from .catalog import load_for
from .sinks import Annotate, Where, open_sink, record_obj

if TYPE_CHECKING:
    from .golden import GoldenDiff

__all__ = ["TraceSession", "DEFAULT_EVENTS", "CollectSink", "for_machine"]

DEFAULT_EVENTS = "tlbi*,dvm*"


class CollectSink:
    """Keeps the plain objects of the records (what the golden compare sees)."""

    def __init__(self, annotate: Annotate | None = None, where: Where | None = None):
        self.objs: list[dict[str, Any]] = []
        self.annotate = annotate
        self.where = where

    def write(self, rec: Record) -> None:
        self.objs.append(record_obj(rec, self.annotate, self.where))

    def close(self) -> None:
        pass


class TraceSession:
    def __init__(self, trace: str | Path | None = None, fmt: str = "jsonl", events: str | None = None,
                 expect_trace: str | Path | None = None, update_golden: bool = False):
        self.trace, self.fmt = trace, fmt
        self.expect_trace = Path(expect_trace) if expect_trace else None
        self.update_golden = update_golden
        if update_golden and self.expect_trace is None:
            raise ValueError("--update-golden needs --expect-trace GOLDEN.jsonl")
        self.golden: list[dict[str, Any]] | None = None
        if self.expect_trace is not None:
            from .golden import golden_events, load_golden     # here: a plain run compares nothing (start-up)
        if self.expect_trace is not None and not update_golden:
            self.golden = load_golden(self.expect_trace)
        if events is None:
            existing = self.golden
            if existing is None and update_golden and self.expect_trace.is_file():
                existing = load_golden(self.expect_trace)       # rewrite keeps the golden's own selection
            if existing:
                events = ",".join(golden_events(existing))
            elif trace is not None or self.expect_trace is not None:
                events = DEFAULT_EVENTS
        self.events = events
        if events:
            load_for(events)
        self.enabled: frozenset[str] = select(events) if events else frozenset()
        self.sinks: list[Any] = []
        self.collect: CollectSink | None = None
        self.diff: GoldenDiff | None = None
        self.updated: int | None = None
        self._closed = False

    @property
    def active(self) -> bool:
        return bool(self.enabled)

    def attach(self, tracer: Tracer, annotate: Annotate | None = None, where: Where | None = None,
               cpu_name: Callable[[int], str] | None = None) -> None:
        """Enable the selected events on `tracer` and add this session's sinks to it."""
        if not self.active:
            return
        tracer.enable(self.events)
        if self.trace is not None:
            s = open_sink(self.trace, self.fmt, annotate, where, cpu_name)
            self.sinks.append(s)
            tracer.add_sink(s)
        if self.expect_trace is not None:
            self.collect = CollectSink(annotate, where)
            tracer.add_sink(self.collect)

    def close(self) -> GoldenDiff | None:
        """Close the files, then compare with (or rewrite) the golden file. Idempotent."""
        if self._closed:
            return self.diff
        self._closed = True
        try:
            for s in self.sinks:
                s.close()
        finally:
            if self.collect is not None:
                from .golden import compare, write_golden
                if self.update_golden:
                    self.updated = write_golden(self.expect_trace, self.collect.objs)
                elif self.golden is not None:
                    self.diff = compare(self.golden, self.collect.objs)
        return self.diff

    def __enter__(self) -> "TraceSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def for_machine(machine: Any) -> dict[str, Any]:
    """`attach()` keyword arguments for a `harness.machine.Machine`: PC annotation through the vCPU's own
    page tables (`insn_at`) and the VM's symbols, and vCPU track names as DVM messages spell them."""
    from .annotate import Annotator

    def read(cpu, pc, n):
        if cpu is None or not 0 <= cpu < len(machine.vcpus):
            return None
        word = machine.vcpus[cpu].insn_at(pc)
        return None if word is None else word.to_bytes(4, "little")

    def symbolize(cpu, pc):
        if cpu is None or not 0 <= cpu < len(machine.vcpus):
            return None
        return machine.vcpus[cpu].vm.symbolize(pc)

    return {"annotate": Annotator(read, symbolize), "cpu_name": lambda i: machine.vcpus[i].dvm_name}
