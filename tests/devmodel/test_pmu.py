"""devmodel/pmu.py: the PMUv3 of one PE as pure state (Arm ARM D13 "The Performance Monitors Extension",
registers D17.5): identification, enables, overflow at 32 and 64 bits, SW_INCR, the cycle counter and
CPU_CYCLES, filters, the EL2 partition (MDCR_EL2.HPMN/HPME/HPMD), the interrupt request, the EL0/EL2 access
rules."""
from __future__ import annotations

import pytest

from devmodel.pmu import (CPU_CYCLES, CYCLE, OK, PMCR_C, PMCR_D, PMCR_E, PMCR_LC, PMCR_LP, PMCR_P, PMUV3,
                          PMUV3P1, PMUV3P5, PPI, SW_INCR, TRAP_EL1, TRAP_EL2, Pmu, PmuConfig, PmuContext, access,
                          pmceid)

M32, M64 = (1 << 32) - 1, (1 << 64) - 1
CHAIN, INST_RETIRED, STALL_FRONTEND = 0x1E, 0x08, 0x23
U, P, NSH = 1 << 30, 1 << 31, 1 << 27
HPME, HPMD, HCCD = 1 << 7, 1 << 17, 1 << 23


def counting(pmu: Pmu, n: int, event: int, typer: int = 0) -> Pmu:
    """Counter n programmed with `event` and enabled; PMCR.E set."""
    pmu.write(f"PMEVTYPER{n}", event | typer)
    pmu.write("PMCNTENSET", 1 << n)
    pmu.write("PMCR", pmu.read("PMCR") | PMCR_E)
    return pmu


def test_identification_is_qemu_7_2_max():
    p = Pmu(PmuConfig.qemu_max())
    assert p.read("PMCR") == 0x41013000                       # IMP 'A', IDCODE 1, N = 6
    assert (p.read("PMCEID0"), p.read("PMCEID1")) == (0x20001, 0x10000018)
    assert pmceid(PMUV3) == (0x20001, 0)                     # no STALL_* before PMUv3p1
    assert pmceid(PMUV3P1) == (0x20001, 0x18)
    assert PPI == 23


def test_pmcr_writable_bits_and_resets():
    p = Pmu()
    for n in range(6):
        p.write(f"PMEVCNTR{n}", 100 + n)
    p.write("PMCCNTR", 77)
    p.write("PMCR", M64)
    assert p.read("PMCR") == 0x41013000 | 0xF9               # E D X DP LC LP kept; P and C read 0
    assert [p.read(f"PMEVCNTR{n}") for n in range(6)] == [0] * 6 and p.read("PMCCNTR") == 0
    v3 = Pmu(PmuConfig(PMUV3, 0x41, 0x03, 6))
    v3.write("PMCR", M64)
    assert v3.read("PMCR") & 0xFF == 0x79                    # no PMCR.LP before PMUv3p5
    p.write("PMCCNTR", 5)
    p.write("PMCR", PMCR_P)
    assert p.read("PMCCNTR") == 5                            # P resets the event counters only
    p.write("PMCR", PMCR_C)
    assert p.read("PMCCNTR") == 0


def test_set_clear_registers_keep_implemented_bits():
    p = Pmu()
    for s, c in (("PMCNTENSET", "PMCNTENCLR"), ("PMOVSSET", "PMOVSCLR"), ("PMINTENSET", "PMINTENCLR")):
        p.write(s, M64)
        assert p.read(s) == p.read(c) == (1 << CYCLE) | 0x3F
        p.write(c, 0x5)
        assert p.read(s) == (1 << CYCLE) | 0x3A
    p.write("PMSELR", M64)
    assert p.read("PMSELR") == 31


