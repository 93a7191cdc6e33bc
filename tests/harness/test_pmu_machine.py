"""harness/pmu.py: the PMU served on the machine's vCPUs - EL0 access rules left to Unicorn's own check
(PMUSERENR_EL0), the ID register and the EL2 reset, determinism from the virtual clock, no cost for guests
that do not touch it. The guest-visible behaviour is guest_fw/tests/pmu.c (catalogue pmu, pmu_gicv3, pmu_el2:
the same output under QEMU 7.2) and kvm-unit-tests' pmu.flat (tests/harness/test_kvm_unit_tests.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from unicorn.arm64_const import (UC_ARM64_REG_X0, UC_ARM64_REG_X1, UC_ARM64_REG_X2, UC_ARM64_REG_X3, UC_ARM64_REG_X5,
                                 UC_ARM64_REG_X19, UC_ARM64_REG_X20, UC_ARM64_REG_X21)

from harness.exits import EXIT_UNDEF
from harness.machine import DEFAULT_RAM_IPA, Machine
from harness.sysregs import mrs_word, msr_word

BASE = DEFAULT_RAM_IPA + 0x80000
ELR_EL1, SPSR_EL1, PMUSERENR_EL0 = (3, 0, 4, 0, 1), (3, 0, 4, 0, 0), (3, 3, 9, 14, 0)
PMCCNTR, PMEVCNTR5, PMINTENSET, PMSWINC = (3, 3, 9, 13, 0), (3, 3, 14, 8, 5), (3, 0, 9, 14, 1), (3, 3, 9, 12, 4)
PMCR, PMCNTENSET, PMCCFILTR = (3, 3, 9, 12, 0), (3, 3, 9, 12, 1), (3, 3, 14, 15, 7)
ID_AA64DFR0, MDCR_EL2, VBAR_EL1 = (3, 0, 0, 5, 0), (3, 4, 1, 1, 1), (3, 0, 12, 0, 0)
ERET, UDF = 0xD69F03E0, 0x00000000
PSCI_OFF_HVC = (0xD2800100, 0xF2B08000, 0xD4000002)             # movz x0, #8; movk x0, #0x8400, lsl 16; hvc #0
KUT = Path(__file__).resolve().parents[1] / "fixtures" / "kvm-unit-tests-1da1819e" / "arm" / "pmu.flat"


def words(*ws: int) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in ws)


def movz(rd: int, imm16: int) -> int:
    return 0xD2800000 | (imm16 & 0xFFFF) << 5 | rd


def at_el0(el1_prologue: list[int], el0_code: list[int], machine=None):
    """Run `el1_prologue` at EL1, then ERET to `el0_code` at EL0 (no vector table: the first exception ends
    the run with its death line). `machine`: (Machine, VM) to use."""
    m, vm = machine if machine is not None else (Machine(console=lambda vm, d, s: None), None)
    vm = vm if vm is not None else m.add_vm()
    el0 = BASE + 0x100
    code = [*el1_prologue, movz(2, el0 & 0xFFFF), 0xF2A00000 | ((el0 >> 16) & 0xFFFF) << 5 | 2,
            msr_word(ELR_EL1, 2), movz(3, 0), msr_word(SPSR_EL1, 3), ERET]
    vm.load_code(BASE, words(*code))
    vm.load_code(el0, words(*el0_code, UDF), entry=BASE)
    return m, vm, m.run(timeout=30), el0


@pytest.mark.parametrize("pmuserenr, insn, ok, ec", [
    (0, mrs_word(PMCCNTR), False, 0x18),           # EN = 0: trapped to EL1
    (0b0100, mrs_word(PMCCNTR), True, 0),          # CR: EL0 may read the cycle counter
    (0b0100, msr_word(PMCCNTR), False, 0x18),      # ... not write it
    (0b0010, msr_word(PMSWINC), True, 0),          # SW: software increments
    (0b1000, mrs_word(PMEVCNTR5), True, 0),        # ER: counter reads, also of a counter Unicorn lacks (N = 4)
    (0b0001, mrs_word(PMINTENSET), False, 0),      # an EL1 register: UNDEFINED at EL0 whatever PMUSERENR
])
def test_el0_access_follows_pmuserenr(pmuserenr, insn, ok, ec):
    _, _, o, el0 = at_el0([movz(1, pmuserenr), msr_word(PMUSERENR_EL0, 1)], [insn])
    assert o.exit_code == EXIT_UNDEF, o.message
    assert o.pc == el0 + (4 if ok else 0) and o.esr >> 26 == ec, o.message


def test_el0_reads_a_running_cycle_counter_from_the_virtual_clock():
    prologue = [movz(1, 0b0100), msr_word(PMUSERENR_EL0, 1), 0xD2B00001,    # movz x1, #0x8000, lsl 16
                msr_word(PMCNTENSET, 1), movz(1, 1), msr_word(PMCR, 1)]     # the cycle counter; PMCR.E
    m, vm, o, el0 = at_el0(prologue, [mrs_word(PMCCNTR, 0), mrs_word(PMCCNTR, 1)])
    x0, x1 = (vm.vcpus[0].uc.reg_read(r) for r in (UC_ARM64_REG_X0, UC_ARM64_REG_X1))
    assert o.pc == el0 + 8 and 0 < x0 < x1 and x0 % 16 == 0 and m.clock.started     # 16 cycles per tick


def test_id_register_and_el2_reset():
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(start_el=2)
    vm.load_code(BASE, words(mrs_word(ID_AA64DFR0, 19), mrs_word(MDCR_EL2, 20), mrs_word(PMCR, 21),
                             0xD2800100, 0xF2B08000, 0xD4000003))   # PSCI SYSTEM_OFF by SMC from EL2
    o = m.run(timeout=30)
    dfr0, mdcr, pmcr = (vm.vcpus[0].uc.reg_read(r) for r in (UC_ARM64_REG_X19, UC_ARM64_REG_X20, UC_ARM64_REG_X21))
    assert o.exit_code == 0, o.message
    assert (dfr0 >> 8) & 0xF == 6 and mdcr & 0x1F == 6 and pmcr == 0x41013000


def test_a_guest_without_pmu_accesses_pays_nothing():
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm()
    vm.load_code(BASE, words(movz(1, 5), *PSCI_OFF_HVC))
    o = m.run(timeout=30)
    assert o.exit_code == 0 and not m.clock.started and m.pmus.model(vm.vcpus[0]).cycles == 0
    assert vm.vcpus[0].sysregs.served == 0


def test_kut_cycle_counter_output_is_deterministic(capfd):
    from harness.cli import main
    outs = []
    for _ in range(2):
        assert main(["run", str(KUT), "-append", "cycle-counter 0"]) == 0
        outs.append(capfd.readouterr().out)
    assert outs[0] == outs[1] and "PASS: pmu: cycle-counter: Cycle/instruction ratio" in outs[0]


@pytest.mark.parametrize("pmccfiltr, counts_at_el0", [(1 << 31, True), (1 << 30, False)])   # P / U
def test_filters_follow_the_el_across_eret(pmccfiltr, counts_at_el0):
    """The cycle counter excluding EL1 (P) starts counting at the ERET to EL0, not at the next PMU access;
    excluding EL0 (U) it stops there."""
    prologue = [movz(1, 0b0100), msr_word(PMUSERENR_EL0, 1), 0xD2B00001, msr_word(PMCNTENSET, 1),
                0xD2A00001 | (pmccfiltr >> 16) << 5, msr_word(PMCCFILTR, 1), movz(1, 1), msr_word(PMCR, 1)]
    m, vm, o, el0 = at_el0(prologue, [*[0xD503201F] * 8, mrs_word(PMCCNTR, 0), mrs_word(PMCCNTR, 1)])
    x0, x1 = (vm.vcpus[0].uc.reg_read(r) for r in (UC_ARM64_REG_X0, UC_ARM64_REG_X1))
    assert o.pc == el0 + 40, o.message
    # the EL1 part (PMCR.E to the ERET) took no time: nothing sampled the clock before the EL0 reads
    assert (0 < x0 < x1) if counts_at_el0 else (x0 == x1 == 0)


def test_filters_follow_the_el_across_exception_entry():
    """Counting at EL0 only (P): the SVC's entry to EL1 stops the cycle counter there - the EL1 handler reads
    what EL0 last read, with no time sampled in between - rather than at the handler's PMU access."""
    vbar = BASE + 0x800
    prologue = [movz(1, 0b0100), msr_word(PMUSERENR_EL0, 1), 0xD2B00001, msr_word(PMCNTENSET, 1),
                0xD2B00001, msr_word(PMCCFILTR, 1), movz(1, 1), msr_word(PMCR, 1),
                movz(4, vbar & 0xFFFF), 0xF2A00004 | ((vbar >> 16) & 0xFFFF) << 5, msr_word(VBAR_EL1, 4)]
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm()
    vm.load_code(vbar + 0x400, words(mrs_word(PMCCNTR, 5), *PSCI_OFF_HVC))     # lower EL, AArch64, sync
    _, vm, o, el0 = at_el0(prologue, [mrs_word(PMCCNTR, 2), mrs_word(PMCCNTR, 3), 0xD4000001], machine=(m, vm))
    x5, x2, x3 = (vm.vcpus[0].uc.reg_read(r) for r in (UC_ARM64_REG_X5, UC_ARM64_REG_X2, UC_ARM64_REG_X3))
    assert o.exit_code == 0, o.message
    assert 0 < x2 < x3 == x5


