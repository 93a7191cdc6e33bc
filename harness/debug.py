"""Debug events of the vCPUs: breakpoints, watchpoints and single step, for the guest's own (architectural) debug
and for an external debugger.

Unicorn 2.1.4 does not raise them as the architecture does (tests/harness/test_debug.py): its watchpoints are
compiled out (exec.c `cpu_watchpoint_insert` is an empty stub), software step programmed with MSR MDSCR_EL1
never fires, and a breakpoint programmed with MSR DBGBCR/DBGBVR comes as QEMU's EXCP_PREFETCH_ABORT with a
syndrome the harness cannot read. So the harness serves those registers itself (Unicorn's own copies stay 0
and its debug logic idle) and emulates the events with hooks, per vCPU (`vcpu.debug`, a `VcpuDebug`), with one
mechanism for two kinds of user:

* An external debugger (the gdb stub to come): `add_breakpoint(va, action)`, `add_watchpoint(va, size, action,
  read=, write=)`, `step(action)` (one instruction), `remove(handle)`. The action is called with the vCPU and a
  `DebugEvent` *before* the instruction executes (breakpoint), before the access is performed (watchpoint), or
  after one instruction (step); it decides what happens (a debugger stops the vCPU: `uc.emu_stop()`).
* The guest's own debug registers (Arm ARM DDI 0487 D2 "AArch64 Self-hosted Debug"), served through
  `vcpu.sysregs` as QEMU 7.2 stores them: MDSCR_EL1 (SS, KDE, MDE), DBGBCR<n>/DBGBVR<n>, DBGWCR<n>/DBGWVR<n>
  (n below the model's ID_AA64DFR0_EL1.BRPs/WRPs + 1), OSLAR_EL1/OSLSR_EL1 (the OS lock is locked at reset,
  OSLSR_EL1 = 0xA), OSDLR_EL1. The registers are intercepted only on vCPUs whose VM's code accesses a debug
  register (an MRS/MSR with op0 = 0b10, found by a pre-scan of the executable ranges at `before_run`): other
  vCPUs pay nothing. A write that changes what is armed ends the slice (the change takes effect at the next
  instruction, earlier than the context synchronization the architecture requires).
  - Breakpoints: DBGBCR.E = 1, BT = 0b0000 (unlinked address match), BAS = 0b1111, DBGBVR[48:2] = the PC;
    matched when MDSCR_EL1.MDE = 1, debug exceptions are enabled (below) and PMC/HMC/SSC select the current EL
    (Non-secure). Taken before the instruction: EC 0x30/0x31, IFSC 0b100010, ELR = the PC, FAR = 0 (QEMU's
    choice for an UNKNOWN FAR).
  - Watchpoints: DBGWCR.E = 1, LSC (01 load, 10 store, 11 both), BAS (contiguous bytes of the doubleword; with
    DBGWVR[2] set only BAS[3:0]) or MASK (an aligned 2^MASK-byte block, MASK >= 3), PAC/HMC/SSC as above, MDE = 1.
    Taken before the access: EC 0x34/0x35, ISS WnR, DFSC 0b100010, ELR = the instruction, FAR = the first
    watched byte the access touches (QEMU's `hitaddr`).
  - Software step (D2.12): active when MDSCR_EL1.SS = 1 and debug exceptions are enabled from the current EL.
    PSTATE.SS = 0 (active-pending): the step exception is taken before the next instruction (ISV = 0). PSTATE.SS
    = 1 (active-not-pending, after an ERET with SPSR.SS = 1): one instruction runs, then the exception (ISV =
    1, EX = it was a load-exclusive), unless that instruction took an exception itself (SPSR.SS = 0 for
    SVC/HVC/SMC, which complete, 1 otherwise) or left the step inactive (e.g. set PSTATE.D). PSTATE.SS is kept
    here (Unicorn clears its own at every ERET): set from SPSR.SS at ERETs (the ERET hooks of
    harness/exceptions.py), cleared on exception entry and when a step completes.
  - Debug exceptions are enabled from an EL (AArch64.GenerateDebugExceptionsFrom): not with the OS lock or
    the OS double lock set; from the debug target EL (EL1, or EL2 when HCR_EL2.TGE or MDCR_EL2.TDE is set)
    when MDSCR_EL1.KDE = 1 and PSTATE.D = 0; from a lower EL always.

Mechanisms (Unicorn 2.1.4, checked by tests/harness/test_debug.py): a breakpoint is a `UC_HOOK_CODE` at its
address (writing the PC there, or `emu_stop`, keeps the instruction from executing); a watchpoint makes the
pages it covers non-readable / non-writable in this vCPU's Unicorn (`mem_protect`, with a `UC_HOOK_MEM_*_PROT`
bounded to each page, and a `UC_HOOK_MEM_READ` there too, since Unicorn checks read permission only when it
fills its TLB and a read hook keeps every read on the slow path): an access there stops precisely, before it is
performed, with the PC on the instruction; one that hits nothing is let through (the hook performs a write
itself, since Unicorn drops writes to a protected page). Single step is a `UC_HOOK_CODE` over every address
while it is needed. Hooks change only between slices (`Debug.slice_start`), where adding them and flushing
translations is safe. A debug exception taken from a code hook to another EL ends the slice too. Cost: nothing
while nothing is armed. A watched VA is translated to its IPA page when the watchpoint is armed.

Not modelled: linked and context-ID/VMID breakpoints (BT other than 0b0000), watchpoints on device memory and
through other VAs aliasing a watched page (the protection is per IPA page, the match by VA), the DCC, halting
debug, MDCR_EL2/MDCR_EL3 traps of debug register accesses, AArch32.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from unicorn import (UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_READ_PROT, UC_HOOK_MEM_WRITE_PROT,
                     UC_MEM_WRITE_PROT, UC_PROT_ALL, UC_PROT_READ, UC_PROT_WRITE)

from devmodel.record import Frozen, assign

from . import syndrome as syn
from .codescan import SYSTEM, words_at
from .exceptions import Taken, route

if TYPE_CHECKING:
    from .machine import Machine
    from .vcpu import Vcpu

__all__ = ["Debug", "VcpuDebug", "DebugEvent", "Breakpoint", "Watchpoint", "MDSCR_EL1", "OSLAR_EL1",
           "OSLSR_EL1", "OSDLR_EL1", "dbgbcr", "dbgbvr", "dbgwcr", "dbgwvr", "watch_range", "bp_address",
           "el_matches", "uses_debug_registers"]

MDSCR_EL1, OSLAR_EL1, OSLSR_EL1, OSDLR_EL1 = (2, 0, 0, 2, 2), (2, 0, 1, 0, 4), (2, 0, 1, 1, 4), (2, 0, 1, 3, 4)
MDSCR_SS, MDSCR_KDE, MDSCR_MDE = 1 << 0, 1 << 13, 1 << 15
PSTATE_D, PSTATE_SS = 1 << 9, 1 << 21
HCR_TGE, MDCR_TDE = 1 << 27, 1 << 8
OSLSR_OSLM = 1 << 3               # OSLM = 0b10: the OS lock is implemented
_PAGE = 0x1000
_MASK64 = (1 << 64) - 1
SPSR = {1: (3, 0, 4, 0, 0), 2: (3, 4, 4, 0, 0)}


def dbgbvr(n: int) -> tuple[int, int, int, int, int]:
    return (2, 0, 0, n, 4)


def dbgbcr(n: int) -> tuple[int, int, int, int, int]:
    return (2, 0, 0, n, 5)


def dbgwvr(n: int) -> tuple[int, int, int, int, int]:
    return (2, 0, 0, n, 6)


def dbgwcr(n: int) -> tuple[int, int, int, int, int]:
    return (2, 0, 0, n, 7)


class DebugEvent(Frozen):
    __slots__ = ("kind", "pc", "addr", "size", "write")
    kind: str                 # "breakpoint", "watchpoint", "step"
    pc: int                   # the instruction (breakpoint, watchpoint), or the next one (step)
    addr: int | None          # watchpoint: the first watched byte the access touches
    size: int
    write: bool

    def __init__(self, kind: str, pc: int, addr: int | None = None, size: int = 0, write: bool = False) -> None:
        assign(self, "kind", kind)
        assign(self, "pc", pc)
        assign(self, "addr", addr)
        assign(self, "size", size)
        assign(self, "write", write)


Action = Callable[["Vcpu", DebugEvent], None]


class Breakpoint:
    """A debugger's breakpoint at `va` (handle for `VcpuDebug.remove`)."""

    def __init__(self, va: int, action: Action):
        self.va, self.action = va & _MASK64, action


