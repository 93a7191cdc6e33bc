"""Exceptions of the vCPUs as hardware takes them: classification, routing, entry (Arm ARM DDI 0487 D1.10/D1.11),
and the one-line deaths.

Unicorn never enters a guest's vectors itself and never exposes the syndrome QEMU's code computed: every
exception reaches `UC_HOOK_INTR` with QEMU's number (target/arm/cpu.h EXCP_*), and emulation errors (unmapped
or unaligned accesses, invalid instructions, accesses to pages the debug facility protects) end `emu_start` with
a `UcError`. `Exceptions` (one per machine, `machine.exceptions`) works out what each one is architecturally
(`Taken`: EC, ISS, FAR, preferred return address, target EL) and takes it:

* Classes (harness/syndrome.py, harness/aborts.py): EXCP_UDEF is an illegal execution state (PSTATE.IL), a PC
  alignment fault, an SVE access trap (CPACR_EL1.ZEN / CPTR_EL2.TZ in the Arm ARM's CheckSVEEnabled order), a
  PAuth trap (HCR_EL2.API), a WFI/WFE trap (SCTLR_EL1.nTWx, HCR_EL2.TWx), a trapped MSR/MRS/system
  instruction (EC 0x18: an instruction that runs on a scratch CPU with every enable set, `probe_undefined`, was
  trapped by a control the guest set) or else UNDEFINED (EC 0); EXCP_SWI is SVC (ELR = the next instruction),
  EXCP_BKPT is BRK (imm16), EXCP_PREFETCH_ABORT/EXCP_DATA_ABORT are aborts with the IFSC/DFSC and FAR of
  harness/aborts.py (and, taken to EL2, the instruction syndrome QEMU reports there), EXCP_HYP_TRAP is an SMC
  trapped by HCR_EL2.TSC. An ERET that is an illegal exception return (`illegal_return`) is taken at the ERET
  itself, as its next instruction would take it (PSTATE.IL, EC 0x0E): Unicorn raises nothing for it and, having
  an EL2 of its own, would return to an EL2 a guest started at EL1 does not have. Hardware breakpoints,
  watchpoints and software step are harness/debug.py's.
  Not raised by Unicorn 2.1 and so not modelled: SIMD&FP access traps (EC 0x07; its `fp_exception_el` is a
  stub), SP alignment faults (EC 0x26; QEMU does not check SCTLR_ELx.SA either), stage-2 aborts (the vCPUs
  have no stage 2), SError.
* HVC and SMC, as QEMU virt handles them (target/arm/psci.c `arm_is_psci_call`, op_helper.c `pre_hvc`,
  `pre_smc`): the PSCI conduit is HVC for guests started at EL1 and SMC for guests started at EL2
  (hw/arm/virt.c); every call on the conduit is a PSCI/SMCCC call (`Machine.psci_call`, unknown functions
  return NOT_SUPPORTED), as QEMU 7.2 does. Off the conduit, HVC of a guest started at EL2 is taken to its EL2
  vector (EC 0x16, UNDEFINED with HCR_EL2.HCD), SMC of a guest started at EL1 is UNDEFINED (there is no EL3).
  `HLT #0xF000` is semihosting (`Machine.semihosting_call`). A WFI arrives as an undefined instruction
  (SCR_EL3.TWI, or the guest's own WFx trap): the scheduler sleeps the vCPU or delivers the trap.
* Routing (`route`): synchronous exceptions from EL0/EL1 go to EL1, to EL2 for EL0 with HCR_EL2.TGE = 1 (and
  debug exceptions with MDCR_EL2.TDE = 1), traps of EL2 controls to EL2; from EL2 to EL2. A guest started at
  EL1 has no EL2: nothing routes there.
* Entry (`enter`, D1.10.2 and Linux arch/arm64/kvm/hyp/exception.c `enter_exception64`): ESR_ELx, FAR_ELx
  (aborts, watchpoints; breakpoints write 0 as QEMU does; not written otherwise), ELR_ELx, SPSR_ELx = PSTATE
  (with the software-step SS bit of harness/debug.py), then PSTATE = ELxh with DAIF masked, NZCV and DIT kept,
  PAN kept or set when SCTLR_ELx.SPAN = 0 (FEAT_PAN), SSBS = SCTLR_ELx.DSSBS (FEAT_SSBS), TCO = 1 (FEAT_MTE),
  UAO, SS, IL and BTYPE cleared; the interrupted SP is banked and SP_ELx selected; PC = VBAR_ELx + offset:
  0x000 current EL with SP0, 0x200 current EL with SPx, 0x400 lower EL (AArch64), +0x080 IRQ, +0x100 FIQ,
  +0x180 SError (`Vector`). QEMU 7.2 differs in one visible way: it clears NZCV on entry.
* When the guest gets it: always, when the guest has a vector table, that is, when VBAR_ELx + offset of the
  target EL translates (its stage 1) to RAM. A guest with none (VBAR never written: Unicorn resets it to 0,
  where this board has no memory) dies with the one-line message (`die`): 132 for undefined instructions and
  everything else, 139 for aborts and alignment faults (`syndrome.is_abort_class`). Loop detector: an
  instruction abort on the vector table itself, or more than `NEST_LIMIT` entries at one EL without an ERET in
  between (ERETs are found by a pre-scan of the executable ranges, like the TLBI trap's; an entry from a lower
  EL proves one happened), end the run the same way, the message saying so.
* Old guests that define the u64 `exception_handled_ecs` (`EXCEPTION_OPT_IN`: the guest runtime's opt-in
  bitmap before exceptions were taken architecturally) still get exactly the classes whose bit is set; the
  current runtime has no bitmap. Its default handler calls `__harness_unhandled_exception(vector, esr, elr,
  far)` (`UNHANDLED_HOOK`) before printing: the harness hooks that address and ends the run with its own death
  line for the exception it entered last, with the status the runtime exits with under QEMU.

Traced `guest_exception(cpu, pc, el, ec, esr, elr, far, vector)`, logged under `-d int`. Cost: nothing on the
hot paths; the ERET hooks run at each exception return only.

Unicorn 2.1.4 register facts (tests/harness/test_exceptions.py): ESR/ELR/FAR/VBAR/SP_ELx have register ids;
SPSR_ELx has none and is written with `cpr_write` (which also makes a PSTATE.EL change take effect:
unicorn issue #2333); PSTATE is written as a whole and does not switch stack pointers; writing the PC in a code
or instruction hook skips the instruction and resumes at the new PC.
"""
from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Any, Callable

