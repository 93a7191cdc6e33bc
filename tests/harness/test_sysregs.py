"""System-register hooks per vCPU (harness/sysregs.py), and the Unicorn 2.1.4 facts they are built on."""
from __future__ import annotations

import pytest

pytest.importorskip("unicorn")
from unicorn import UC_ARCH_ARM64, UC_HOOK_INSN, UC_HOOK_INTR, UC_MODE_ARM, Uc  # noqa: E402
from unicorn.arm64_const import (UC_ARM64_INS_MRS, UC_ARM64_INS_MSR, UC_ARM64_INS_SYS, UC_ARM64_REG_PC,  # noqa: E402
                                 UC_ARM64_REG_PSTATE, UC_ARM64_REG_X0, UC_ARM64_REG_X1, UC_ARM64_REG_X2,
                                 UC_ARM64_REG_X3, UC_ARM64_REG_X4)

from harness.exits import EXIT_UNDEF  # noqa: E402
from harness.machine import Machine  # noqa: E402
from harness.sysregs import SysregHooks, mrs_word, msr_word, unicorn_undefines  # noqa: E402

BASE = 0x4008_0000
MPIDR_EL1 = (3, 0, 0, 0, 5)
TPIDR_EL0 = (3, 3, 13, 0, 2)
CNTV_CTL_EL0 = (3, 3, 14, 3, 1)
CNTVCT_EL0 = (3, 3, 14, 0, 2)
CONTEXTIDR_EL1 = (3, 0, 13, 0, 1)
ICC_PMR_EL1 = (3, 0, 4, 6, 0)
APGAKEYHI_EL1 = (3, 0, 2, 3, 1)
IMPDEF = (3, 0, 15, 0, 0)                       # S3_0_C15_C0_0, IMPLEMENTATION DEFINED space
HCR_EL2 = (3, 4, 1, 1, 0)
ADD_X2 = 0x91000442                             # add x2, x2, #1
TLBI_VMALLE1 = 0xD508871F
MSR_DAIFSET = 0xD50343DF                        # msr daifset, #3 (MSR immediate)
PSCI_OFF = (0xD2800100, 0xF2B08000, 0xD4000002)  # movz x0, #8; movk x0, #0x8400, lsl #16; hvc #0


def words(*ws: int) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in ws)


def bare(code: bytes, el: int = 1) -> Uc:
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.ctl_set_tcg_buffer_size(4 << 20)
    uc.mem_map(BASE, 0x10000)
    uc.mem_write(BASE, code)
    uc.cpr_write(3, 6, 1, 1, 0, 0x501)
    uc.reg_write(UC_ARM64_REG_PSTATE, 0x3C0 | (el << 2) | 1)
    uc.cpr_write(*HCR_EL2, 1 << 31)
    return uc


def test_encoders_match_known_words():
    assert mrs_word(MPIDR_EL1) == 0xD53800A0                 # mrs x0, mpidr_el1
    assert msr_word(TPIDR_EL0, 1) == 0xD51BD041              # msr tpidr_el0, x1
    with pytest.raises(ValueError):
        mrs_word((1, 0, 7, 8, 0))                            # op0=1 is SYS (AT/DC/IC/TLBI), not MRS


# -- Unicorn facts -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("enc", [TPIDR_EL0, CNTV_CTL_EL0, ICC_PMR_EL1, APGAKEYHI_EL1, IMPDEF])
@pytest.mark.parametrize("write", [False, True])
def test_unicorn_hooks_every_mrs_msr_implemented_or_not(enc, write):
    uc = bare(words(msr_word(enc, 1) if write else mrs_word(enc, 0)))
    seen = []

    def hook(uc, reg, cp, _ud):
        seen.append(((cp.op0, cp.op1, cp.crn, cp.crm, cp.op2), reg, cp.val))
        return 0
    uc.hook_add(UC_HOOK_INSN, hook, None, 1, 0, UC_ARM64_INS_MSR if write else UC_ARM64_INS_MRS)
    uc.reg_write(UC_ARM64_REG_X1, 0x5151)
    uc.hook_add(UC_HOOK_INTR, lambda uc, n, d: uc.emu_stop())
    uc.emu_start(BASE, BASE + 4, count=1)
    assert seen and seen[0][0] == enc and seen[0][1] == (UC_ARM64_REG_X1 if write else UC_ARM64_REG_X0)
    if write:
        assert seen[0][2] == 0x5151                          # cp.val: the value MSR writes


