"""Interrupts into the vCPUs: which physical IRQ or FIQ a vCPU takes, to which EL, and at which instruction.

The GIC of each VM (harness/gic.py) computes its CPU interfaces' IRQ and FIQ outputs (priority, PMR, running
priority, group enables: docs/gic.md); this module is the CPU's side of those wires, a machine plugin
(`machine.interrupts`):

* Routing and masking (`route`, `unmasked`, `pending`: pure; Arm ARM DDI 0487 D1.3.6 "Asynchronous exception
  routing" and "masking", as QEMU target/arm `arm_phys_excp_target_el` / `arm_excp_unmasked` implement them
  with EL3 absent): an IRQ (FIQ) goes to EL2 when the guest owns EL2 and HCR_EL2.IMO (FMO) or TGE is set,
  else to EL1; it is never taken to an EL lower than the current one; taken to a higher EL it is not masked
  by PSTATE.I (F) except for EL2 with HCR_EL2.{E2H,TGE} = {1,1}; otherwise PSTATE.I (F) masks it. FIQ is
  checked before IRQ (QEMU's arm_cpu_exec_interrupt order).
* Entry: `Exceptions.take_interrupt` (harness/exceptions.py): VBAR_ELx + 0x080 (IRQ) / 0x100 (FIQ) + 0x000
  / 0x200 / 0x400 for the current EL with SP0 / SPx or a lower EL, ELR = the next instruction to run, SPSR,
  DAIF masked; a guest with no vector table there dies (139). ISR_EL1 reads the outputs (I [7], F [6]; at
  EL1 with HCR_EL2.IMO/FMO the virtual ones HCR_EL2.VI/VF, D17.2.86).
* When: at an instruction boundary that is a function of the instruction stream and of virtual time only
  (never of host speed), at the first of these points after the interrupt becomes deliverable:
  - the start of each slice of the vCPU (`slice_start`): interrupts raised by another vCPU, a device or a
    timer deadline (slices end at deadlines) are taken before the vCPU's next instruction;
  - an MRS/MSR the vCPU itself executes (ICC_SGI1R self-IPI, ICC_PMR, ICC_EOIR revealing the next interrupt,
    a timer register write): right after that instruction (an ICC_* access, which Unicorn leaves to the
    handler, enters at once; a register Unicorn executes itself ends the slice there);
  - an MMIO store of the vCPU itself (GICD_SGIR self-IPI, GICC_PMR, a device register whose interrupt
    targets it): right after that instruction, through `Vcpu.stop_after_access` (the slice ends, the
    instruction is completed without repeating its accesses);
  - unmasking: the instruction after each `MSR DAIFClr` that clears I or F and each `MSR DAIF, Xt`, found by a
    pre-scan of the VM's executable ranges (`scan_unmask_sites`, as the TLBI trap pre-scans DSBs) and hooked;
    an ERET whose SPSR unmasks a pending interrupt stops before it, runs alone (`Scheduler.request_step`) and
    the interrupt is taken after it (ELR = the ERET's target);
  - WFI: sleeps until the vCPU has an IRQ or FIQ output asserted, masked or not (QEMU's arm_cpu_has_work;
    D1.16.2), a wake-up event already there completes it at once.
  Maximum latency, in the vCPU's instructions: 0 for every point above; unmasking by code outside the pre-
  scanned ranges (generated or relocated code) waits for the slice's end, at most `quantum` instructions
  (10,000 by default). Slices a delivery ends are charged in full, as any slice that ends early.
* Console input: the PL011 pulls from `machine.console_input` at slice starts and WFI wake checks once its
  guest listens (devmodel/pl011.py), so input given as bytes arrives at deterministic points.
* Timers: every generic timer output is its vCPU's level PPI (`devmodel.timer.PPI`); an output no longer
  wakes a WFI by itself (`machine.timers.direct_wake` off): as on hardware, only through the GIC.

Traced `cpu_irq_taken(cpu, kind, intid, pc, el, vector)`; `-d int` logs each entry. Cost: nothing on the hot
paths; a Python call per executed unmask site and per ERET; an MRS of ISR_EL1 is served.
"""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Iterable

