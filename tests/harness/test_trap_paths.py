"""The native TLBI trap (harness/native/tlbi_trap.c: records made in C, delivered in batches) against the
pure-Python one: the same trace bytes for every golden guest of the catalogue and for the SMP remap samples,
the same DVM counts in the scenarios, delivery before an MMIO access that follows TLBI + DSB directly, a full
buffer, determinism, and the fallbacks (SMMU_HARNESS_NATIVE=0, no C compiler)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from devmodel.dmatest import CMD_READ64, DMATEST_BASE, DMATEST_SIZE, STATUS_DONE, STATUS_FAULT, DmaTestDevice
from devmodel.tlbi import encoding, sys_word
from devmodel.trace import ListSink, Tracer
from harness import native
from harness.build import GUEST_FW, build_test_guest
from harness.catalogue import parse_catalogue
from harness.cli import main
from harness.machine import Machine
from harness.pytest_plugin import run_entry
from harness.scenarios import SCENARIOS, run_scenario
from harness.trap import NATIVE_RECORDS, TlbiTrap
from trap_paths import PATHS, native_expected, use_path

GOLDEN = [e for e in parse_catalogue(GUEST_FW / "tests" / "unittests.cfg") if e.expect_trace is not None]
IPA = 0x4008_0000
DSB_ISH = 0xD5033B9F
HVC0, PSCI_SYSTEM_OFF = 0xD4000002, 0x84000008
ROOT = Path(__file__).resolve().parents[2]


def _mov(rd: int, v: int) -> list[int]:          # movz xd, #lo ; movk xd, #hi, lsl #16
    return [0xD2800000 | ((v & 0xFFFF) << 5) | rd, 0xF2A00000 | (((v >> 16) & 0xFFFF) << 5) | rd]


def _code(words: list[int]) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in words)


OFF = _mov(0, PSCI_SYSTEM_OFF) + [HVC0]


def test_golden_guests_have_entries():
    assert len(GOLDEN) >= 10


@pytest.mark.parametrize("entry", GOLDEN, ids=lambda e: e.name)
def test_golden_guest_traces_the_same_bytes_on_both_paths(entry, tmp_path, monkeypatch):
    """Each golden guest passes its golden on both paths, and the two jsonl traces are byte for byte equal."""
    out = {}
    for path in PATHS:
        use_path(monkeypatch, path)
        f = tmp_path / f"{path}.jsonl"
        r = run_entry(entry, trace_file=f)
        assert r.ok, (path, r.outcome.message, r.diff)
        out[path] = f.read_bytes()
    assert out["native"] and out["native"] == out["python"]


@pytest.mark.parametrize("fmt", ["jsonl", "text", "chrome"])
def test_smp_remap_sample_traces_the_same_on_both_paths(fmt, tmp_path, monkeypatch, capsys):
    """The SMP remap sample (4 vCPUs, every event) in each output format: the same bytes on both paths."""
    entry = next(e for e in GOLDEN if e.name == "smp_remap")
    out = {}
    for path in PATHS:
        use_path(monkeypatch, path)
        f = tmp_path / f"{path}.{fmt}"
        code = main(["run", str(build_test_guest(entry.source.stem)), "--cpus", str(entry.cpus), "--trace", str(f),
                     "--trace-format", fmt, "--trace-events", "*"])
        assert code == 0, capsys.readouterr().err
        out[path] = f.read_bytes()
    assert len(out["native"]) > 1000 and out["native"] == out["python"]


def test_native_run_is_deterministic(tmp_path, monkeypatch, capsys):
    """Two runs of the 4-vCPU sample on the native path give the same bytes (ts included)."""
    entry = next(e for e in GOLDEN if e.name == "tlbi_smp4")
    use_path(monkeypatch, "native")
    texts = []
    for i in range(2):
        f = tmp_path / f"{i}.jsonl"
        assert main(["run", str(build_test_guest(entry.source.stem)), "--cpus", "4", "--trace", str(f), "--trace-events", "*"]) == 0
        texts.append(f.read_bytes())
    assert texts[0] and texts[0] == texts[1]


# --- observation points -----------------------------------------------------------------------------------

class Receiver:
    """A DVM participant standing for an SMMU with BTM: it holds one cached translation (identity) until a
    broadcast TLBI completed by a DVM Sync drops it; `log` is what happened, in order."""

    dvm_name = "btm0"

    def __init__(self) -> None:
        self.log: list[str] = []
        self.cached = True
        self.dropping = False

    def dvm_tlbi(self, op, msg) -> None:
        self.log.append(f"tlbi {op.name}")
        self.dropping = True

    def dvm_sync(self, sync) -> None:
        self.log.append("sync")
        if self.dropping:
            self.cached, self.dropping = False, False

    def translate(self, sid, ssid, addr, write=False, exec_=False, priv=False):
        self.log.append("dma")
        return _Hit(addr) if self.cached else _Miss()


class _Hit:
    def __init__(self, pa: int) -> None:
        self.pa = pa


class _Miss:
    pa = None
    stall = False
    type = 0x10                                       # F_TRANSLATION


@pytest.mark.parametrize("path", PATHS)
def test_dma_kick_right_after_tlbi_dsb_sees_the_invalidation(path, monkeypatch):
    """TLBI VAE1IS; DSB ISH; STR to the DMA test device's CMD: the DMA it starts (inside the MMIO write, no
    instruction in between) is translated after the receiver got the TLBI and the Sync, so it faults."""
    use_path(monkeypatch, path)
    sink = ListSink()
    m = Machine(tracer=Tracer(events="tlbi*,dvm*,dmatest*", sinks=[sink]), console=lambda vm, d, s: None)
    trap = TlbiTrap(m.interconnect, m.tracer)
    m.add_plugin(trap)
    rx = Receiver()
    m.interconnect.attach(rx)
    vm = m.add_vm(ncpus=1, vmid=3)
    dev = DmaTestDevice(m.bus, rx.translate, sid=1, tracer=m.tracer)
    vm.add_device(DMATEST_BASE, DMATEST_SIZE, dev, "dmatest")
    dev.write(0x10, vm.ram_pa + 0x1000, 8)           # IOVA
    words = (_mov(1, 0x40080) + _mov(2, DMATEST_BASE) + _mov(3, CMD_READ64)
             + [sys_word(*encoding("VAE1IS"), rt=1), DSB_ISH,
                0xB9001C43,                           # str w3, [x2, #0x1c]   (CMD)
                0xB9400444]                           # ldr w4, [x2, #4]      (STATUS)
             + OFF)
    vm.load_code(IPA, _code(words))
    out = m.run(max_insns=10_000)
    assert out.exit_code == 0, out.message
    assert trap.native_hook is (path == "native")
    assert rx.log == ["tlbi VAE1IS", "sync", "dma"]
    assert dev.read(0x04, 4) & (STATUS_DONE | STATUS_FAULT) == STATUS_FAULT
    assert [r.event for r in sink.records if r.event != "dmatest_cmd"][:3] == ["tlbi_trap", "dvm_tlbi", "tlbi_dsb"]


@pytest.mark.parametrize("path", PATHS)
def test_full_buffer_delivers_every_record_in_order(path, monkeypatch):
    """More TLBIs in one slice than the native buffer holds: every one is traced, in order, each with its PC."""
    use_path(monkeypatch, path)
    n = NATIVE_RECORDS + 100
    sink = ListSink()
    m = Machine(tracer=Tracer(events="tlbi_trap", sinks=[sink]), console=lambda vm, d, s: None)
    trap = TlbiTrap(m.interconnect, m.tracer)
    m.add_plugin(trap)
    vm = m.add_vm(ncpus=2, vmid=5)
    ops = ("VAE1IS", "VALE1IS", "VMALLE1IS")
    vm.load_code(IPA, _code([sys_word(*encoding(ops[i % 3]), rt=1) for i in range(n)] + [DSB_ISH] + OFF))
    out = m.run(max_insns=10 * n)
    assert out.exit_code == 0, out.message
    got = [(r["pc"], r["op"]) for r in sink.of("tlbi_trap")]
    assert got == [(IPA + 4 * i, ops[i % 3]) for i in range(n)]
    assert trap.cpu(1).part.received == n and m.interconnect.syncs == 1


# --- the fallbacks ----------------------------------------------------------------------------------------

def test_native_is_built_and_used_here(monkeypatch):
    monkeypatch.delenv(native.ENV, raising=False)
    if not native_expected():
        pytest.skip("no C compiler")
    assert native.tlbi_trap() is not None and native.status().startswith("loaded ")
    assert TlbiTrap().native_lib is not None


def test_native_disabled_by_the_environment(monkeypatch):
    monkeypatch.setenv(native.ENV, "0")
    assert native.tlbi_trap() is None and native.status() == f"disabled ({native.ENV}=0)"
    assert TlbiTrap().native_lib is None
    with pytest.raises(RuntimeError, match="unavailable"):
        TlbiTrap(native_hook=True)


FALLBACK = textwrap.dedent("""
    from harness import native
    from harness.machine import Machine
    from harness.trap import TlbiTrap
    from devmodel.tlbi import encoding, sys_word
    m = Machine(console=lambda vm, d, s: None)
    trap = TlbiTrap(m.interconnect, m.tracer)
    m.add_plugin(trap)
    vm = m.add_vm(ncpus=2)
    words = [sys_word(*encoding("VAE1IS"), rt=1), 0xD5033B9F, 0xD2800100, 0xF2B08000, 0xD4000002]
    vm.load_code(0x40080000, b"".join(w.to_bytes(4, "little") for w in words))
    out = m.run(max_insns=1000)
    print(out.exit_code, trap.native_hook, trap.traps, m.interconnect.syncs, native.status())