from unicorn import UC_HOOK_CODE, UcError
from unicorn import unicorn_const as ucc
from unicorn.arm64_const import (UC_ARM64_REG_ELR_EL1, UC_ARM64_REG_ELR_EL2, UC_ARM64_REG_ESR_EL1,
                                 UC_ARM64_REG_ESR_EL2, UC_ARM64_REG_FAR_EL1, UC_ARM64_REG_FAR_EL2, UC_ARM64_REG_LR,
                                 UC_ARM64_REG_PC, UC_ARM64_REG_PSTATE, UC_ARM64_REG_SP, UC_ARM64_REG_SP_EL0,
                                 UC_ARM64_REG_SP_EL1, UC_ARM64_REG_SP_EL2, UC_ARM64_REG_VBAR_EL1,
                                 UC_ARM64_REG_VBAR_EL2, UC_ARM64_REG_X0, UC_ARM64_REG_X1, UC_ARM64_REG_X2,
                                 UC_ARM64_REG_X3)

from devmodel.record import Frozen, assign

from . import syndrome as syn
from .cpu import probe_undefined
from .exits import Kind, Outcome
from .scheduler import STOP_ADDRESS, WFI

if TYPE_CHECKING:
    from .machine import Machine
    from .vcpu import Vcpu

__all__ = ["Exceptions", "Taken", "TakenInterrupt", "Vector", "route", "entry_pstate", "vector_offset", "illegal_return",
           "EXCEPTION_OPT_IN",
           "UNHANDLED_HOOK", "NEST_LIMIT", "EXCP_UDEF", "EXCP_SWI", "EXCP_PREFETCH_ABORT", "EXCP_DATA_ABORT",
           "EXCP_BKPT", "EXCP_HVC", "EXCP_HYP_TRAP", "EXCP_SMC", "EXCP_UNALIGNED"]

_MASK64 = (1 << 64) - 1

# Exception numbers Unicorn gives UC_HOOK_INTR (QEMU target/arm/cpu.h, EXCP_*).
EXCP_UDEF, EXCP_SWI, EXCP_PREFETCH_ABORT, EXCP_DATA_ABORT, EXCP_BKPT = 1, 2, 3, 4, 7
EXCP_HVC, EXCP_HYP_TRAP, EXCP_SMC, EXCP_UNALIGNED = 11, 12, 13, 22
_EXCP_NAMES = {1: "Undefined Instruction", 2: "SVC", 3: "Prefetch Abort", 4: "Data Abort", 5: "IRQ", 6: "FIQ",
               7: "Breakpoint", 11: "Hypervisor Call", 12: "Hypervisor Trap", 13: "Secure Monitor Call",
               22: "Unaligned Access"}

#: the old guest runtime's opt-in bitmap (a u64 global, bit EC set = take that class at the guest's vectors)
EXCEPTION_OPT_IN = "exception_handled_ecs"
#: the guest runtime's unhandled-exception path calls this (x0 vector number, x1 ESR, x2 ELR, x3 FAR)
UNHANDLED_HOOK = "__harness_unhandled_exception"
#: entries at one EL without an ERET in between that count as an exception loop
NEST_LIMIT = 16

PSTATE_DAIF, PSTATE_NZCV = 0xF << 6, 0xF << 28
PSTATE_SSBS, PSTATE_IL, PSTATE_SS, PSTATE_PAN, PSTATE_UAO, PSTATE_DIT, PSTATE_TCO = (
    1 << 12, 1 << 20, 1 << 21, 1 << 22, 1 << 23, 1 << 24, 1 << 25)
SCTLR_SPAN, SCTLR_DSSBS = 1 << 23, 1 << 44
SCTLR_NTWI, SCTLR_NTWE = 1 << 16, 1 << 18
HCR_TWI, HCR_TWE, HCR_TGE, HCR_HCD, HCR_E2H, HCR_API = 1 << 13, 1 << 14, 1 << 27, 1 << 29, 1 << 34, 1 << 41
HCR_RW = 1 << 31
MDCR_TDE = 1 << 8
CPACR_EL1, CPTR_EL2, HCR_EL2, MDCR_EL2 = (3, 0, 1, 0, 2), (3, 4, 1, 1, 2), (3, 4, 1, 1, 0), (3, 4, 1, 1, 1)
SCTLR = {1: (3, 0, 1, 0, 0), 2: (3, 4, 1, 0, 0)}
ZCR_ENCODINGS = {(3, 0, 1, 2, 0), (3, 4, 1, 2, 0), (3, 5, 1, 2, 0), (3, 6, 1, 2, 0)}   # ZCR_EL1/EL2/EL12/EL3


class _EntryRegs(Frozen):
    __slots__ = ("esr", "elr", "far", "vbar", "sp", "spsr")
    esr: int
    elr: int
    far: int
    vbar: int
    sp: int
    spsr: tuple[int, int, int, int, int]     # no Unicorn register id: written as a system register (D17.2.124)

    def __init__(self, esr: int, elr: int, far: int, vbar: int, sp: int,
                 spsr: tuple[int, int, int, int, int]) -> None:
        assign(self, "esr", esr)
        assign(self, "elr", elr)
        assign(self, "far", far)
        assign(self, "vbar", vbar)
        assign(self, "sp", sp)
        assign(self, "spsr", spsr)


