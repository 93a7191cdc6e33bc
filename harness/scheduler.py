"""The deterministic scheduler: which vCPU runs, for how long, in which Unicorn mode, and when time passes.

* Alone: when a single vCPU is runnable, no instruction budget is set and nothing needs time (the virtual clock
  is not `started`: the guest never touched the generic timer or a semihosting clock, no Chrome trace), it
  runs uncounted in one `emu_start` (full Unicorn speed) until an event ends it (PSCI CPU_ON/CPU_OFF/
  CPU_SUSPEND, WFI, an exit, a death, the first access to time) or the wall-clock budget (`emu_start`'s
  timeout). Time stands still meanwhile.
* Round-robin: otherwise every runnable vCPU runs in turn (`machine.vcpus` order, creation order) for a slice
  of `quantum` instructions (`emu_start(count=)`), shorter when the next deadline of the virtual clock or the
  budget comes first, so SMP runs give the same output every time and a timer fires at an exact instruction.
* Virtual time (harness/clock.py, `machine.clock`): one machine-wide count, advanced by every counted slice -
  the instructions of all vCPUs add up, as in QEMU's icount with round-robin vCPUs (softmmu/icount.c) - and
  warped to the next deadline when no vCPU can run. `retired` counts the instructions charged to slices (an
  upper bound: a slice that ends early is charged in full), which `max_insns` budgets.
* WFI: every WFI traps to the harness (SCR_EL3.TWI, set at the vCPU's first slice: `trap_wfi`): unless the
  guest's own controls trap it to its EL1/EL2 (SCTLR_EL1.nTWI=0 at EL0, HCR_EL2.TWI below EL2: Unicorn's
  check_wfx_trap order, QEMU target/arm/op_helper.c), the vCPU ends its slice and sleeps in `waiting` until a
  wake-up event: a `kick` (the host's, e.g. a VMM that injects an event) or a wake source saying so
  (`add_wake_source`: the generic timer's asserted outputs today, the interrupt controller's pending interrupts
  later). PSCI CPU_SUSPEND
  sleeps the same way (QEMU's PSCI CPU_SUSPEND executes a WFI). A sleeping vCPU does not stop time: the others
  run, and with every vCPU asleep time warps to the next deadline; with nothing that can wake any vCPU the run
  ends as IDLE (exit status 124).
* Budgets: `max_insns` ends the run with a BUDGET outcome once charged, `timeout` (seconds of wall-clock time)
  with a TIMEOUT outcome naming where each vCPU was.
* Plugins: `slice_start(vcpu)` / `slice_end(vcpu)` run around every `emu_start` of that vCPU (KVM's
  vcpu_load/put, the TLBI trap's lazy flushes); a `slice_start` may stop the vCPU or the machine. The clock's
  slice ends before `slice_end` runs, so what plugins trace there is dated at the slice's end.

Unicorn instruments blocks for `emu_start(count=)` when it translates them, so a vCPU that switches between
counted and uncounted slices gets its translation cache flushed (`ctl_flush_tb`) at the switch; without that a
counted slice can run forever in blocks translated uncounted (checked with unicorn 2.1.4).

Seams (docs/DESIGN.md "Scheduler seams"): `runnable(vcpu)` decides who may run (`waiting` holds the vCPUs in
WFI), `add_wake_source(fn, name)` is where an interrupt controller says a vCPU has an interrupt pending,
`kick(vcpu)` is a wake-up event from the host, `slice_length(vcpu, ...)` bounds a slice (the clock's next
deadline), `slice_start` is where interrupts are injected, and `run_slice(vcpu, count)` runs exactly `count`
instructions of one vCPU. A debugger (harness/gdbstub.py) uses three more: `request_stop(vcpu)` ends the run at
the next slice boundary (`run` returns True, without an outcome; calling it again resumes where it stopped, the
rest of the interrupted round first, with what was left of the time budget), `step(vcpu)` runs one instruction
of one vCPU while the others stay stopped, and `held` (vCPU ids) keeps vCPUs stopped while the others run
(`runnable` says no for them; when only held vCPUs could run, `run` returns True with `stalled` set). With
`alone_slice_insns` set, a vCPU running alone (uncounted: time stands still) stops after that many instructions,
so the debugger can look at its connection between slices; the guest cannot tell (the clock is not charged, and
Unicorn's instruction count stops it at an instruction boundary). Not a wall-clock bound: Unicorn's `emu_start`
timeout stops the vCPU asynchronously and can re-execute a store that already reached a device (seen as a
doubled PL011 character), so only the run's own deadline, which ends the run, uses it.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from unicorn import UcError
from unicorn.arm64_const import UC_ARM64_REG_PC

from devmodel.trace import define

from .clock import VirtualClock
from .exits import EC_IABT_CUR, FSC_SYNC_EXTERNAL, Kind, Outcome, esr_value
from .watchdog import WATCHDOG

if TYPE_CHECKING:
    from .machine import Machine
    from .vcpu import Vcpu

__all__ = ["Scheduler", "DEFAULT_QUANTUM", "STOP_ADDRESS", "WFI", "EC_WFX", "wfi_trap_target", "trap_wfi"]

DEFAULT_QUANTUM = 10_000
STOP_ADDRESS = 0xFFFF_FFFF_FFFF_FFFC   # emu_start's end address: never a guest PC in practice
WFI = 0xD503207F                       # the WFI instruction word (Arm ARM C6.2 WFI)
EC_WFX = 0x01                          # ESR.EC of a trapped WFI/WFE (D17.2.37)
_WFI_ISS = (1 << 24) | (0xE << 20)     # CV=1, COND=0b1110 (AArch64), TI=0b00: WFI
SCTLR_EL1 = (3, 0, 1, 0, 0)
HCR_EL2 = (3, 4, 1, 1, 0)
SCR_EL3 = (3, 6, 1, 1, 0)
SCTLR_NTWI, HCR_TWI, HCR_TGE, SCR_TWI = 1 << 16, 1 << 13, 1 << 27, 1 << 12

define("vcpu_wfi", ("cpu", "pc", "deadline"),
       "a vCPU sleeps in WFI (or PSCI CPU_SUSPEND) at pc; deadline: the clock's next deadline (None: none)")
define("vcpu_wake", ("cpu", "why", "count"), "a sleeping vCPU wakes up (why: kick or the wake source's name)")
define("clock_warp", ("count", "to"), "no vCPU can run: virtual time jumps from count to the next deadline")


def wfi_trap_target(el: int, sctlr_el1: int, hcr_el2: int) -> int:
    """The EL a WFI at `el` traps to under the guest's own controls, or 0 when it does not (it then reaches the
    harness's SCR_EL3.TWI trap): SCTLR_EL1.nTWI=0 traps EL0 to EL1 (EL2 when HCR_EL2.TGE=1), HCR_EL2.TWI traps
    EL0/EL1 to EL2, in the order of QEMU's check_wfx_trap (target/arm/op_helper.c), which Unicorn applies."""
    if el == 0 and not sctlr_el1 & SCTLR_NTWI:
        return 2 if hcr_el2 & HCR_TGE else 1
    if el <= 1 and hcr_el2 & HCR_TWI:
        return 2
    return 0


