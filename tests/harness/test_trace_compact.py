"""Compact trace records (devmodel/trace.py `CompactLog`, `PayloadGroup`; harness/trace/compact.py; `tt_render` in
harness/native/tlbi_trap.c): the bytes are the Python templates' whatever the values, the order of records is
kept around other events, the native delivery's groups give what the Python hooks give record by record, and a
run that stops in the middle of a batch keeps its trace so far."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from devmodel.trace import Payload, PayloadGroup, Tracer
from harness import native
from harness.build import build_guest
from harness.cli import main
from harness.trace import compact
from harness.trace.catalog import load_all
from harness.trace.sinks import JsonlSink, TextSink
from harness.trap import NATIVE_RECORDS

from trap_paths import PATHS, native_expected, use_path

load_all()
LOOP = Path(__file__).resolve().parents[2] / "tools" / "benches" / "tlbi_loop.S"


@pytest.fixture
def lib():
    got = native.tlbi_trap()
    if got is None:
        if native_expected():
            pytest.fail(f"native helper not built here: {native.status()}")
        pytest.skip(f"native helper unavailable: {native.status()}")
    return got


# dynamic values the C text must spell as Python does: zero, negatives, the int64 limits, beyond 64 bits (the
# Python template), and values the log refuses (None, bools, strings: the ordinary path)
VALUES = (0, 7, -5, 123456789012, (1 << 63) - 1, -(1 << 63), 1 << 70, None, True, "x y", 0x40080000)


def _emit_all(tr: Tracer, where: list) -> None:
    """Every kind of emission: payloads anchored or not (cpu/pc from where()), with decimal and hex holes,
    groups, and a field-by-field event between them."""
    hexed = tr.payload("tlbi_trap", ("xt", "addr"), cpu=0, pc=0x1000, el=1, op="VAE1IS", xt=0, addr=0,
                       broadcast=True)
    dvm = tr.payload("dvm_tlbi", ("msg", "addr"), src='a"b', dst="x y", op="VAE1IS", vmid=None, asid=42, addr=0,
                     size=4096, leaf=True, stage="S1", regime="EL1&0", msg=None)
    dsb = tr.payload("tlbi_dsb", cpu=1, pc=0x2000, domain="ISH", full=True)
    sync = tr.payload("dvm_sync", ("msg",), src="vm0.cpu0", acks=1, msg=None, acked="vm0.cpu1")
    group = PayloadGroup([dsb, sync])
    for i, v in enumerate(VALUES):
        where[0] = (i % 2, 0x3000 + 4 * (i % 3))
        tr.emit_payload(hexed, v, i)
        tr.emit_payload(dvm, i, v)
        tr.emit_payload(dsb)
        tr.emit_group(group, v)
        if i == 4:
            tr.emit("psci_call", cpu=1, fid=0xC4000003, name="CPU_ON", args=(1, 2, 3), ret=0)
        tr.emit_group(PayloadGroup([dvm, sync]), v, i, 2 * i)


@pytest.mark.parametrize("cls", [JsonlSink, TextSink])
def test_compact_file_is_the_bytes_of_the_python_templates(cls, lib, tmp_path):
    """The same emissions to a file of the sink's own (compact records, formatted in C) and to a stream
    (Python templates, record by record): the same text."""
    out = {}
    for tag in ("compact", "python"):
        where = [None]
        tr = Tracer("tlbi*,dvm*,psci*")
        tr.clock = lambda: 16
        path = tmp_path / f"{tag}.out"
        stream = io.StringIO()
        sink = cls(path if tag == "compact" else stream, where=lambda: where[0])
        tr.add_sink(sink)
        _emit_all(tr, where)
        if tag == "compact":
            assert tr.compact is not None and len(sink._writer.index) >= 4      # the compact path did run
        sink.close()
        out[tag] = path.read_text() if tag == "compact" else stream.getvalue()
    assert out["compact"].count("\n") > 5 * len(VALUES) and out["compact"] == out["python"]


def test_writer_text_of_hex_and_decimal_holes(lib):
    """`tt_render` alone: every hole kind, against Python's str() and %#x."""
    w = compact.CompactWriter(lib)
    tid = w.add(["<", "|", "|", "|", ">\n"], ["seq", "ts", 0, 1], [False, True], lambda s, t, v: "")
    got = []
    vals = (0, 1, -1, 255, -(1 << 63), (1 << 63) - 1)
    w.render([x for i, v in enumerate(vals) for x in (tid, i, 10 * i, v, v)], got.append)
    assert b"".join(bytes(g) for g in got).decode() == "".join(f"<{i}|{10 * i}|{v}|{v:#x}>\n"
                                                              for i, v in enumerate(vals))


