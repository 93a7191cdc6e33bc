"""harness/debug.py: the Unicorn 2.1.4 facts it is built on, its debugger API (breakpoints before the
instruction, watchpoints before the access, one-instruction steps, nothing installed while nothing is armed),
and the guest's own debug registers (Arm ARM DDI 0487 D2) taken at the guest's vectors."""
from __future__ import annotations

import ctypes

import pytest
from unicorn import (UC_HOOK_CODE, UC_HOOK_INTR, UC_HOOK_MEM_READ, UC_HOOK_MEM_READ_PROT, UC_HOOK_MEM_WRITE_PROT,
                     UC_PROT_ALL, UC_PROT_EXEC, UC_PROT_READ, UcError)
from unicorn import unicorn_const as ucc
from unicorn.arm64_const import (UC_ARM64_REG_ESR_EL1, UC_ARM64_REG_ELR_EL1, UC_ARM64_REG_PC, UC_ARM64_REG_PSTATE,
                                 UC_ARM64_REG_SP, UC_ARM64_REG_SP_EL0, UC_ARM64_REG_VBAR_EL1, UC_ARM64_REG_X0,
                                 UC_ARM64_REG_X1, UC_ARM64_REG_X2, UC_ARM64_REG_X3)

from devmodel.trace import ListSink, Tracer
from guestbin import guest_elf
from harness.cpu import new_uc
from harness.debug import (DebugEvent, bp_address, dbgbcr, dbgbvr, el_matches, uses_debug_registers,
                           watch_range)
from harness.exits import Kind
from harness.machine import Machine
from harness.sysregs import msr_word

RAM = 0x4000_0000
CODE, VBAR, DATA = 0x4008_0000, 0x4010_0000, 0x4020_0000
NOP, B_SELF, ADD_X1 = 0xD503201F, 0x14000000, 0x91000421            # add x1, x1, #1
PSCI_OFF = (0xD2800100, 0xF2B08000, 0xD4000002)                     # x0 = SYSTEM_OFF; hvc #0
LDR_X0_X2, STR_X1_X2 = 0xF9400040, 0xF9000041                        # ldr x0, [x2]; str x1, [x2]
STRB_W1_X2_3 = 0x39000C41                                            # strb w1, [x2, #3]


def words(*ws: int) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in ws)


# -- pure helpers (D2.8, D2.9) -------------------------------------------------------------------------------

def test_breakpoint_address_is_bits_48_2_sign_extended():
    assert bp_address(0x4008_0007) == 0x4008_0004
    assert bp_address(0x0001_FFFF_FFFF_F000) == 0xFFFF_FFFF_FFFF_F000     # bit 48 set: a TTBR1 address
    assert bp_address(0xABCC_0000_4000_0000) == 0x4000_0000               # bits [63:49] ignored


@pytest.mark.parametrize("wcr,wvr,expect", [
    (0, 0x1000, None),                                    # E = 0
    (0xFF << 5 | 1, 0x1000, None),                        # LSC = 0b00: reserved, watches nothing
    (0xFF << 5 | 3 << 3 | 1, 0x1000, (0x1000, 0x1008)),   # BAS = all 8 bytes
    (0x0C << 5 | 2 << 3 | 1, 0x1000, (0x1002, 0x1004)),   # BAS = bytes 2-3
    (0xF0 << 5 | 2 << 3 | 1, 0x1004, None),               # DBGWVR[2] set: only BAS[3:0] count
    (0x03 << 5 | 2 << 3 | 1, 0x1004, (0x1004, 0x1006)),
    (4 << 24 | 1 << 3 | 1, 0x1234, (0x1230, 0x1240)),     # MASK = 4: the aligned 16-byte block
    (1 << 24 | 0xFF << 5 | 1 << 3 | 1, 0x1000, None),     # MASK 1 and 2 are reserved
    (0 << 5 | 3 << 3 | 1, 0x1000, None),                  # BAS = 0
])
def test_watch_range_follows_bas_and_mask(wcr, wvr, expect):
    assert watch_range(wcr, wvr) == expect


