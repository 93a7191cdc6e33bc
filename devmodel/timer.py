"""The Arm Generic Timer of one PE, as pure state over a system count (Arm ARM DDI 0487 D12 "The Generic
Timer in AArch64 state"; registers D17.8 / D17.10 ... CNT*_EL0/EL2).

`GenericTimer` holds what a PE's timers keep: CNTFRQ_EL0, CNTVOFF_EL2 and, per timer, CTL (ENABLE, IMASK) and
CVAL. Everything that depends on time takes `now`, the *physical* count (the system counter, CNTPCT_EL0):

    t = GenericTimer(cpu=vcpu, has_el2=False)
    t.write("CNTV_TVAL", 1000, now)              # CVAL = virtual count + sext(TVAL[31:0])
    t.write("CNTV_CTL", CTL_ENABLE, now)
    t.read("CNTV_CTL", now)                      # ISTATUS computed at `now`
    t.next_deadline(now)                         # physical count at which a timer condition is next met
    t.output("virt", now)                        # ENABLE && ISTATUS && !IMASK: the timer's interrupt line

Register names are the architectural ones without the `_ELx` suffix: CNTFRQ, CNTPCT, CNTVCT, CNTVOFF and
CNT{P,V,HP,HV}_{CTL,CVAL,TVAL}. The four timers (`TIMERS`) are the EL1 physical ("phys", CNTP_*), virtual
("virt", CNTV_*), EL2 physical ("hyp", CNTHP_*) and EL2 virtual ("hypvirt", CNTHV_*, FEAT_VHE) timers; on QEMU's
virt board their outputs are the PPIs `PPI` gives (INTIDs 30, 27, 26, 28: hw/arm/virt.c ARCH_TIMER_*_IRQ + 16).
Which timer an encoding names at a given EL (HCR_EL2.E2H redirects CNTP_*/CNTV_*_EL0 to the EL2 timers) and
who may access it (CNTKCTL_EL1, CNTHCTL_EL2) are the pure functions `redirect`, `virtual_offset_applies`,
`counter_access`, `timer_access` and `cntfrq_access`, which follow QEMU 7.2 target/arm/helper.c
(gt_counter_access, gt_timer_access, gt_cntfrq_access, gt_virt_cnt_offset, gt_phys_redir_timeridx).

Semantics (D12.2.4 "Timer views"; QEMU gt_recalc_timer / gt_tval_read / gt_tval_write / gt_ctl_write):
* the timer condition is met when count - offset >= CVAL, unsigned 64-bit, where offset is CNTVOFF_EL2 for the
  virtual timer and 0 for the others (also the EL2 virtual timer: QEMU's condition uses 0);
* TVAL reads (CVAL - (count - offset))[31:0] (bits [63:32] read 0), a write sets CVAL = count - offset +
  SignExtend(TVAL[31:0]);
* CTL keeps ENABLE and IMASK; ISTATUS is read-only and reads 0 while ENABLE is 0 (UNKNOWN in the Arm ARM, 0 in
  QEMU);
* CNTFRQ is a plain register ([31:0]; [63:32] RES0): writing it does not change the count's rate.

Output changes are reported to `on_output_change` callables `(cpu, which, level)` - the interrupt controller
turns each timer's output into its PPI. They are called from `update(now)`, which the writes call themselves
and the owner of the clock calls when a deadline passes.

Not modelled: the secure physical timer (CNTPS_*: EL3 or Secure EL1 only), FEAT_ECV (CNTPOFF_EL2, the *SS
counter views, CNTHCTL_EL2.ECV; QEMU 7.2's -cpu max has no FEAT_ECV), the event stream (CNTKCTL_EL1/CNTHCTL_EL2
EVNTEN), the memory-mapped CNTCTLBase/CNTBaseN frames, AArch32 views.
"""
from __future__ import annotations

from typing import Any, Callable

from .fields import Field, Layout, sext

