"""The generic timer of every vCPU: `devmodel.timer.GenericTimer` state served through the vCPU's system-register
hooks (harness/sysregs.py) from the machine's virtual clock (harness/clock.py), instead of Unicorn's own
timer. Unicorn 2.1.4 implements every register below itself (QEMU 5's generic timer: CNTFRQ_EL0 reads 62.5 MHz,
the counts are host time, the timers run on host-time QEMU timers whose outputs go nowhere), so a guest would
see non-deterministic counts; every access this module allows is answered here and never reaches Unicorn.

Served (Arm ARM D17.10; the set QEMU 7.2 gives `-M virt -cpu max`): CNTFRQ_EL0, CNTPCT_EL0, CNTVCT_EL0,
CNTP_{CTL,CVAL,TVAL}_EL0, CNTV_{CTL,CVAL,TVAL}_EL0 at every EL, and for a guest that starts at EL2 (EL2
implemented, as QEMU's `virtualization=on`): CNTVOFF_EL2, CNTHP_{CTL,CVAL,TVAL}_EL2 and, when the CPU model has
FEAT_VHE (ID_AA64MMFR1_EL1.VH), CNTHV_{CTL,CVAL,TVAL}_EL2 and the CNT{P,V}_*_EL02 aliases. At EL2 with
HCR_EL2.E2H=1 (and at EL0 with E2H=TGE=1) CNTP_*/CNTV_*_EL0 name the EL2 timers and CNTVCT_EL0 has no offset,
as QEMU's gt_*_redir_* functions do.

Access control: CNTKCTL_EL1 and CNTHCTL_EL2 are not served - Unicorn keeps them (it implements both, with
QEMU's E2H redirection), and this module reads them from Unicorn for its checks (`devmodel.timer.counter_access`,
`timer_access`, `cntfrq_access`, which mirror Unicorn's and QEMU 7.2's rules). An access they disallow is left
to Unicorn, whose own access check (the same rules on the same register values) raises the trap or the
undefined instruction; accesses to EL2 registers below EL2 are undefined in Unicorn already. So a hostile guest
cannot read a register its controls forbid. Writes enabling the event stream (EVNTEN) are logged under
`-d unimp`: it is not modelled.

Time: counter, CTL (ISTATUS) and TVAL reads and TVAL writes are samples of the clock (`VirtualClock.sample`);
the first one starts counted scheduling. Each vCPU's next timer deadline is armed on the clock under its
`vcpu.id`; the scheduler bounds slices by it and fires it at the exact tick.

Outputs: `on_output_change` callables `(vcpu, which, level)` hear every change of a timer's output
(ENABLE && ISTATUS && !IMASK; `which` in devmodel.timer.TIMERS, its PPI `devmodel.timer.PPI[which]`), at the
tick it happens: from the guest's own register write, or from the deadline at a slice boundary. This is where
an interrupt controller attaches its PPIs (virtual 27, EL1 physical 30, EL2 physical 26, EL2 virtual 28).
`direct_wake` (a bool, or a predicate of the vCPU) makes an asserted output wake its vCPU from WFI (the
scheduler's wake sources); the interrupt controller (harness/interrupts.py) keeps it only for VMs whose guest
never touched its GIC (WFI may complete at any time, DDI 0487 D1.16.2, so this stays architectural) and wakes
vCPUs on pending interrupts otherwise. Traced
`timer_output`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from devmodel.fields import bits
from devmodel.timer import (CNTKCTL, OK, PPI, GenericTimer, cntfrq_access, counter_access, redirect,
                            timer_access, virtual_offset_applies)
from devmodel.trace import define

from .sysregs import Encoding

if TYPE_CHECKING:
    from .machine import Machine
    from .vcpu import Vcpu

__all__ = ["GenericTimers", "ENCODINGS"]

define("timer_output", ("cpu", "timer", "level", "ppi", "count"),
       "a generic timer's output (ENABLE && ISTATUS && !IMASK) changed: the timer's PPI INTID and the "
       "physical count at which it changed")

HCR_EL2 = (3, 4, 1, 1, 0)
CNTKCTL_EL1, CNTKCTL_EL12, CNTHCTL_EL2 = (3, 0, 14, 1, 0), (3, 5, 14, 1, 0), (3, 4, 14, 1, 0)
ID_AA64MMFR1_EL1 = (3, 0, 0, 7, 1)
HCR_TGE, HCR_E2H = 1 << 27, 1 << 34
_PREFIX = {"phys": "CNTP", "virt": "CNTV", "hyp": "CNTHP", "hypvirt": "CNTHV"}
_FIELDS = {0: "TVAL", 1: "CTL", 2: "CVAL"}          # op2 of the timer registers (CRm 2: physical, 3: virtual)
_TIMED = ("CTL", "TVAL")                             # reads that sample the clock (besides the counters)
_EVNTEN = CNTKCTL.by_name["evnten"]                  # bit 2 of CNTKCTL_EL1 and of CNTHCTL_EL2 (either layout)


def _encodings() -> dict[Encoding, tuple[str, str, str]]:
    """encoding -> (kind, timer, field): every register this module serves (D17.10)."""
    enc: dict[Encoding, tuple[str, str, str]] = {
        (3, 3, 14, 0, 0): ("frq", "", ""), (3, 3, 14, 0, 1): ("counter", "phys", ""),
        (3, 3, 14, 0, 2): ("counter", "virt", ""), (3, 4, 14, 0, 3): ("voff", "", "")}
    for crm, base, hyp in ((2, "phys", "hyp"), (3, "virt", "hypvirt")):
        for op2, fld in _FIELDS.items():
            enc[(3, 3, 14, crm, op2)] = ("el0", base, fld)         # CNTP_*_EL0 / CNTV_*_EL0
            enc[(3, 4, 14, crm, op2)] = ("el2", hyp, fld)          # CNTHP_*_EL2 / CNTHV_*_EL2
            enc[(3, 5, 14, crm, op2)] = ("el02", base, fld)        # CNTP_*_EL02 / CNTV_*_EL02
    return enc


ENCODINGS = _encodings()


class GenericTimers:
    """The generic timers of every vCPU of a machine (`machine.timers`; see the module docstring)."""

    def __init__(self, machine: "Machine"):
        self.machine = machine
        self.clock = machine.clock
        self.on_output_change: list[Callable[["Vcpu", str, bool], None]] = []
        self.direct_wake = True
        self.models: dict[int, GenericTimer] = {}       # vcpu.id -> its timers
        self._vhe: dict[int, bool] = {}
        self._evnten_logged: set[int] = set()

    # -- wiring ----------------------------------------------------------------------------------------------------
    def attach(self, vcpu: "Vcpu") -> GenericTimer:
        """Give `vcpu` its timers and serve their registers (called for every vCPU the machine creates)."""
        model = GenericTimer(cpu=vcpu, has_el2=vcpu.start_el == 2)
        model.on_output_change.append(self._output_changed)
        self.models[vcpu.id] = model
        vhe = bits(vcpu.uc.cpr_read(*ID_AA64MMFR1_EL1), 11, 8) != 0
        self._vhe[vcpu.id] = vhe
        for enc, spec in ENCODINGS.items():
            kind = spec[0]
            if kind in ("el2", "voff", "el02") and vcpu.start_el < 2:
                continue                       # no EL2: Unicorn makes them undefined, as QEMU's virt does
            if (kind == "el02" or spec[1] == "hypvirt") and not vhe:
                continue
            write = None if kind == "counter" else self._writer(spec)
            vcpu.sysregs.register(enc, read=self._reader(spec), write=write)
        for enc in (CNTKCTL_EL1, CNTKCTL_EL12, CNTHCTL_EL2):
            vcpu.sysregs.register(enc, write=self._watch_event_stream)
        self._counters_in_c(vcpu, model)
        return model

    @staticmethod
    def _counters_in_c(vcpu: "Vcpu", model: GenericTimer) -> None:
        """The counter reads the native MRS hook may answer (harness/native/sysreg.c): at EL1 of a vCPU without
        EL2 no control register gates CNTPCT_EL0/CNTVCT_EL0 and CNTVCT subtracts CNTVOFF (`counter_access`,
        `virtual_offset_applies`), and Unicorn executes both (it moves the PC); EL0, EL2 and EL2 guests stay
        in Python (`_resolve`)."""
        from .native.sysreg import FAST_PCT, FAST_VCT
        from .sysregs import unicorn_undefines

        if vcpu.start_el >= 2 or not virtual_offset_applies(1, False, False):
            return
        fast = 0
        for bit, which, enc in ((FAST_PCT, "phys", (3, 3, 14, 0, 1)), (FAST_VCT, "virt", (3, 3, 14, 0, 2))):
            if (counter_access(which, 1, 0, 0, False, False, False) == OK
                    and not unicorn_undefines(enc, False, 1, vcpu.cpu, vcpu.start_el)):
                fast |= bit
        vcpu.sysregs.counters_in_c(fast, lambda: model.cntvoff)

    def model(self, vcpu: "Vcpu") -> GenericTimer:
        return self.models[vcpu.id]

    def output(self, vcpu: "Vcpu", which: str) -> bool:
        """The output of `vcpu`'s timer `which` now."""
        return self.models[vcpu.id].output(which, self.clock.now())

    def wakes(self, vcpu: "Vcpu") -> bool:
        """Scheduler wake source: an asserted timer output wakes its vCPU from WFI (while `direct_wake`)."""
        dw = self.direct_wake
        return bool(dw if not callable(dw) else dw(vcpu)) and any(self.models[vcpu.id].levels.values())

    # -- register accesses ---------------------------------------------------------------------------------------
    def _controls(self, vcpu: "Vcpu", el: int) -> tuple[bool, bool, int, int]:
        """(E2H, TGE, CNTKCTL_EL1, CNTHCTL_EL2) as Unicorn holds them; EL1 guests have no EL2 to consult."""
        uc = vcpu.uc
        if vcpu.start_el < 2:
            return False, False, uc.cpr_read(*CNTKCTL_EL1) if el == 0 else 0, 0
        hcr = uc.cpr_read(*HCR_EL2)
        return (bool(hcr & HCR_E2H), bool(hcr & HCR_TGE), uc.cpr_read(*CNTKCTL_EL1) if el == 0 else 0,
                uc.cpr_read(*CNTHCTL_EL2))

    def _resolve(self, vcpu: "Vcpu", spec: tuple[str, str, str], write: bool) -> str | None:
        """The model register an access names, or None when it is not allowed (Unicorn then takes it)."""
        kind, which, fld = spec
        el = vcpu.el
        if kind in ("el2", "voff", "el02") and el < 2:
            return None
        e2h, tge, cntkctl, cnthctl = self._controls(vcpu, el)
        has_el2 = vcpu.start_el == 2
        if kind == "frq":
            return "CNTFRQ" if cntfrq_access(el, write, cntkctl, cnthctl, e2h, tge, vcpu.start_el) == OK else None
        if kind == "counter":
            if counter_access(which, el, cntkctl, cnthctl, e2h, tge, has_el2) != OK:
                return None
            return "CNTVCT" if which == "virt" and virtual_offset_applies(el, e2h, tge) else "CNTPCT"
        if kind == "el0":
            if timer_access(which, el, cntkctl, cnthctl, e2h, tge, has_el2) != OK:
                return None
            return f"{_PREFIX[redirect(which, el, e2h, tge)]}_{fld}"
        if kind == "el02" and not e2h:
            return None                    # QEMU e2h_access: the *_EL02 aliases need HCR_EL2.E2H
        return "CNTVOFF" if kind == "voff" else f"{_PREFIX[which]}_{fld}"

    def _reader(self, spec: tuple[str, str, str]) -> Callable[["Vcpu"], int | None]:
        timed = spec[0] == "counter" or spec[2] in _TIMED

        def read(vcpu: "Vcpu") -> int | None:
            reg = self._resolve(vcpu, spec, False)
            if reg is None:
                return None
            now = self.clock.sample("generic timer") if timed else self.clock.now()
            return self.models[vcpu.id].read(reg, now)
        return read

    def _writer(self, spec: tuple[str, str, str]) -> Callable[["Vcpu", int], bool]:
        timed = spec[2] == "TVAL"

        def write(vcpu: "Vcpu", value: int) -> bool:
            reg = self._resolve(vcpu, spec, True)
            if reg is None:
                return False
            now = self.clock.sample("generic timer") if timed else self.clock.now()
            self.models[vcpu.id].write(reg, value, now)
            self._rearm(vcpu)
            return True
        return write

    def _watch_event_stream(self, vcpu: "Vcpu", value: int) -> bool:
        """CNTKCTL_EL1/CNTHCTL_EL2 writes go to Unicorn (declined); enabling the event stream is logged."""
        log = self.machine.log
        if _EVNTEN.get(value) and "unimp" in log.enabled and vcpu.id not in self._evnten_logged:
            self._evnten_logged.add(vcpu.id)
            log("unimp", f"{vcpu.dvm_name}: generic timer event stream (EVNTEN) enabled at pc {vcpu.pc:#x}: "
                         f"not modelled, no events are generated")
        return False

    # -- time ------------------------------------------------------------------------------------------------------
    def _rearm(self, vcpu: "Vcpu") -> None:
        model = self.models[vcpu.id]
        when = model.next_deadline(self.clock.now())
        fire = None if when is None else (lambda now, v=vcpu: self._due(v, now))
        self.clock.set_deadline(vcpu.id, when, fire)

    def _due(self, vcpu: "Vcpu", now: int) -> None:
        self.models[vcpu.id].update(now)
        self._rearm(vcpu)

    def _output_changed(self, vcpu: "Vcpu", which: str, level: bool) -> None:
        tracer = self.machine.tracer
        if "timer_output" in tracer.enabled:
            tracer.emit("timer_output", cpu=vcpu.id, timer=which, level=level, ppi=PPI[which],
                        count=self.clock.now())
        for cb in self.on_output_change:
            cb(vcpu, which, level)