def test_pmc_hmc_ssc_select_the_el():
    el1, el0, both, el2 = 0b01 << 1, 0b10 << 1, 0b11 << 1, 1 << 13
    assert [el_matches(el1, e) for e in (0, 1, 2)] == [False, True, False]
    assert [el_matches(el0, e) for e in (0, 1, 2)] == [True, False, False]
    assert [el_matches(both, e) for e in (0, 1)] == [True, True]
    assert el_matches(el2, 2) and not el_matches(both | 0b10 << 14, 1)     # SSC = 0b10: Secure only


def test_debug_register_accesses_are_found_in_code():
    assert uses_debug_registers(words(NOP, msr_word(dbgbcr(3), 1), NOP))
    assert uses_debug_registers(words(0xD5300240))                          # mrs x0, mdscr_el1
    assert not uses_debug_registers(words(NOP, msr_word((3, 0, 13, 0, 4), 1)))   # tpidr_el1: op0 = 3


# -- Unicorn 2.1.4 facts -------------------------------------------------------------------------------------

def _bare(code: bytes):
    uc = new_uc("max")
    uc.mem_map(0x1000, 0x10000)
    uc.mem_write(0x1000, code)
    taken = []

    def on_intr(u, intno, _ud):
        taken.append((intno, u.reg_read(UC_ARM64_REG_PC)))
        u.emu_stop()
    uc.hook_add(UC_HOOK_INTR, on_intr)
    return uc, taken


def _movz(rd: int, imm: int) -> int:
    return 0xD2800000 | imm << 5 | rd


UNLOCK = (msr_word((2, 0, 1, 0, 4), 31), msr_word((2, 0, 1, 3, 4), 31))   # msr oslar_el1, xzr; osdlr_el1
DAIFCLR_D, ISB = 0xD50348FF, 0xD5033FDF


def test_unicorn_raises_an_msr_programmed_breakpoint_as_a_prefetch_abort():
    """This is why the harness serves DBGBCR/DBGBVR itself: the syndrome of this abort cannot be read."""
    bp = 0x1000 + 4 * 12
    uc, taken = _bare(words(*UNLOCK, _movz(1, bp), msr_word(dbgbvr(0), 1), _movz(1, 0x1E3), msr_word(dbgbcr(0), 1),
                            _movz(1, 0xA000), msr_word((2, 0, 0, 2, 2), 1), ISB, DAIFCLR_D, ISB, NOP, NOP, NOP))
    uc.reg_write(UC_ARM64_REG_PSTATE, 0x3C5)
    uc.emu_start(0x1000, 0x1000 + 4 * 14, count=20)
    assert taken == [(3, bp)]                                               # QEMU's EXCP_PREFETCH_ABORT


@pytest.mark.parametrize("setup", ["step", "watch"])
def test_unicorn_raises_no_msr_programmed_step_or_watchpoint(setup):
    if setup == "step":
        prog = [_movz(1, 0x2001), msr_word((2, 0, 0, 2, 2), 1)]            # MDSCR_EL1 = KDE | SS
    else:
        prog = [_movz(1, 0x3000), msr_word((2, 0, 0, 0, 6), 1), _movz(1, 0x1FF7), msr_word((2, 0, 0, 0, 7), 1),
                _movz(1, 0xA000), msr_word((2, 0, 0, 2, 2), 1)]             # a store watchpoint on 0x3000
    code = words(*UNLOCK, *prog, ISB, DAIFCLR_D, ISB, _movz(2, 0x3000), STR_X1_X2, NOP, NOP)
    uc, taken = _bare(code)
    uc.reg_write(UC_ARM64_REG_PSTATE, 0x3C5)
    uc.emu_start(0x1000, 0x1000 + len(code), count=40)
    assert taken == [] and uc.reg_read(UC_ARM64_REG_PC) == 0x1000 + len(code)


