"""harness.trap on raw Unicorn vCPUs (no machine needed): the SYS hook, PC handling of encodings Unicorn
does not implement, own-TLB flush, DVM broadcast to the other vCPUs, DSB -> DVM Sync, undefined at EL1,
and the 2-vCPU stale-translation scenario with and without the broadcast."""
from __future__ import annotations

import ctypes
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from unicorn import UC_ARCH_ARM64, UC_HOOK_INSN, UC_MODE_ARM, UC_PROT_ALL, Uc
from unicorn.arm64_const import (UC_ARM64_INS_SYS, UC_ARM64_REG_PC, UC_ARM64_REG_PSTATE, UC_ARM64_REG_X0,
                                 UC_ARM64_REG_X1, UC_ARM64_REG_X2, UC_ARM64_REG_X3)

from devmodel.dvm import Interconnect
from devmodel.tlbi import BY_ENCODING, TABLE, Operand, encoding, sys_word
from devmodel.trace import ListSink, Tracer
from harness.cpu import CPU_MODELS, features, new_uc
from harness.trap import EXIT_UNDEFINED, UNICORN_NATIVE, TlbiTrap, scan_barriers, unicorn_native
from trap_paths import trap_path  # noqa: F401,E402 - the fixture

# every test of a TlbiTrap runs on the native and the Python trap
both_paths = pytest.mark.usefixtures("trap_path")

RAM, RAMSZ = 0x4000_0000, 0x20_0000
ADD_X1 = 0x91000421                        # add x1, x1, #1
DSB = {"ish": 0xD5033B9F, "nsh": 0xD503379F, "ishst": 0xD5033A9F, "sy": 0xD5033F9F}
B_SELF = 0x14000000                        # b .


def _uc(buf=None, el=1, model=None):
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM) if model is None else new_uc(model)
    uc.ctl_set_tcg_buffer_size(8 << 20)
    if buf is None:
        uc.mem_map(RAM, RAMSZ)
    else:
        uc.mem_map_ptr(RAM, RAMSZ, UC_PROT_ALL, buf)
    uc.cpr_write(3, 6, 1, 1, 0, 0x500)     # SCR_EL3 = RW | HCE
    if el != 1:
        ps = uc.reg_read(UC_ARM64_REG_PSTATE)
        uc.reg_write(UC_ARM64_REG_PSTATE, (ps & ~0xF) | (el << 2) | 1)
        uc.cpr_write(3, 6, 1, 1, 0, 0x500)
    return uc


def _code(words):
    return b"".join(w.to_bytes(4, "little") for w in words)


def _tlbi(name, rt=0):
    d = BY_ENCODING[encoding(name)]
    return sys_word(*d.key, rt=rt if d.operand is not Operand.NONE else 31)


def _setup(words, el=1, hcr_fb=True, vmid=5, events="tlbi*,dvm*"):
    sink = ListSink()
    tr = Tracer(events=events, sinks=[sink])
    trap = TlbiTrap(Interconnect(tr), tr, hcr_fb=hcr_fb)
    uc = _uc(el=el)
    code = _code(words)
    uc.mem_write(RAM, code)
    trap.add_cpu(uc, 0, lambda: vmid)
    trap.install_barriers([(RAM, code)])
    return trap, uc, sink, RAM + len(code)


def _advances(d, el, model=None):
    """Does the TLBI `d` at `el` advance the PC by itself when the SYS hook returns 1 (Unicorn executes it)?"""
    uc = _uc(el=el, model=model)
    uc.mem_write(RAM, _code([sys_word(*d.key, rt=0), ADD_X1, ADD_X1]))
    hits = []

    def h(uc, reg, cp, _u):
        hits.append(1)
        if len(hits) > 2:
            uc.emu_stop()
        return 1

    uc.hook_add(UC_HOOK_INSN, h, None, 1, 0, UC_ARM64_INS_SYS)
    uc.emu_start(RAM, RAM + 12, count=10)
    return len(hits) == 1 and uc.reg_read(UC_ARM64_REG_X1) == 2


def test_unicorn_native_set_matches_unicorn():
    """Ops in UNICORN_NATIVE advance the PC by themselves when the hook returns 1; the others loop."""
    for el in (1, 2, 3):
        for d in TABLE:
            if d.min_el > el:
                continue
            advanced = _advances(d, el)
            assert advanced == (d.key in UNICORN_NATIVE), (el, d.name)