def test_unicorn_runs_only_the_first_mrs_hook_and_keeps_sys_hooks_apart():
    """Two MRS hooks: only the first runs; SYS (TLBI) and MSR hooks are separate; MSR (immediate) reaches none."""
    uc = bare(words(MSR_DAIFSET, mrs_word(TPIDR_EL0), TLBI_VMALLE1, msr_word(TPIDR_EL0)))
    seen = []
    for name, insn in (("mrs1", UC_ARM64_INS_MRS), ("mrs2", UC_ARM64_INS_MRS), ("sys", UC_ARM64_INS_SYS),
                       ("msr", UC_ARM64_INS_MSR)):
        uc.hook_add(UC_HOOK_INSN, lambda uc, r, cp, u, n=name: seen.append(n) or 0, None, 1, 0, insn)
    uc.emu_start(BASE, BASE + 16)
    assert seen == ["mrs1", "sys", "msr"]


def test_unicorn_late_hook_needs_a_translation_flush():
    """A block translated before the hook was added runs on without it (here the MRS's block ends at the TLBI,
    before emu_start's end address, so Unicorn keeps it cached)."""
    uc = bare(words(mrs_word(TPIDR_EL0), TLBI_VMALLE1, msr_word(TPIDR_EL0)))
    uc.emu_start(BASE, BASE + 12)
    seen = []
    uc.hook_add(UC_HOOK_INSN, lambda uc, r, cp, u: seen.append(1) or 0, None, 1, 0, UC_ARM64_INS_MRS)
    uc.emu_start(BASE, BASE + 12)
    assert seen == []
    uc.ctl_flush_tb()
    uc.emu_start(BASE, BASE + 12)
    assert seen == [1]


@pytest.mark.parametrize("enc,undef", [(CNTV_CTL_EL0, False), (ICC_PMR_EL1, True)])
@pytest.mark.parametrize("write_pc", [False, True])
def test_unicorn_return_1_moves_the_pc_only_for_accesses_it_executes(enc, undef, write_pc):
    """Returning 1: an access Unicorn executes is skipped with the PC advanced (writing PC+4 as well still
    lands right but a counted run retires one instruction less); an access it would make undefined is not
    advanced: the block restarts from its first instruction (the ADD before it runs again) unless the hook
    writes PC+4."""
    uc = bare(words(ADD_X2, mrs_word(enc), ADD_X2, ADD_X2))
    calls = []

    def hook(uc, reg, cp, _ud):
        calls.append(1)
        if len(calls) > 3:
            uc.emu_stop()
        elif write_pc:
            uc.reg_write(UC_ARM64_REG_PC, uc.reg_read(UC_ARM64_REG_PC) + 4)
        return 1
    uc.hook_add(UC_HOOK_INSN, hook, None, 1, 0, UC_ARM64_INS_MRS)
    uc.emu_start(BASE, BASE + 16)
    if undef and not write_pc:
        assert len(calls) > 1 and uc.reg_read(UC_ARM64_REG_X2) == len(calls)     # re-ran the first ADD
    else:
        assert calls == [1] and uc.reg_read(UC_ARM64_REG_X2) == 3
    uc2 = bare(words(ADD_X2, mrs_word(enc), ADD_X2, ADD_X2, ADD_X2))
    uc2.hook_add(UC_HOOK_INSN, hook, None, 1, 0, UC_ARM64_INS_MRS)
    calls.clear()
    uc2.emu_start(BASE, BASE + 20, count=5)
    if not undef:
        assert uc2.reg_read(UC_ARM64_REG_X2) == (3 if write_pc else 4)           # the count is exact only without


