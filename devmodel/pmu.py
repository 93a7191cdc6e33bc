"""The Performance Monitors Extension (PMUv3) of one PE, as pure state over a cycle count (Arm ARM DDI 0487
D13 "The Performance Monitors Extension"; registers D17.5 PMCR_EL0 ... PMEVTYPER<n>_EL0).

`Pmu` holds what a PE's PMU keeps: PMCR_EL0's writable bits (E, D, X, DP, LC, LP), PMCNTENSET, PMOVSSET,
PMINTENSET, PMSELR, PMCCFILTR, and per event counter its PMEVTYPER and PMEVCNTR; the cycle counter PMCCNTR.
Time enters as `cycles`, a count of processor clock cycles the owner derives from its clock:

    p = Pmu(PmuConfig.qemu_max())
    p.at(cycles, ctx)               # counters advanced to `cycles`; ctx = the PE's EL and MDCR_EL2 from now on
    p.write("PMCR", PMCR_E)         # MSR PMCR_EL0 (after `at`: the counters are up to date)
    p.read("PMCCNTR")
    p.swinc(0b11)                   # MSR PMSWINC_EL0
    p.next_overflow()               # the cycle count at which an interrupting counter overflows next
    p.irq                           # the overflow interrupt request (a level; QEMU virt: PPI 7, INTID 23)

Register names are the architectural ones without `_EL0`/`_EL1`: PMCR, PMCNTENSET, PMCNTENCLR, PMOVSSET,
PMOVSCLR, PMINTENSET, PMINTENCLR, PMSELR, PMCEID0, PMCEID1, PMCCNTR, PMCCFILTR, PMXEVTYPER, PMXEVCNTR,
PMEVTYPER<n>, PMEVCNTR<n>. Who may access them at EL0 (PMUSERENR_EL0) and from EL1 (MDCR_EL2.TPM, TPMCR) is the
pure function `access`.

Events (PMCEID0/1, `IMPLEMENTED`): the set QEMU 7.2 TCG gives without -icount (target/arm/helper.c pm_events):
SW_INCR (0x00), CPU_CYCLES (0x11), and with PMUv3p1 STALL_FRONTEND (0x23), STALL_BACKEND (0x24), with PMUv3p4
STALL (0x3C) - the stall events never fire. A counter programmed with another event (INST_RETIRED, CHAIN,
MEM_ACCESS ...) does not count; that includes CHAIN, so there is no chaining of counter pairs, as in QEMU 7.2.

Rules (D13.1 "About the Performance Monitors", AArch64.CountPMUEvents / IncrementEventCounter pseudocode):
* A counter counts when it is enabled - PMCNTENSET bit and PMCR.E, or MDCR_EL2.HPME for the counters n >=
  MDCR_EL2.HPMN when EL2 is implemented - and its filter does not exclude the current EL (Non-secure state, no
  EL3, so NSK and NSU do not filter - they need EL3 (QEMU pmu_counter_enabled: nsk = EL3 && NSK): EL0 is
  filtered when PMEVTYPER.U, EL1 when P, EL2 unless NSH) and counting is not prohibited (EL2 with
  MDCR_EL2.HPMD for the counters < HPMN, the cycle counter only with PMCR.DP; the cycle counter at EL2 with
  MDCR_EL2.HCCD, FEAT_PMUv3p5).
* Event counters are 64 bits from PMUv3p5 (32 before); they overflow (PMOVSSET bit) on a carry out of bit 31,
  or of bit 63 when PMCR.LP (MDCR_EL2.HLP for counters >= HPMN) is 1. The cycle counter is 64 bits and
  overflows out of bit 31, or bit 63 with PMCR.LC; with PMCR.D (and LC = 0) it counts every 64th cycle.
* PMCR.P zeroes the event counters (at EL0/EL1 with EL2: only those < HPMN), PMCR.C the cycle counter; N
  reads as MDCR_EL2.HPMN at EL0/EL1 when EL2 is implemented.
* The overflow interrupt request is asserted while a counter's PMOVSSET and PMINTENSET bits are both 1 and the
  counter's enable (PMCR.E, or HPME above HPMN) is 1 (Arm ARM CheckForPMUOverflow; QEMU's pmu_update_irq
  looks at PMCR.E alone).
* PMSWINC_EL0 adds 1 to each counter n < N whose bit is 1, that counts SW_INCR and that counts now.

The EL a filter is evaluated with is the one of the last `at`: the owner calls it at every PMU register access
and at every change of EL or of MDCR_EL2 (harness/pmu.py: exception entries and returns). Not modelled: Secure state and EL3
filtering (M, SH), the export bus (PMCR.X), FEAT_PMUv3_TH, PMMIR.
"""
from __future__ import annotations