@pytest.mark.parametrize("model", list(CPU_MODELS))
def test_native_set_of_every_cpu_model_matches_unicorn(model):
    """The per-model set (derived from the model's ID registers) against what that model's Unicorn does."""
    native = unicorn_native(features(model))
    for el in (1, 2, 3):
        for d in TABLE:
            if d.min_el <= el:
                assert _advances(d, el, model) == (d.key in native), (model, el, d.name)


@both_paths
def test_every_el1_form_traps_once_and_execution_continues():
    el1 = [d for d in TABLE if d.min_el == 1]
    assert len(el1) == 60                               # 30 forms + their nXS twins
    words = []
    for d in el1:
        words += [sys_word(*d.key, rt=0 if d.operand is not Operand.NONE else 31), ADD_X1]
    trap, uc, sink, end = _setup(words)
    uc.reg_write(UC_ARM64_REG_X0, (0x2A << 48) | 0x40080)
    uc.emu_start(RAM, end, count=10 * len(words))
    assert uc.reg_read(UC_ARM64_REG_X1) == len(el1)     # no instruction skipped twice, no loop
    traps = sink.of("tlbi_trap")
    assert [r["op"] for r in traps] == [d.name for d in el1]
    assert all(r["broadcast"] and r["vmid"] == 5 and r["cpu"] == 0 and r["el"] == 1 for r in traps)
    by = {r["op"]: r for r in traps}
    assert by["VAE1IS"]["asid"] == 0x2A and by["VAE1IS"]["addr"] == 0x4008_0000
    assert by["VAE1IS"]["pc"] == RAM + 4 * 2 * [d.name for d in el1].index("VAE1IS")
    assert by["VAAE1OS"]["asid"] is None and by["VMALLE1"]["xt"] is None
    assert by["RVAE1ISNXS"]["tg"] == 0 and by["RVAE1ISNXS"]["range_bytes"] == 0 and by["RVAE1ISNXS"]["nxs"]
    assert "tg" not in by["VAE1IS"].fields
    # own Unicorn TLB: Unicorn flushes it for the ops it implements, the trap for the others
    assert trap.cpus[0].part.flushes == len([d for d in el1 if d.key not in UNICORN_NATIVE]) == 48


@both_paths
def test_el2_forms_at_el2_and_undefined_at_el1():
    names = ["IPAS2E1IS", "VMALLS12E1IS", "ALLE1IS", "VAE2IS", "RIPAS2LE1OS", "ALLE2"]
    words = []
    for n in names:
        words += [_tlbi(n), ADD_X1]
    trap, uc, sink, end = _setup(words, el=2, vmid=9)
    uc.reg_write(UC_ARM64_REG_X0, 0x8_0000)
    uc.emu_start(RAM, end, count=100)
    traps = sink.of("tlbi_trap")
    assert [r["op"] for r in traps] == names and uc.reg_read(UC_ARM64_REG_X1) == len(names)
    by = {r["op"]: r for r in traps}
    assert by["IPAS2E1IS"]["vmid"] == 9 and by["IPAS2E1IS"]["addr"] == 0x8000_0000
    assert by["ALLE1IS"]["vmid"] is None and by["ALLE2"]["broadcast"] is False
    assert trap.exit_status is None

    trap, uc, sink, end = _setup([ADD_X1, _tlbi("IPAS2E1IS"), ADD_X1], el=1)
    uc.emu_start(RAM, end, count=100)
    assert trap.exit_status == EXIT_UNDEFINED
    assert uc.reg_read(UC_ARM64_REG_PC) == RAM + 4 and uc.reg_read(UC_ARM64_REG_X1) == 1
    undef = sink.of("tlbi_undef")
    assert len(undef) == 1 and undef[0]["pc"] == RAM + 4 and undef[0]["el"] == 1 and "IPAS2E1IS" in undef[0]["reason"]
    assert not sink.of("tlbi_trap")


def _two_cpu_ic(words, hcr_fb=True):
    sink = ListSink()
    tr = Tracer(events="tlbi*,dvm*", sinks=[sink])
    trap = TlbiTrap(Interconnect(tr), tr, hcr_fb=hcr_fb)
    code = _code(words)
    ucs = []
    for i in range(2):
        uc = _uc()
        uc.mem_write(RAM, code)
        trap.add_cpu(uc, i, lambda: 5)
        ucs.append(uc)
    trap.install_barriers([(RAM, code)])
    return trap, ucs, sink, RAM + len(code)


