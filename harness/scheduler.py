"""The deterministic scheduler: which vCPU runs, for how long, and in which Unicorn mode.

* Alone: when a single vCPU is runnable and no instruction budget is set, it runs uncounted in one `emu_start`
  (full Unicorn speed) until an event ends it (PSCI CPU_ON/CPU_OFF/CPU_SUSPEND, WFI, an exit, a death) or the
  wall-clock budget (`emu_start`'s timeout).
* Round-robin: otherwise every runnable vCPU runs in turn for `quantum` instructions (`emu_start(count=)`), in
  `machine.vcpus` order (creation order), so SMP runs give the same output every time.
* Virtual time: `retired` counts the instructions charged to slices, machine-wide (an upper bound: a slice that
  ends early at WFI or an event is charged in full); semihosting's clock reads it. Uncounted runs charge nothing.
* Budgets: `max_insns` ends the run with a BUDGET outcome once charged, `timeout` (seconds of wall-clock time)
  with a TIMEOUT outcome naming where each vCPU was; no vCPU runnable ends it as IDLE, or with the VMs' exits.
* Plugins: `slice_start(vcpu)` / `slice_end(vcpu)` run around every `emu_start` of that vCPU (KVM's
  vcpu_load/put, the TLBI trap's lazy flushes); a `slice_start` may stop the vCPU or the machine.

Unicorn instruments blocks for `emu_start(count=)` when it translates them, so a vCPU that switches between
counted and uncounted slices gets its translation cache flushed (`ctl_flush_tb`) at the switch; without that a
counted slice can run forever in blocks translated uncounted (checked with unicorn 2.1.4).

Seams for what comes next (docs/DESIGN.md "Scheduler seams"): `runnable(vcpu)` is the one place that decides
whether a vCPU may run (WFI sleeping until an interrupt is pending), `slice_length(vcpu, ...)` the one place that
bounds a slice (a generic timer's next deadline), `slice_start` the point where interrupts are injected, and
`run_slice(vcpu, count)` runs exactly `count` instructions of one vCPU (a debugger's single step).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from unicorn import UcError
from unicorn.arm64_const import UC_ARM64_REG_PC

from .exits import EC_IABT_CUR, FSC_SYNC_EXTERNAL, Kind, Outcome, esr_value

if TYPE_CHECKING:
    from .machine import Machine
    from .vcpu import Vcpu

__all__ = ["Scheduler", "DEFAULT_QUANTUM", "STOP_ADDRESS"]

DEFAULT_QUANTUM = 10_000
STOP_ADDRESS = 0xFFFF_FFFF_FFFF_FFFC   # emu_start's end address: never a guest PC in practice


class Scheduler:
    """Runs the vCPUs of `machine` (see the module docstring)."""

    def __init__(self, machine: "Machine", quantum: int = DEFAULT_QUANTUM):
        if quantum <= 0:
            raise ValueError(f"quantum {quantum} must be positive")
        self.machine = machine
        self.quantum = quantum
        self.retired = 0                  # instructions charged machine-wide (virtual time)
        self._counted: dict[int, bool] = {}     # vcpu.id -> whether its last slice ran counted

    # -- the seams ---------------------------------------------------------------------------------------
    def runnable(self, v: "Vcpu") -> bool:
        """May `v` run now? (Powered on; later: not sleeping in WFI with no interrupt pending.)"""
        return v.on

    def slice_length(self, v: "Vcpu", max_insns: int | None) -> int:
        """Instructions the next round-robin slice of `v` may run: the quantum, within the budget left.
        (Later: also up to the next deadline of the virtual clock.)"""
        if max_insns is None:
            return self.quantum
        return min(self.quantum, max_insns - self.retired)

    # -- running -------------------------------------------------------------------------------------------
    def run(self, max_insns: int | None = None, timeout: float | None = None) -> None:
        """Run until the machine has an outcome (set on `machine.outcome`)."""
        m = self.machine
        deadline = time.monotonic() + timeout if timeout else None
        while m.outcome is None:
            ready = [v for v in m.vcpus if self.runnable(v)]
            if not ready:
                m.outcome = self._idle_outcome()
                break
            if len(ready) == 1 and max_insns is None:
                left = deadline - time.monotonic() if deadline else 0
                if deadline and left <= 0:
                    self._timeout(timeout)
                    break
                self.run_slice(ready[0], 0, int(left * 1e6) if deadline else 0)
            else:
                self._round(ready, max_insns)
            if m.outcome is None and max_insns is not None and self.retired >= max_insns:
                m.outcome = Outcome(Kind.BUDGET, f"instruction budget of {max_insns} exhausted (--max-insns)")
            if m.outcome is None and deadline and time.monotonic() >= deadline:
                self._timeout(timeout)

    def _round(self, ready: list["Vcpu"], max_insns: int | None) -> None:
        m = self.machine
        for v in ready:
            if not self.runnable(v) or m.outcome is not None:
                continue
            n = self.slice_length(v, max_insns)
            self.run_slice(v, n, 0)
            self.retired += n
            v.retired += n
            if max_insns is not None and self.retired >= max_insns:
                break

    def run_slice(self, v: "Vcpu", count: int, timeout_us: int = 0) -> None:
        """One `emu_start` of `v`: `count` instructions (0: uncounted, until an event or `timeout_us`), with
        the plugins' `slice_start`/`slice_end` around it. Charges nothing (the caller does)."""
        m = self.machine
        uc = v.uc
        pc = uc.reg_read(UC_ARM64_REG_PC)
        if pc == STOP_ADDRESS:
            m.exceptions.die(v, Kind.ABORT, "instruction fetch from the harness stop address", pc,
                             esr_value(EC_IABT_CUR, FSC_SYNC_EXTERNAL), pc)
            return
        v.slices += 1
        v.unmapped = None
        counted = count > 0
        last = self._counted.get(v.id)
        if counted != last:
            # blocks translated in the other mode would never stop (or keep paying for counting): drop them
            if last is not None:
                uc.ctl_flush_tb()
            self._counted[v.id] = counted
        plugins = m.plugins
        for p in plugins:
            f = getattr(p, "slice_start", None)
            if f is not None:
                f(v)
        try:
            if v.on and m.outcome is None:        # a slice_start hook may have stopped it
                uc.emu_start(pc, STOP_ADDRESS, timeout_us, count)
        except UcError as e:
            m.exceptions.emulation_error(v, e)
        finally:
            for p in plugins:
                f = getattr(p, "slice_end", None)
                if f is not None:
                    f(v)

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
        names = ", ".join(vm.name for vm in vms if vm.outcome is None)
        return Outcome(Kind.IDLE, f"every vCPU of {names} is powered off (PSCI CPU_OFF) and nothing can wake them")
