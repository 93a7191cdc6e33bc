"""Trace output for the harness: file sinks (text, jsonl, chrome), PC annotation, golden comparison, and
`TraceSession`, which wires them to a `devmodel.trace.Tracer` from the CLI options.

The event registry and the `Tracer` itself live in `devmodel.trace` (devices emit events too).
"""
from __future__ import annotations

from .annotate import Annotator, disasm_word
from .golden import GoldenDiff, compare, golden_events, load_golden, write_golden
from .session import TraceSession, for_machine
from .sinks import FORMATS, ChromeSink, JsonlSink, TextSink, open_sink, record_obj

__all__ = ["Annotator", "disasm_word", "GoldenDiff", "compare", "golden_events", "load_golden", "write_golden",
           "FORMATS", "ChromeSink", "JsonlSink", "TextSink", "open_sink", "record_obj", "TraceSession", "for_machine"]