@both_paths
def test_dsb_ish_after_tlbis_sends_one_sync():
    words = [DSB["ish"], _tlbi("VAE1IS"), _tlbi("VALE1IS"), DSB["ishst"], DSB["nsh"], DSB["ish"], DSB["ish"]]
    trap, (uc0, uc1), sink, end = _two_cpu_ic(words)
    uc0.emu_start(RAM, end, count=100)
    ev = [r.event for r in sink.records]
    assert ev == ["tlbi_trap", "dvm_tlbi", "tlbi_trap", "dvm_tlbi", "tlbi_dsb", "tlbi_dsb", "tlbi_dsb",
                  "dvm_sync"]
    sync = sink.of("dvm_sync")[0]
    assert sync["src"] == "cpu0" and sync["acks"] == 1
    assert [r["domain"] for r in sink.of("tlbi_dsb")] == ["ISH", "NSH", "ISH"]
    assert [r["dst"] for r in sink.of("dvm_tlbi")] == ["cpu1", "cpu1"]
    assert trap.cpus[1].part.flushes == 2


@both_paths
def test_fb_decides_whether_a_local_tlbi_is_broadcast():
    for fb, expect in ((True, 1), (False, 0)):
        trap, (uc0, uc1), sink, end = _two_cpu_ic([_tlbi("VAE1"), DSB["ish"]], hcr_fb=fb)
        uc0.emu_start(RAM, end, count=10)
        (t,) = sink.of("tlbi_trap")
        assert t["broadcast"] is fb and t["shareability"] == "NSH"
        assert len(sink.of("dvm_tlbi")) == expect and len(sink.of("dvm_sync")) == expect
        assert trap.cpus[1].part.flushes == expect


@both_paths
def test_other_vmid_is_not_flushed():
    sink = ListSink()
    tr = Tracer(events="dvm*", sinks=[sink])
    trap = TlbiTrap(Interconnect(tr), tr)
    code = _code([_tlbi("VAE1IS")])
    ucs = [_uc() for _ in range(3)]
    for i, (uc, vmid) in enumerate(zip(ucs, (5, 6, 5))):
        uc.mem_write(RAM, code)
        trap.add_cpu(uc, i, lambda v=vmid: v)
    ucs[0].emu_start(RAM, RAM + 4, count=5)
    assert [c.part.received for c in trap.cpus] == [0, 1, 1]   # delivered to both others
    assert [c.part.flushes for c in trap.cpus] == [0, 0, 1]    # cpu1 runs another VM (VMID 6): no hit


def test_scan_barriers_uses_capstone_and_skips_data_lookalikes():
    words = [DSB["ish"], 0xD503309F, DSB["sy"], DSB["ishst"], ADD_X1, 0xD503323F | (2 << 10)]
    found = scan_barriers([(0x1000, _code(words))])
    assert [(b.addr, b.text, b.domain, b.full, b.syncs) for b in found] == [
        (0x1000, "dsb ish", "ISH", True, True),
        (0x1008, "dsb sy", "SY", True, True),
        (0x100C, "dsb ishst", "ISH", False, False),
        (0x1014, found[3].text, "ISH", True, True)]             # FEAT_XS DSB ISHnXS (capstone 5: no name)
    assert 0x1004 not in [b.addr for b in found]              # CRm=0: SSBB, not a DSB


# --- the 2-vCPU MMU scenario ----------------------------------------------------------------------------------

PT, PA_A, PA_B, VA = 0x4001_0000, 0x4010_0000, 0x4010_1000, 0x8000_0000
PTE_AF_SH_VALID = 3 | (1 << 10) | (3 << 8)


def _assemble(src: str) -> tuple[bytes, dict[str, int]]:
    pytest.importorskip("ziglang")
    import tempfile
    from elftools.elf.elffile import ELFFile
    with tempfile.TemporaryDirectory() as d:
        s, o = Path(d) / "a.S", Path(d) / "a.o"
        s.write_text(src)
        subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", "aarch64-freestanding",
                        "-mcpu=generic+v8_4a+xs", "-c", str(s), "-o", str(o)], check=True)
        with o.open("rb") as f:
            e = ELFFile(f)
            text = e.get_section_by_name(".text").data()
            syms = {x.name: x["st_value"] for x in e.get_section_by_name(".symtab").iter_symbols() if x.name}
    return text, syms