_ENTRY_REGS = {1: _EntryRegs(UC_ARM64_REG_ESR_EL1, UC_ARM64_REG_ELR_EL1, UC_ARM64_REG_FAR_EL1, UC_ARM64_REG_VBAR_EL1,
                             UC_ARM64_REG_SP_EL1, (3, 0, 4, 0, 0)),
               2: _EntryRegs(UC_ARM64_REG_ESR_EL2, UC_ARM64_REG_ELR_EL2, UC_ARM64_REG_FAR_EL2, UC_ARM64_REG_VBAR_EL2,
                             UC_ARM64_REG_SP_EL2, (3, 4, 4, 0, 0))}
_SP_OF_EL = {0: UC_ARM64_REG_SP_EL0, 1: UC_ARM64_REG_SP_EL1, 2: UC_ARM64_REG_SP_EL2}
_UNMAPPED = (ucc.UC_ERR_READ_UNMAPPED, ucc.UC_ERR_WRITE_UNMAPPED)
_PROT = (ucc.UC_ERR_READ_PROT, ucc.UC_ERR_WRITE_PROT)
_UNALIGNED = (ucc.UC_ERR_READ_UNALIGNED, ucc.UC_ERR_WRITE_UNALIGNED)


class Vector(IntEnum):
    """Exception kinds and their offset within a vector table quarter (D1.10.2)."""
    SYNC = 0x000
    IRQ = 0x080
    FIQ = 0x100
    SERROR = 0x180


class Taken(Frozen):
    """A synchronous exception as the harness classified it."""
    __slots__ = ("ec", "iss", "target", "elr", "pc", "far", "what", "detail", "il")
    ec: int
    iss: int
    target: int                # the EL it is taken to
    elr: int                   # preferred return address
    pc: int                    # the instruction it comes from (death lines, trace)
    far: int | None            # FAR_ELx, None when not written
    what: str                  # for the death line
    detail: str
    il: bool

    def __init__(self, ec: int, iss: int, target: int, elr: int, pc: int, far: int | None = None,
                 what: str = "exception", detail: str = "", il: bool = True) -> None:
        assign(self, "ec", ec)
        assign(self, "iss", iss)
        assign(self, "target", target)
        assign(self, "elr", elr)
        assign(self, "pc", pc)
        assign(self, "far", far)
        assign(self, "what", what)
        assign(self, "detail", detail)
        assign(self, "il", il)

    @property
    def esr(self) -> int:
        return syn.esr(self.ec, self.iss, self.il)

    @property
    def death_kind(self) -> Kind:
        return Kind.ABORT if syn.is_abort_class(self.ec) else Kind.UNDEF


class TakenInterrupt(Frozen):
    """An IRQ or FIQ entered at the guest's vector (`Exceptions.take_interrupt`): what the death line says when
    the guest's runtime reports it unhandled. `esr` is ESR_ELx as the handler finds it (an interrupt does not
    write it): the guest runtime picks its exit status from it, and so does the death line."""
    __slots__ = ("kind", "intid", "target", "elr", "esr")
    kind: "Vector"
    intid: int | None
    target: int
    elr: int
    esr: int

    def __init__(self, kind: "Vector", intid: int | None, target: int, elr: int, esr: int) -> None:
        assign(self, "kind", kind)
        assign(self, "intid", intid)
        assign(self, "target", target)
        assign(self, "elr", elr)
        assign(self, "esr", esr)

    @property
    def what(self) -> str:
        return f"{self.kind.name}{'' if self.intid is None else f' (INTID {self.intid})'} with no handler"

    @property
    def death_kind(self) -> Kind:
        return Kind.ABORT if syn.is_abort_class(syn.ec_of(self.esr)) else Kind.UNDEF


def vector_offset(kind: Vector, from_el: int, target: int, sp_sel: int) -> int:
    """The vector of an exception taken from `from_el` (with PSTATE.SP = `sp_sel`) to `target` (AArch64)."""
    return int(kind) + (0x400 if from_el < target else (0x200 if sp_sel else 0x000))


def entry_pstate(old: int, target: int, sctlr: int, feat: Any, hcr: int = 0) -> int:
    """PSTATE after taking an exception to `target` from PSTATE `old` (see the module docstring)."""
    new = (old & PSTATE_NZCV) | PSTATE_DAIF | (target << 2) | 1
    if feat.dit:
        new |= old & PSTATE_DIT
    if feat.pan:
        new |= old & PSTATE_PAN
        host = target == 2 and hcr & (HCR_E2H | HCR_TGE) == HCR_E2H | HCR_TGE
        if (target == 1 or host) and not sctlr & SCTLR_SPAN:
            new |= PSTATE_PAN
    if feat.ssbs and sctlr & SCTLR_DSSBS:
        new |= PSTATE_SSBS
    if feat.mte:
        new |= PSTATE_TCO
    return new


def route(vcpu: "Vcpu", from_el: int, *, debug: bool = False) -> int:
    """Target EL of a synchronous exception from `from_el` that no specific trap routes (D1.10.1)."""
    if from_el >= 2:
        return from_el
    if vcpu.start_el == 2:
        hcr = vcpu.uc.cpr_read(*HCR_EL2)
        if from_el == 0 and hcr & HCR_TGE:
            return 2
        if debug and (hcr & HCR_TGE or vcpu.uc.cpr_read(*MDCR_EL2) & MDCR_TDE):
            return 2
    return 1