def trap_wfi(v: "Vcpu") -> None:
    """Make every WFI of `v` that its own controls do not trap reach the harness: SCR_EL3.TWI (the harness is
    EL3). Set at the vCPU's first slice, not at reset: Unicorn stops at an `emu_start(begin, until)` address by
    imitating a WFI there, which TWI turns into an undefined-instruction exception at until - 4, so code that
    drives a vCPU's Unicorn directly (tests) keeps Unicorn's plain behaviour until the scheduler runs it (the
    scheduler's own `until`, STOP_ADDRESS, is never reached)."""
    uc = v.uc
    uc.cpr_write(*SCR_EL3, uc.cpr_read(*SCR_EL3) | SCR_TWI)


class Scheduler:
    """Runs the vCPUs of `machine` (see the module docstring)."""

    def __init__(self, machine: "Machine", quantum: int = DEFAULT_QUANTUM, clock: VirtualClock | None = None):
        if quantum <= 0:
            raise ValueError(f"quantum {quantum} must be positive")
        self.machine = machine
        self.quantum = quantum
        self.clock = clock if clock is not None else VirtualClock()
        self.retired = 0                  # instructions charged machine-wide (the --max-insns budget)
        self.waiting: dict[int, "Vcpu"] = {}            # vcpu.id -> vCPU sleeping in WFI
        self.wake_sources: list[tuple[str, Callable[["Vcpu"], bool]]] = []
        self._kicked: set[int] = set()
        self._counted: dict[int, bool] = {}     # vcpu.id -> whether its last slice ran counted
        self._slice_wfi = False                 # the running slice ended on a WFI
        # a debugger's seams (module docstring)
        self.held: set[int] = set()             # vcpu.id of vCPUs a debugger keeps stopped
        self.stop_requested = False
        self.stalled = False                    # `run` returned: only held vCPUs could have run
        self.alone_slice_insns = 0              # instructions a vCPU alone runs per slice (0: unbounded)
        self._rest: list["Vcpu"] = []           # the rest of the round a stop interrupted
        self._left: float | None = None         # seconds of the time budget left at the last stop
        self.running: "Vcpu | None" = None      # the vCPU inside emu_start
        self.stepping: "Vcpu | None" = None     # the vCPU running the one instruction of `request_step`
        self._steps: set[int] = set()

    # -- the seams ---------------------------------------------------------------------------------------
    def runnable(self, v: "Vcpu") -> bool:
        """May `v` run now? Powered on, not sleeping in WFI, not held stopped by a debugger."""
        return v.on and v.id not in self.waiting and v.id not in self.held

    def slice_length(self, v: "Vcpu", max_insns: int | None) -> int:
        """Instructions the next round-robin slice of `v` may run: the quantum, within the budget left and up
        to the clock's next deadline (so a timer fires at an exact instruction boundary)."""
        n = self.quantum
        if max_insns is not None:
            n = min(n, max_insns - self.retired)
        nd = self.clock.next_deadline()
        if nd is not None:
            n = min(n, max(1, nd - self.clock.now()))
        return n

    def add_wake_source(self, fn: Callable[["Vcpu"], bool], name: str) -> None:
        """`fn(vcpu) -> bool`: does `vcpu` have a WFI wake-up event (an interrupt pending for it)? Asked at
        every scheduling point for the vCPUs in WFI."""
        self.wake_sources.append((name, fn))

    def request_step(self, v: "Vcpu") -> None:
        """When the running `emu_start` of `v` ends, run exactly one more instruction of it within the same
        slice (before `slice_end`): the instruction a stop left unfinished (`Vcpu.stop_after_access`, replaying
        its MMIO accesses), or the one a code hook stopped before (an ERET that unmasks a pending interrupt:
        harness/interrupts.py). `stepping` is `v` meanwhile."""
        self._steps.add(v.id)

    def kick(self, v: "Vcpu") -> None:
        """A wake-up event for `v` from the host (KVM's kvm_vcpu_kick): wakes it if it sleeps in WFI, else its
        next WFI completes at once (the slice still ends there)."""
        self._kicked.add(v.id)

    def wfi(self, v: "Vcpu", pc: int) -> None:
        """The WFI at `pc` trapped (SCR_EL3.TWI; Unicorn left the PC on it). Called from the vCPU's exception
        hook: the guest's own trap to EL1/EL2, or the harness's sleep."""
        uc = v.uc
        hcr = uc.cpr_read(*HCR_EL2) if v.start_el == 2 else 0
        target = wfi_trap_target(v.el, uc.cpr_read(*SCTLR_EL1), hcr)
        if target:
            why = "SCTLR_EL1.nTWI=0" if target == 1 or not hcr & HCR_TWI else "HCR_EL2.TWI=1"
            self.machine.exceptions.take(v, Kind.UNDEF, f"WFI trapped by the guest's controls ({why})", pc,
                                         esr_value(EC_WFX, _WFI_ISS), elr=pc, target_el=target)
            return
        uc.reg_write(UC_ARM64_REG_PC, pc + 4)
        why = None if v.id in self._kicked else self._wake_event(v)
        if why is not None:                     # a wake-up event is already there: the WFI completes at once
            m = self.machine
            if "vcpu_wfi" in m.tracer.enabled:
                m.tracer.emit("vcpu_wfi", cpu=v.id, pc=pc, deadline=self.clock.next_deadline())
            if "vcpu_wake" in m.tracer.enabled:
                m.tracer.emit("vcpu_wake", cpu=v.id, why=why, count=self.clock.now())
            return
        self.sleep(v, pc, "WFI")

    def sleep(self, v: "Vcpu", pc: int, what: str = "WFI") -> None:
        """`v` waits for a wake-up event (WFI, PSCI CPU_SUSPEND): its slice ends now. Safe in any hook."""
        m = self.machine
        self.waiting[v.id] = v
        self._slice_wfi = True
        nd = self.clock.next_deadline()
        if "vcpu_wfi" in m.tracer.enabled:
            m.tracer.emit("vcpu_wfi", cpu=v.id, pc=pc, deadline=nd)
        if "int" in m.log.enabled:
            m.log("int", f"{v.dvm_name}: {what} at pc {pc:#x} <{v.vm.symbolize(pc)}>: waiting for a wake-up event"
                         f" (next deadline {'none' if nd is None else f'at tick {nd}'})")
        v.uc.emu_stop()

    # -- a debugger's stops ----------------------------------------------------------------------------------
    def request_stop(self, v: "Vcpu | None" = None) -> None:
        """Stop the run at the next slice boundary (`run` returns True); with `v`, its running slice ends now
        (`emu_stop`: safe in any hook; a breakpoint's instruction is then not executed)."""
        self.stop_requested = True
        if v is not None:
            v.uc.emu_stop()

    def step(self, v: "Vcpu") -> None:
        """One instruction of `v` while the other vCPUs stay stopped (a debugger's single step): a slice of 1,
        charged to the clock and the budget. A vCPU that cannot run (off, asleep in WFI) executes nothing."""
        if v.on and v.id not in self.waiting:
            self.clock.fire_due()
            self.run_slice(v, 1)
            self.retired += 1
            v.retired += 1
        self.stop_requested = False

    # -- running -------------------------------------------------------------------------------------------
    def run(self, max_insns: int | None = None, timeout: float | None = None) -> bool:
        """Run until the machine has an outcome (set on `machine.outcome`; returns False), or until a stop
        was requested (returns True; call again to resume). `timeout` is the wall-clock budget of the whole
        run: a resumed run gets what was left of it at the stop."""
        m = self.machine
        clock = self.clock
        if any(getattr(s, "needs_time", False) for s in m.tracer.sinks):
            clock.start("trace timestamps")
        deadline = time.monotonic() + (timeout if self._left is None else self._left) if timeout else None
        m.deadline, self._left, self.stalled = deadline, None, False
        while m.outcome is None:
            if self._rest:                           # resume the round a stop interrupted
                rest, self._rest = self._rest, []
                self._round(rest, max_insns)
            elif not self._run_ready(max_insns, timeout, deadline):
                break
            if m.outcome is None and max_insns is not None and self.retired >= max_insns:
                m.outcome = Outcome(Kind.BUDGET, f"instruction budget of {max_insns} exhausted (--max-insns)")
            if m.outcome is None and deadline and time.monotonic() >= deadline:
                self._timeout(timeout)
            if m.outcome is None and (self.stop_requested or self.stalled):
                self.stop_requested = False
                self._left = max(0.0, deadline - time.monotonic()) if deadline else None
                return True
        return False

    def _run_ready(self, max_insns: int | None, timeout: float | None, deadline: float | None) -> bool:
        """One scheduling point: a slice alone or a round; False when the run ends here."""
        m = self.machine
        clock = self.clock
        clock.fire_due()
        self._wake()
        ready = [v for v in m.vcpus if self.runnable(v)]
        if not ready:
            if self._warp():
                return True
            if any(v.id in self.held and v.on for v in m.vcpus):
                self.stalled = True                  # only the debugger can make progress now
                return True
            m.outcome = self._idle_outcome()
            return False
        if len(ready) == 1 and max_insns is None and not clock.started:
            left = deadline - time.monotonic() if deadline else 0
            if deadline and left <= 0:
                self._timeout(timeout)
                return False
            self._run_alone(ready[0], left if deadline else None)
        else:
            self._round(ready, max_insns)
        return True

    def _run_alone(self, v: "Vcpu", left: float | None) -> None:
        """A lone vCPU's uncounted run, stopped after `left` seconds of wall time (None: no budget) by the
        process's watchdog thread calling `emu_stop` (harness/watchdog.py: one long-lived thread, not a
        `threading.Timer` per slice) - not by emu_start's timeout, whose thread in Unicorn 2.1 wakes every 2 us
        for the whole run (uc.c `_timeout_fn`: usleep(2) polling), a CPU's worth of wake-ups next to the
        guest's. `run` then sees the wall deadline passed and ends the run with 124, as before."""
        token = WATCHDOG.arm(left, v.uc.emu_stop) if left is not None else None
        try:
            self.run_slice(v, self.alone_slice_insns, 0, charge=False)
        finally:
            if token is not None:
                WATCHDOG.disarm(token)               # no stop outlives its run

    def _round(self, ready: list["Vcpu"], max_insns: int | None) -> None:
        m = self.machine
        for i, v in enumerate(ready):
            if self.stop_requested:
                self._rest = ready[i:]               # resumed first by the next `run`
                return
            if not self.runnable(v) or m.outcome is not None:
                continue
            self.clock.fire_due()                    # deadlines the previous slice reached
            n = self.slice_length(v, max_insns)
            self.run_slice(v, n, 0)
            self.retired += n
            v.retired += n
            if max_insns is not None and self.retired >= max_insns:
                break

    def run_slice(self, v: "Vcpu", count: int, timeout_us: int = 0, charge: bool = True) -> None:
        """One `emu_start` of `v`: `count` instructions (0: uncounted, until an event or `timeout_us`), with
        the plugins' `slice_start`/`slice_end` around it. Advances the clock by `count` unless not `charge`
        (a vCPU alone, bounded only for a debugger: `alone_slice_insns`); charges no budget (the caller
        does)."""
        m = self.machine
        uc = v.uc
        pc = uc.reg_read(UC_ARM64_REG_PC)
        if pc == STOP_ADDRESS:
            m.exceptions.die(v, Kind.ABORT, "instruction fetch from the harness stop address", pc,
                             esr_value(EC_IABT_CUR, FSC_SYNC_EXTERNAL), pc)
            return
        v.slices += 1
        v.unmapped = None
        plugins = m.plugins
        for p in plugins:
            f = getattr(p, "slice_start", None)
            if f is not None:
                f(v)
        self._slice_wfi = False
        ran = v.on and m.outcome is None          # a slice_start hook may have stopped it
        self.clock.begin_slice(count if ran and charge else 0, v.stop_after_access)
        try:
            if ran:
                self._emu(v, uc.reg_read(UC_ARM64_REG_PC), count, timeout_us)
                while v.id in self._steps and v.on and m.outcome is None:
                    self._step(v)
        finally:
            self._steps.discard(v.id)
            self.running = self.stepping = None
            v.end_replay()
            self.clock.end_slice(wfi=self._slice_wfi)
            for p in plugins:
                f = getattr(p, "slice_end", None)
                if f is not None:
                    f(v)

    def _emu(self, v: "Vcpu", pc: int, count: int, timeout_us: int) -> None:
        """One `emu_start` of `v` in the right mode (counted when `count` > 0)."""
        uc = v.uc
        counted = count > 0
        last = self._counted.get(v.id)
        if counted != last:
            # plugins may hook differently per mode (the TLBI trap's DSB sites); blocks translated in the
            # other mode would never stop (or keep paying for counting): drop them
            changed = [f(v, counted) for p in self.machine.plugins if (f := getattr(p, "counted_mode", None))]
            if last is not None or any(changed):
                uc.ctl_flush_tb()
            if last is None:
                trap_wfi(v)
            self._counted[v.id] = counted
        self.running = v
        try:
            uc.emu_start(pc, STOP_ADDRESS, timeout_us, count)
        except UcError as e:
            self.machine.exceptions.emulation_error(v, e)
        finally:
            self.running = None

    def _step(self, v: "Vcpu") -> None:
        """The one instruction `request_step` asked for (replaying the MMIO accesses a stop interrupted)."""
        self._steps.discard(v.id)
        v.begin_replay()
        self.stepping = v
        try:
            self._emu(v, v.uc.reg_read(UC_ARM64_REG_PC), 1, 0)
        finally:
            self.stepping = None
            v.end_replay()

    # -- sleeping and waking -----------------------------------------------------------------------------
    def _wake_event(self, v: "Vcpu") -> str | None:
        """The name of the first wake source that has a wake-up event for `v`, or None."""
        return next((name for name, fn in self.wake_sources if fn(v)), None)

    def _wake(self) -> None:
        """Wake the vCPUs in WFI that have a wake-up event."""
        if not self.waiting:
            return
        tracer = self.machine.tracer
        for vid, v in list(self.waiting.items()):
            why = None
            if not v.on:
                why = "off"
            elif vid in self._kicked:
                why = "kick"
                self._kicked.discard(vid)
            else:
                why = self._wake_event(v)
            if why is not None:
                del self.waiting[vid]
                if "vcpu_wake" in tracer.enabled and why != "off":
                    tracer.emit("vcpu_wake", cpu=vid, why=why, count=self.clock.now())

    def _warp(self) -> bool:
        """No vCPU can run: jump to the next deadline if there is one."""
        nd = self.clock.next_deadline()
        if nd is None:
            return False
        tracer = self.machine.tracer
        if "clock_warp" in tracer.enabled:
            tracer.emit("clock_warp", count=self.clock.now(), to=nd)
        self.clock.warp(nd)
        return True

    # -- ends ----------------------------------------------------------------------------------------------
    def _timeout(self, timeout: float | None) -> None:
        m = self.machine
        where = ", ".join(f"{v.dvm_name} at pc {v.pc:#x} <{v.vm.symbolize(v.pc)}>" for v in m.vcpus if v.on)
        m.outcome = Outcome(Kind.TIMEOUT, f"time budget of {timeout:g} s exhausted (--timeout); {where}")

    def _idle_outcome(self) -> Outcome:
        vms = self.machine.vms
        ended = [vm for vm in vms if vm.outcome is not None]
        if ended and len(ended) == len(vms):
            exits = [vm.outcome for vm in ended]
            return next((o for o in exits if o.exit_code != 0), exits[0])
        asleep = [v for v in self.waiting.values() if v.on]
        if asleep:
            where = ", ".join(f"{v.dvm_name} at pc {v.pc:#x} <{v.vm.symbolize(v.pc)}>" for v in asleep)
            return Outcome(Kind.IDLE, f"every vCPU is powered off or waits in WFI ({where}) and nothing can wake "
                                      f"them (no timer deadline pending, no interrupt)")
        names = ", ".join(vm.name for vm in vms if vm.outcome is None)
        return Outcome(Kind.IDLE, f"every vCPU of {names} is powered off (PSCI CPU_OFF) and nothing can wake them")