class Watchpoint:
    """A debugger's watchpoint over [va, va + size) for reads and/or writes."""

    def __init__(self, va: int, size: int, action: Action, read: bool, write: bool):
        self.va, self.size, self.action, self.read, self.write = va & _MASK64, size, action, read, write


def bp_address(bvr: int) -> int:
    """The PC a DBGBVR value matches: bits [48:2], sign-extended from bit 48."""
    v = bvr & ((1 << 49) - 1) & ~3
    return (v - (1 << 49)) & _MASK64 if v >> 48 & 1 else v


def watch_range(wcr: int, wvr: int) -> tuple[int, int] | None:
    """[start, end) a DBGWCR/DBGWVR pair watches, None when it watches nothing (E = 0, LSC = 0, BAS = 0 or a
    reserved MASK of 1 or 2), as DDI 0487 D2.9 defines it (QEMU hw_watchpoint_update makes the same choices
    for what the architecture leaves CONSTRAINED UNPREDICTABLE)."""
    if not wcr & 1 or not (wcr >> 3) & 3:
        return None
    mask = (wcr >> 24) & 0x1F
    addr = bp_address(wvr)
    if mask in (1, 2):
        return None
    if mask:
        size = 1 << mask
        start = addr & ~(size - 1)
        return start, start + size
    bas = (wcr >> 5) & 0xFF
    if addr & 4:
        bas &= 0xF
    if not bas:
        return None
    first = (bas & -bas).bit_length() - 1
    run = 0
    while (bas >> (first + run)) & 1:
        run += 1
    return addr + first, addr + first + run