def test_selected_counter_views():
    p = Pmu()
    p.write("PMSELR", 2)
    p.write("PMXEVTYPER", 0xEA | M64)
    p.write("PMXEVCNTR", 0xdeadbeef)
    assert p.read("PMEVTYPER2") == 0xFE00FFFF and p.read("PMEVCNTR2") == 0xdeadbeef   # P U NSK NSU NSH M MT evt
    p.write("PMSELR", 31)                                     # SEL = 31: PMXEVTYPER is PMCCFILTR
    p.write("PMXEVTYPER", M64)
    assert p.read("PMCCFILTR") == 0xFC000000 and p.read("PMXEVTYPER") == 0xFC000000
    p.write("PMXEVCNTR", 5)
    assert p.read("PMXEVCNTR") == 0 and p.read("PMCCNTR") == 0
    p.write("PMSELR", 7)                                      # no counter 7 (N = 6): RAZ/WI
    p.write("PMXEVCNTR", 5)
    assert p.read("PMXEVCNTR") == 0 and p.read("PMXEVTYPER") == 0


def test_swinc_needs_enable_event_and_bit():
    p = Pmu()
    p.write("PMEVTYPER0", SW_INCR)
    p.write("PMEVTYPER1", SW_INCR)
    p.write("PMEVTYPER2", CPU_CYCLES)
    p.write("PMCNTENSET", 0b111)
    p.swinc(0b111)
    assert [p.read(f"PMEVCNTR{n}") for n in range(3)] == [0, 0, 0]        # PMCR.E = 0
    p.write("PMCR", PMCR_E)
    p.swinc(0b111)
    p.swinc(0b001)
    assert [p.read(f"PMEVCNTR{n}") for n in range(3)] == [2, 1, 0]
    p.write("PMCNTENCLR", 0b1)
    p.swinc(0b1)
    assert p.read("PMEVCNTR0") == 2
    p.write("PMEVTYPER1", SW_INCR | P)                        # excluded at EL1
    p.swinc(0b10)
    assert p.read("PMEVCNTR1") == 1


def test_overflow_32_and_64_bit():
    p = counting(Pmu(), 0, SW_INCR)
    p.write("PMEVCNTR0", M32 - 1)
    p.swinc(1)
    p.swinc(1)
    assert p.read("PMEVCNTR0") == 1 << 32 and p.read("PMOVSSET") == 1    # 64-bit counter, 32-bit overflow
    p.write("PMOVSCLR", 1)
    p.write("PMCR", PMCR_E | PMCR_LP)
    p.write("PMEVCNTR0", M32)
    p.swinc(1)
    assert p.read("PMOVSSET") == 0                                         # LP: no overflow out of bit 31
    p.write("PMEVCNTR0", M64)
    p.swinc(1)
    assert p.read("PMEVCNTR0") == 0 and p.read("PMOVSSET") == 1
    v3 = counting(Pmu(PmuConfig(PMUV3, 0x41, 0x01, 6)), 0, SW_INCR)
    v3.write("PMEVCNTR0", M64)
    assert v3.read("PMEVCNTR0") == M32                                    # 32-bit counters before PMUv3p5
    v3.swinc(1)
    assert v3.read("PMEVCNTR0") == 0 and v3.read("PMOVSSET") == 1


def test_unimplemented_events_do_not_count_and_chain_is_not_implemented():
    p = counting(Pmu(), 0, SW_INCR)
    counting(p, 1, CHAIN)
    counting(p, 2, INST_RETIRED)
    counting(p, 3, STALL_FRONTEND)
    p.write("PMEVCNTR0", M32)
    p.at(1000)
    p.swinc(0b1111)
    assert [p.read(f"PMEVCNTR{n}") for n in range(1, 4)] == [0, 0, 0]
    assert not pmceid(PMUV3P5)[0] & (1 << CHAIN | 1 << INST_RETIRED)


def test_cycle_counter_and_cpu_cycles_count_from_the_cycle_count():
    p = Pmu()
    p.at(1000)
    counting(p, 0, CPU_CYCLES)
    p.write("PMCNTENSET", 1 << CYCLE)
    p.at(1500)
    assert p.read("PMCCNTR") == 500 and p.read("PMEVCNTR0") == 500
    p.write("PMCR", PMCR_E | PMCR_D)                          # every 64th cycle (LC = 0)
    p.at(1600)
    assert p.read("PMCCNTR") == 500 + 1600 // 64 - 1500 // 64 and p.read("PMEVCNTR0") == 600
    p.write("PMCR", 0)
    p.at(5000)
    assert p.read("PMCCNTR") == 502 and p.read("PMEVCNTR0") == 600
    p.at(4000)                                                 # never backwards
    assert p.cycles == 5000