__all__ = ["GenericTimer", "TIMERS", "PPI", "CNTFRQ_HZ", "CTL", "CNTKCTL", "CNTHCTL", "CNTHCTL_E2H",
           "CTL_ENABLE", "CTL_IMASK", "CTL_ISTATUS", "OK", "UNDEFINED", "REGISTERS", "redirect",
           "virtual_offset_applies", "counter_access", "timer_access", "cntfrq_access"]

MASK64 = (1 << 64) - 1

#: QEMU's counter frequency: one tick every GTIMER_SCALE = 16 ns (target/arm/internals.h), i.e. what
#: CNTFRQ_EL0 reads on `qemu-system-aarch64 -M virt -cpu max` 7.2
CNTFRQ_HZ = 62_500_000

TIMERS = ("phys", "virt", "hyp", "hypvirt")
#: INTID of each timer's PPI on QEMU virt (hw/arm/virt.h ARCH_TIMER_{NS_EL1,VIRT,NS_EL2,NS_EL2_VIRT}_IRQ + 16)
PPI = {"phys": 30, "virt": 27, "hyp": 26, "hypvirt": 28}
_PREFIX = {"phys": "CNTP", "virt": "CNTV", "hyp": "CNTHP", "hypvirt": "CNTHV"}
_BY_PREFIX = {v: k for k, v in _PREFIX.items()}

# CNT*_CTL_EL0/EL2 (D17.10: CNTP_CTL_EL0 ...)
CTL = Layout("CNTx_CTL", 64, [Field("ENABLE", 0, 1), Field("IMASK", 1, 1), Field("ISTATUS", 2, 1)])
CTL_ENABLE, CTL_IMASK, CTL_ISTATUS = 1 << 0, 1 << 1, 1 << 2
# CNTKCTL_EL1 (D17.10.14), and CNTHCTL_EL2 (D17.10.3) whose layout depends on HCR_EL2.E2H
CNTKCTL = Layout("CNTKCTL_EL1", 64, [
    Field("EL0PCTEN", 0, 1), Field("EL0VCTEN", 1, 1), Field("EVNTEN", 2, 1), Field("EVNTDIR", 3, 1),
    Field("EVNTI", 4, 4), Field("EL0VTEN", 8, 1), Field("EL0PTEN", 9, 1)])
CNTHCTL = Layout("CNTHCTL_EL2 (E2H=0)", 64, [
    Field("EL1PCTEN", 0, 1), Field("EL1PCEN", 1, 1), Field("EVNTEN", 2, 1), Field("EVNTDIR", 3, 1),
    Field("EVNTI", 4, 4)])
CNTHCTL_E2H = Layout("CNTHCTL_EL2 (E2H=1)", 64, [
    Field("EL0PCTEN", 0, 1), Field("EL0VCTEN", 1, 1), Field("EVNTEN", 2, 1), Field("EVNTDIR", 3, 1),
    Field("EVNTI", 4, 4), Field("EL0VTEN", 8, 1), Field("EL0PTEN", 9, 1), Field("EL1PCTEN", 10, 1),
    Field("EL1PTEN", 11, 1)])

#: every register name `read`/`write` accept
REGISTERS = ("CNTFRQ", "CNTPCT", "CNTVCT", "CNTVOFF") + tuple(
    f"{_PREFIX[w]}_{r}" for w in TIMERS for r in ("CTL", "CVAL", "TVAL"))

# -- who may access what (QEMU 7.2 target/arm/helper.c) ---------------------------------------------------------
OK, UNDEFINED = 0, -1          # access results; otherwise the EL the access traps to (1 or 2, EC 0x18)


def _bit(value: int, n: int) -> bool:
    return bool((value >> n) & 1)


def redirect(which: str, el: int, e2h: bool, tge: bool) -> str:
    """The timer a CNTP_*/CNTV_*_EL0 encoding names: at EL2 with E2H=1, and at EL0 with E2H=TGE=1 (the
    EL2&0 regime), the EL2 timers (QEMU gt_phys_redir_timeridx / gt_virt_redir_timeridx)."""
    if e2h and (el == 2 or (el == 0 and tge)):
        return {"phys": "hyp", "virt": "hypvirt"}.get(which, which)
    return which