def _protected(buf, code: bytes, perms: int, handled: bool, read_hook: bool = False):
    uc = new_uc("max")
    uc.mem_map_ptr(RAM, 0x10_0000, UC_PROT_ALL, ctypes.addressof(buf))
    uc.mem_write(RAM, code)
    uc.mem_protect(RAM + 0x1_0000, 0x1000, perms)
    seen = []
    uc.hook_add(UC_HOOK_MEM_READ_PROT | UC_HOOK_MEM_WRITE_PROT,
                lambda u, acc, addr, size, val, _ud: seen.append((acc, addr, u.reg_read(UC_ARM64_REG_PC))) or handled,
                None, RAM + 0x1_0000, RAM + 0x1_0FFF)
    if read_hook:
        uc.hook_add(UC_HOOK_MEM_READ, lambda *a: None, None, RAM + 0x1_0000, RAM + 0x1_0FFF)
    uc.reg_write(UC_ARM64_REG_X2, RAM + 0x1_0000)
    return uc, seen


@pytest.mark.parametrize("read_hook", [False, True])
def test_unicorn_checks_read_permission_only_on_a_tlb_fill_unless_a_read_hook_is_there(read_hook):
    buf = ctypes.create_string_buffer(0x10_0000)
    uc, seen = _protected(buf, words(LDR_X0_X2, LDR_X0_X2, LDR_X0_X2, NOP), UC_PROT_EXEC, True, read_hook)
    uc.emu_start(RAM, RAM + 12)
    assert len(seen) == (3 if read_hook else 1)


def test_unicorn_drops_a_handled_write_to_a_protected_page_and_stops_precisely_on_an_unhandled_one():
    buf = ctypes.create_string_buffer(0x10_0000)
    uc, seen = _protected(buf, words(STR_X1_X2, NOP), UC_PROT_EXEC | UC_PROT_READ, True)
    uc.reg_write(UC_ARM64_REG_X1, 0x77)
    uc.emu_start(RAM, RAM + 4)
    assert len(seen) == 1 and buf.raw[0x1_0000] == 0                      # the write did not happen
    post = 0xF8008441                                                       # str x1, [x2], #8
    uc, seen = _protected(buf, words(NOP, post, NOP), UC_PROT_EXEC | UC_PROT_READ, False)
    with pytest.raises(UcError) as e:
        uc.emu_start(RAM, RAM + 8)
    assert e.value.errno == ucc.UC_ERR_WRITE_PROT and seen[0][2] == RAM + 4
    assert uc.reg_read(UC_ARM64_REG_PC) == RAM + 4 and uc.reg_read(UC_ARM64_REG_X2) == RAM + 0x1_0000   # no wb


@pytest.mark.parametrize("count", [0, 20])
def test_writing_the_pc_in_a_code_hook_skips_the_instruction(count):
    uc, _ = _bare(words(ADD_X1, ADD_X1, ADD_X1, ADD_X1))
    uc.hook_add(UC_HOOK_CODE, lambda u, a, s, d: u.reg_write(UC_ARM64_REG_PC, 0x100C), None, 0x1004, 0x1004)
    uc.emu_start(0x1000, 0x1010, 0, count)
    assert uc.reg_read(UC_ARM64_REG_X1) == 2 and uc.reg_read(UC_ARM64_REG_PC) == 0x1010


# -- the debugger API -------------------------------------------------------------------------------------------

def _machine(code: bytes, ncpus: int = 1):
    sink = ListSink()
    m = Machine(tracer=Tracer(events="guest_exception", sinks=[sink]), console=lambda vm, d, s: None,
                tcg_buffer_size=8 << 20)
    vm = m.add_vm(ncpus=ncpus, ram_size=32 << 20)
    vm.load_code(CODE, code)
    return m, vm, vm.vcpus[0], sink


def test_a_breakpoint_runs_its_action_before_the_instruction():
    m, vm, v, _ = _machine(words(ADD_X1, ADD_X1, ADD_X1, *PSCI_OFF))
    d = v.debug
    seen = []

    def action(vcpu, ev):
        seen.append((ev.kind, ev.pc, vcpu.uc.reg_read(UC_ARM64_REG_X1)))
        vcpu.debug.remove(bp)                    # continue: the instruction runs next
    bp = d.add_breakpoint(CODE + 8, action)
    assert d.hooks == 0                           # applied at the next slice start
    out = m.run(timeout=10)
    assert out.kind is Kind.EXIT and seen == [("breakpoint", CODE + 8, 2)] and v.uc.reg_read(UC_ARM64_REG_X1) == 3
    assert d.events == 1


