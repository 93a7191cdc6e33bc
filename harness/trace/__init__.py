"""Trace output for the harness: file sinks (text, jsonl, chrome), PC annotation, golden comparison, and
`TraceSession`, which wires them to a `devmodel.trace.Tracer` from the CLI options.

The event registry and the `Tracer` itself live in `devmodel.trace` (devices emit events too).
"""
from __future__ import annotations

from .annotate import Annotator, disasm_word
from .session import TraceSession, for_machine
from .sinks import FORMATS, ChromeSink, JsonlSink, TextSink, open_sink, record_obj

__all__ = ["Annotator", "disasm_word", "GoldenDiff", "compare", "golden_events", "load_golden", "write_golden",
           "FORMATS", "ChromeSink", "JsonlSink", "TextSink", "open_sink", "record_obj", "TraceSession", "for_machine"]

_GOLDEN = frozenset({"GoldenDiff", "compare", "golden_events", "load_golden", "write_golden"})


def __getattr__(name: str):
    """The golden-file names from .golden on first use (PEP 562): a run without --expect-trace never imports
    it (start-up of `run`)."""
    if name in _GOLDEN:
        from . import golden
        return getattr(golden, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