@pytest.mark.parametrize("enc,write,el,undef", [
    (CNTV_CTL_EL0, False, 1, False), (CNTV_CTL_EL0, True, 1, False), (TPIDR_EL0, True, 0, False),
    (ICC_PMR_EL1, False, 1, True), (ICC_PMR_EL1, True, 1, True), (APGAKEYHI_EL1, False, 1, True),
    (MPIDR_EL1, False, 1, False), (MPIDR_EL1, True, 1, True),           # MSR to a read-only register
    (CNTVCT_EL0, True, 1, True), (HCR_EL2, False, 1, True), (HCR_EL2, False, 2, False)])
def test_unicorn_undefines_probe(enc, write, el, undef):
    assert unicorn_undefines(enc, write, el) is undef


# -- the registry on machine vCPUs -----------------------------------------------------------------------------

def machine(el: int = 1, ncpus: int = 1):
    m = Machine(console=lambda vm, data, stream: None, tcg_buffer_size=8 << 20)
    vm = m.add_vm(ncpus=ncpus, start_el=el, ram_size=16 << 20)
    return m, vm


class _BareVcpu:
    """What SysregHooks needs of a vCPU, without the machine's own handlers (the generic timer's)."""
    dvm_name = "bare.cpu0"
    el = 1

    def __init__(self):
        self.uc = bare(words(ADD_X2))


def test_no_handler_no_hook():
    regs = SysregHooks(_BareVcpu())
    assert regs.installed == set()
    regs.register(TPIDR_EL0, write=lambda v, x: True)
    assert regs.installed == {"msr"}                             # one direction installs only its hook
    # every machine vCPU has the generic timer's handlers (harness/timer.py), in both directions
    m, vm = machine()
    assert vm.vcpus[0].sysregs.installed == {"mrs", "msr"} and CNTV_CTL_EL0 in vm.vcpus[0].sysregs.reads
    m2, vm2 = machine(el=2)
    assert MPIDR_EL1 in vm2.vcpus[0].sysregs.reads                # the EL2 MPIDR_EL1 handler
    assert MPIDR_EL1 not in vm.vcpus[0].sysregs.reads


@pytest.mark.parametrize("max_insns", [None, 1000])
def test_handlers_serve_unimplemented_and_implemented_registers(max_insns):
    """MRS/MSR of ICC_PMR_EL1 (Unicorn: undefined) and CONTEXTIDR_EL1 (Unicorn: implemented) served by handlers,
    uncounted and in counted slices: every other instruction runs exactly once. (CNTV_CTL_EL0, the implemented
    register this test used first, is the generic timer's on machine vCPUs: tests/harness/test_timer_machine.py.)"""
    m, vm = machine()
    v = vm.vcpus[0]
    state = {"pmr": 0xF0}
    log = []

    def write(name):
        def handler(vcpu, value):
            log.append((name, value))
            state[name] = value
            return True
        return handler
    v.sysregs.register(ICC_PMR_EL1, read=lambda vcpu: state["pmr"], write=write("pmr"))
    v.sysregs.register(CONTEXTIDR_EL1, read=lambda vcpu: 4, write=write("ctl"))
    code = words(ADD_X2, mrs_word(ICC_PMR_EL1, 0), ADD_X2, msr_word(ICC_PMR_EL1, 1), ADD_X2,
                 mrs_word(ICC_PMR_EL1, 3), mrs_word(CONTEXTIDR_EL1, 4), msr_word(CONTEXTIDR_EL1, 1), ADD_X2,
                 *PSCI_OFF)
    vm.load_code(BASE, code)
    v.power_on(BASE)
    v.uc.reg_write(UC_ARM64_REG_X1, 0x80)
    o = m.run(timeout=10, max_insns=max_insns)
    assert o.exit_code == 0, o.message
    assert v.uc.reg_read(UC_ARM64_REG_X2) == 4 and v.uc.reg_read(UC_ARM64_REG_X3) == 0x80
    assert v.uc.reg_read(UC_ARM64_REG_X4) == 4 and log == [("pmr", 0x80), ("ctl", 0x80)]
    assert v.sysregs.served == 5 and v.sysregs.installed == {"mrs", "msr"}