class Exceptions:
    """Exception classification, routing, entry and deaths for every vCPU of `machine` (module docstring).
    A machine plugin: `before_run` hooks the ERETs and the guest runtime's unhandled-exception call."""

    def __init__(self, machine: "Machine"):
        self.machine = machine
        self._hooked: set[tuple[int, int]] = set()       # (vcpu.id, address) with an ERET / unhandled hook
        #: `fn(vcpu, el, spsr)` before each ERET that returns normally (the interrupt delivery's)
        self.eret_observers: list[Callable[["Vcpu", int, int], None]] = []
        #: `fn(vcpu, target_el)` after each exception entry (`enter`; the PMU's, harness/pmu.py)
        self.entry_observers: list[Callable[["Vcpu", int], None]] = []
        #: `fn(vcpu, pc) -> bool` on an undefined instruction: True when it executed it (harness/mte.py)
        self.undef_emulators: list[Callable[["Vcpu", int], bool]] = []
        #: `fn(vcpu) -> bool` after emu_start stopped on a protected page: True when it took the exception
        self.prot_stops: list[Callable[["Vcpu"], bool]] = []

    # -- what Unicorn reports ------------------------------------------------------------------------
    def unicorn_exception(self, vcpu: "Vcpu", intno: int) -> None:
        """`UC_HOOK_INTR`: firmware call, semihosting, or a synchronous exception of the guest."""
        m = self.machine
        if intno == EXCP_UDEF and m.semihosting_call(vcpu):     # HLT #0xF000 (harness/semihost.py)
            return
        pc = vcpu.uc.reg_read(UC_ARM64_REG_PC)
        if intno == EXCP_HVC:
            self._hvc(vcpu, pc)
            return
        if intno == EXCP_SMC:
            self._smc(vcpu, pc)
            return
        if intno == EXCP_UDEF:
            if any(fn(vcpu, pc) for fn in self.undef_emulators):
                return
            if pc + 4 == STOP_ADDRESS:          # the guest jumped to the scheduler's emu_start end, where Unicorn
                # stops by imitating a WFI, trapped by SCR_EL3.TWI (harness/scheduler.py trap_wfi)
                self.die(vcpu, Kind.ABORT, "instruction fetch from the harness stop address", STOP_ADDRESS,
                         syn.esr(syn.EC_IABT_CUR, syn.FSC_SYNC_EXTERNAL), STOP_ADDRESS)
                return
            if vcpu.insn_at(pc) == WFI:                     # SCR_EL3.TWI or the guest's own WFI trap (harness/scheduler.py)
                m.scheduler.wfi(vcpu, pc)
                return
        if "int" in m.log.enabled:
            m.log("int", f"{vcpu.dvm_name}: exception {intno} [{_EXCP_NAMES.get(intno, '?')}] at pc {pc:#x} "
                         f"<{vcpu.vm.symbolize(pc)}>")
        t = self._classify(vcpu, intno, pc)
        if t is None:
            self.die(vcpu, Kind.ABORT, f"unexpected exception {intno} [{_EXCP_NAMES.get(intno, '?')}]", pc, None)
        else:
            self.take_synchronous(vcpu, t)

    def _classify(self, vcpu: "Vcpu", intno: int, pc: int) -> Taken | None:
        el = vcpu.el
        if intno == EXCP_UDEF:
            return self.undefined(vcpu, pc)
        if intno == EXCP_SWI:
            return Taken(syn.EC_SVC64, syn.imm16(vcpu.insn_at(pc - 4)), route(vcpu, el), pc, pc - 4,
                         what="SVC with no handler")
        if intno == EXCP_BKPT:
            return Taken(syn.EC_BRK64, syn.imm16(vcpu.insn_at(pc)), route(vcpu, el, debug=True), pc, pc,
                         what="breakpoint (BRK) with no debugger")
        if intno == EXCP_PREFETCH_ABORT:
            from .aborts import instruction_abort_cause    # here: a run that never faults does not import it
            c = instruction_abort_cause(vcpu, pc)
            return self._abort(vcpu, syn.EC_IABT_CUR, c.fsc, pc, c.far, "instruction abort", c.detail)
        if intno in (EXCP_DATA_ABORT, EXCP_UNALIGNED):
            return self._data_abort(vcpu, pc, unaligned=intno == EXCP_UNALIGNED)
        if intno == EXCP_HYP_TRAP:                     # SMC at EL1 with HCR_EL2.TSC = 1 (pre_smc)
            return Taken(syn.EC_SMC64, syn.imm16(vcpu.insn_at(pc)), 2, pc, pc, what="SMC trapped to EL2")
        return None

    def _abort(self, vcpu: "Vcpu", ec: int, iss: int, pc: int, far: int | None, what: str, detail: str) -> Taken:
        el = vcpu.el
        target = route(vcpu, el)
        return Taken(syn.lower(ec, el < target), iss, target, pc, pc, far, what, detail)

    def _data_abort(self, vcpu: "Vcpu", pc: int, *, unaligned: bool = False, ipa: int | None = None,
                    write: bool | None = None) -> Taken:
        from .aborts import data_abort_cause
        c = data_abort_cause(vcpu, pc, unaligned=unaligned, ipa=ipa, write=write)
        el = vcpu.el
        target = route(vcpu, el)
        word = vcpu.insn_at(pc)
        template = syn.data_abort_template(word) if target == 2 and word is not None else 0
        iss = syn.iss_data_abort(c.fsc, c.write, cm=c.cm, template=template)
        what = "alignment fault" if c.fsc == syn.FSC_ALIGNMENT else "data abort"
        detail = c.detail + (" (FAR computed from the instruction's operands)" if c.far is not None else "")
        return Taken(syn.lower(syn.EC_DABT_CUR, el < target), iss, target, pc, pc, c.far, what, detail)

    def undefined(self, vcpu: "Vcpu", pc: int, why: str = "") -> Taken:
        """Classify an undefined-instruction exception Unicorn raised at `pc` (module docstring)."""
        el, pstate = vcpu.el, vcpu.pstate
        target = route(vcpu, el)
        if pstate & PSTATE_IL:
            return Taken(syn.EC_ILLEGAL, 0, target, pc, pc, what="illegal execution state")
        if pc & 3:
            return Taken(syn.EC_PC_ALIGN, 0, target, pc, pc, pc, "PC alignment fault",
                         "branch to a misaligned address")
        word = vcpu.insn_at(pc)
        if word is not None:
            trapped = self._trap_of(vcpu, word, el)
            if trapped is not None:
                ec, iss, to = trapped
                return Taken(ec, iss, to, pc, pc, what=f"{syn.EC_NAMES[ec]}", detail=why)
        return Taken(syn.EC_UNKNOWN, 0, target, pc, pc, what="undefined instruction", detail=why)

    def _trap_of(self, vcpu: "Vcpu", word: int, el: int) -> tuple[int, int, int] | None:
        """(EC, ISS, target EL) when the UNDEFINED Unicorn reported for `word` is a trap (module docstring)."""
        feat, uc = vcpu.features, vcpu.uc
        el2 = vcpu.start_el == 2 and el < 2
        hcr = uc.cpr_read(*HCR_EL2) if el2 else 0
        if feat.sve and (syn.is_sve(word) or (syn.is_system(word) and _sysreg(word) in ZCR_ENCODINGS)):
            to = self._sve_trap_el(vcpu, el, hcr)
            if to is not None:
                return syn.EC_SVE, 0, to
        if feat.pauth and el2 and syn.is_pauth(word) and not hcr & HCR_API:
            return syn.EC_PAUTH, 0, 2
        kind = syn.wfx_kind(word)
        if kind is not None:
            if el == 0 and not uc.cpr_read(*SCTLR[1]) & (SCTLR_NTWE if kind else SCTLR_NTWI):
                return syn.EC_WFX, syn.iss_wfx(word), route(vcpu, 0)
            if el2 and hcr & (HCR_TWE if kind else HCR_TWI):
                return syn.EC_WFX, syn.iss_wfx(word), 2
            return None
        if syn.is_system(word) and not probe_undefined(vcpu.cpu, vcpu.start_el, word, el, True):
            return syn.EC_SYSREG, syn.iss_sysreg(word), route(vcpu, 0) if el == 0 else (2 if el2 else 1)
        return None

    def _sve_trap_el(self, vcpu: "Vcpu", el: int, hcr: int) -> int | None:
        """The EL an SVE access at `el` traps to (Arm ARM CheckSVEEnabled), None if none traps it."""
        uc = vcpu.uc
        if el < 2 and not hcr & HCR_E2H:
            zen = (uc.cpr_read(*CPACR_EL1) >> 16) & 3
            if zen in (0, 2) or (zen == 1 and el == 0):
                return route(vcpu, el) if el == 0 else 1
        if vcpu.start_el == 2 and el <= 2 and uc.cpr_read(*CPTR_EL2) & (1 << 8):     # CPTR_EL2.TZ
            return 2
        return None

    def _hvc(self, vcpu: "Vcpu", pc_next: int) -> None:
        """HVC (Unicorn's PC is the next instruction): the PSCI conduit of guests started at EL1; the guest's
        own EL2 otherwise."""
        if vcpu.start_el == 1:
            self.machine.psci_call(vcpu, "hvc", pc_next)
            return
        pc = pc_next - 4
        if vcpu.uc.cpr_read(*HCR_EL2) & HCR_HCD:
            self.take_synchronous(vcpu, Taken(syn.EC_UNKNOWN, 0, route(vcpu, vcpu.el), pc, pc,
                                              what="undefined instruction", detail="HVC with HCR_EL2.HCD set"))
            return
        self.take_synchronous(vcpu, Taken(syn.EC_HVC64, syn.imm16(vcpu.insn_at(pc)), 2, pc_next, pc,
                                          what="HVC with no handler"))

    def _smc(self, vcpu: "Vcpu", pc_next: int) -> None:
        """SMC: the PSCI conduit of guests started at EL2; UNDEFINED for guests started at EL1 (no EL3)."""
        if vcpu.start_el == 2:
            self.machine.psci_call(vcpu, "smc", pc_next)
            return
        pc = pc_next - 4
        self.take_synchronous(vcpu, Taken(syn.EC_UNKNOWN, 0, route(vcpu, vcpu.el), pc, pc,
                                          what="undefined instruction", detail="SMC without EL3"))

    def emulation_error(self, v: "Vcpu", e: UcError) -> None:
        """`emu_start` ended with an error: the abort or undefined instruction it stands for. A delivered
        exception leaves the vCPU on with its PC on the vector: the next slice runs there."""
        m = self.machine
        if v.vm.outcome is not None or m.outcome is not None:
            return              # a stop already decided the outcome
        pc = v.pc
        f = v.unmapped
        if e.errno in _PROT and v.debug is not None and v.debug.take_watchpoint_hit():
            return
        if e.errno in _PROT and any(fn(v) for fn in self.prot_stops):
            return
        if e.errno == ucc.UC_ERR_FETCH_UNMAPPED:         # the PC is the address fetched (a VA: FAR)
            self.take_synchronous(v, self._abort(v, syn.EC_IABT_CUR, syn.FSC_SYNC_EXTERNAL, pc, pc,
                                                 "instruction fetch from unmapped address", _lr_detail(v)))
        elif e.errno in _UNMAPPED:
            # the PC after the error is the faulting instruction; the hook's PC (f[4]) is the block's start
            self.take_synchronous(v, self._data_abort(v, pc, ipa=f[1] if f else None,
                                                      write=e.errno == ucc.UC_ERR_WRITE_UNMAPPED))
        elif e.errno == ucc.UC_ERR_FETCH_UNALIGNED:
            self.take_synchronous(v, Taken(syn.EC_PC_ALIGN, 0, route(v, v.el), pc, pc, pc, "PC alignment fault"))
        elif e.errno in _UNALIGNED:
            self.take_synchronous(v, self._data_abort(v, pc, unaligned=True))
        elif e.errno == ucc.UC_ERR_INSN_INVALID:
            self.take_undefined(v, pc, str(e))
        else:
            self.die(v, Kind.ABORT, f"emulation error ({e})", pc, None)

    # -- taking an exception, or dying of it ------------------------------------------------------------
    def take_synchronous(self, vcpu: "Vcpu", t: Taken) -> Outcome | None:
        """Take `t` at the guest's vector (returns None; the vCPU's PC is the vector), or end the run with its
        death line when the guest has no vector table or is looping (returns the outcome). Safe in hooks."""
        refusal = self._refusal(vcpu, t)
        if refusal is None:
            self._take(vcpu, t)
            return None
        detail = "; ".join(x for x in (t.detail, refusal) if x)
        return self.die(vcpu, t.death_kind, t.what, t.pc, t.esr, t.far, detail)

    def _take(self, vcpu: "Vcpu", t: Taken) -> None:
        vector = self.enter(vcpu, Vector.SYNC, t.target, t.esr, t.far, t.elr)
        vcpu.last_exception = t
        self._report(vcpu, t.pc, t.target, t.ec, t.esr, t.elr, t.far, vector,
                     vcpu.uc.cpr_read(*_ENTRY_REGS[t.target].spsr))

    def _refusal(self, vcpu: "Vcpu", t: Taken, *, opt_in: bool = True) -> str | None:
        """None if `t` can be taken at the guest's vector, else why not ("" for a guest without vectors).
        `opt_in`: honour an old guest's opt-in bitmap."""
        vm = vcpu.vm
        if opt_in and vm.exception_ecs_ipa is not None and not vm.handles_ec(t.ec):
            return ""                                    # an old guest that did not opt in for this class
        uc = vcpu.uc
        old = uc.reg_read(UC_ARM64_REG_PSTATE)
        from_el = (old >> 2) & 3
        vbar = uc.reg_read(_ENTRY_REGS[t.target].vbar)
        vector = (vbar + vector_offset(Vector.SYNC, from_el, t.target, old & 1)) & _MASK64
        w = vcpu.translate_at(vcpu.translation_regs(t.target), vector)
        if not w.ok or not vm.in_ram(w.ipa, 4):
            return ""                                    # no vector table
        if t.ec in (syn.EC_IABT_CUR, syn.EC_IABT_LOW) and vbar <= t.pc < vbar + 0x800:
            return f"exception loop: the vector table at {vbar:#x} cannot be fetched"
        if from_el == t.target and vcpu.exc_nest >= NEST_LIMIT:
            return (f"exception loop: {vcpu.exc_nest + 1} nested exceptions at EL{t.target} without an ERET "
                    f"(the handler at {vector:#x} <{vm.symbolize(vector)}> faults itself)")
        return None

    def enter(self, vcpu: "Vcpu", kind: Vector, target_el: int, esr: int | None, far: int | None,
              elr: int) -> int:
        """Exception entry to AArch64 `target_el` (D1.10.2; module docstring): writes ESR (unless None), FAR
        (unless None), ELR, SPSR, PSTATE, SP and PC = the vector, which it returns. No checks: callers decide
        (`take_synchronous`); the interrupt controller of a later change enters IRQ/FIQ here."""
        uc = vcpu.uc
        r = _ENTRY_REGS[target_el]
        old = uc.reg_read(UC_ARM64_REG_PSTATE)
        from_el = (old >> 2) & 3
        vector = (uc.reg_read(r.vbar) + vector_offset(kind, from_el, target_el, old & 1)) & _MASK64
        ss = vcpu.debug.entry_ss(esr) if vcpu.debug is not None else False
        spsr = (old & ~PSTATE_SS) | (PSTATE_SS if ss else 0)
        hcr = uc.cpr_read(*HCR_EL2) if target_el == 2 else 0
        new = entry_pstate(old, target_el, uc.cpr_read(*SCTLR[target_el]), vcpu.features, hcr)
        sp = uc.reg_read(UC_ARM64_REG_SP)
        if from_el != target_el or not old & 1:
            uc.reg_write(_SP_OF_EL[from_el] if old & 1 else UC_ARM64_REG_SP_EL0, sp)   # bank the interrupted SP
            sp = uc.reg_read(r.sp)
        uc.reg_write(UC_ARM64_REG_PSTATE, new)
        uc.reg_write(UC_ARM64_REG_SP, sp)
        uc.cpr_write(*r.spsr, spsr)       # also makes a PSTATE.EL change take effect (unicorn issue #2333)
        if esr is not None:
            uc.reg_write(r.esr, esr & 0xFFFF_FFFF)
        uc.reg_write(r.elr, elr & _MASK64)
        if far is not None:
            uc.reg_write(r.far, far & _MASK64)
        uc.reg_write(UC_ARM64_REG_PC, vector)
        vcpu.exc_nest = vcpu.exc_nest + 1 if from_el == target_el else 1
        for fn in self.entry_observers:
            fn(vcpu, target_el)
        return vector

    def take_interrupt(self, vcpu: "Vcpu", kind: Vector, target: int, intid: int | None = None) -> int | None:
        """Take a physical IRQ or FIQ (`kind`) to AArch64 `target` at the current instruction boundary: ELR = the
        PC (the next instruction to run), ESR/FAR not written, PSTATE/SPSR/SP/PC as `enter`. Returns the vector
        entered, or None when the guest has no vector table there (VBAR_ELx + offset does not translate to RAM):
        the run then ends with the death line of the abort fetching it would be (139), where QEMU would loop."""
        uc = vcpu.uc
        pc = uc.reg_read(UC_ARM64_REG_PC)
        old = uc.reg_read(UC_ARM64_REG_PSTATE)
        r = _ENTRY_REGS[target]
        vbar = uc.reg_read(r.vbar)
        vector = (vbar + vector_offset(kind, (old >> 2) & 3, target, old & 1)) & _MASK64
        w = vcpu.translate_at(vcpu.translation_regs(target), vector)
        if not w.ok or not vcpu.vm.in_ram(w.ipa, 4):
            what = f"{kind.name}{'' if intid is None else f' (INTID {intid})'} taken with no vector table"
            self.die(vcpu, Kind.ABORT, what, pc, None, None,
                     f"VBAR_EL{target} {vbar:#x} + {vector - vbar:#x} is not mapped to RAM")
            return None
        self.enter(vcpu, kind, target, None, None, pc)
        vcpu.last_exception = TakenInterrupt(kind, intid, target, pc, uc.reg_read(r.esr))
        return vector

    def _report(self, vcpu: "Vcpu", pc: int, target: int, ec: int, esr: int, elr: int, far: int | None,
                vector: int, spsr: int) -> None:
        m = self.machine
        if "guest_exception" in m.tracer.enabled:
            m.tracer.emit("guest_exception", cpu=vcpu.id, pc=pc, el=target, ec=ec, esr=esr, elr=elr, far=far,
                          vector=vector)
        if "int" in m.log.enabled:
            m.log("int", f"{vcpu.dvm_name}: exception EC {ec:#04x} ({syn.EC_NAMES.get(ec, 'exception')}) at pc "
                         f"{pc:#x} <{vcpu.vm.symbolize(pc)}> taken to EL{target} vector {vector:#x} "
                         f"<{vcpu.vm.symbolize(vector)}>: ESR {esr:#010x} ELR {elr:#x} "
                         f"FAR {'-' if far is None else hex(far)} SPSR {spsr:#x}")

    # -- the API kept for plugins and the TLBI trap ------------------------------------------------------
    def take_undefined(self, vcpu: "Vcpu", pc: int | None = None, why: str = "") -> Outcome | None:
        """An instruction the caller knows is UNDEFINED at the current EL (EC 0): taken at the guest's vector
        (returns None; the vCPU's PC is then the vector), else `die_undefined`'s outcome. Safe in hooks."""
        pc = vcpu.pc if pc is None else pc
        t = Taken(syn.EC_UNKNOWN, 0, route(vcpu, vcpu.el), pc, pc, what="undefined instruction", detail=why)
        return self.take_synchronous(vcpu, t)

    def take(self, vcpu: "Vcpu", kind: Kind, what: str, pc: int, esr: int | None, far: int | None = None,
             detail: str = "", *, elr: int | None = None, target_el: int | None = None) -> Outcome | None:
        """A synchronous exception with syndrome `esr` caused by the instruction at `pc`, taken to `target_el`
        (a trap's EL) or routed as `route` says (a same-EL class becomes the lower-EL one when taken from a lower
        EL); `elr` is the preferred return address when it is not `pc`. Delivered (None) or the death line of
        `die` (its outcome)."""
        if esr is None:
            return self.die(vcpu, kind, what, pc, esr, far, detail)
        t = self._taken_from_esr(vcpu, esr, pc if elr is None else elr, far, pc, what, detail, target_el)
        return self.take_synchronous(vcpu, t)

    def deliver(self, vcpu: "Vcpu", esr: int, elr: int, far: int | None = None, *, pc: int | None = None,
                force: bool = False) -> bool:
        """Take the synchronous exception `esr` at the guest's vector if it can be (`take_synchronous`);
        `force` ignores an old guest's opt-in bitmap. Returns False (nothing written) when it did not."""
        t = self._taken_from_esr(vcpu, esr, elr, far, elr if pc is None else pc, "exception", "")
        if self._refusal(vcpu, t, opt_in=not force) is not None:
            return False
        self._take(vcpu, t)
        return True

    def _taken_from_esr(self, vcpu: "Vcpu", esr: int, elr: int, far: int | None, pc: int, what: str,
                        detail: str, target: int | None = None) -> Taken:
        el = vcpu.el
        ec = syn.ec_of(esr)
        debug = ec in (syn.EC_BRK64, syn.EC_BKPT_CUR, syn.EC_WPT_CUR, syn.EC_SSTEP_CUR)
        target = route(vcpu, el, debug=debug) if target is None else target
        return Taken(syn.lower(ec, el < target), esr & 0x1FF_FFFF, target, elr, pc, far, what, detail,
                     il=bool(esr >> 25 & 1))

    def die(self, vcpu: "Vcpu", kind: Kind, what: str, pc: int, esr: int | None, far: int | None = None,
            detail: str = "") -> Outcome:
        """Stop with a death line: `what` at pc <symbol+off>: disassembly: EC/ESR/FAR (one line)."""
        word = vcpu.insn_at(pc)
        if word is None:
            insn = "<pc not mapped>"
        else:
            dis = list(self.machine.disasm.disasm(word.to_bytes(4, "little"), pc))
            insn = f"{word:08x} {dis[0].mnemonic} {dis[0].op_str}".rstrip() if dis else f"{word:08x} <undecodable>"
        parts = [f"{vcpu.dvm_name}: {what} at pc {pc:#x} <{vcpu.vm.symbolize(pc)}>: {insn}"]
        if esr is not None:
            ec = esr >> 26
            parts.append(f"EC {ec:#04x} ({syn.EC_NAMES.get(ec, 'exception')}) ESR {esr:#010x}")
        parts.append(f"FAR {far:#x}" if far is not None else "FAR -")
        if detail:
            parts.append(detail)
        out = Outcome(kind, parts[0] + "; " + ", ".join(parts[1:]), vcpu=vcpu.dvm_name, pc=pc, esr=esr, far=far)
        self.machine.stop(vcpu, out)
        return out

    def die_undefined(self, vcpu: "Vcpu", pc: int | None = None, why: str = "") -> Outcome:
        """Undefined instruction death (e.g. from a SYS hook that refuses an encoding): exit status 132."""
        pc = vcpu.pc if pc is None else pc
        return self.die(vcpu, Kind.UNDEF, "undefined instruction", pc, syn.esr(syn.EC_UNKNOWN), None, why)

    # -- machine plugin: ERETs and the runtime's unhandled-exception call ---------------------------------------
    def before_run(self, machine: "Machine") -> None:
        """Hook every ERET of each VM's executable ranges (the loop detector's "an ERET happened"; debug's
        PSTATE.SS) and the guest runtime's `UNHANDLED_HOOK`, on that VM's vCPUs (once per address)."""
        from .trap import scan_erets
        for vm in machine.vms:
            erets = scan_erets((r.vaddr, r.data) for r in vm.code_ranges)
            try:
                unhandled = vm.symbolizer.address_of(UNHANDLED_HOOK)
            except KeyError:
                unhandled = None
            for v in vm.vcpus:
                for a in erets:
                    self._hook(v, a, self._on_eret)
                if unhandled is not None:
                    self._hook(v, unhandled, self._on_unhandled)

    def _hook(self, v: "Vcpu", addr: int, fn) -> None:
        if (v.id, addr) in self._hooked:
            return
        self._hooked.add((v.id, addr))
        v.uc.hook_add(UC_HOOK_CODE, lambda uc, a, size, _ud: fn(v), None, addr, addr)
        v.uc.ctl_remove_cache(addr, addr + 4)

    def _on_eret(self, v: "Vcpu") -> None:
        """An ERET is about to run: one exception level of nesting less; an illegal return taken here."""
        v.exc_nest = max(0, v.exc_nest - 1)
        if v.debug is not None:
            v.debug.on_eret()
        el = v.el
        if el in _ENTRY_REGS:
            r = _ENTRY_REGS[el]
            spsr = v.uc.cpr_read(*r.spsr)
            if illegal_return(v, el, spsr):
                self._illegal_return(v, el, spsr, v.uc.reg_read(r.elr))
                return
            for fn in self.eret_observers:
                fn(v, el, spsr)

    def _illegal_return(self, v: "Vcpu", el: int, spsr: int, elr: int) -> None:
        """The ERET at the PC is an illegal exception return (Arm ARM D1.11.3): NZCV and DAIF come from SPSR,
        the EL and SP stay, PSTATE.IL is set and the instruction at ELR takes the Illegal Execution State
        exception (EC 0x0E) before it runs. Unicorn would not raise it (and, having an EL2 of its own, would
        return to an EL2 the guest does not have), so the two steps are done here, skipping the ERET."""
        uc = v.uc
        old = uc.reg_read(UC_ARM64_REG_PSTATE)
        mask = PSTATE_NZCV | PSTATE_DAIF
        uc.reg_write(UC_ARM64_REG_PSTATE, (old & ~mask) | (spsr & mask) | PSTATE_IL)
        uc.cpr_write(*_ENTRY_REGS[el].spsr, spsr)         # any system-register write: the PSTATE write sticks
        self.take_synchronous(v, Taken(syn.EC_ILLEGAL, 0, route(v, el), elr, elr, what="illegal execution state",
                                       detail=f"illegal exception return to SPSR {spsr:#x}"))

    def _on_unhandled(self, v: "Vcpu") -> None:
        """The guest runtime found no handler (x0 vector number, x1 ESR, x2 ELR, x3 FAR): the harness's death
        line for the exception entered last, or one built from the registers when that is not it."""
        uc = v.uc
        vec, esr, elr, far = (uc.reg_read(r) for r in (UC_ARM64_REG_X0, UC_ARM64_REG_X1, UC_ARM64_REG_X2,
                                                        UC_ARM64_REG_X3))
        t = v.last_exception
        if isinstance(t, TakenInterrupt) and t.elr == elr and t.esr == esr & 0xFFFF_FFFF:
            self.die(v, t.death_kind, t.what, t.elr, None, None,
                     f"the guest's runtime has no handler for vector {vec & 0xF:#x}")
            return
        if t is None or isinstance(t, TakenInterrupt) or t.esr != esr & 0xFFFF_FFFF or t.elr != elr:
            ec = syn.ec_of(esr)
            t = Taken(ec, esr & 0x1FF_FFFF, v.el, elr, elr, far if syn.is_abort_class(ec) else None,
                      f"unhandled exception (vector {vec & 0xF:#x})", il=bool(esr >> 25 & 1))
        self.die(v, t.death_kind, t.what, t.pc, t.esr, t.far, t.detail)