def el_matches(cr: int, el: int) -> bool:
    """PMC/PAC [2:1], HMC [13], SSC [15:14] of a DBGBCR/DBGWCR select `el` (Non-secure state)."""
    pmc, hmc, ssc = (cr >> 1) & 3, (cr >> 13) & 1, (cr >> 14) & 3
    if ssc == 2:
        return False
    if el >= 2:
        return bool(hmc)
    return bool(pmc & (2 if el == 0 else 1))


class VcpuDebug:
    """The debug state and hooks of one vCPU (module docstring)."""

    def __init__(self, vcpu: "Vcpu"):
        self.vcpu = vcpu
        f = vcpu.features
        self.mdscr = 0
        self.oslk = True                  # OSLSR_EL1.OSLK resets to 1 (cold reset)
        self.dlk = False                  # OSDLR_EL1.DLK
        self.bcr, self.bvr = [0] * f.brps, [0] * f.brps
        self.wcr, self.wvr = [0] * f.wrps, [0] * f.wrps
        self.breakpoints: list[Breakpoint] = []
        self.watchpoints: list[Watchpoint] = []
        self.dirty = False                # hooks to change at the next slice start
        self.intercepting = False
        self.events = 0                   # debug events dispatched
        self._step_action: Action | None = None
        self._step_started = False
        self._ss = False                  # PSTATE.SS
        self._inflight = False            # an instruction is being stepped (active-not-pending)
        self._inflight_ex = False
        self._eret: tuple[int, bool] | None = None   # (address of an ERET about to run, its SPSR.SS)
        self._bp_hooks: dict[int, int] = {}
        self._step_hook: int | None = None
        self._pages: dict[int, tuple[int, int, tuple[int, ...]]] = {}   # IPA page -> (VA page, perms, hooks)
        self._pending: tuple[Action, DebugEvent] | None = None

    # -- the external debugger's API ----------------------------------------------------------------
    def add_breakpoint(self, va: int, action: Action) -> Breakpoint:
        bp = Breakpoint(va, action)
        self.breakpoints.append(bp)
        self.dirty = True
        return bp

    def add_watchpoint(self, va: int, size: int, action: Action, *, read: bool = False,
                       write: bool = True) -> Watchpoint:
        if size <= 0 or not (read or write):
            raise ValueError("a watchpoint watches at least one byte, for reads and/or writes")
        wp = Watchpoint(va, size, action, read, write)
        self.watchpoints.append(wp)
        self.dirty = True
        return wp

    def remove(self, handle: Breakpoint | Watchpoint) -> None:
        for lst in (self.breakpoints, self.watchpoints):
            if handle in lst:
                lst.remove(handle)
                self.dirty = True

    @property
    def hooks(self) -> int:
        """Unicorn hooks this vCPU's debug state has installed now (0 while nothing is armed)."""
        return len(self._bp_hooks) + (self._step_hook is not None) + sum(len(h) for _v, _p, h in self._pages.values())

    def step(self, action: Action) -> None:
        """Call `action` after the vCPU has executed one instruction (at the next instruction boundary: the next
        instruction, or the vector if it took an exception). An action that calls `step` again keeps stepping
        from the instruction it was called at."""
        self._step_action = action
        self._step_started = False
        self.dirty = True

    # -- the guest's debug registers (vcpu.sysregs) ---------------------------------------------------------
    def intercept_registers(self) -> None:
        """Serve MDSCR_EL1, the OS lock and the breakpoint/watchpoint registers from here (idempotent)."""
        if self.intercepting:
            return
        self.intercepting = True
        reg = self.vcpu.sysregs.register
        reg(MDSCR_EL1, read=lambda v: self._read(v, self.mdscr), write=self._write_mdscr)
        reg(OSLAR_EL1, write=self._write_oslar)
        reg(OSLSR_EL1, read=lambda v: self._read(v, OSLSR_OSLM | int(self.oslk) << 1))
        reg(OSDLR_EL1, read=lambda v: self._read(v, int(self.dlk)), write=self._write_osdlr)
        for n in range(len(self.bcr)):
            reg(dbgbcr(n), read=lambda v, n=n: self._read(v, self.bcr[n]),
                write=lambda v, x, n=n: self._write_array(v, self.bcr, n, _bas_copies(x)))
            reg(dbgbvr(n), read=lambda v, n=n: self._read(v, self.bvr[n]),
                write=lambda v, x, n=n: self._write_array(v, self.bvr, n, x & ~3))
        for n in range(len(self.wcr)):
            reg(dbgwcr(n), read=lambda v, n=n: self._read(v, self.wcr[n]),
                write=lambda v, x, n=n: self._write_array(v, self.wcr, n, x))
            reg(dbgwvr(n), read=lambda v, n=n: self._read(v, self.wvr[n]),
                write=lambda v, x, n=n: self._write_array(v, self.wvr, n, x & ~3))

    @staticmethod
    def _read(v: "Vcpu", value: int) -> int | None:
        return None if v.el == 0 else value          # EL0: declined, Unicorn makes it UNDEFINED

    def _changed(self) -> None:
        self.dirty = True
        self.vcpu.uc.emu_stop()                      # apply at the next slice start, before the next instruction

    def _write_mdscr(self, v: "Vcpu", value: int) -> bool:
        if v.el == 0:
            return False
        old, self.mdscr = self.mdscr, value
        if (old ^ value) & (MDSCR_SS | MDSCR_MDE):
            self._changed()
        return True

    def _write_oslar(self, v: "Vcpu", value: int) -> bool:
        if v.el == 0:
            return False
        self.oslk = bool(value & 1)
        return True

    def _write_osdlr(self, v: "Vcpu", value: int) -> bool:
        if v.el == 0:
            return False
        self.dlk = bool(value & 1)
        return True

    def _write_array(self, v: "Vcpu", regs: list[int], n: int, value: int) -> bool:
        if v.el == 0:
            return False
        if regs[n] != value:
            regs[n] = value
            self._changed()
        return True

    # -- conditions ----------------------------------------------------------------------------------
    def debug_target_el(self) -> int:
        v = self.vcpu
        if v.start_el == 2:
            uc = v.uc
            if uc.cpr_read(3, 4, 1, 1, 0) & HCR_TGE or uc.cpr_read(3, 4, 1, 1, 1) & MDCR_TDE:
                return 2
        return 1

    def enabled_from(self, el: int, pstate: int) -> bool:
        """AArch64.GenerateDebugExceptionsFrom for the current state (module docstring)."""
        if self.oslk or self.dlk:
            return False
        target = self.debug_target_el()
        if el == target:
            return bool(self.mdscr & MDSCR_KDE) and not pstate & PSTATE_D
        return target > el

    def _arch_breakpoint(self, pc: int, el: int, pstate: int) -> bool:
        if not self.mdscr & MDSCR_MDE or not self.enabled_from(el, pstate):
            return False
        return any(cr & 1 and not (cr >> 20) & 0xF and bp_address(vr) == pc and el_matches(cr, el)
                   for cr, vr in zip(self.bcr, self.bvr))

    def _arch_watch(self, va: int, size: int, write: bool, el: int, pstate: int) -> int | None:
        """The first watched byte of [va, va + size) an armed architectural watchpoint hits, else None."""
        if not self.mdscr & MDSCR_MDE or not self.enabled_from(el, pstate):
            return None
        hits = []
        for cr, vr in zip(self.wcr, self.wvr):
            r = watch_range(cr, vr)
            lsc = (cr >> 3) & 3
            if r is None or not lsc & (2 if write else 1) or not el_matches(cr, el):
                continue
            if r[0] < va + size and va < r[1]:
                hits.append(max(va, r[0]))
        return min(hits) if hits else None

    def armed_breakpoints(self) -> set[int]:
        addrs = {bp.va for bp in self.breakpoints}
        if self.mdscr & MDSCR_MDE:
            addrs |= {bp_address(vr) for cr, vr in zip(self.bcr, self.bvr) if cr & 1 and not (cr >> 20) & 0xF}
        return addrs

    def armed_watch_ranges(self) -> list[tuple[int, int, bool, bool]]:
        """(start, end, read, write) of everything watched: the debugger's and the guest's armed watchpoints."""
        out = [(w.va, w.va + w.size, w.read, w.write) for w in self.watchpoints]
        if self.mdscr & MDSCR_MDE:
            for cr, vr in zip(self.wcr, self.wvr):
                r = watch_range(cr, vr)
                if r is not None:
                    lsc = (cr >> 3) & 3
                    out.append((r[0], r[1], bool(lsc & 1), bool(lsc & 2)))
        return out

    # -- applying the armed set (between slices) --------------------------------------------------------------
    def apply(self) -> None:
        """Install/remove the hooks and page protections the armed set needs (called between slices)."""
        self.dirty = False
        uc = self.vcpu.uc
        want = self.armed_breakpoints()
        for addr in list(self._bp_hooks):
            if addr not in want:
                uc.hook_del(self._bp_hooks.pop(addr))
                uc.ctl_remove_cache(addr, addr + 4)
        for addr in want - set(self._bp_hooks):
            self._bp_hooks[addr] = uc.hook_add(UC_HOOK_CODE, self._on_breakpoint, None, addr, addr)
            uc.ctl_remove_cache(addr, addr + 4)
        stepping = self._step_action is not None or bool(self.mdscr & MDSCR_SS)
        if stepping and self._step_hook is None:
            self._step_hook = uc.hook_add(UC_HOOK_CODE, self._on_step, None, 1, 0)
            uc.ctl_flush_tb()
        elif not stepping and self._step_hook is not None:
            uc.hook_del(self._step_hook)
            self._step_hook = None
            uc.ctl_flush_tb()
        self._protect()

    def _protect(self) -> None:
        """Make the IPA pages of the watched ranges non-readable/non-writable as needed, restore the others."""
        v, uc = self.vcpu, self.vcpu.uc
        want: dict[int, tuple[int, int]] = {}                # IPA page -> (VA page, Unicorn perms)
        regs = v.translation_regs()
        for start, end, read, write in self.armed_watch_ranges():
            va = start & ~(_PAGE - 1)
            while va < end:
                w = v.translate_at(regs, va)
                if w.ok and v.vm.in_ram(w.ipa):
                    page = w.ipa & ~(_PAGE - 1)
                    vpage, perms = want.get(page, (va, UC_PROT_ALL))
                    want[page] = (vpage, perms & ~((UC_PROT_READ if read else 0) | (UC_PROT_WRITE if write else 0)))
                va += _PAGE
        changed = False
        for page in list(self._pages):
            if want.get(page) != self._pages[page][:2]:
                for hook in self._pages.pop(page)[2]:
                    uc.hook_del(hook)
                uc.mem_protect(page, _PAGE, UC_PROT_ALL)
                changed = True
        for page, (vpage, perms) in want.items():
            if page not in self._pages:
                uc.mem_protect(page, _PAGE, perms)
                end = page + _PAGE - 1
                hooks = (uc.hook_add(UC_HOOK_MEM_READ_PROT | UC_HOOK_MEM_WRITE_PROT, self._on_protected, None,
                                     page, end),)
                if not perms & UC_PROT_READ:     # Unicorn checks read permission only on a TLB fill: a read
                    hooks += (uc.hook_add(UC_HOOK_MEM_READ, _no_op, None, page, end),)   # hook keeps it slow
                self._pages[page] = (vpage, perms, hooks)
                changed = True
        if changed:
            v.flush_tlb()

    # -- hooks ------------------------------------------------------------------------------------------------
    def _on_breakpoint(self, uc, addr: int, size: int, _ud) -> None:
        if self._step_hook is None:          # with single step on, _on_step handles breakpoints too
            self._breakpoint(addr)

    def _breakpoint(self, addr: int) -> bool:
        for bp in self.breakpoints:
            if bp.va == addr:
                self._dispatch(bp.action, DebugEvent("breakpoint", addr))
                return True
        v = self.vcpu
        pstate = v.pstate
        if self._arch_breakpoint(addr, (pstate >> 2) & 3, pstate):
            self._take(syn.EC_BKPT_CUR, syn.iss_debug(), addr, 0, "hardware breakpoint")
            return True
        return False

    def _on_step(self, uc, addr: int, size: int, _ud) -> None:
        if self._step_action is not None:
            if self._step_started:
                action, self._step_action = self._step_action, None
                self._dispatch(action, DebugEvent("step", addr))
                if self._step_action is not None:      # re-armed by the action: the next step starts here
                    self._step_started = True
                else:
                    self.dirty = True                  # the step hook goes at the next slice start
                return
            self._step_started = True
        if self.mdscr & MDSCR_SS and self._arch_step(addr):
            return
        if addr in self._bp_hooks:
            self._breakpoint(addr)

    def _arch_step(self, addr: int) -> bool:
        """The software step state machine at the boundary before `addr`; True if it took the exception."""
        v = self.vcpu
        pstate = v.pstate
        active = self.enabled_from((pstate >> 2) & 3, pstate)
        if self._eret is not None and self._eret[0] != addr:  # an ERET ran: PSTATE.SS = SPSR.SS when active
            self._ss, self._eret, self._inflight = self._eret[1] and active, None, False
        elif self._inflight:                               # the stepped instruction completed
            self._inflight, self._ss = False, False
            if active:
                self._take(syn.EC_SSTEP_CUR, syn.iss_swstep(True, self._inflight_ex), addr, None, "software step")
                return True
            return False
        if not active:
            return False
        if not self._ss:                                   # active-pending
            self._take(syn.EC_SSTEP_CUR, syn.iss_swstep(False, False), addr, None, "software step")
            return True
        word = v.insn_at(addr)
        self._inflight, self._inflight_ex = True, word is not None and syn.is_load_exclusive(word)
        return False

    def _on_protected(self, uc, access: int, ipa: int, size: int, value: int, _ud) -> bool:
        """An access to a watched page: a hit stops it (False: Unicorn ends emu_start before the access); a miss
        is let through (True), the write performed here (Unicorn drops writes to a protected page)."""
        v = self.vcpu
        write = access == UC_MEM_WRITE_PROT
        page = ipa & ~(_PAGE - 1)
        va = self._pages[page][0] | (ipa & (_PAGE - 1)) if page in self._pages else ipa
        hit = self._watch_hit(va, size, write)
        if hit is not None:
            self._pending = hit
            return False
        if write:
            off = ipa - v.vm.ram_ipa
            v.vm.ram.buf[off:off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        return True

    def _watch_hit(self, va: int, size: int, write: bool) -> tuple[Action, DebugEvent] | None:
        pc = self.vcpu.pc
        for w in self.watchpoints:
            if (w.write if write else w.read) and w.va < va + size and va < w.va + w.size:
                return w.action, DebugEvent("watchpoint", pc, max(va, w.va), size, write)
        pstate = self.vcpu.pstate
        first = self._arch_watch(va, size, write, (pstate >> 2) & 3, pstate)
        if first is None:
            return None
        return self._take_watch, DebugEvent("watchpoint", pc, first, size, write)

    def take_watchpoint_hit(self) -> bool:
        """After emu_start stopped on a protected page: dispatch the watchpoint hit, if that is what it was."""
        pending, self._pending = self._pending, None
        if pending is None:
            return False
        self._dispatch(*pending)
        return True

    # -- exceptions.py's calls -----------------------------------------------------------------------------
    def entry_ss(self, esr: int | None) -> bool:
        """Exception entry: the SS bit SPSR_ELx saves; PSTATE.SS becomes 0."""
        ss = self._ss
        if self._inflight:
            self._inflight = False
            if esr is not None and syn.ec_of(esr) in (syn.EC_SVC64, syn.EC_HVC64, syn.EC_SMC64):
                ss = False                                 # the call completed: the step is done
        self._ss = False
        return ss

    def on_eret(self) -> None:
        """An ERET is about to run: PSTATE.SS will follow SPSR_ELx.SS (when stepping is watched at all)."""
        if self._step_hook is not None:
            v = self.vcpu
            el = v.el
            if el in SPSR:                 # (the step hook may run before or after this one at the ERET)
                self._eret = (v.pc, bool(v.uc.cpr_read(*SPSR[el]) & PSTATE_SS))

    # -- delivering ----------------------------------------------------------------------------------------
    def _dispatch(self, action: Action, ev: DebugEvent) -> None:
        self.events += 1
        action(self.vcpu, ev)

    def _take_watch(self, v: "Vcpu", ev: DebugEvent) -> None:
        self._take(syn.EC_WPT_CUR, syn.iss_debug(ev.write), ev.pc, ev.addr, "watchpoint")

    def _take(self, ec: int, iss: int, elr: int, far: int | None, what: str) -> None:
        v = self.vcpu
        el = v.el
        target = route(v, el, debug=True)
        t = Taken(syn.lower(ec, el < target), iss, target, elr, elr, far, f"{what} with no debug handler")
        if v.machine.exceptions.take_synchronous(v, t) is None and target != el:
            v.uc.emu_stop()     # taken from a code hook to another EL: end the slice, so that what plugins
            #                     cache per slice about the vCPU's EL (the TLBI trap's decode context) is redone


def _no_op(*_args) -> None:
    return None


def _bas_copies(value: int) -> int:
    """DBGBCR: BAS[3] reads as BAS[2] and BAS[1] as BAS[0] for A64 (as QEMU's dbgbcr_write stores it)."""
    value = (value & ~(1 << 6)) | ((value >> 5) & 1) << 6
    return (value & ~(1 << 8)) | ((value >> 7) & 1) << 8


class Debug:
    """Machine plugin: a `VcpuDebug` on every vCPU (`vcpu.debug`), the debug registers intercepted on the vCPUs
    whose code uses them, and the hooks changed between slices."""

    def __init__(self, machine: "Machine"):
        self.machine = machine

    def attach_vcpu(self, vcpu: "Vcpu") -> None:
        vcpu.debug = VcpuDebug(vcpu)

    def before_run(self, machine: "Machine") -> None:
        for vm in machine.vms:
            if any(uses_debug_registers(r.data) for r in vm.code_ranges):
                for v in vm.vcpus:
                    if v.debug is not None:
                        v.debug.intercept_registers()

    def slice_start(self, vcpu: "Vcpu") -> None:
        d = vcpu.debug
        if d is not None and d.dirty:
            d.apply()


def uses_debug_registers(code: bytes) -> bool:
    """Does `code` hold an MRS/MSR of a debug register (op0 = 0b10, DDI 0487 C5.3)?"""
    return any((w & 0xFFD8_0000) == 0xD510_0000 for _, w in words_at(bytes(code), SYSTEM))