def test_a_write_watchpoint_runs_before_the_store_and_misses_on_the_page_go_through():
    code = words(STRB_W1_X2_3, STR_X1_X2, LDR_X0_X2, *PSCI_OFF)
    m, vm, v, _ = _machine(code)
    v.power_on(CODE)
    v.uc.reg_write(UC_ARM64_REG_X1, 0x1122)
    v.uc.reg_write(UC_ARM64_REG_X2, DATA)
    off = DATA - vm.ram_ipa
    seen = []

    def action(vcpu, ev: DebugEvent):
        seen.append((ev.kind, ev.pc, ev.addr, ev.size, ev.write, bytes(vm.ram.buf[off:off + 8])))
        vcpu.debug.remove(wp)
    wp = v.debug.add_watchpoint(DATA, 2, action)            # bytes 0-1: the byte store at +3 misses
    out = m.run(timeout=10)
    assert out.kind is Kind.EXIT
    # the miss was performed by the harness, the hit stopped before the access
    assert seen == [("watchpoint", CODE + 4, DATA, 8, True, bytes([0, 0, 0, 0x22, 0, 0, 0, 0]))]
    assert bytes(vm.ram.buf[off:off + 8]) == (0x1122).to_bytes(8, "little") and v.debug.hooks == 0


def test_a_read_watchpoint_fires_on_every_read_not_only_the_first():
    code = words(LDR_X0_X2, LDR_X0_X2, LDR_X0_X2, *PSCI_OFF)
    m, vm, v, _ = _machine(code)
    v.power_on(CODE)
    v.uc.reg_write(UC_ARM64_REG_X2, DATA)
    pcs = []
    v.debug.add_watchpoint(DATA, 8, lambda vcpu, ev: pcs.append(ev.pc) or vcpu.uc.reg_write(UC_ARM64_REG_PC,
                                                                                              ev.pc + 4),
                           read=True, write=False)
    out = m.run(timeout=10)
    assert out.kind is Kind.EXIT and pcs == [CODE, CODE + 4, CODE + 8]


def test_a_step_runs_its_action_after_one_instruction():
    m, vm, v, _ = _machine(words(ADD_X1, ADD_X1, ADD_X1, *PSCI_OFF))
    steps = []

    def action(vcpu, ev):
        steps.append((ev.pc, vcpu.uc.reg_read(UC_ARM64_REG_X1)))
        if len(steps) < 3:
            vcpu.debug.step(action)
    v.debug.step(action)
    out = m.run(timeout=10)
    assert out.kind is Kind.EXIT and steps == [(CODE + 4, 1), (CODE + 8, 2), (CODE + 12, 3)]


def test_nothing_is_installed_for_a_guest_that_uses_no_debug_register():
    m, vm, v, _ = _machine(words(ADD_X1, *PSCI_OFF))
    assert m.run(timeout=10).kind is Kind.EXIT
    # no debug hook, and no handler for a debug register (op0 = 2: DBG*, MDSCR, OSLAR...): the generic timer's
    # CNT* handlers are the only system registers the harness serves for such a guest
    debug_regs = {e for e in (*v.sysregs.reads, *v.sysregs.writes) if e[0] == 2}
    assert v.debug.hooks == 0 and not v.debug.intercepting and debug_regs == set()


# -- the guest's own debug registers ---------------------------------------------------------------------------

def _vectors(vm):
    """Every vector: `nop; b .` (the test checks where the vCPU parks and with which ESR/ELR)."""
    entry = words(NOP, B_SELF).ljust(0x80, b"\0")
    vm.load_code(VBAR, entry * 16, entry=CODE)