def virtual_offset_applies(el: int, e2h: bool, tge: bool) -> bool:
    """Does CNTVCT_EL0 subtract CNTVOFF_EL2 at `el`? Not in the EL2&0 regime (QEMU gt_virt_cnt_offset)."""
    return not (e2h and (el == 2 or (el == 0 and tge)))


def counter_access(which: str, el: int, cntkctl: int, cnthctl: int, e2h: bool, tge: bool, has_el2: bool) -> int:
    """CNTPCT_EL0 ("phys") / CNTVCT_EL0 ("virt") reads (QEMU 7.2 gt_counter_access, Arm ARM D17.10.18/.24)."""
    idx = 0 if which == "phys" else 1
    phys = idx == 0
    if el == 0:
        if e2h and tge:
            return OK if _bit(cnthctl, idx) else 2
        if not _bit(cntkctl, idx):                      # EL0PCTEN / EL0VCTEN
            return 1
        if e2h:
            return 2 if phys and not _bit(cnthctl, 10) else OK          # EL1PCTEN (E2H=1 layout)
        # QEMU 7.2 tests CNTHCTL_EL2 bit 1 here (fixed to bit 0, EL1PCTEN, in later QEMU); Unicorn does too
        return 2 if has_el2 and phys and not _bit(cnthctl, 1) else OK
    if el == 1 and has_el2 and phys:
        return 2 if not _bit(cnthctl, 10 if e2h else 0) else OK
    return OK


def timer_access(which: str, el: int, cntkctl: int, cnthctl: int, e2h: bool, tge: bool, has_el2: bool) -> int:
    """CNTP_* ("phys") / CNTV_* ("virt") CTL/CVAL/TVAL accesses below EL2 (QEMU 7.2 gt_timer_access)."""
    idx = 0 if which == "phys" else 1
    if el == 0:
        if e2h and tge:
            return OK if _bit(cnthctl, 9 - idx) else 2                  # EL0PTEN / EL0VTEN (E2H=1)
        if not _bit(cntkctl, 9 - idx):                                  # EL0PTEN / EL0VTEN
            return 1
    if el <= 1 and has_el2 and idx == 0:
        return 2 if not _bit(cnthctl, 11 if e2h else 1) else OK         # EL1PTEN / EL1PCEN
    return OK


def cntfrq_access(el: int, write: bool, cntkctl: int, cnthctl: int, e2h: bool, tge: bool, highest_el: int) -> int:
    """CNTFRQ_EL0: readable at EL0 when EL0PCTEN or EL0VCTEN is set, writable only at the highest implemented
    EL (QEMU gt_cntfrq_access; Arm ARM D17.10.1)."""
    if el == 0:
        if write:
            return UNDEFINED
        ctl = cnthctl if (e2h and tge) else cntkctl
        return OK if ctl & 3 else 1
    if write and el < highest_el:
        return UNDEFINED
    return OK


# -- state ----------------------------------------------------------------------------------------------------
class _Timer:
    __slots__ = ("ctl", "cval")

    def __init__(self) -> None:
        self.ctl = 0           # ENABLE | IMASK (reset 0: QEMU's .resetvalue; UNKNOWN in the Arm ARM)
        self.cval = 0


def _split(reg: str) -> tuple[str, str]:
    prefix, _, field = reg.partition("_")
    which = _BY_PREFIX.get(prefix)
    if which is None or field not in ("CTL", "CVAL", "TVAL"):
        raise KeyError(f"not a generic timer register: {reg!r} (one of {', '.join(REGISTERS)})")
    return which, field