import re

from .record import Frozen, assign

__all__ = ["Pmu", "PmuConfig", "PmuContext", "IMPLEMENTED", "pmceid", "access", "OK", "TRAP_EL1", "TRAP_EL2",
           "PMCR_E", "PMCR_P", "PMCR_C", "PMCR_D", "PMCR_X", "PMCR_DP", "PMCR_LC", "PMCR_LP", "CYCLE", "PPI",
           "SW_INCR", "CPU_CYCLES", "PMUV3", "PMUV3P1", "PMUV3P4", "PMUV3P5"]

M32, M64 = (1 << 32) - 1, (1 << 64) - 1
CYCLE = 31                                   # the cycle counter's bit in PMCNTEN/PMOVS/PMINTEN, PMSELR.SEL
#: INTID of the PMU's PPI on QEMU virt (hw/arm/virt.h VIRTUAL_PMU_IRQ 7 + 16)
PPI = 23
# ID_AA64DFR0_EL1.PMUVer values
PMUV3, PMUV3P1, PMUV3P4, PMUV3P5 = 0b0001, 0b0100, 0b0101, 0b0110
# PMCR_EL0 bits (D17.5.x PMCR_EL0)
PMCR_E, PMCR_P, PMCR_C, PMCR_D, PMCR_X, PMCR_DP, PMCR_LC, PMCR_LP = (1 << i for i in range(8))
# PMEVTYPER<n>_EL0 / PMCCFILTR_EL0 filter bits
TYPER_P, TYPER_U, TYPER_NSK, TYPER_NSU, TYPER_NSH, TYPER_M = (1 << i for i in (31, 30, 29, 28, 27, 26))
_TYPER_MT = 1 << 25
_MDCR_HPMN, _MDCR_TPMCR, _MDCR_TPM, _MDCR_HPME, _MDCR_HPMD, _MDCR_HLP = 0x1F, 1 << 5, 1 << 6, 1 << 7, 1 << 17, 1 << 26
_MDCR_HCCD = 1 << 23
SW_INCR, CPU_CYCLES, STALL_FRONTEND, STALL_BACKEND, STALL = 0x00, 0x11, 0x23, 0x24, 0x3C
#: events counted, with the PMUVer from which QEMU 7.2 implements them (INST_RETIRED 0x08 only under -icount)
IMPLEMENTED = {SW_INCR: PMUV3, CPU_CYCLES: PMUV3, STALL_FRONTEND: PMUV3P1, STALL_BACKEND: PMUV3P1,
               STALL: PMUV3P4}


def pmceid(version: int) -> tuple[int, int]:
    """(PMCEID0_EL0, PMCEID1_EL0): bit e of [31:0] of PMCEID0 is common event e, of PMCEID1 event 32 + e; the
    [63:32] halves are the extended events 0x4000+ (none implemented)."""
    bits = sum(1 << e for e, since in IMPLEMENTED.items() if version >= since)
    return bits & M32, (bits >> 32) & M32