from unicorn import UC_HOOK_CODE
from unicorn.arm64_const import UC_ARM64_REG_PC, UC_ARM64_REG_PSTATE

from devmodel.timer import PPI
from devmodel.trace import define

from .codescan import SYSTEM, words_at
from .exceptions import Vector
from .sysregs import Encoding

if TYPE_CHECKING:
    from .machine import Machine
    from .vcpu import Vcpu

__all__ = ["InterruptDelivery", "route", "unmasked", "pending", "isr_el1", "scan_unmask_sites", "ISR_EL1"]

define("cpu_irq_taken", ("cpu", "kind", "intid", "pc", "el", "vector"),
       "a vCPU takes an IRQ or FIQ: intid the GIC offers it (what its acknowledge returns), pc = ELR (the next "
       "instruction), el the target EL, vector the address entered")

PSTATE_F, PSTATE_I = 1 << 6, 1 << 7
HCR_FMO, HCR_IMO, HCR_AMO, HCR_VF, HCR_VI, HCR_VSE = 1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8
HCR_TGE, HCR_E2H = 1 << 27, 1 << 34
HCR_EL2 = (3, 4, 1, 1, 0)
ISR_EL1: Encoding = (3, 0, 12, 1, 0)
# MSR DAIFClr, #imm (op1 3, CRn 4, op2 7; CRm = D A I F) and MSR DAIF, Xt (S3_3_C4_C2_1), DDI 0487 C5.2.2
_DAIFCLR, _DAIFCLR_MASK, _DAIFCLR_IF = 0xD50340FF, 0xFFFFF0FF, 0x3 << 8
_MSR_DAIF, _MSR_DAIF_MASK = 0xD51B4220, 0xFFFFFFE0


def route(fiq: bool, hcr: int, start_el: int) -> int:
    """The EL a physical FIQ (IRQ when not `fiq`) is taken to: EL2 when the guest owns EL2 (`start_el` 2) and
    HCR_EL2.FMO (IMO) or TGE is set, else EL1 (SCR_EL3.FIQ/IRQ are 0: never EL3)."""
    if start_el < 2:
        return 1
    return 2 if hcr & (HCR_TGE | (HCR_FMO if fiq else HCR_IMO)) else 1


def unmasked(fiq: bool, el: int, target: int, pstate: int, hcr: int) -> bool:
    """May an interrupt routed to `target` be taken at `el` with this PSTATE (QEMU arm_excp_unmasked)?"""
    if el > target:
        return False                                 # never taken to a lower EL: it stays pending
    if target > el and target == 2 and hcr & (HCR_E2H | HCR_TGE) != HCR_E2H | HCR_TGE:
        return True                                  # to a higher EL: PSTATE.I/F do not mask it
    return not pstate & (PSTATE_F if fiq else PSTATE_I)


def pending(irq: bool, fiq: bool, el: int, pstate: int, hcr: int, start_el: int) -> tuple[Vector, int] | None:
    """The interrupt a vCPU takes now given its IRQ/FIQ inputs: (Vector.FIQ or Vector.IRQ, target EL), or None."""
    for is_fiq, line in ((True, fiq), (False, irq)):
        if line:
            target = route(is_fiq, hcr, start_el)
            if unmasked(is_fiq, el, target, pstate, hcr):
                return (Vector.FIQ if is_fiq else Vector.IRQ, target)
    return None


def isr_el1(irq: bool, fiq: bool, el: int, hcr: int, start_el: int) -> int:
    """ISR_EL1 (D17.2.86): I [7] / F [6] the physical outputs, or at EL1 with HCR_EL2.IMO (FMO) the virtual
    interrupt HCR_EL2.VI (VF); A [8] is HCR_EL2.VSE at EL1 with AMO, else 0 (no physical SError)."""
    virt = start_el == 2 and el == 1
    i = bool(hcr & HCR_VI) if virt and hcr & HCR_IMO else irq
    f = bool(hcr & HCR_VF) if virt and hcr & HCR_FMO else fiq
    a = bool(hcr & HCR_VSE) if virt and hcr & HCR_AMO else False
    return a << 8 | i << 7 | f << 6