def test_cycle_counter_overflow_lc_and_next_overflow():
    p = Pmu()
    p.write("PMCNTENSET", 1 << CYCLE)
    p.write("PMINTENSET", 1 << CYCLE)
    p.write("PMCCNTR", M32 - 9)
    assert p.next_overflow() is None                          # not counting
    p.write("PMCR", PMCR_E)
    assert p.next_overflow() == 10 and not p.irq
    p.at(10)
    assert p.read("PMCCNTR") == 1 << 32 and p.read("PMOVSSET") == 1 << CYCLE and p.irq
    p.write("PMOVSCLR", M64)
    p.write("PMCR", PMCR_E | PMCR_LC)                         # 64-bit overflow
    assert p.next_overflow() == 10 + M64 - (1 << 32) + 1
    p.write("PMCCNTR", M64 - 4)
    p.at(15)
    assert p.read("PMCCNTR") == 0 and p.irq


def test_interrupt_request_needs_inten_and_enable():
    p = counting(Pmu(), 0, SW_INCR)
    p.write("PMEVCNTR0", M32)
    p.swinc(1)
    assert p.read("PMOVSSET") == 1 and not p.irq              # PMINTENSET clear
    p.write("PMINTENSET", 1)
    assert p.irq
    p.write("PMCR", 0)
    assert not p.irq                                          # PMCR.E gates it (QEMU pmu_update_irq)
    p.write("PMCR", PMCR_E)
    p.write("PMOVSCLR", 1)
    assert not p.irq


@pytest.mark.parametrize("el, typer, counts", [
    # no EL3 (virt, secure=off): NSK and NSU do not filter, P and U do (QEMU 7.2's output: guest_fw pmu.c)
    (1, 0, True), (1, P, False), (1, P | (1 << 29), False), (1, 1 << 29, True),
    (0, 0, True), (0, U, False), (0, U | (1 << 28), False), (0, 1 << 28, True),
    (2, 0, False), (2, NSH, True)])                                 # EL2 counts only with NSH
def test_filters(el, typer, counts):
    p = Pmu()
    p.at(0, PmuContext(el, el == 2))
    p.write("PMCCFILTR", typer)
    p.write("PMCNTENSET", 1 << CYCLE)
    p.write("PMCR", PMCR_E)
    p.at(100)
    assert p.read("PMCCNTR") == (100 if counts else 0)


def test_hccd_stops_the_cycle_counter_at_el2_only():
    """MDCR_EL2.HCCD (FEAT_PMUv3p5): no cycle counting at EL2; CPU_CYCLES in an event counter and EL1 count."""
    p = Pmu()
    p.at(0, PmuContext(2, True, 6 | HCCD))
    p.write("PMCCFILTR", NSH)
    counting(p, 0, CPU_CYCLES, NSH)
    p.write("PMCNTENSET", 1 << CYCLE)
    p.at(100)
    assert (p.read("PMCCNTR"), p.read("PMEVCNTR0")) == (0, 100)
    p.at(100, PmuContext(1, True, 6 | HCCD))
    p.at(150)
    assert (p.read("PMCCNTR"), p.read("PMEVCNTR0")) == (50, 150)
    v3 = Pmu(PmuConfig(version=PMUV3))                         # before PMUv3p5 the bit is RES0
    v3.at(0, PmuContext(2, True, 6 | HCCD))
    v3.write("PMCCFILTR", NSH)
    v3.write("PMCNTENSET", 1 << CYCLE)
    v3.write("PMCR", PMCR_E)
    v3.at(10)
    assert v3.read("PMCCNTR") == 10