class PmuConfig(Frozen):
    """What a PMU implements: PMUVer, PMCR_EL0's read-only IMP/IDCODE byte pair and N."""
    __slots__ = ("version", "implementer", "idcode", "counters")
    version: int
    implementer: int                         # PMCR.IMP [31:24]
    idcode: int                              # PMCR.IDCODE [23:16]
    counters: int                            # PMCR.N [15:11]

    def __init__(self, version: int = PMUV3P5, implementer: int = 0x41, idcode: int = 0x01,
                 counters: int = 6) -> None:
        assign(self, "version", version)
        assign(self, "implementer", implementer)
        assign(self, "idcode", idcode)
        assign(self, "counters", counters)

    @staticmethod
    def qemu_max() -> "PmuConfig":
        """QEMU 7.2's -cpu max: PMCR_EL0 reset 0x41013000 (the A57's), FEAT_PMUv3p5 (aarch64_max_tcg_initfn)."""
        return PmuConfig()

    @property
    def wide(self) -> bool:
        """64-bit event counters (FEAT_PMUv3p5)."""
        return self.version >= PMUV3P5


class PmuContext(Frozen):
    """What counting depends on outside the PMU: the current EL and the EL2 controls (MDCR_EL2) when EL2 is
    implemented (`has_el2`)."""
    __slots__ = ("el", "has_el2", "mdcr_el2")
    el: int
    has_el2: bool
    mdcr_el2: int

    def __init__(self, el: int = 1, has_el2: bool = False, mdcr_el2: int = 0) -> None:
        assign(self, "el", el)
        assign(self, "has_el2", has_el2)
        assign(self, "mdcr_el2", mdcr_el2)

    def hpmn(self, n: int) -> int:
        return min(self.mdcr_el2 & _MDCR_HPMN, n) if self.has_el2 else n


OK, TRAP_EL1, TRAP_EL2 = "ok", "trap-el1", "trap-el2"


def access(kind: str, write: bool, el: int, pmuserenr: int, mdcr_el2: int = 0, has_el2: bool = False, *,
           qemu_7_2: bool = False) -> str:
    """Whether an access is allowed: OK, TRAP_EL1 (EL0, PMUSERENR_EL0) or TRAP_EL2 (MDCR_EL2.TPM/TPMCR).
    `kind`: "ctl" (PMCR, PMCNTEN*, PMOVS*, PMCEID*, PMXEVTYPER, PMEVTYPER<n>, PMCCFILTR), "cnt" (PMXEVCNTR,
    PMEVCNTR<n>: PMUSERENR.ER allows reads), "sel" (PMSELR: ER allows reads and writes), "ccnt" (PMCCNTR: CR allows
    reads), "swinc" (PMSWINC: SW allows writes), "pmcr" (a "ctl" that MDCR_EL2.TPMCR also traps), "el1"
    (PMINTEN*: EL1 and up only; at EL0 the caller leaves it UNDEFINED). The Arm ARM's rules; `qemu_7_2`: QEMU
    7.2's pmreg_access* (and Unicorn's, QEMU 5's) instead, which differ in two ways - an EL0 access that ER, CR
    or SW allows is allowed before MDCR_EL2.TPM is looked at, and MDCR_EL2.TPMCR is not implemented."""
    if el == 0 and kind != "el1":
        en, want_read = {"cnt": (8, True), "sel": (8, None), "ccnt": (4, True), "swinc": (2, False)}.get(kind,
                                                                                                 (0, None))
        allowed = bool(en and pmuserenr & en and (want_read is None or want_read != write))
        if allowed and qemu_7_2:
            return OK
        if not allowed and not pmuserenr & 1:
            return TRAP_EL1
    tpmcr = kind == "pmcr" and mdcr_el2 & _MDCR_TPMCR and not qemu_7_2
    if el < 2 and has_el2 and (mdcr_el2 & _MDCR_TPM or tpmcr):
        return TRAP_EL2
    return OK


_INDEXED = r"PMEV(CNTR|TYPER)(\d+)$"      # compiled at its first use (re's cache): not at start-up


def _indexed(reg: str) -> tuple[bool, int] | None:
    """("PMEVCNTR5") -> (True, 5), ("PMEVTYPER0") -> (False, 0); None for the other registers."""
    m = re.match(_INDEXED, reg)
    return None if m is None else (m.group(1) == "CNTR", int(m.group(2)))


