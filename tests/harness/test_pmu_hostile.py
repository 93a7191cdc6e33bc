"""A hostile guest against the PMU (harness/pmu.py over devmodel/pmu.py): seeded random MSR/MRS to every PMU
register - and the controls around it, PMUSERENR_EL0 and MDCR_EL2 - at EL2, EL1 and EL0 with random values,
each trapping access skipped by the guest's own handlers. Nothing raises in Python, the run ends with the
guest's own PSCI SYSTEM_OFF, the state stays architectural, and two runs give the same registers (the
counters are a function of the virtual clock only)."""
from __future__ import annotations

import random

import pytest
from unicorn.arm64_const import UC_ARM64_REG_X0

from harness.exits import Kind
from harness.machine import DEFAULT_RAM_IPA, Machine
from harness.pmu import ENCODINGS
from harness.sysregs import mrs_word, msr_word

BASE = DEFAULT_RAM_IPA + 0x80000
T2, T1, CODE = BASE + 0x1000, BASE + 0x2000, BASE + 0x3000
HCR_EL2, MDCR_EL2, PMUSERENR_EL0 = (3, 4, 1, 1, 0), (3, 4, 1, 1, 1), (3, 3, 9, 14, 0)
ELR = {1: (3, 0, 4, 0, 1), 2: (3, 4, 4, 0, 1)}
SPSR = {1: (3, 0, 4, 0, 0), 2: (3, 4, 4, 0, 0)}
VBAR = {1: (3, 0, 12, 0, 0), 2: (3, 4, 12, 0, 0)}
ESR_EL1 = (3, 0, 5, 2, 0)
PMEVCNTR8 = (3, 3, 14, 9, 0)                    # not implemented (N = 6): UNDEFINED
MDCR_PMU_BITS = 0x1F | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 17 | 1 << 23 | 1 << 26   # HPMN TPMCR TPM HPME HPMD HCCD HLP
ERET = 0xD69F03E0
SMC_OFF = (0xD2800100, 0xF2B08000, 0xD4000003)  # x0 = PSCI SYSTEM_OFF; smc #0 (the guest owns EL2)
REGS = [*ENCODINGS, PMEVCNTR8, PMUSERENR_EL0, MDCR_EL2]


def mov64(rd: int, value: int) -> list[int]:
    return [0xD2800000 | (value & 0xFFFF) << 5 | rd,
            *(0xF2800000 | hw << 21 | ((value >> 16 * hw) & 0xFFFF) << 5 | rd for hw in (1, 2, 3))]


def skip(el: int) -> list[int]:
    """A handler that returns past the instruction that trapped."""
    return [mrs_word(ELR[el], 28), 0x9100139C, msr_word(ELR[el], 28), ERET]       # add x28, x28, #4


def lower_el1() -> list[int]:
    """EL1's handler for EL0: an SVC ends the run (PSCI SYSTEM_OFF), anything else is skipped."""
    return [mrs_word(ESR_EL1, 28), 0xD35AFF9C, 0xF100579F, 0x54000061,   # lsr x28, #26; cmp x28, #0x15; b.ne +3
            *SMC_OFF, *skip(1)]


def value(rng: random.Random, enc) -> int:
    """Random, biased towards counting: PMCR.E, CPU_CYCLES, SW_INCR, all counters enabled."""
    name = ENCODINGS.get(enc, ("",))[0]
    if enc == MDCR_EL2:
        return rng.getrandbits(64) & MDCR_PMU_BITS
    if enc == PMUSERENR_EL0:
        return rng.getrandbits(4)
    if name == "PMCR" and rng.random() < 0.7:
        return rng.getrandbits(8) | 1
    if "TYPER" in name and rng.random() < 0.7:
        return rng.choice((0x11, 0x00, 0x23)) | rng.getrandbits(6) << 26
    if name in ("PMCNTENSET", "PMINTENSET") and rng.random() < 0.7:
        return (1 << 64) - 1
    return rng.choice((0, 1, 1 << 31, (1 << 32) - 2, (1 << 64) - 1, rng.getrandbits(64), rng.getrandbits(8)))


def ops(rng: random.Random, n: int) -> list[int]:
    """n random PMU accesses (x1 the value, MRS results in x2..x20), with a little spinning between."""
    out: list[int] = []
    for i in range(n):
        enc = rng.choice(REGS)
        if rng.random() < 0.5:
            out += [*mov64(1, value(rng, enc)), msr_word(enc, 1)]
        else:
            out.append(mrs_word(enc, 2 + i % 19))
        if rng.random() < 0.2:
            out += [0xD2800000 | rng.randrange(1, 200) << 5 | 9, 0xF1000529, 0x54FFFFE1]   # spin x9 times
    return out


def program(seed: int, n: int = 60) -> list[int]:
    """EL2: vectors, random accesses, ERET to EL1 (vectors, random accesses), ERET to EL0 (random accesses,
    SVC). IRQs stay masked."""
    rng = random.Random(seed)
    el1, el0 = CODE + 0x4000, CODE + 0x8000
    code = [*mov64(1, T2), msr_word(VBAR[2], 1), *mov64(1, T1), msr_word(VBAR[1], 1),
            *mov64(1, 1 << 31), msr_word(HCR_EL2, 1), *ops(rng, n),
            *mov64(1, el1), msr_word(ELR[2], 1), *mov64(1, 0x3C5), msr_word(SPSR[2], 1), ERET]
    return [code, [*ops(rng, n), *mov64(1, el0), msr_word(ELR[1], 1), *mov64(1, 0x3C0), msr_word(SPSR[1], 1),
                   ERET], [*ops(rng, n), 0xD4000001]]                                         # svc #0


def words(ws: list[int]) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in ws)


def run(seed: int):
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(start_el=2)
    for table, handlers in ((T2, {0x200: skip(2), 0x400: skip(2)}), (T1, {0x200: skip(1), 0x400: lower_el1()})):
        for off, h in handlers.items():
            vm.load_code(table + off, words(h))
    el2, el1, el0 = program(seed)
    vm.load_code(CODE + 0x4000, words(el1))
    vm.load_code(CODE + 0x8000, words(el0))
    vm.load_code(CODE, words(el2), entry=CODE)
    o = m.run(timeout=60)
    v = vm.vcpus[0]
    regs = [v.uc.reg_read(UC_ARM64_REG_X0 + i) for i in range(2, 21)]
    return o, regs, m.pmus.model(v)


@pytest.mark.parametrize("seed", range(6))
def test_random_pmu_accesses_at_every_el_are_architectural_and_deterministic(seed):
    o, regs, p = run(seed)
    assert o.kind == Kind.EXIT and o.status == 0, o.message                 # the guest's own SYSTEM_OFF
    implemented = p.implemented
    assert not (p.cnten | p.ovs | p.inten) & ~implemented and p.selr < 32
    assert not p.pmcr & ~p.writable_pmcr and p.read("PMCR") >> 11 & 0x1F <= 6
    assert all(not c.typer & ~p.typer_mask and c.value < 1 << 64 for c in p.counters)
    o2, regs2, p2 = run(seed)
    assert (o2.message, regs2) == (o.message, regs)
    assert (p2.ccntr, [c.value for c in p2.counters], p2.ovs, p2.cycles) == \
        (p.ccntr, [c.value for c in p.counters], p.ovs, p.cycles)
