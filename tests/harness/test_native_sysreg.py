"""The native MRS prefilter (harness/native/sysreg.c via harness/sysregs.py): counter samples answered in C
while the clock is lent give the pure-Python path's values, clock and statistics; everything else still
reaches the Python handlers; without the library the Python hook runs."""
from __future__ import annotations

import struct

import pytest
from unicorn.arm64_const import UC_ARM64_REG_X19, UC_ARM64_REG_X20, UC_ARM64_REG_X21, UC_ARM64_REG_X22

from devmodel.trace import ListSink, Tracer
from guestbin import guest_elf
from harness import native
from harness.elfload import load_elf
from harness.machine import DEFAULT_RAM_IPA, Machine
from harness.native import sysreg
from harness.sysregs import SysregHooks

pytestmark = pytest.mark.skipif(sysreg.library() is None, reason=f"native MRS hook: {sysreg.status()}")


def _run(name: str, patch: dict[str, int], monkeypatch, *, python: bool, cpus: int = 1):
    """Run guest `name` with the native hook (python=False) or the Python one; counts the MRS accesses that
    reached Python handlers."""
    calls = [0]
    on_mrs = SysregHooks._on_mrs

    def counted(self, *a):
        calls[0] += 1
        return on_mrs(self, *a)
    with monkeypatch.context() as mp:
        mp.setattr(SysregHooks, "_on_mrs", counted)
        if python:
            mp.setenv(native.ENV, "0")
        img = load_elf(str(guest_elf(name)))
        sink = ListSink()
        m = Machine(tracer=Tracer(events="timer_output,vcpu_*,clock_warp", sinks=[sink]),
                    console=lambda vm, d, s: None)
        vm = m.add_vm(ncpus=cpus)
        vm.load(img)
        for sym, value in patch.items():
            vm.ipa.write64(img.symbol(sym), value)
        o = m.run(timeout=60)
    assert (vm.vcpus[0].sysregs.native is None) == python
    return m, vm, o, img, sink, calls[0]


def _state(m, vm, o, sink):
    return (o.exit_code, m.clock.now(), m.clock.samples, [v.sysregs.served for v in vm.vcpus],
            [v.slices for v in vm.vcpus], [(r.seq, r.event, r.ts, r.fields) for r in sink.records])


@pytest.mark.parametrize("n, gap", [(40, 3), (256, 0), (256, 700)])
def test_counter_reads_in_c_equal_the_python_path(monkeypatch, n, gap):
    runs = []
    for python in (False, True):
        m, vm, o, img, sink, calls = _run("timer_counts", {"n": n, "gap": gap}, monkeypatch, python=python)
        off = img.symbol("counts") - DEFAULT_RAM_IPA
        counts = struct.unpack(f"<{n}Q", bytes(vm.ram.buf[off:off + 8 * n]))
        runs.append((counts, _state(m, vm, o, sink), calls))
    (nat, nat_state, nat_calls), (py, py_state, py_calls) = runs
    assert nat == py and nat_state == py_state and nat_state[0] == 0
    assert py_calls >= n and nat_calls < py_calls // 2            # most samples never reached Python


def test_python_handlers_and_samples_interleave(monkeypatch):
    """timer_poll reads the counter and polls CNTV_CTL (a Python handler, itself a sample): the clock goes back
    to Python before each handler and the deadline is met at the same tick."""
    outs = []
    for python in (False, True):
        m, vm, o, _, sink, calls = _run("timer_poll", {"delta": 123_457}, monkeypatch, python=python)
        v = vm.vcpus[0]
        outs.append(([v.uc.reg_read(r) for r in (UC_ARM64_REG_X19, UC_ARM64_REG_X20, UC_ARM64_REG_X21,
                                                 UC_ARM64_REG_X22)], _state(m, vm, o, sink)))
    (t0, after, cval, _ctl), state = outs[0]
    assert outs[0] == outs[1] and state[0] == 0 and cval == t0 + 123_457 and after == cval + 16
    assert [(e, f["count"]) for _, e, _, f in state[5] if e == "timer_output"] == [("timer_output", cval)]


def test_without_the_library_the_python_hook_serves(monkeypatch):
    monkeypatch.setattr(sysreg, "_lib", None)
    monkeypatch.setattr(sysreg, "_status", "test: refused")
    img = load_elf(str(guest_elf("timer_counts")))
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm()
    vm.load(img)
    o = m.run(timeout=60)
    assert o.exit_code == 0 and vm.vcpus[0].sysregs.native is None and m.clock.native is None
    assert sysreg.status() == "test: refused"


def test_index_is_the_c_layout():
    assert sysreg.index((3, 3, 14, 0, 1)) == (1 << 14) | (3 << 11) | (14 << 7) | 1
    assert sysreg.index((2, 0, 0, 0, 0)) == 0 and sysreg.index((3, 7, 15, 15, 7)) == sysreg.ENCODINGS - 1