def test_el2_partition_hpmn_hpme_hpmd():
    p = Pmu()
    ctx = PmuContext(1, True, 4)                              # HPMN = 4: counters 4, 5 belong to EL2
    p.at(0, ctx)
    assert (p.read("PMCR") >> 11) & 0x1F == 4                 # N reads HPMN at EL1
    for n in (0, 4):
        counting(p, n, SW_INCR)
    p.swinc(0b10001)
    assert (p.read("PMEVCNTR0"), p.read("PMEVCNTR4")) == (1, 0)     # counter 4 needs MDCR_EL2.HPME
    p.at(0, PmuContext(1, True, 4 | HPME))
    p.swinc(0b10001)
    assert (p.read("PMEVCNTR0"), p.read("PMEVCNTR4")) == (2, 1)
    p.write("PMCR", PMCR_E | PMCR_P)                          # from EL1: resets counters < HPMN only
    assert (p.read("PMEVCNTR0"), p.read("PMEVCNTR4")) == (0, 1)
    p.write("PMEVTYPER0", SW_INCR | NSH)
    p.write("PMEVTYPER4", SW_INCR | NSH)
    p.at(0, PmuContext(2, True, 4 | HPME | HPMD))             # HPMD: counters < HPMN prohibited at EL2
    p.swinc(0b10001)
    assert (p.read("PMEVCNTR0"), p.read("PMEVCNTR4")) == (0, 2)
    assert (p.read("PMCR") >> 11) & 0x1F == 6                 # N at EL2


@pytest.mark.parametrize("kind, write, pmuserenr, want", [
    ("ctl", False, 0, TRAP_EL1), ("ctl", True, 1, OK),
    ("cnt", False, 0b1000, OK), ("cnt", True, 0b1000, TRAP_EL1),              # ER: reads of the counters
    ("sel", True, 0b1000, OK), ("ccnt", False, 0b0100, OK), ("ccnt", True, 0b0100, TRAP_EL1),   # CR: reads
    ("swinc", True, 0b0010, OK), ("ctl", False, 0b1110, TRAP_EL1)])            # SW: PMSWINC writes
def test_el0_access_pmuserenr(kind, write, pmuserenr, want):
    assert access(kind, write, 0, pmuserenr) == want
    assert access(kind, write, 1, 0) == OK


def test_el2_traps():
    tpm, tpmcr = 1 << 6, 1 << 5
    assert access("ctl", False, 1, 0, tpm, True) == TRAP_EL2
    assert access("ctl", False, 1, 0, tpm, False) == OK       # no EL2: MDCR_EL2 does not apply
    assert access("pmcr", True, 1, 0, tpmcr, True) == TRAP_EL2 and access("ctl", True, 1, 0, tpmcr, True) == OK
    assert access("ctl", False, 2, 0, tpm | tpmcr, True) == OK
    assert access("ctl", False, 0, 0, tpm, True) == TRAP_EL1  # PMUSERENR first


def test_qemu_7_2_access_rules():
    """QEMU 7.2's pmreg_access*: no TPMCR, and PMUSERENR.ER/CR/SW allow an EL0 access before TPM is looked at."""
    tpm, tpmcr = 1 << 6, 1 << 5
    assert access("pmcr", False, 1, 0, tpmcr, True, qemu_7_2=True) == OK
    assert access("pmcr", False, 1, 0, tpm, True, qemu_7_2=True) == TRAP_EL2
    for kind, write, en in (("cnt", False, 0b1000), ("ccnt", False, 0b0100), ("swinc", True, 0b0010),
                            ("sel", True, 0b1000)):
        assert access(kind, write, 0, en, tpm, True) == TRAP_EL2                 # the Arm ARM
        assert access(kind, write, 0, en | 1, tpm, True, qemu_7_2=True) == OK    # QEMU 7.2, with EN or not
        assert access(kind, write, 0, en, tpm, True, qemu_7_2=True) == OK
    assert access("ccnt", True, 0, 0b0101, tpm, True, qemu_7_2=True) == TRAP_EL2     # CR: reads only
    assert access("ccnt", True, 0, 0b0100, tpm, True, qemu_7_2=True) == TRAP_EL1