class _Counter:
    __slots__ = ("value", "typer")

    def __init__(self, value: int = 0, typer: int = 0) -> None:
        self.value = value
        self.typer = typer


class Pmu:
    """One PE's PMU (see the module docstring)."""
    config: PmuConfig
    pmcr: int                                # E, D, X, DP, LC, LP as written
    cnten: int
    ovs: int
    inten: int
    selr: int
    ccntr: int
    ccfiltr: int
    ctx: PmuContext
    cycles: int                              # the cycle count of the last `at`
    counters: list[_Counter]                 # config.counters of them (a `counters` argument is not used)

    def __init__(self, config: PmuConfig | None = None, pmcr: int = 0, cnten: int = 0, ovs: int = 0,
                 inten: int = 0, selr: int = 0, ccntr: int = 0, ccfiltr: int = 0, ctx: PmuContext | None = None,
                 cycles: int = 0, counters: list[_Counter] | None = None) -> None:
        self.config = config = PmuConfig() if config is None else config
        self.pmcr, self.cnten, self.ovs, self.inten, self.selr = pmcr, cnten, ovs, inten, selr
        self.ccntr, self.ccfiltr, self.cycles = ccntr, ccfiltr, cycles
        self.ctx = PmuContext() if ctx is None else ctx
        self.counters = [_Counter() for _ in range(config.counters)]

    # -- masks -------------------------------------------------------------------------------------------------
    @property
    def implemented(self) -> int:
        """PMCNTEN/PMOVS/PMINTEN bits that exist: the N event counters and the cycle counter."""
        return (1 << CYCLE) | ((1 << self.config.counters) - 1)

    @property
    def writable_pmcr(self) -> int:
        return PMCR_E | PMCR_D | PMCR_X | PMCR_DP | PMCR_LC | (PMCR_LP if self.config.wide else 0)

    @property
    def typer_mask(self) -> int:
        """PMEVTYPER bits kept: P U NSK NSU NSH M MT and evtCount (16 bits from PMUv3p1, 10 before)."""
        evt = 0xFFFF if self.config.version >= PMUV3P1 else 0x3FF
        return TYPER_P | TYPER_U | TYPER_NSK | TYPER_NSU | TYPER_NSH | TYPER_M | _TYPER_MT | evt

    def _width_mask(self) -> int:
        return M64 if self.config.wide else M32

    # -- counting rules ------------------------------------------------------------------------------------------
    def _el2_counter(self, n: int) -> bool:
        """Counter n is in the EL2-reserved range (n >= MDCR_EL2.HPMN)."""
        return n != CYCLE and n >= self.ctx.hpmn(self.config.counters)

    def _enable(self, n: int) -> bool:
        """PMCR.E, or MDCR_EL2.HPME for the EL2-reserved counters."""
        return bool(self.ctx.mdcr_el2 & _MDCR_HPME) if self._el2_counter(n) else bool(self.pmcr & PMCR_E)

    def _filtered(self, typer: int) -> bool:
        """The filter excludes the current EL (Non-secure state)."""
        el = self.ctx.el
        if el == 0:
            return bool(typer & TYPER_U)            # U != NSU, with NSU reading as 0 without EL3
        if el == 1:
            return bool(typer & TYPER_P)            # P != NSK, likewise
        return not typer & TYPER_NSH

    def _prohibited(self, n: int) -> bool:
        if self.ctx.el != 2:
            return False
        if n == CYCLE and self.config.wide and self.ctx.mdcr_el2 & _MDCR_HCCD:
            return True                             # FEAT_PMUv3p5 MDCR_EL2.HCCD (QEMU 7.2 pmu_counter_enabled)
        if self._el2_counter(n) or not self.ctx.mdcr_el2 & _MDCR_HPMD:
            return False
        return n != CYCLE or bool(self.pmcr & PMCR_DP)

    def counting(self, n: int) -> bool:
        """Counter n (CYCLE: the cycle counter) counts its event now."""
        if not (self.cnten >> n) & 1 or not self._enable(n):
            return False
        typer = self.ccfiltr if n == CYCLE else self.counters[n].typer
        return not self._filtered(typer) and not self._prohibited(n)

    def event(self, n: int) -> int:
        return self.counters[n].typer & 0xFFFF

    def counts_cycles(self, n: int) -> bool:
        return self.counting(n) and (n == CYCLE or self.event(n) == CPU_CYCLES)

    def cycles_running(self) -> bool:
        """Some counter counts cycles now (its value depends on time)."""
        return any(self.counts_cycles(n) for n in (CYCLE, *range(self.config.counters)))

    def _long(self, n: int) -> bool:
        """Counter n overflows out of bit 63 (else out of bit 31)."""
        if n == CYCLE:
            return bool(self.pmcr & PMCR_LC)
        if not self.config.wide:
            return False
        return bool(self.ctx.mdcr_el2 & _MDCR_HLP) if self._el2_counter(n) else bool(self.pmcr & PMCR_LP)

    def _add(self, n: int, inc: int) -> None:
        """Add `inc` to counter n, recording an overflow."""
        old = self.ccntr if n == CYCLE else self.counters[n].value
        width = M64 if n == CYCLE else self._width_mask()
        over = old + inc > M64 if self._long(n) else (old & M32) + inc > M32
        new = (old + inc) & width
        if n == CYCLE:
            self.ccntr = new
        else:
            self.counters[n].value = new
        if over:
            self.ovs |= 1 << n

    def _cycle_ticks(self, start: int, end: int) -> int:
        """Cycle counter increments between two cycle counts: every 64th cycle with PMCR.D (and LC = 0)."""
        if self.pmcr & PMCR_D and not self.pmcr & PMCR_LC:
            return end // 64 - start // 64
        return end - start

    # -- time ----------------------------------------------------------------------------------------------------
    def at(self, cycles: int, ctx: PmuContext | None = None) -> None:
        """Advance the counters that count cycles to `cycles` (never backwards), then take `ctx` (the EL and
        EL2 controls from now on) when given."""
        if cycles > self.cycles:
            for n in range(self.config.counters):
                if self.counts_cycles(n):
                    self._add(n, cycles - self.cycles)
            if self.counts_cycles(CYCLE):
                self._add(CYCLE, self._cycle_ticks(self.cycles, cycles))
            self.cycles = cycles
        if ctx is not None:
            self.ctx = ctx

    def next_overflow(self) -> int | None:
        """The cycle count at which a counter that counts cycles and may interrupt (PMINTENSET) next
        overflows, or None."""
        best = None
        for n in (CYCLE, *range(self.config.counters)):
            if not (self.inten >> n) & 1 or not self.counts_cycles(n):
                continue
            value = self.ccntr if n == CYCLE else self.counters[n].value
            left = (M64 - value if self._long(n) else M32 - (value & M32)) + 1
            if n == CYCLE and self.pmcr & PMCR_D and not self.pmcr & PMCR_LC:
                when = (self.cycles // 64 + left) * 64
            else:
                when = self.cycles + left
            best = when if best is None else min(best, when)
        return best

    @property
    def irq(self) -> bool:
        """The overflow interrupt request."""
        gated = self.ovs & self.inten & self.implemented
        return any((gated >> n) & 1 and self._enable(n) for n in (CYCLE, *range(self.config.counters)))

    # -- register accesses ---------------------------------------------------------------------------------------
    def read(self, reg: str) -> int:
        """The value MRS reads (after `at`)."""
        indexed = _indexed(reg)
        if indexed is not None:
            return self._counter_read(*indexed)
        return getattr(self, "_read_" + reg)()

    def write(self, reg: str, value: int) -> None:
        """MSR `reg`, `value` (after `at`)."""
        indexed = _indexed(reg)
        if indexed is not None:
            self._counter_write(*indexed, value & M64)
            return
        getattr(self, "_write_" + reg)(value & M64)

    def swinc(self, value: int) -> None:
        """MSR PMSWINC_EL0: a software increment of the SW_INCR counters whose bit is set."""
        for n in range(self.config.counters):
            if (value >> n) & 1 and self.event(n) == SW_INCR and self.counting(n):
                self._add(n, 1)

    def _counter_read(self, cnt: bool, n: int) -> int:
        if n == CYCLE:
            return self.ccntr if cnt else self.ccfiltr
        if n >= self.config.counters:
            return 0                              # RAZ/WI, as QEMU for an unimplemented counter
        return self.counters[n].value if cnt else self.counters[n].typer

    def _counter_write(self, cnt: bool, n: int, value: int) -> None:
        if n == CYCLE:
            if cnt:
                self.ccntr = value & M64
            else:
                self._write_PMCCFILTR(value)
        elif n < self.config.counters:
            if cnt:
                self.counters[n].value = value & self._width_mask()
            else:
                self.counters[n].typer = value & self.typer_mask

    def _read_PMCR(self) -> int:
        n = self.config.counters
        if self.ctx.has_el2 and self.ctx.el < 2:
            n = self.ctx.hpmn(n)
        return (self.config.implementer << 24 | self.config.idcode << 16 | n << 11 | self.pmcr) & M32

    def _write_PMCR(self, value: int) -> None:
        if value & PMCR_P:
            limit = self.config.counters if self.ctx.el >= 2 else self.ctx.hpmn(self.config.counters)
            for c in self.counters[:limit]:
                c.value = 0
        if value & PMCR_C:
            self.ccntr = 0
        self.pmcr = value & self.writable_pmcr

    def _read_PMCNTENSET(self) -> int:
        return self.cnten

    _read_PMCNTENCLR = _read_PMCNTENSET

    def _write_PMCNTENSET(self, value: int) -> None:
        self.cnten |= value & self.implemented

    def _write_PMCNTENCLR(self, value: int) -> None:
        self.cnten &= ~value

    def _read_PMOVSSET(self) -> int:
        return self.ovs

    _read_PMOVSCLR = _read_PMOVSSET

    def _write_PMOVSSET(self, value: int) -> None:
        self.ovs |= value & self.implemented

    def _write_PMOVSCLR(self, value: int) -> None:
        self.ovs &= ~value

    def _read_PMINTENSET(self) -> int:
        return self.inten

    _read_PMINTENCLR = _read_PMINTENSET

    def _write_PMINTENSET(self, value: int) -> None:
        self.inten |= value & self.implemented

    def _write_PMINTENCLR(self, value: int) -> None:
        self.inten &= ~value

    def _read_PMSELR(self) -> int:
        return self.selr

    def _write_PMSELR(self, value: int) -> None:
        self.selr = value & 0x1F

    def _read_PMCEID0(self) -> int:
        return pmceid(self.config.version)[0]

    def _read_PMCEID1(self) -> int:
        return pmceid(self.config.version)[1]

    def _read_PMCCNTR(self) -> int:
        return self.ccntr

    def _write_PMCCNTR(self, value: int) -> None:
        self.ccntr = value & M64

    def _read_PMCCFILTR(self) -> int:
        return self.ccfiltr

    def _write_PMCCFILTR(self, value: int) -> None:
        self.ccfiltr = value & (TYPER_P | TYPER_U | TYPER_NSK | TYPER_NSU | TYPER_NSH | TYPER_M)

    def _read_PMXEVTYPER(self) -> int:
        return self._counter_read(False, self.selr)

    def _write_PMXEVTYPER(self, value: int) -> None:
        self._counter_write(False, self.selr, value)

    def _read_PMXEVCNTR(self) -> int:
        return 0 if self.selr == CYCLE else self._counter_read(True, self.selr)

    def _write_PMXEVCNTR(self, value: int) -> None:
        if self.selr != CYCLE:                    # SEL = 31: CONSTRAINED UNPREDICTABLE, RAZ/WI here as QEMU
            self._counter_write(True, self.selr, value)