def test_declining_handler_leaves_the_access_to_unicorn():
    m, vm = machine()
    v = vm.vcpus[0]
    v.sysregs.register(TPIDR_EL0, read=lambda vcpu: None)
    v.sysregs.register(ICC_PMR_EL1, read=lambda vcpu: None)
    v.uc.reg_write(UC_ARM64_REG_X0, 0)
    vm.load_code(BASE, words(msr_word(TPIDR_EL0, 1), mrs_word(TPIDR_EL0, 2), mrs_word(ICC_PMR_EL1, 0)))
    v.power_on(BASE)
    v.uc.reg_write(UC_ARM64_REG_X1, 0x77)
    o = m.run(timeout=10)
    assert v.uc.reg_read(UC_ARM64_REG_X2) == 0x77                # Unicorn's own TPIDR_EL0
    assert o.exit_code == EXIT_UNDEF and "undefined instruction" in o.message and v.sysregs.served == 0


def test_one_handler_per_encoding_and_direction():
    _, vm = machine()
    regs = vm.vcpus[0].sysregs
    regs.register(TPIDR_EL0, read=lambda v: 1)
    regs.register(TPIDR_EL0, write=lambda v, x: True)            # the other direction is free
    with pytest.raises(ValueError):
        regs.register(TPIDR_EL0, read=lambda v: 2)
    with pytest.raises(ValueError):
        regs.register(TPIDR_EL0)
    with pytest.raises(ValueError):
        regs.register((3, 0, 16, 0, 0), read=lambda v: 0)


def test_mpidr_at_el2_comes_from_the_registry():
    """At EL2 Unicorn's MPIDR_EL1 is 0x80000000 on every vCPU; the registry answers each vCPU's own."""
    m, vm = machine(el=2, ncpus=3)
    vm.load_code(BASE, words(mrs_word(MPIDR_EL1, 0)))
    for v in vm.vcpus:
        v.power_on(BASE)
        v.uc.emu_start(BASE, BASE + 4, count=1)
        assert v.uc.reg_read(UC_ARM64_REG_X0) == v.mpidr and v.pc == BASE + 4
    assert [v.mpidr for v in vm.vcpus] == [0x8000_0000, 0x8000_0001, 0x8000_0002]


def test_stand_in_registers_read_fixed_values_and_are_logged_under_unimp():
    import io

    from harness.log import Log
    log = io.StringIO()
    m = Machine(console=lambda vm, data, stream: None, tcg_buffer_size=8 << 20, log=Log("unimp", stream=log))
    vm = m.add_vm(ram_size=16 << 20)
    v = vm.vcpus[0]
    v.sysregs.stand_in(ICC_PMR_EL1, "ICC_PMR_EL1", 0xF8)
    vm.load_code(BASE, words(mrs_word(ICC_PMR_EL1, 3), msr_word(ICC_PMR_EL1, 1), mrs_word(ICC_PMR_EL1, 2),
                             *PSCI_OFF))
    v.power_on(BASE)
    v.uc.reg_write(UC_ARM64_REG_X1, 0x10)
    o = m.run(timeout=10)
    assert o.exit_code == 0 and v.uc.reg_read(UC_ARM64_REG_X3) == v.uc.reg_read(UC_ARM64_REG_X2) == 0xF8
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "read of system register ICC_PMR_EL1" in lines[0] and "stand-in" in lines[0]
    assert "write to system register ICC_PMR_EL1" in lines[1]