class GenericTimer:
    """The generic timers of one PE (see the module docstring). `cpu` is passed back to the callbacks;
    `has_el2` says whether EL2 is implemented (CNTVOFF_EL2 is 0 and fixed without it)."""

    def __init__(self, cpu: Any = None, *, has_el2: bool = False, cntfrq: int = CNTFRQ_HZ):
        self.cpu = cpu
        self.has_el2 = has_el2
        self.cntfrq = cntfrq & 0xFFFF_FFFF
        self.cntvoff = 0
        self.timers = {w: _Timer() for w in TIMERS}
        self.levels = dict.fromkeys(TIMERS, False)      # outputs as last reported
        self.on_output_change: list[Callable[[Any, str, bool], None]] = []

    # -- views -------------------------------------------------------------------------------------------------
    def offset(self, which: str) -> int:
        return self.cntvoff if which == "virt" else 0

    def count(self, which: str, now: int) -> int:
        """The count `which` compares against: the physical count less its offset (mod 2^64)."""
        return (now - self.offset(which)) & MASK64

    def istatus(self, which: str, now: int) -> bool:
        t = self.timers[which]
        return bool(t.ctl & CTL_ENABLE) and self.count(which, now) >= t.cval

    def output(self, which: str, now: int) -> bool:
        """The timer's interrupt output: ENABLE && ISTATUS && !IMASK (D12.2.4)."""
        return self.istatus(which, now) and not self.timers[which].ctl & CTL_IMASK

    def next_deadline(self, now: int) -> int | None:
        """Earliest physical count > `now` at which an enabled timer's condition becomes met (None: none will:
        disabled, or met already - once met it stays met until the count wraps, as QEMU's UINT64_MAX)."""
        best = None
        for w, t in self.timers.items():
            if t.ctl & CTL_ENABLE:
                left = t.cval - self.count(w, now)
                if left > 0 and (best is None or now + left < best):
                    best = now + left
        return best

    # -- registers -----------------------------------------------------------------------------------------------
    def read(self, reg: str, now: int) -> int:
        if reg == "CNTPCT":
            return now & MASK64
        if reg == "CNTVCT":
            return self.count("virt", now)
        if reg == "CNTFRQ":
            return self.cntfrq
        if reg == "CNTVOFF":
            return self.cntvoff
        which, field = _split(reg)
        t = self.timers[which]
        if field == "CTL":
            return t.ctl | (CTL_ISTATUS if self.istatus(which, now) else 0)
        if field == "CVAL":
            return t.cval
        return (t.cval - self.count(which, now)) & 0xFFFF_FFFF

    def write(self, reg: str, value: int, now: int) -> None:
        """Write `value` (64 bits) and report any output change at `now`."""
        value &= MASK64
        if reg == "CNTFRQ":
            self.cntfrq = value & 0xFFFF_FFFF
            return
        if reg == "CNTVOFF":
            if self.has_el2:
                self.cntvoff = value
            self.update(now)
            return
        if reg in ("CNTPCT", "CNTVCT"):
            raise KeyError(f"{reg} is read-only")
        which, field = _split(reg)
        t = self.timers[which]
        if field == "CTL":
            t.ctl = value & (CTL_ENABLE | CTL_IMASK)
        elif field == "CVAL":
            t.cval = value
        else:
            t.cval = (self.count(which, now) + sext(value, 32)) & MASK64
        self.update(now)

    def update(self, now: int) -> list[tuple[str, bool]]:
        """Recompute the outputs at `now`; call `on_output_change` for each that changed. Returns the changes."""
        changed = []
        for w in TIMERS:
            level = self.output(w, now)
            if level != self.levels[w]:
                self.levels[w] = level
                changed.append((w, level))
        for w, level in changed:
            for cb in self.on_output_change:
                cb(self.cpu, w, level)
        return changed

    def __repr__(self) -> str:
        parts = [f"{w}: ctl={t.ctl:#x} cval={t.cval:#x}" for w, t in self.timers.items() if t.ctl or t.cval]
        return f"<GenericTimer {self.cpu!r} cntvoff={self.cntvoff:#x} {'; '.join(parts) or 'idle'}>"