def test_templates_added_between_renders(lib):
    """Templates keep coming after records were rendered (a guest invalidating page by page: one per new Xt):
    the blob the C code read is released after each render, and every template's text stays right."""
    w = compact.CompactWriter(lib)
    got = []
    for i in range(300):
        tid = w.add([f"t{i}=", "\n"], [0], [i % 2 == 1], lambda s, t, v: "")
        w.render([tid, 1, 0, i], lambda b: got.append(bytes(b)))    # (b is a view of the writer's buffer)
    assert b"".join(got).decode() == "".join(f"t{i}={i:#x}\n" if i % 2 else f"t{i}={i}\n"
                                                              for i in range(300))


def test_unknown_template_number_is_an_error_not_a_crash(lib):
    w = compact.CompactWriter(lib)
    w.add(["a", "\n"], ["seq"], [], lambda s, t, v: "")
    with pytest.raises(ValueError, match="no template"):
        w.render([5, 1, 0], lambda b: None)


def _loop_elf() -> str:
    return str(build_guest([LOOP], name="bench_tlbi_loop").path)


@pytest.mark.parametrize("fmt", ["jsonl", "text"])
def test_budget_mid_loop_same_trace_on_both_paths(fmt, tmp_path, monkeypatch, capsys):
    """The bench loop (TLBI VAE1IS + DSB ISH, 2 vCPUs) stopped by --max-insns in the middle of a native batch:
    both paths write the same complete lines, and the native one did use compact groups."""
    groups = []
    orig = Tracer.compact_id
    monkeypatch.setattr(Tracer, "compact_id", lambda self, g: groups.append(orig(self, g)) or groups[-1])
    out = {}
    for path in PATHS:
        use_path(monkeypatch, path)
        f = tmp_path / f"{path}.{fmt}"
        code = main(["run", _loop_elf(), "--cpus", "2", "--max-insns", "20003", "--trace", str(f),
                     "--trace-format", fmt, "--trace-events", "tlbi*,dvm*"])
        assert code != 0, "the budget ends the run"
        capsys.readouterr()
        out[path] = f.read_bytes()
    assert groups and all(isinstance(g, int) for g in groups)
    lines = out["native"].split(b"\n")
    assert lines[-1] == b"" and len(lines) > 10_000
    assert out["native"] == out["python"]
    if fmt == "jsonl":
        seqs = [json.loads(x)["seq"] for x in lines[:-1]]
        assert seqs == list(range(1, len(seqs) + 1))


def _interrupted_trace(path: Path, at: int, monkeypatch, capsys) -> str:
    """The bench loop's jsonl trace when Ctrl-C comes at its `at`th DVM Sync (exit 130); the native path hands
    the Syncs of a batch to the receivers at once (`Interconnect.sync_repeat`): there it comes then."""
    from devmodel.dvm import Interconnect

    calls = []
    orig, orig_repeat = Interconnect.sync, Interconnect.sync_repeat

    def sync(self, source, trace=True):
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt
        return orig(self, source, trace)

    def sync_repeat(self, source, n):
        calls.extend([1] * n)
        if len(calls) >= at:
            raise KeyboardInterrupt
        return orig_repeat(self, source, n)

    monkeypatch.setattr(Interconnect, "sync", sync)
    monkeypatch.setattr(Interconnect, "sync_repeat", sync_repeat)
    capsys.readouterr()
    assert main(["run", _loop_elf(), "--cpus", "2", "--trace", str(path), "--trace-events", "tlbi*,dvm*"]) == 130
    assert "interrupted" in capsys.readouterr().err
    return path.read_text()