""")


def test_without_a_compiler_the_python_trap_runs(tmp_path):
    """No C compiler on PATH and an empty cache: the library cannot be built, the Python trap does the work."""
    env = dict(os.environ, PATH=str(tmp_path), SMMU_HARNESS_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=str(ROOT))
    env.pop(native.ENV, None)
    r = subprocess.run([sys.executable, "-c", FALLBACK], env=env, cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    code, hooked, traps, syncs, status = r.stdout.split(" ", 4)
    assert (code, hooked, traps, syncs) == ("0", "False", "1", "1")
    assert status.strip() == "no C compiler (cc, gcc, clang) on PATH"
    assert not (tmp_path / "cache" / "native").exists()


SLOW_SCENARIOS = {"vmid-alias", "no-btm-forwarding", "kvm-ordering"}        # 2-4 s a path each here


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_SCENARIOS else n
                                  for n in sorted(SCENARIOS)])
def test_scenario_results_agree(name, monkeypatch):
    """Each scenario gives the same result on both paths: verdict, notes and metrics (the broadcast
    invalidations the SMMU applied, stale DMAs, VM exits per invalidation ...); only the run time differs."""
    got = {}
    for path in PATHS:
        use_path(monkeypatch, path)
        r = run_scenario(name).to_dict()
        del r["seconds"]
        got[path] = r
    assert got["native"]["ok"] and got["native"] == got["python"]


def test_native_class_table_is_the_decoders_verdict():
    """The hook's [EL][encoding] table (built from `min_el` at start-up) against `decode` on every encoding."""
    from devmodel.tlbi import decode
    from devmodel.tlbi_types import DecodeContext, UndefinedTlbi
    from harness import trap

    for native_set in (trap.UNICORN_NATIVE, frozenset()):
        table = trap._classes(native_set)
        for el in range(4):
            for enc in range(native.TT_ENCODINGS):
                key = trap._key_of(enc)
                try:
                    decode(*key, 0, DecodeContext(el=el))
                    want = native.TT_NATIVE if key in native_set else native.TT_EMULATED
                except UndefinedTlbi:
                    want = native.TT_UNDEFINED
                assert table[el * native.TT_ENCODINGS + enc] == want, (el, key)