def test_mdcr_el2_write_moves_the_el2_partition_at_once():
    """At EL2, MSR MDCR_EL2 with HPMN = 0 (HPME = 0) makes event counter 0, counting CPU_CYCLES, EL2's and
    disabled at that write, not at the next PMU access; HPMN = 6 gives it back to PMCR.E."""
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(start_el=2)
    cntr0 = (3, 3, 14, 8, 0)
    code = [movz(1, 0x11), 0xF2A00001 | (1 << 27 >> 16) << 5, msr_word((3, 3, 14, 12, 0), 1),  # CPU_CYCLES|NSH
            movz(1, 1), msr_word(PMCNTENSET, 1), msr_word(PMCR, 1),
            mrs_word(cntr0, 19), movz(2, 0), msr_word(MDCR_EL2, 2), mrs_word(cntr0, 20),
            movz(2, 6), msr_word(MDCR_EL2, 2), mrs_word(cntr0, 21), 0xD2800100, 0xF2B08000, 0xD4000003]
    vm.load_code(BASE, words(*code))
    o = m.run(timeout=30)
    before, stopped, again = (vm.vcpus[0].uc.reg_read(r) for r in (UC_ARM64_REG_X19, UC_ARM64_REG_X20,
                                                                   UC_ARM64_REG_X21))
    assert o.exit_code == 0, o.message
    assert 0 < before == stopped < again