@pytest.mark.parametrize("path", PATHS)
def test_interrupt_keeps_the_trace_so_far(path, tmp_path, monkeypatch, capsys):
    """Ctrl-C in the middle of the loop (at the 3000th DVM Sync): exit 130 and a trace of whole lines, valid
    JSON, seq without gaps, up to the interrupted iteration (native: the end of its batch, whose records are in
    the log before the receivers get them), the bytes of a run interrupted later up to there."""
    use_path(monkeypatch, path)
    later = _interrupted_trace(tmp_path / "later.jsonl", 3000 + NATIVE_RECORDS, monkeypatch, capsys)
    text = _interrupted_trace(tmp_path / "t.jsonl", 3000, monkeypatch, capsys)
    assert text.endswith("\n")
    recs = [json.loads(x) for x in text.splitlines()]
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    assert 4 * 2999 <= len(recs) <= 4 * (3000 if path == "python" else 3000 + NATIVE_RECORDS // 2)
    assert [r["event"] for r in recs[:4]] == ["tlbi_trap", "dvm_tlbi", "tlbi_dsb", "dvm_sync"]
    assert len(later) > len(text) and later.startswith(text)


def test_group_takes_its_members_values():
    tr = Tracer("dvm_sync")
    p = tr.payload("dvm_sync", ("msg",), src="a", acks=1, msg=None, acked="b")
    with pytest.raises(ValueError, match="1 values given, its members take 2"):
        tr.emit_group(PayloadGroup([p, p]), 1)


def test_log_refuses_what_it_cannot_hold(lib, tmp_path):
    """A bool, None, a string, an int beyond 64 bits as a dynamic value: not kept as an int (the ordinary path
    or the Python template formats it), so JSON true stays true."""
    tr = Tracer("dvm_sync")
    tr.clock = lambda: 0
    sink = JsonlSink(tmp_path / "t.jsonl")
    tr.add_sink(sink)
    p = tr.payload("dvm_sync", ("msg",), src="a", acks=1, msg=None, acked="b")
    for v in (True, None, "s", 1 << 64, 3):
        tr.emit_payload(p, v)
    sink.close()
    msgs = [json.loads(x)["msg"] for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert msgs == [True, None, "s", 1 << 64, 3] and msgs[0] is True


def test_records_after_close_are_dropped(lib, tmp_path):
    tr = Tracer("dvm_sync")
    sink = JsonlSink(tmp_path / "t.jsonl")
    tr.add_sink(sink)
    p = tr.payload("dvm_sync", ("msg",), src="a", acks=1, msg=None, acked="b")
    tr.emit_payload(p, 1)
    tr.emit_payload(p, 2)
    sink.close()
    for i in range(10):
        tr.emit_payload(p, 3 + i)
    assert not sink.compact.data
    assert (tmp_path / "t.jsonl").read_text().count("\n") == 2


# --- compact records made in C (harness/trap.py `_deliver_cx`, tlbi_trap.c `tt_cx_run`) ---------------------

def _mixed_code(rounds: int, times: int) -> bytes:
    """Two loops of `rounds` rounds of TLBIs and DSBs, run `times` times each: broadcast ones (VAE1IS with three
    Xt values, VMALLE1IS) and the Outer Shareable form Unicorn lacks (the hook flushes the TLB itself); the
    second loop adds local TLBIs (at EL1 with HCR_EL2.FB=0), a DSB NSH and a DSB ISH after a local TLBI alone
    (neither sends a DVM Sync). Then SYSTEM_OFF."""
    from devmodel.tlbi import encoding, sys_word

    mov = lambda rd, v: [0xD2800000 | ((v & 0xFFFF) << 5) | rd, 0xF2A00000 | (((v >> 16) & 0xFFFF) << 5) | rd]
    words = mov(1, 0x40080) + mov(2, 0x2A0000) + mov(3, 0x7)
    dsb_ish, dsb_nsh = 0xD5033B9F, 0xD503379F
    for local in (False, True):
        words += mov(4, times)
        loop = len(words)
        for i in range(rounds):
            words.append(sys_word(*encoding("VAE1IS"), rt=1 + i % 3))
            if i % 5 == 0:
                words.append(sys_word(*encoding("VAE1OS"), rt=2))
            if local and i % 7 == 0:
                words += [sys_word(*encoding("VAE1"), rt=1), dsb_nsh]
            if i % 11 == 0:
                words.append(sys_word(*encoding("VMALLE1IS"), rt=31))
            words.append(dsb_ish)
            if local and i % 7 == 3:
                words += [sys_word(*encoding("VAE1"), rt=3), dsb_ish]     # completes nothing remote: no Sync
        words.append(0xF1000484)                              # subs x4, x4, #1
        words.append(0x54000001 | (((loop - len(words)) & 0x7FFFF) << 5))    # b.ne loop
    words += mov(0, 0x84000008) + [0xD4000002]                # PSCI SYSTEM_OFF by HVC #0
    return b"".join(w.to_bytes(4, "little") for w in words)


def _run_mixed(tmp_path: Path, tag: str, fmt: str | None, code: bytes | None = None) -> tuple[bytes, tuple]:
    """`code` (default: the mixed loops) on a 3-vCPU VM traced to a file of the sink's own (`fmt` None:
    untraced): (the file, every DVM counter)."""
    from devmodel.trace import Tracer as _Tracer
    from harness.machine import Machine
    from harness.trap import TlbiTrap

    m = Machine(tracer=_Tracer(events="tlbi*,dvm*" if fmt else None), console=lambda vm, d, s: None)
    trap = TlbiTrap(m.interconnect, m.tracer)
    m.add_plugin(trap)
    f = tmp_path / f"{tag}.{fmt}"
    sink = (JsonlSink if fmt in ("jsonl", None) else TextSink)(f, where=trap.where)
    if fmt is not None:
        m.tracer.add_sink(sink)
    vm = m.add_vm(ncpus=3, vmid=5)
    vm.load_code(0x4008_0000, _mixed_code(12, 300) if code is None else code)
    for v in vm.vcpus:
        v.hcr_fb = False                                      # TLBI VAE1 stays local
    out = m.run(max_insns=200_000)
    sink.close()
    assert out.exit_code == 0, out.message
    ic = m.interconnect
    parts = tuple((c.part.received, c.part.flushes, c.part.dirty, c.vcpu.tlb_flushes, c.traps, c.pending)
                  for c in trap.cpus)
    return f.read_bytes(), (ic.tlbis, ic.syncs, ic.msgs, m.tracer.seq, parts)


@pytest.mark.parametrize("fmt", ["jsonl", "text"])
def test_c_records_are_the_python_loops(fmt, tmp_path, monkeypatch):
    """Batches of TLBIs and DSBs, local ones among them: the records C makes (and the receivers handed each
    plan's count at once) give the bytes and every counter of the Python loop over the same native records
    (receivers not repeatable), and of the pure-Python trap; also when some plans go to Python's traced steps
    in the middle of a C batch (here: the log is made to refuse a DSB NSH's record)."""
    from devmodel.dvm import Interconnect
    from harness.trap import TlbiTrap, VcpuParticipant

    repeats, traced = [], []
    orig, orig_id, orig_traced = Interconnect.tlbi_repeat, Tracer.compact_id, TlbiTrap._traced_record
    monkeypatch.setattr(Interconnect, "tlbi_repeat",
                        lambda self, op, src, n: repeats.append(n) or orig(self, op, src, n))
    monkeypatch.setattr(TlbiTrap, "_traced_record",
                        lambda self, *a: traced.append(1) or orig_traced(self, *a))
    got = {}
    for tag in ("cx", "cx+python", "loop", "python"):
        use_path(monkeypatch, "python" if tag == "python" else "native")
        monkeypatch.setattr(VcpuParticipant, "dvm_repeatable", tag.startswith("cx"))
        refuse = tag == "cx+python"
        monkeypatch.setattr(Tracer, "compact_id", lambda self, g: None if refuse and g.members[0].event == "tlbi_dsb"
                            and len(g.members) == 1 else orig_id(self, g))
        before, traced_before = len(repeats), len(traced)
        got[tag] = _run_mixed(tmp_path, tag, fmt)
        assert (len(repeats) > before) is tag.startswith("cx")       # the C records ran, and only there
        if tag.startswith("cx"):
            assert (len(traced) > traced_before) is refuse            # Python's steps in between, only there
    assert max(repeats) > 100                                       # a plan met many times in one batch
    text, counters = got["cx"]
    assert text.count(b"\n") > 10_000 and counters[0] > 3000
    assert b'"op":"VAE1","xt":' in text and b'"domain":"NSH"' in text if fmt == "jsonl" else b"op=VAE1 " in text
    assert got["cx+python"] == got["cx"] and got["loop"] == got["cx"] and got["python"] == got["cx"]


def test_more_plans_than_the_c_table_holds(tmp_path, monkeypatch):
    """TLBI VAE1IS page by page, 7000 pages (a new Xt, so a new plan, each time: past the first batch, traced
    before the log is wired, the C table of 4096 starts again): the bytes and counters of the pure-Python
    trap; untraced, with receivers that say they read the address, the same."""
    from devmodel.tlbi import encoding, sys_word
    from harness.trap import VcpuParticipant, _Cx

    mov = lambda rd, v: [0xD2800000 | ((v & 0xFFFF) << 5) | rd, 0xF2A00000 | (((v >> 16) & 0xFFFF) << 5) | rd]
    words = mov(1, 0x40080) + mov(4, 7000) + [sys_word(*encoding("VAE1IS"), rt=1), 0xD5033B9F,
                                               0x91000421,                    # add x1, x1, #1
                                               0xF1000484, 0x54FFFF81]        # subs x4, x4, #1; b.ne loop
    code = b"".join(w.to_bytes(4, "little") for w in words + mov(0, 0x84000008) + [0xD4000002])
    clears = []
    orig = _Cx.clear
    monkeypatch.setattr(_Cx, "clear", lambda self: clears.append(len(self.plans)) or orig(self))
    got = {}
    for path in PATHS:
        use_path(monkeypatch, path)
        got[path] = _run_mixed(tmp_path, path, "jsonl", code)
    assert _Cx.CAP in clears                                  # the full table started again
    assert got["native"][0].count(b"\n") == 5 * 7000 and got["native"] == got["python"]    # 2 dvm_tlbi each
    clears.clear()
    monkeypatch.setattr(VcpuParticipant, "addressless", False)   # untraced plans keyed by Xt too: 7000 of them
    untraced = {}
    for path in PATHS:
        use_path(monkeypatch, path)
        untraced[path] = _run_mixed(tmp_path, f"u{path}", None, code)[1]
    assert _Cx.CAP in clears and untraced["native"] == untraced["python"] and untraced["native"][0] == 7000


def _spy_repeats(monkeypatch) -> list:
    """Record each `tlbi_repeat`/`sync_repeat` as ("tlbi" or "sync", count)."""
    from devmodel.dvm import Interconnect

    calls: list = []
    tlbi, sync = Interconnect.tlbi_repeat, Interconnect.sync_repeat
    monkeypatch.setattr(Interconnect, "tlbi_repeat",
                        lambda self, op, src, n: calls.append(("tlbi", n)) or tlbi(self, op, src, n))
    monkeypatch.setattr(Interconnect, "sync_repeat", lambda self, src, n: calls.append(("sync", n)) or sync(self, src, n))
    return calls


def test_untraced_batches_are_the_calls_one_by_one(tmp_path, monkeypatch):
    """Untraced, the mixed loops (local TLBIs, DSB NSH, a DSB after a local TLBI alone, the OS form the hook
    flushes for): the counts C makes for a batch (`_deliver_ux`, handed to the receivers once per plan) give
    every DVM counter, message number, flush, dirty flag, trap count and `pending` of the per-record loop over
    the same native records (receivers not repeatable) and of the pure-Python trap."""
    from harness.trap import VcpuParticipant

    calls = _spy_repeats(monkeypatch)
    got = {}
    for tag in ("ux", "loop", "python"):
        use_path(monkeypatch, "python" if tag == "python" else "native")
        monkeypatch.setattr(VcpuParticipant, "dvm_repeatable", tag == "ux")
        before = len(calls)
        got[tag] = _run_mixed(tmp_path, tag, None)[1]
        assert (len(calls) > before) is (tag == "ux")          # the batched path ran, and only there
    assert max(n for _k, n in calls) > 100 and {k for k, _n in calls} == {"tlbi", "sync"}
    assert got["ux"][0] > 3000 and got["ux"][3] == 0           # TLBIs sent; nothing traced
    assert got["ux"] == got["loop"] == got["python"]


@pytest.mark.parametrize("path", ["ux", "loop", "python"])
def test_untraced_vmid_and_configure_between_deliveries(path, monkeypatch):
    """The same native records delivered untraced three times: with VMID 5, then VMID 6 (the receiver, of VMID
    5, ignores those: plans hold the VMID), then with VMID 6 after HCR_EL2.FB=0 (`configure` drops the plans:
    TLBI VAE1 at EL1 is local, no message, no Sync): the counters of the three paths."""
    from unicorn import UC_ARCH_ARM64, UC_MODE_ARM, Uc
    from unicorn.arm64_const import UC_ARM64_REG_X0

    from devmodel.dvm import Interconnect
    from devmodel.tlbi import encoding, sys_word
    from harness.trap import TlbiTrap, VcpuParticipant

    use_path(monkeypatch, "python" if path == "python" else "native")
    monkeypatch.setattr(VcpuParticipant, "dvm_repeatable", path == "ux")
    calls = _spy_repeats(monkeypatch)
    trap = TlbiTrap(Interconnect(), hcr_fb=True)
    code = b"".join(w.to_bytes(4, "little") for w in [sys_word(*encoding("VAE1"), rt=0), 0xD5033B9F] * 3)
    vmids = [5, 5]
    ucs = [Uc(UC_ARCH_ARM64, UC_MODE_ARM) for _ in range(2)]
    for i, uc in enumerate(ucs):
        uc.mem_map(0x4000_0000, 0x10000)
        uc.mem_write(0x4000_0000, code)
        uc.cpr_write(3, 6, 1, 1, 0, 0x500)                    # SCR_EL3 = RW | HCE
        trap.add_cpu(uc, i, lambda i=i: vmids[i])
    trap.install_barriers([(0x4000_0000, code)])
    ic, seen = trap.interconnect, []
    for run in range(3):
        vmids[0] = 5 if run == 0 else 6
        if run == 2:
            trap.cpu(0).configure(hcr_fb=False)
        ucs[0].reg_write(UC_ARM64_REG_X0, 0x40080)
        ucs[0].emu_start(0x4000_0000, 0x4000_0000 + len(code))
        trap.deliver()
        rx = trap.cpu(1).part
        seen.append((ic.tlbis, ic.syncs, ic.msgs, rx.received, rx.flushes, trap.cpu(0).traps, trap.cpu(0).pending))
    assert seen == [(3, 3, 6, 3, 3, 3, False), (6, 6, 12, 6, 3, 6, False), (6, 6, 12, 6, 3, 9, False)]
    assert bool(calls) is (path == "ux")


@pytest.mark.parametrize("lazy, running, vmid", [(True, False, 5), (False, True, 5), (True, True, 5),
                                                 (False, True, 6)])
def test_repeat_is_n_deliveries(lazy, running, vmid):
    """`Interconnect.tlbi_repeat`/`sync_repeat` to vCPU receivers (lazy or flushing at once, of the op's VMID or
    not): the counters and receiver state of `n` separate deliveries."""
    from unicorn import UC_ARCH_ARM64, UC_MODE_ARM, Uc

    from devmodel.dvm import Interconnect
    from devmodel.tlbi import decode
    from devmodel.tlbi_types import DecodeContext
    from harness.trap import VcpuParticipant

    op = decode(0, 8, 3, 1, 0x2A00000040080, DecodeContext(el=1, vmid=5))       # TLBI VAE1IS
    state = []
    for repeat in (False, True):
        ic = Interconnect()
        parts = [VcpuParticipant(Uc(UC_ARCH_ARM64, UC_MODE_ARM), i, lambda: vmid, lazy=lazy) for i in range(3)]
        for p in parts:
            p.running = running
            ic.attach(p)
        if repeat:
            ic.tlbi_repeat(op, parts[0], 7)
            ic.sync_repeat(parts[0], 7)
        else:
            for _ in range(7):
                ic.tlbi(op, parts[0], trace=False)
                ic.sync(parts[0], trace=False)
        state.append((ic.tlbis, ic.syncs, ic.msgs, [(p.received, p.flushes, p.dirty) for p in parts]))
    assert state[0] == state[1] and state[0][2] == 7 * 3


@pytest.mark.parametrize("path", PATHS)
def test_configure_drops_the_compact_plans(path, tmp_path, monkeypatch):
    """HCR_EL2.FB changed between two deliveries of the same records (`_Cpu.configure`): the compact plans hold
    decoded ops, so TLBI VAE1 at EL1 is traced as broadcast before and as local after, on both paths."""
    from unicorn import UC_ARCH_ARM64, UC_MODE_ARM, Uc
    from unicorn.arm64_const import UC_ARM64_REG_X0

    from devmodel.dvm import Interconnect
    from devmodel.tlbi import encoding, sys_word
    from harness.trap import TlbiTrap

    use_path(monkeypatch, path)
    tr = Tracer("tlbi_trap,tlbi_dsb,dvm*")
    tr.clock = lambda: 0
    trap = TlbiTrap(Interconnect(tr), tr, hcr_fb=True)
    f = tmp_path / "t.jsonl"
    tr.add_sink(JsonlSink(f, where=trap.where))
    code = b"".join(w.to_bytes(4, "little") for w in [sys_word(*encoding("VAE1"), rt=0), 0xD5033B9F] * 3)
    ucs = [Uc(UC_ARCH_ARM64, UC_MODE_ARM) for _ in range(2)]
    for i, uc in enumerate(ucs):
        uc.mem_map(0x4000_0000, 0x10000)
        uc.mem_write(0x4000_0000, code)
        uc.cpr_write(3, 6, 1, 1, 0, 0x500)                    # SCR_EL3 = RW | HCE
        trap.add_cpu(uc, i, lambda: 5)
    trap.install_barriers([(0x4000_0000, code)])
    for run in range(3):                                      # the first one wires the compact log
        if run == 2:
            trap.cpu(0).configure(hcr_fb=False)
        ucs[0].reg_write(UC_ARM64_REG_X0, 0x40080)
        ucs[0].emu_start(0x4000_0000, 0x4000_0000 + len(code))
        trap.deliver()
    tr.close()
    recs = [json.loads(x) for x in f.read_text().splitlines()]
    traps = [r["broadcast"] for r in recs if r["event"] == "tlbi_trap"]
    assert traps == [True] * 6 + [False] * 3
    assert [r["event"] for r in recs].count("dvm_sync") == 6 and trap.interconnect.syncs == 6


# --- the writer thread (harness/trace/compact.py `submit`) --------------------------------------------------

@pytest.fixture
def slow_writer(monkeypatch):
    """Small compact logs (every few hundred records a packed log goes to the writer thread) and a thread that
    takes 5 ms a log, so that exits come while it holds one. Returns the sizes of the logs the thread took."""
    import threading
    import time

    from devmodel.trace import CompactLog

    init, render = CompactLog.__init__, compact.CompactWriter._render
    jobs: list[int] = []

    def small(self, *a, **k):
        init(self, *a, **k)
        self.limit = 2000

    def slow(self, data, write):
        if threading.current_thread() is not threading.main_thread():
            jobs.append(len(data))
            time.sleep(0.005)
        return render(self, data, write)

    monkeypatch.setattr(CompactLog, "__init__", small)
    monkeypatch.setattr(compact.CompactWriter, "_render", slow)
    return jobs


def _cycles(text: str) -> list[dict]:
    """The records of a tlbi-loop trace, checked: whole lines, seq without gaps, whole iterations."""
    assert text.endswith("\n")
    recs = [json.loads(x) for x in text.splitlines()]
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    assert [r["event"] for r in recs] == ["tlbi_trap", "dvm_tlbi", "tlbi_dsb", "dvm_sync"] * (len(recs) // 4)
    return recs


@pytest.mark.parametrize("fmt", ["jsonl", "text"])
def test_writer_thread_budget_same_bytes(fmt, slow_writer, tmp_path, monkeypatch, capsys):
    """The budget ends the bench loop while the writer thread renders: the bytes of the pure-Python trap."""
    out = {}
    for path in PATHS:
        use_path(monkeypatch, path)
        f = tmp_path / f"{path}.{fmt}"
        assert main(["run", _loop_elf(), "--cpus", "2", "--max-insns", "20003", "--trace", str(f),
                     "--trace-format", fmt, "--trace-events", "tlbi*,dvm*"]) == 124
        out[path] = f.read_bytes()
    capsys.readouterr()
    assert len(slow_writer) >= 2 and out["native"].count(b"\n") > 10_000 and out["native"] == out["python"]


def test_writer_thread_interrupt_keeps_the_trace(slow_writer, tmp_path, monkeypatch, capsys):
    """Ctrl-C (exit 130) while the writer thread holds a log: whole iterations, and the bytes of a run
    interrupted later, up to there."""
    use_path(monkeypatch, "native")
    got = []
    for at in (6000, 6000 + NATIVE_RECORDS):
        before = len(slow_writer)
        with pytest.MonkeyPatch.context() as mp:             # each run its own Ctrl-C counter
            got.append(_interrupted_trace(tmp_path / f"{at}.jsonl", at, mp, capsys))
        assert len(slow_writer) - before >= 2
    text, later = got
    assert len(_cycles(text)) >= 4 * 5999 and later.startswith(text) and len(later) > len(text)


def test_writer_thread_timeout_keeps_the_trace(slow_writer, tmp_path, monkeypatch, capsys):
    """--timeout (124) while the writer thread holds a log: whole iterations."""
    import threading
    import time

    use_path(monkeypatch, "native")
    render = compact.CompactWriter._render                   # slower still: a smaller file to read back

    def slower(self, data, write):
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.05)
        return render(self, data, write)

    monkeypatch.setattr(compact.CompactWriter, "_render", slower)
    before, f = len(slow_writer), tmp_path / "timeout.jsonl"
    code = main(["run", _loop_elf(), "--cpus", "2", "--timeout", "0.3", "--trace", str(f), "--trace-events",
                 "tlbi*,dvm*"])
    assert code == 124, capsys.readouterr().err
    assert len(_cycles(f.read_text())) > 1000 and len(slow_writer) > before


def test_writer_thread_fault_keeps_the_trace(slow_writer, tmp_path, monkeypatch):
    """A guest that dies of an abort after 20,000 TLBI+DSB iterations (a load from an address with nothing
    there) while the writer thread holds a log: every iteration's lines, the bytes of the pure-Python trap."""
    from devmodel.tlbi import encoding, sys_word
    from devmodel.trace import Tracer as _Tracer
    from harness.machine import Machine
    from harness.trap import TlbiTrap

    mov = lambda rd, v: [0xD2800000 | ((v & 0xFFFF) << 5) | rd, 0xF2A00000 | (((v >> 16) & 0xFFFF) << 5) | rd]
    words = mov(1, 0x40080) + mov(4, 20_000) + [sys_word(*encoding("VAE1IS"), rt=1), 0xD5033B9F,
                                                 0xF1000484, 0x54FFFFA1]        # subs x4, x4, #1; b.ne loop
    words += mov(5, 0x7FF0_0000) + [0xF94000A0]                # ldr x0, [x5]: far outside RAM and devices
    code = b"".join(w.to_bytes(4, "little") for w in words)
    out = {}
    for path in PATHS:
        use_path(monkeypatch, path)
        m = Machine(tracer=_Tracer(events="tlbi*,dvm*"), console=lambda vm, d, s: None)
        trap = TlbiTrap(m.interconnect, m.tracer)
        m.add_plugin(trap)
        sink = JsonlSink(tmp_path / f"{path}.jsonl", where=trap.where)
        m.tracer.add_sink(sink)
        vm = m.add_vm(ncpus=2, vmid=5)
        vm.load_code(0x4008_0000, code)
        outcome = m.run(max_insns=1_000_000)
        sink.close()
        assert outcome.exit_code == 139, outcome.message
        out[path] = (tmp_path / f"{path}.jsonl").read_text()
    assert len(slow_writer) >= 5 and len(_cycles(out["native"])) == 4 * 20_000 and out["native"] == out["python"]


_ENOSPC_LINE = ("smmu-harness: internal error: OSError: [Errno 28] No space left on device "
                "(SMMU_HARNESS_DEBUG=1 for a traceback)\n")


@pytest.mark.parametrize("path", PATHS)
def test_full_disk_is_one_line(path, monkeypatch, capsys):
    """A trace to /dev/full: the one-line error and exit status 125 on both paths."""
    use_path(monkeypatch, path)
    capsys.readouterr()
    assert main(["run", _loop_elf(), "--cpus", "2", "--max-insns", "200000", "--trace", "/dev/full",
                 "--trace-events", "tlbi*,dvm*"]) == 125
    assert capsys.readouterr().err == _ENOSPC_LINE


def test_write_error_in_the_thread_is_the_runs_error(slow_writer, tmp_path, monkeypatch, capsys):
    """A write that fails on the writer thread (a full disk): raised on the guest's thread at the next hand-over,
    the same one line and exit status as a write error there."""
    import errno
    import threading

    render, failed = compact.CompactWriter._render, []

    def full(self, data, write):
        if threading.current_thread() is not threading.main_thread():
            failed.append(1)
            raise OSError(errno.ENOSPC, "No space left on device")
        return render(self, data, write)

    monkeypatch.setattr(compact.CompactWriter, "_render", full)
    use_path(monkeypatch, "native")
    capsys.readouterr()
    assert main(["run", _loop_elf(), "--cpus", "2", "--max-insns", "200000", "--trace", str(tmp_path / "t.jsonl"),
                 "--trace-events", "tlbi*,dvm*"]) == 125
    assert failed and capsys.readouterr().err == _ENOSPC_LINE
    assert not [t for t in threading.enumerate() if t.name == "trace-writer"]       # joined at close


def test_template_added_while_the_thread_renders(lib):
    """`add` while the thread holds a log (its write blocked for 0.2 s): it waits for the log, then the bytes of
    both templates are right, in hand-over order; `stop` joins the thread."""
    import threading
    from array import array
    from types import SimpleNamespace

    w = compact.CompactWriter(lib)
    t0 = w.add(["a=", "\n"], [0], [False], lambda s, t, v: "")
    go, got, order = threading.Event(), [], []

    def write(b):
        go.wait(5)
        got.append(bytes(b))
        order.append("written")

    threading.Timer(0.2, go.set).start()
    log = SimpleNamespace(packed=array("q", [t0, 1, 0, 7] * 1000))
    w.submit(log, write)
    assert len(log.packed) == 0                               # given away
    t1 = w.add(["b=", "\n"], [0], [True], lambda s, t, v: "")
    order.append("added")
    w.submit(SimpleNamespace(packed=array("q", [t1, 2, 0, 255, t0, 3, 0, 8])), write)
    assert w.stop() == 1002 and order[:2] == ["written", "added"]
    assert b"".join(got) == b"a=7\n" * 1000 + b"b=0xff\na=8\n"
    assert not [t for t in threading.enumerate() if t.name == "trace-writer"]


def test_thread_error_raised_once_by_settle(lib):
    from array import array
    from types import SimpleNamespace

    w = compact.CompactWriter(lib)
    tid = w.add(["a", "\n"], ["seq"], [], lambda s, t, v: "")
    err = OSError(28, "No space left on device")

    def fail(b):
        raise err

    w.submit(SimpleNamespace(packed=array("q", [tid, 1, 0])), fail)
    with pytest.raises(OSError) as got:
        w.settle()
    assert got.value is err and w.settle() == 0 and w.stop() == 0


def test_no_log_written_after_the_threads_write_error(lib):
    """A log handed over after one whose write failed (its error not yet settled) is not written: the file
    holds no bytes past a gap, as a synchronous render raising at the failed write would leave it."""
    from array import array
    from types import SimpleNamespace

    w = compact.CompactWriter(lib)
    tid = w.add(["a", "\n"], ["seq"], [], lambda s, t, v: "")
    got, calls = [], []

    def flaky(b):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        got.append(bytes(b))

    w.submit(SimpleNamespace(packed=array("q", [tid, 1, 0])), flaky)
    w.submit(SimpleNamespace(packed=array("q", [tid, 2, 0])), flaky)
    with pytest.raises(OSError):
        w.settle()
    assert got == [] and w.stop() == 0


def test_interpreter_exit_writes_the_threads_log(lib, tmp_path):
    """A sink never closed, its last log on the writer thread (slow) at exit: the file is complete (atexit)."""
    import subprocess
    import sys

    script = f"""
import time
from array import array
import devmodel.dvm  # defines dvm_sync
from devmodel.trace import Tracer
from harness.trace import compact
from harness.trace.sinks import JsonlSink
render = compact.CompactWriter._render
compact.CompactWriter._render = lambda self, d, w: time.sleep(0.2) or render(self, d, w)
tr = Tracer("dvm_sync")
tr.clock = lambda: 0
sink = JsonlSink({str(tmp_path / 't.jsonl')!r})
tr.add_sink(sink)
p = tr.payload("dvm_sync", ("msg",), src="a", acks=1, msg=None, acked="b")
tr.emit_payload(p, 1)
tr.emit_payload(p, 2)                                 # the first one wires the compact log
tid = sink.compact.tids[p]
sink.compact.add_packed(array("q", [x for s in range(3, 30003) for x in (tid, s, 0, s)]).tobytes())
assert sink._writer._thread is not None
"""
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", script], check=True, cwd=root, timeout=60)
    lines = (tmp_path / "t.jsonl").read_text().splitlines()
    assert [json.loads(x)["msg"] for x in lines] == list(range(1, 30003))