MMU_SRC = f"""
.global mmu_on, stop1, reader, stop2, writer, stop3
mmu_on:
    ldr x0, ={PT}
    msr ttbr0_el1, x0
    mov x0, #0xff
    msr mair_el1, x0
    ldr x0, =(25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23))
    msr tcr_el1, x0
    isb
    mrs x0, sctlr_el1
    orr x0, x0, #1
    msr sctlr_el1, x0
    isb
    ldr x1, ={VA}
    ldr x2, [x1]
stop1: b stop1
reader:
    ldr x3, [x1]
stop2: b stop2
writer:
    ldr x6, ={PT + 0x2000}
    ldr x7, ={PA_B | PTE_AF_SH_VALID}
    str x7, [x6]
    dsb ishst
    lsr x8, x1, #12
    TLBI_OP x8
    dsb ish
stop3: b stop3
"""


@pytest.mark.parametrize("tlbi_op, hcr_fb, fresh", [("vae1is", False, True), ("vae1", True, True),
                                                     ("vae1", False, False)])
@both_paths
def test_two_vcpus_remap_and_see_new_page_only_with_broadcast(tlbi_op, hcr_fb, fresh):
    code, syms = _assemble(MMU_SRC.replace("TLBI_OP", f"tlbi {tlbi_op},"))
    buf = ctypes.create_string_buffer(RAMSZ)
    ctypes.memmove(buf, code, len(code))

    def w64(a, v):
        struct.pack_into("<Q", buf, a - RAM, v)

    w64(PT + 8, 0x4000_0000 | 1 | (1 << 10) | (3 << 8))       # L1[1]: 1 GiB identity block (RAM)
    w64(PT + 16, (PT + 0x1000) | 3)                         # L1[2] -> L2 -> L3 for VA 0x8000_0000
    w64(PT + 0x1000, (PT + 0x2000) | 3)
    w64(PT + 0x2000, PA_A | PTE_AF_SH_VALID)
    w64(PA_A, 0xAAAA)
    w64(PA_B, 0xBBBB)
    sink = ListSink()
    tr = Tracer(events="tlbi*,dvm*", sinks=[sink])
    trap = TlbiTrap(Interconnect(tr), tr, hcr_fb=hcr_fb)
    cpus = []
    for i in range(2):
        uc = _uc(buf)
        trap.add_cpu(uc, i, lambda: 1)
        cpus.append(uc)
    trap.install_barriers([(RAM, code)])
    at = {k: RAM + v for k, v in syms.items()}
    cpu0, cpu1 = cpus
    cpu0.emu_start(at["mmu_on"], at["stop1"], count=1000)
    assert cpu0.reg_read(UC_ARM64_REG_X2) == 0xAAAA                # x2: old page, now in cpu0's TLB
    cpu1.emu_start(at["mmu_on"], at["stop1"], count=1000)
    cpu1.emu_start(at["writer"], at["stop3"], count=1000)
    cpu0.emu_start(at["reader"], at["stop2"], count=1000)
    assert cpu0.reg_read(UC_ARM64_REG_X3) == (0xBBBB if fresh else 0xAAAA)
    (t,) = sink.of("tlbi_trap")
    assert t["cpu"] == 1 and t["addr"] == VA and t["broadcast"] is fresh
    assert len(sink.of("dvm_sync")) == (1 if fresh else 0)


ERET_SRC = """
.global start, after
start:
    tlbi alle2
    adr x0, .Lafter
    msr elr_el2, x0
    mov x0, #0x3c5
    msr spsr_el2, x0
    eret
after:
.Lafter:
    add x1, x1, #1
    tlbi alle2
    add x1, x1, #1
"""


@both_paths
def test_eret_to_el1_refreshes_the_cached_el():
    """The trap caches PSTATE.EL (a read costs ~2 us inside a hook); ERETs are pre-scanned and reset it."""
    code, syms = _assemble(ERET_SRC)
    sink = ListSink()
    tr = Tracer(events="tlbi*", sinks=[sink])
    trap = TlbiTrap(Interconnect(tr), tr)
    uc = _uc(el=2)
    uc.cpr_write(3, 4, 1, 1, 0, 1 << 31)                   # HCR_EL2.RW: EL1 is AArch64
    uc.mem_write(RAM, code)
    trap.add_cpu(uc, 0, lambda: 3)
    trap.install_barriers([(RAM, code)])
    uc.emu_start(RAM, RAM + len(code), count=100)
    assert [r["op"] for r in sink.of("tlbi_trap")] == ["ALLE2"]
    (u,) = sink.of("tlbi_undef")
    assert u["el"] == 1 and u["pc"] == RAM + syms["after"] + 4
    assert trap.exit_status == EXIT_UNDEFINED and uc.reg_read(UC_ARM64_REG_X1) == 1