def test_a_breakpoint_on_el0_code_is_taken_to_el1_from_a_lower_el_even_with_kde_clear():
    """D2.8: debug exceptions from EL0 to EL1 are enabled whatever MDSCR_EL1.KDE and PSTATE.D say."""
    el0 = CODE + 0x100
    bcr = 0xF << 5 | 0b10 << 1 | 1                          # BAS = 0b1111, PMC = EL0 only, E
    code = words(*UNLOCK, _movz(1, el0 & 0xFFFF), 0xF2A00001 | ((el0 >> 16) & 0xFFFF) << 5,  # movk x1, lsl 16
                 msr_word(dbgbvr(0), 1), _movz(1, bcr), msr_word(dbgbcr(0), 1), _movz(1, 0x8000),
                 msr_word((2, 0, 0, 2, 2), 1), ISB)                        # MDSCR_EL1 = MDE only
    m, vm, v, sink = _machine(code + words(0xD69F03E0))                     # eret (to EL0 at el0)
    vm.load_code(el0, words(NOP, ADD_X1, B_SELF))
    _vectors(vm)
    v.power_on(CODE)
    uc = v.uc
    uc.reg_write(UC_ARM64_REG_VBAR_EL1, VBAR)
    uc.cpr_write(3, 0, 4, 0, 1, el0)                                        # ELR_EL1
    uc.cpr_write(3, 0, 4, 0, 0, 0x3C0)                                      # SPSR_EL1: EL0t, DAIF masked
    out = m.run(max_insns=100_000)            # each debug register write ends a slice, charged in full
    assert out.kind is Kind.BUDGET and v.pc in (VBAR + 0x400, VBAR + 0x404)
    assert uc.reg_read(UC_ARM64_REG_ESR_EL1) == 0x30 << 26 | 1 << 25 | 0x22   # EC 0x30: lower EL
    assert uc.reg_read(UC_ARM64_REG_ELR_EL1) == el0
    (e,) = sink.of("guest_exception")
    assert (e["ec"], e["vector"], e["far"]) == (0x30, VBAR + 0x400, 0)      # FAR = 0, as QEMU writes it


def _lines(out: str, title: str) -> list[str]:
    lines = out.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith(title + ":"))
    count = int(lines[i].split(":")[1])
    return lines[i + 1:i + 1 + count]


def test_debug_registers_guest_takes_what_the_arm_arm_says():
    """guest_fw/tests/debug_regs.c under the harness, checked against its own symbols."""
    from harness.elfload import load_elf
    img = load_elf(str(guest_elf("debug_regs")))
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm()
    vm.load(img)
    out = m.run(timeout=60)
    text = vm.output.decode()
    assert out.exit_code == 0, text
    bp, ss, ss_svc = (img.symbol(s) for s in ("bp_insns", "ss_start", "ss_svc"))
    assert "OSLSR_EL1 at reset a MDSCR_EL1 0" in text and "OSLSR_EL1 unlocked 8" in text
    assert "DBGBCR0 1fe3 " in text                                          # BAS[3] = BAS[2], BAS[1] = BAS[0]
    assert _lines(text, "breakpoints, OS lock set") == [] and _lines(text, "breakpoints, MDE clear") == []
    assert [ln.split()[1:4:2] for ln in _lines(text, "breakpoints")] == \
        [["c6000022", f"{a:x}"] for a in (bp, bp + 4, bp + 12)]
    data = img.objects["data"][0]
    wps = [ln.split() for ln in _lines(text, "watchpoints")]
    assert [(w[1], int(w[5], 16)) for w in wps] == [("d6000062", data + 11), ("d6000022", data + 40)]
    assert "data[10..12] 1 3 2 " in text                                    # every store happened in the end
    steps = [ln.split() for ln in _lines(text, "single step")]
    assert [(s[1], int(s[3], 16)) for s in steps] == [("ce000022", ss), ("cf000022", ss + 4), ("cf000022", ss + 8)]
    svc = [ln.split() for ln in _lines(text, "single step over SVC")]
    assert [(s[1], int(s[3], 16)) for s in svc] == [("ce000022", ss_svc), ("cf000022", ss_svc + 4),
                                                    ("56000012", ss_svc + 8), ("ce000022", ss_svc + 8),
                                                    ("cf000022", ss_svc + 12)]
    assert int(svc[2][7], 16) & (1 << 21) == 0                              # SPSR.SS = 0: the SVC completed