def test_overflow_interrupt_is_traced_at_the_overflow_tick():
    """The cycle counter's overflow deadline: `pmu_irq` rises at the tick the 32-bit overflow happens (16
    cycles per tick), while the guest spins without touching the PMU."""
    from devmodel.trace import ListSink, Tracer
    sink = ListSink()
    m = Machine(tracer=Tracer(events="pmu_irq", sinks=[sink]), console=lambda vm, d, s: None)
    vm = m.add_vm()
    start = (1 << 32) - 16 * 5000                                    # 5000 ticks before the overflow
    code = [movz(1, start & 0xFFFF), 0xF2A00001 | (start >> 16) << 5, msr_word(PMCCNTR, 1),
            0xD2B00001, msr_word(PMCNTENSET, 1), msr_word(PMINTENSET, 1), movz(1, 1), msr_word(PMCR, 1),
            movz(9, 20000), 0xF1000529, 0x54FFFFE1, *PSCI_OFF_HVC]       # spin 20000 times
    vm.load_code(BASE, words(*code))
    o = m.run(timeout=30)
    recs = [r for r in sink.records if r.event == "pmu_irq"]
    assert o.exit_code == 0, o.message
    assert len(recs) == 1 and recs[0].fields["level"] is True and recs[0].fields["ovs"] == 1 << 31
    assert recs[0].fields["count"] == 5000


HCR_EL2, ELR_EL2, SPSR_EL2 = (3, 4, 1, 1, 0), (3, 4, 4, 0, 1), (3, 4, 4, 0, 0)