def illegal_return(vcpu: "Vcpu", el: int, spsr: int) -> bool:
    """Is an ERET at `el` with this SPSR an illegal exception return (Arm ARM IllegalExceptionReturn, AArch64
    targets only)? A higher EL, an EL the guest does not have (EL3; EL2 for a guest started at EL1), EL0 with
    SP_ELx, the reserved M[1], EL1 while HCR_EL2.TGE = 1, and an AArch64 EL1 or EL0 below an EL2 whose
    HCR_EL2.RW = 0 makes EL1 AArch32 (the pseudocode's ELUsingAArch32(target) != SPSR.M[4]; QEMU 7.2 reports
    EC 0x0E for it too)."""
    if spsr >> 4 & 1:                                    # AArch32: left to Unicorn
        return False
    target = (spsr >> 2) & 3
    if target > el or spsr & 2 or (target == 0 and spsr & 1) or target == 3:
        return True
    if target == 2 and vcpu.start_el < 2:
        return True
    if target == 2 or vcpu.start_el < 2:
        return False
    hcr = vcpu.uc.cpr_read(*HCR_EL2)
    if not hcr & HCR_RW and not (hcr & HCR_TGE and hcr & HCR_E2H):       # EL1 (and EL0) are AArch32
        return True
    return target == 1 and bool(hcr & HCR_TGE)


def _sysreg(word: int) -> tuple[int, int, int, int, int]:
    return ((word >> 19) & 3, (word >> 16) & 7, (word >> 12) & 0xF, (word >> 8) & 0xF, (word >> 5) & 7)


def _lr_detail(v: "Vcpu") -> str:
    lr = v.uc.reg_read(UC_ARM64_REG_LR)
    return f"LR {lr:#x} <{v.vm.symbolize(lr)}>"