def scan_unmask_sites(regions: Iterable[tuple[int, bytes]]) -> list[int]:
    """Addresses of the instruction after each MSR DAIFClr that clears I or F, and each MSR DAIF, Xt."""
    out = []
    for base, data in regions:
        for i, w in words_at(bytes(data), SYSTEM):         # MSRs are system instructions
            if ((w & _DAIFCLR_MASK) == _DAIFCLR and w & _DAIFCLR_IF) or (w & _MSR_DAIF_MASK) == _MSR_DAIF:
                out.append(base + 4 * i + 4)
    return out


class InterruptDelivery:
    """Machine plugin taking the GIC's outputs into the vCPUs (see the module docstring)."""

    def __init__(self, machine: "Machine"):
        self.machine = machine
        self.taken: Counter[str] = Counter()          # "IRQ" / "FIQ" entries
        self._hooked: set[tuple[int, int]] = set()
        machine.scheduler.add_wake_source(self.wakes, "interrupt")
        machine.timers.direct_wake = lambda v: not v.vm.gic.armed
        machine.timers.on_output_change.append(self._timer_output)
        machine.exceptions.eret_observers.append(self._before_eret)

    # -- plugin hooks ----------------------------------------------------------------------------------------
    def attach_vcpu(self, v: "Vcpu") -> None:
        v.sysregs.register(ISR_EL1, read=self._isr)

    def before_run(self, machine: "Machine") -> None:
        """Hook the instruction after each unmask site of each VM's executable ranges on that VM's vCPUs."""
        for vm in machine.vms:
            sites = scan_unmask_sites((r.vaddr, r.data) for r in vm.code_ranges)
            for v in vm.vcpus:
                for a in sites:
                    if (v.id, a) not in self._hooked:
                        self._hooked.add((v.id, a))
                        v.uc.hook_add(UC_HOOK_CODE, lambda uc, addr, size, _ud, v=v: self._after_unmask(v),
                                      None, a, a)
                        v.uc.ctl_remove_cache(a, a + 4)

    def slice_start(self, v: "Vcpu") -> None:
        v.irq_poll = False
        uart = v.vm.pl011
        if uart is not None and uart.listening:
            uart.poll()                              # console input that arrived raises the RX interrupt
        gic, i = v.vm.gic, v.index
        if gic.irq_line(i) or gic.fiq_line(i):
            self.deliver(v, in_slice=False)

    # -- the GIC's side ----------------------------------------------------------------------------------------
    def wakes(self, v: "Vcpu") -> bool:
        """Scheduler wake source: an asserted IRQ or FIQ output of the vCPU's CPU interface, masked or not."""
        uart = v.vm.pl011
        if uart is not None and uart.listening:
            uart.poll()
        gic, i = v.vm.gic, v.index
        return gic.irq_line(i) or gic.fiq_line(i)

    def line_changed(self, v: "Vcpu") -> None:
        """The GIC's outputs to `v` changed. When `v` is running and can take the interrupt now, it is taken
        after the current instruction (module docstring); otherwise at one of the later points."""
        s = self.machine.scheduler
        if s.running is not v or s.stepping is v or self.deliverable(v) is None:
            return
        if v.context == "mmio":
            v.stop_after_access()
        elif v.context == "sysreg":
            v.irq_poll = True                        # SysregHooks calls after_sysreg once the access is done
        else:
            v.uc.emu_stop()

    def after_sysreg(self, v: "Vcpu", pc_written: bool) -> None:
        """An MRS/MSR handler made an interrupt deliverable: enter now when the handler's access wrote the PC
        (an ICC_* register: the next instruction is known), else end the slice after this instruction."""
        if pc_written:
            self.deliver(v, in_slice=True)
        else:
            v.uc.emu_stop()

    def _timer_output(self, v: "Vcpu", which: str, level: bool) -> None:
        v.vm.gic.set_ppi(v.index, PPI[which], level)

    # -- delivery ----------------------------------------------------------------------------------------------
    def deliverable(self, v: "Vcpu") -> tuple[Vector, int] | None:
        """The interrupt `v` would take at this instruction boundary: (kind, target EL), or None."""
        gic, i = v.vm.gic, v.index
        irq, fiq = gic.irq_line(i), gic.fiq_line(i)
        if not (irq or fiq):
            return None
        pstate = v.uc.reg_read(UC_ARM64_REG_PSTATE)
        hcr = v.uc.cpr_read(*HCR_EL2) if v.start_el == 2 else 0
        return pending(irq, fiq, (pstate >> 2) & 3, pstate, hcr, v.start_el)

    def deliver(self, v: "Vcpu", *, in_slice: bool) -> bool:
        """Take the deliverable interrupt of `v` at its PC; True when one was taken (or its entry ended the run).
        `in_slice`: called inside emu_start; an entry that changes the EL then ends the slice (the per-slice
        EL caches of other plugins, the TLBI trap's, are redone at the next one)."""
        hit = self.deliverable(v)
        if hit is None:
            return False
        kind, target = hit
        el = v.el
        intid = v.vm.gic.hppi(v.index)
        pc = v.uc.reg_read(UC_ARM64_REG_PC)
        vector = self.machine.exceptions.take_interrupt(v, kind, target, intid)
        if vector is None:
            return True
        self.taken[kind.name] += 1
        self._report(v, kind, intid, pc, target, vector)
        if in_slice and target != el:
            v.uc.emu_stop()
        return True

    def _after_unmask(self, v: "Vcpu") -> None:
        """Code hook after an MSR DAIFClr / MSR DAIF: a pending interrupt it unmasked is taken here."""
        gic, i = v.vm.gic, v.index
        if gic.irq_line(i) or gic.fiq_line(i):
            self.deliver(v, in_slice=True)

    def _before_eret(self, v: "Vcpu", el: int, spsr: int) -> None:
        """An ERET is about to run: when the state it returns to can take an asserted interrupt, stop before
        it, run it alone, and take the interrupt at the next slice start (ELR = the ERET's target)."""
        s = self.machine.scheduler
        if s.running is not v or s.stepping is v or spsr & 0x10:          # AArch32 targets: not modelled
            return
        gic, i = v.vm.gic, v.index
        irq, fiq = gic.irq_line(i), gic.fiq_line(i)
        if not (irq or fiq):
            return
        hcr = v.uc.cpr_read(*HCR_EL2) if v.start_el == 2 else 0
        if pending(irq, fiq, (spsr >> 2) & 3, spsr, hcr, v.start_el) is not None:
            s.request_step(v)
            v.uc.emu_stop()

    def _isr(self, v: "Vcpu") -> int | None:
        el = v.el
        if el == 0:
            return None                               # ISR_EL1 is UNDEFINED at EL0: Unicorn raises it
        gic, i = v.vm.gic, v.index
        hcr = v.uc.cpr_read(*HCR_EL2) if v.start_el == 2 else 0
        return isr_el1(gic.irq_line(i), gic.fiq_line(i), el, hcr, v.start_el)

    def _report(self, v: "Vcpu", kind: Vector, intid: int | None, pc: int, el: int, vector: int) -> None:
        m = self.machine
        if "cpu_irq_taken" in m.tracer.enabled:
            m.tracer.emit("cpu_irq_taken", cpu=v.id, kind=kind.name, intid=intid, pc=pc, el=el, vector=vector)
        if "int" in m.log.enabled:
            m.log("int", f"{v.dvm_name}: {kind.name}{'' if intid is None else f' (INTID {intid})'} at pc "
                         f"{pc:#x} <{v.vm.symbolize(pc)}> taken to EL{el} vector {vector:#x} "
                         f"<{v.vm.symbolize(vector)}>")