def below_el2(mdcr: int, code: list[int], el: int, pmuserenr: int = 0b1111):
    """Start at EL2: PMCCNTR = 0x1234, PMEVCNTR5 = 0x5678 (not counting), MDCR_EL2 = `mdcr`, PMUSERENR_EL0 =
    `pmuserenr`; ERET to `code` at `el` (0 or 1, AArch64). Returns (vcpu, outcome, code address) once `code` ran
    into its UDF (no vector tables)."""
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(start_el=2)
    low = BASE + 0x100
    vm.load_code(BASE, words(movz(1, 0x1234), msr_word(PMCCNTR, 1), movz(1, 0x5678), msr_word(PMEVCNTR5, 1),
                             0xD2B00001, msr_word(HCR_EL2, 1), movz(1, mdcr), msr_word(MDCR_EL2, 1),  # HCR.RW
                             movz(1, pmuserenr), msr_word(PMUSERENR_EL0, 1), movz(2, low & 0xFFFF),
                             0xF2A00000 | ((low >> 16) & 0xFFFF) << 5 | 2, msr_word(ELR_EL2, 2),
                             movz(3, 5 if el else 0), msr_word(SPSR_EL2, 3), ERET))
    vm.load_code(low, words(*code, UDF), entry=BASE)
    return vm.vcpus[0], m.run(timeout=30), low


@pytest.mark.parametrize("mdcr, insn, el, pmuserenr, want", [
    (6 | 1 << 5, mrs_word(PMCR, 19), 1, 0, 0x41013000),    # TPMCR (QEMU 7.2 lacks it): N = HPMN, not Unicorn's
    (2 | 1 << 5, mrs_word(PMCR, 19), 1, 0, 0x41011000),    # ... PMCR (0x2040); N = HPMN = 2
    (6 | 1 << 6, mrs_word(PMCCNTR, 19), 0, 0b0100, 0x1234),   # TPM after PMUSERENR.CR at EL0: the model's counter
    (6 | 1 << 6, mrs_word(PMCCNTR, 19), 0, 0b1111, 0x1234),   # ... also with EN
    (6 | 1 << 6, mrs_word(PMEVCNTR5, 19), 0, 0b1000, 0x5678),  # TPM after ER: PMEVCNTR5, which Unicorn lacks
])
def test_traps_qemu_7_2_lacks_are_served_as_qemu_serves_them(mdcr, insn, el, pmuserenr, want):
    """MDCR_EL2.TPMCR, and MDCR_EL2.TPM for an EL0 access PMUSERENR_EL0 allows: the Arm ARM traps them to EL2,
    QEMU 7.2 (target/arm/helper.c pmreg_access*) does not. The model serves them as QEMU does; declining them
    let Unicorn's own PMU answer (PMCR 0x2040: IMP 0, N = 4) or make PMEVCNTR5 UNDEFINED."""
    vcpu, o, low = below_el2(mdcr, [insn], el, pmuserenr)
    assert o.pc == low + 4 and o.esr >> 26 == 0, o.message          # ran, then the UDF
    assert vcpu.uc.reg_read(UC_ARM64_REG_X19) == want


@pytest.mark.parametrize("insn, el, pmuserenr", [
    (mrs_word(PMCR, 19), 1, 0), (mrs_word(PMCR, 19), 0, 0b0001),           # TPM from EL1, from EL0 with EN
    (msr_word(PMCCNTR, 19), 0, 0b0101)])                                     # CR allows reads only
def test_tpm_still_traps_what_qemu_traps(insn, el, pmuserenr):
    vcpu, o, low = below_el2(6 | 1 << 6, [insn], el, pmuserenr)
    assert o.pc == low and o.esr >> 26 == 0x18, o.message            # EC 0x18 (to EL2: Unicorn's own check)


def test_mdcr_el2_write_moves_the_interrupt_of_an_el2_counter_at_once():
    """Counter 5 overflowed with its PMINTENSET bit set, PMCR.E = 0, no counter enabled: the request is low.
    MSR MDCR_EL2 with HPMN = 4 and HPME gives counter 5 to EL2, enabled by HPME: the request rises at that
    write (Arm ARM: the interrupt is gated by the counter's enable), not at a later PMU access."""
    from devmodel.trace import ListSink, Tracer
    sink = ListSink()
    m = Machine(tracer=Tracer(events="pmu_irq", sinks=[sink]), console=lambda vm, d, s: None)
    vm = m.add_vm(start_el=2)
    pmovsset = (3, 3, 9, 14, 3)
    vm.load_code(BASE, words(movz(1, 1 << 5), msr_word(pmovsset, 1), msr_word(PMINTENSET, 1),
                             movz(2, 4 | 1 << 7), msr_word(MDCR_EL2, 2), 0xD2800100, 0xF2B08000, 0xD4000003))
    o = m.run(timeout=30)
    assert o.exit_code == 0, o.message
    assert [(r.fields["level"], r.fields["ovs"]) for r in sink.records if r.event == "pmu_irq"] == [(True, 1 << 5)]
