"""The PMUv3 of every vCPU: `devmodel.pmu.Pmu` state served through the vCPU's system-register hooks
(harness/sysregs.py), counting from the machine's virtual clock (harness/clock.py), instead of Unicorn's own
PMU (QEMU 5's: PMUVer 5 on `max`, PMCR.IMP 0, N = 4, counting host time).

Served (Arm ARM D17.5; what QEMU 7.2 gives `-M virt`): PMCR_EL0, PMCNTENSET/CLR_EL0, PMOVSSET/CLR_EL0,
PMINTENSET/CLR_EL1, PMSELR_EL0, PMSWINC_EL0 (write), PMCEID0/1_EL0 (read), PMCCNTR_EL0, PMCCFILTR_EL0,
PMXEVTYPER/PMXEVCNTR_EL0 and PMEVTYPER<n>/PMEVCNTR<n>_EL0 for n < N. The configuration is QEMU 7.2's for the
CPU model (`harness.cpu.PMU_CONFIGS`): `max` is FEAT_PMUv3p5 with PMCR_EL0 = 0x41013000 (IMP 'A', IDCODE 1,
N = 6), and reads ID_AA64DFR0_EL1.PMUVer = 6 at EL1 and up (Unicorn's reads 5); cortex-a53/a57/a72 are PMUv3
with their QEMU PMCR IDCODE. Unicorn keeps PMUSERENR_EL0, MDCR_EL2 and PMMIR_EL1, and this module reads the
first two from it: an access `devmodel.pmu.access(..., qemu_7_2=True)` disallows (EL0 without the PMUSERENR_EL0
enable, MDCR_EL2.TPM from EL0/EL1 of a guest that owns EL2, PMINTEN*_EL1 at EL0) is left to Unicorn, whose access
check (QEMU's pmreg_access* rules on the same register values) raises the trap (EC 0x18; EC 0 for
PMEVCNTR/PMEVTYPER 4 and 5, which Unicorn lacks) or the undefined instruction. The two traps the Arm ARM has
and QEMU 7.2 lacks (MDCR_EL2.TPMCR; MDCR_EL2.TPM of an EL0 access PMUSERENR_EL0.ER/CR/SW allows) are not
taken: the access is served, as QEMU 7.2 serves it (declining would let Unicorn's own PMU answer).

Time: the cycle count is the virtual clock in nanoseconds - QEMU's ARM_CPU_FREQ of 1 GHz applied to its
virtual clock, 16 cycles per tick of the 62.5 MHz system counter. An access samples the clock
(`VirtualClock.sample`, so back-to-back reads of a running cycle counter differ) when a counter counts cycles
at that moment, otherwise reads it without moving it; a guest that never touches the PMU costs nothing.
Counters are brought up to date at each PMU access (`Pmu.at`, which also takes the EL and MDCR_EL2 the
filters and EL2 partition use until the next update) and, from the first PMU access on and while a counter is
enabled, at each exception entry and ERET (`Exceptions.entry_observers`, `eret_observers`) and each MSR
MDCR_EL2 at EL2 (also while an overflow may interrupt: HPME gates the request of the EL2 counters), at the
clock's time without sampling it: a filter by EL, or the EL2 partition, applies from the instruction that
changes it (ERETs in code written at run time are not seen, harness/exceptions.py). A
counter that counts cycles with its PMINTENSET bit set arms a clock deadline (key ("pmu", vcpu.id)) at the
tick of its overflow, so the overflow interrupt is raised at that tick; the interrupt request is the level of
PPI 7 (INTID 23) of the vCPU's GIC (traced `pmu_irq`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from devmodel.pmu import OK, PPI, Pmu, PmuContext, PMUV3P5, access
from devmodel.trace import define

from .cpu import PMU_CONFIGS as CONFIGS
from .sysregs import Encoding

if TYPE_CHECKING:
    from .machine import Machine
    from .vcpu import Vcpu

__all__ = ["Pmus", "ENCODINGS", "CONFIGS", "ID_AA64DFR0_EL1"]

define("pmu_irq", ("cpu", "level", "ovs", "count"),
     "a PMU's overflow interrupt request (PPI 23) changed: PMOVSSET_EL0 and the physical count at which it changed")

PMUSERENR_EL0, MDCR_EL2, ID_AA64DFR0_EL1 = (3, 3, 9, 14, 0), (3, 4, 1, 1, 1), (3, 0, 0, 5, 0)
_PMUVER = 0xF << 8


def _encodings(counters: int) -> dict[Encoding, tuple[str, str, str]]:
    """encoding -> (register, access kind, directions "r"/"w"/"rw") for a PMU of `counters` event counters."""
    enc: dict[Encoding, tuple[str, str, str]] = {}
    names = (("PMCR", "pmcr", "rw"), ("PMCNTENSET", "ctl", "rw"), ("PMCNTENCLR", "ctl", "rw"),
             ("PMOVSCLR", "ctl", "rw"), ("PMSWINC", "swinc", "w"), ("PMSELR", "sel", "rw"),
             ("PMCEID0", "ctl", "r"), ("PMCEID1", "ctl", "r"))                 # CRm 12, op2 0-7
    for op2, spec in enumerate(names):
        enc[(3, 3, 9, 12, op2)] = spec
    enc[(3, 3, 9, 13, 0)] = ("PMCCNTR", "ccnt", "rw")
    enc[(3, 3, 9, 13, 1)] = ("PMXEVTYPER", "ctl", "rw")
    enc[(3, 3, 9, 13, 2)] = ("PMXEVCNTR", "cnt", "rw")
    enc[(3, 0, 9, 14, 1)] = ("PMINTENSET", "el1", "rw")
    enc[(3, 0, 9, 14, 2)] = ("PMINTENCLR", "el1", "rw")
    enc[(3, 3, 9, 14, 3)] = ("PMOVSSET", "ctl", "rw")
    for n in range(counters):
        enc[(3, 3, 14, 8 + (n >> 3), n & 7)] = (f"PMEVCNTR{n}", "cnt", "rw")
        enc[(3, 3, 14, 12 + (n >> 3), n & 7)] = (f"PMEVTYPER{n}", "ctl", "rw")
    enc[(3, 3, 14, 15, 7)] = ("PMCCFILTR", "ctl", "rw")
    return enc


ENCODINGS = _encodings(CONFIGS["max"].counters)


class Pmus:
    """The PMUs of every vCPU of a machine (`machine.pmus`; see the module docstring)."""

    def __init__(self, machine: "Machine"):
        self.machine = machine
        self.clock = machine.clock
        self.models: dict[int, Pmu] = {}          # vcpu.id -> its PMU
        self.levels: dict[int, bool] = {}         # vcpu.id -> the interrupt request driven into the GIC
        self._watching = False                    # EL changes observed (from the first PMU access on)

    def attach(self, vcpu: "Vcpu") -> Pmu:
        """Give `vcpu` its PMU and serve its registers (called for every vCPU the machine creates)."""
        config = CONFIGS.get(vcpu.cpu, CONFIGS["max"])
        model = Pmu(config)
        self.models[vcpu.id] = model
        self.levels[vcpu.id] = False
        for enc, spec in _encodings(config.counters).items():
            vcpu.sysregs.register(enc, read=self._reader(spec) if "r" in spec[2] else None,
                                  write=self._writer(spec) if "w" in spec[2] else None)
        if config.version == PMUV3P5:
            vcpu.sysregs.register(ID_AA64DFR0_EL1, read=_dfr0_advertised)
        if vcpu.start_el == 2:
            vcpu.sysregs.register(MDCR_EL2, write=self._mdcr_el2_write)
        return model

    def model(self, vcpu: "Vcpu") -> Pmu:
        return self.models[vcpu.id]

    # -- register accesses ---------------------------------------------------------------------------------------
    def _context(self, vcpu: "Vcpu", el: int) -> PmuContext:
        if vcpu.start_el < 2:
            return PmuContext(el)
        return PmuContext(el, True, vcpu.uc.cpr_read(*MDCR_EL2))

    def _open(self, vcpu: "Vcpu", kind: str, write: bool) -> Pmu | None:
        """The vCPU's PMU brought up to date for an allowed access, or None (Unicorn then takes it)."""
        el = vcpu.el
        if kind == "el1" and el == 0:
            return None
        ctx = self._context(vcpu, el)
        pmuserenr = vcpu.uc.cpr_read(*PMUSERENR_EL0) if el == 0 else 0
        # QEMU 7.2's rules, which Unicorn's own check shares: what this declines, Unicorn traps - an access the
        # Arm ARM traps but QEMU does not (MDCR_EL2.TPMCR; TPM after PMUSERENR.ER/CR/SW at EL0) is served here
        # as on QEMU 7.2, where declining it would run Unicorn's own PMU (docs/DESIGN.md "PMUv3")
        if access(kind, write, el, pmuserenr, ctx.mdcr_el2, ctx.has_el2, qemu_7_2=True) != OK:
            return None
        if not self._watching:
            self._watching = True
            self.machine.exceptions.entry_observers.append(self._el_change)
            self.machine.exceptions.eret_observers.append(lambda v, _el, spsr: self._el_change(v, (spsr >> 2) & 3))
        model = self.models[vcpu.id]
        now = self.clock.sample("pmu") if model.cycles_running() else self.clock.now()
        model.at(self._cycles(now), ctx)
        return model

    def _reader(self, spec: tuple[str, str, str]) -> Callable[["Vcpu"], int | None]:
        reg, kind, _ = spec

        def read(vcpu: "Vcpu") -> int | None:
            model = self._open(vcpu, kind, False)
            if model is None:
                return None
            value = model.read(reg)
            self._update(vcpu)
            return value
        return read

    def _writer(self, spec: tuple[str, str, str]) -> Callable[["Vcpu", int], bool]:
        reg, kind, _ = spec

        def write(vcpu: "Vcpu", value: int) -> bool:
            model = self._open(vcpu, kind, True)
            if model is None:
                return False
            if reg == "PMSWINC":
                model.swinc(value)
            else:
                model.write(reg, value)
            self._update(vcpu)
            return True
        return write

    def _el_change(self, vcpu: "Vcpu", el: int) -> None:
        """An exception entry or return to `el`: the counters that count cycles are brought up to date (at the
        clock's time, not sampled) and the filters apply `el` from now on. Nothing to do while no counter is
        enabled: the next access takes the EL then."""
        model = self.models.get(vcpu.id)
        if model is None or not model.cnten:
            return
        model.at(self._cycles(self.clock.now()), self._context(vcpu, el))
        self._update(vcpu)

    def _mdcr_el2_write(self, vcpu: "Vcpu", value: int) -> bool:
        """MSR MDCR_EL2 at EL2: the counters are brought up to date under the old HPMN/HPME/HPMD, the new value
        applies from here; the write itself is declined (Unicorn keeps the register)."""
        model = self.models[vcpu.id]
        if vcpu.el == 2 and (model.cnten or model.ovs & model.inten):    # HPME also gates the interrupt
            model.at(self._cycles(self.clock.now()), PmuContext(2, True, value))
            self._update(vcpu)
        return False

    # -- time and the interrupt ----------------------------------------------------------------------------------
    def _cycles(self, ticks: int) -> int:
        return ticks * 1_000_000_000 // self.clock.hz

    def _ticks(self, cycles: int) -> int:
        """The first tick at which the cycle count reaches `cycles`."""
        return -(-cycles * self.clock.hz // 1_000_000_000)

    def _update(self, vcpu: "Vcpu") -> None:
        """After an access or a deadline: drive the interrupt request, re-arm the overflow deadline."""
        model = self.models[vcpu.id]
        level = model.irq
        if level != self.levels[vcpu.id]:
            self.levels[vcpu.id] = level
            tracer = self.machine.tracer
            if "pmu_irq" in tracer.enabled:
                tracer.emit("pmu_irq", cpu=vcpu.id, level=level, ovs=model.ovs, count=self.clock.now())
            vcpu.vm.gic.set_ppi(vcpu.index, PPI, level)
        when = model.next_overflow()
        fire = None if when is None else (lambda now, v=vcpu: self._due(v, now))
        self.clock.set_deadline(("pmu", vcpu.id), None if when is None else self._ticks(when), fire)

    def _due(self, vcpu: "Vcpu", now: int) -> None:
        self.models[vcpu.id].at(self._cycles(now))
        self._update(vcpu)


def _dfr0_advertised(vcpu: "Vcpu") -> int | None:
    """ID_AA64DFR0_EL1 with PMUVer = FEAT_PMUv3p5 (as QEMU 7.2's max); EL0 reads stay Unicorn's."""
    if vcpu.el == 0:
        return None
    return (dict(vcpu.features.ids)["dfr0"] & ~_PMUVER) | PMUV3P5 << 8
