"""Exceptions of the vCPUs: where each one goes, exception entry (Arm ARM D1.10), and death lines.

Unicorn never enters a guest's vectors itself: every exception reaches `UC_HOOK_INTR` with QEMU's number
(target/arm/cpu.h EXCP_*), and emulation errors (unmapped or unaligned accesses, invalid instructions) end
`emu_start` with a `UcError`. `Exceptions` (one per machine, `machine.exceptions`) routes them:

* HVC (and SMC from EL2) are firmware calls: PSCI 1.1 (`Machine.psci_call`); `HLT #0xF000` is semihosting
  (`Machine.semihosting_call`): the harness plays EL2/EL3 firmware for the guest. A WFI arrives as an undefined
  instruction (SCR_EL3.TWI, or the guest's own WFx trap): the scheduler sleeps the vCPU or delivers the trap.
* A synchronous exception of a class the guest opted in for is taken at its own vector (`deliver`): a guest
  defining the u64 global `exception_handled_ecs` (ELF symbol table; guest_fw/lib/exceptions.c sets bit EC when
  `install_exception_handler(EC, fn)` installs a handler) has each exception whose ESR.EC bit is set there
  entered as D1.10 says: ESR_ELx, FAR_ELx (aborts), ELR_ELx = preferred return address, SPSR_ELx = old PSTATE,
  PSTATE = ELxh with DAIF masked, PC = VBAR_ELx + 0x000 (SP0) / 0x200 (SPx) / 0x400 (lower EL),
  x = max(current EL, 1). This covers undefined instructions (including TLBIs the trap finds undefined at the
  current EL), BRK, SVC, instruction and data aborts (also accesses to unmapped IPAs); the bitmap is read from
  guest RAM at each exception, so guests without it pay nothing. Traced `guest_exception`, logged `-d int`.
* Anything else ends the run with a one-line death message (`die`): 132 undefined/BRK/SVC, 139 aborts.

Unicorn 2.1.4 register facts (tests/harness/test_exceptions.py): ESR/ELR/FAR/VBAR/SP_ELx have register ids;
SPSR_ELx has none and is written with `cpr_write` (which also makes a PSTATE.EL change take effect:
unicorn issue #2333); PSTATE is written as a whole and does not switch stack pointers; Unicorn does not expose FAR, so
a data abort's address is computed from the instruction's operands.

Not modelled yet: delivery of exceptions the guest has not opted in for, HVC/SMC to the guest's vectors,
asynchronous exceptions (IRQ/FIQ/SError: the +0x080/0x100/0x180 vectors), routing to EL2 (HCR_EL2.TGE), and the
PSTATE bits of FEAT_PAN/UAO/SSBS/BTI/MTE on exception entry (PAN is kept).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn import UcError
from unicorn import unicorn_const as ucc
from unicorn.arm64_const import (UC_ARM64_REG_ELR_EL1, UC_ARM64_REG_ELR_EL2, UC_ARM64_REG_ESR_EL1,
                                 UC_ARM64_REG_ESR_EL2, UC_ARM64_REG_FAR_EL1, UC_ARM64_REG_FAR_EL2, UC_ARM64_REG_LR,
                                 UC_ARM64_REG_PC, UC_ARM64_REG_PSTATE, UC_ARM64_REG_SP, UC_ARM64_REG_SP_EL0,
                                 UC_ARM64_REG_SP_EL1, UC_ARM64_REG_SP_EL2, UC_ARM64_REG_VBAR_EL1,
                                 UC_ARM64_REG_VBAR_EL2)

from .exits import (EC_BRK64, EC_DABT_CUR, EC_IABT_CUR, EC_IABT_LOW, EC_NAMES, EC_SVC64, EC_UNKNOWN,
                    FSC_SYNC_EXTERNAL, Kind, Outcome, esr_value)
from .scheduler import STOP_ADDRESS, WFI

if TYPE_CHECKING:
    from .machine import Machine
    from .vcpu import Vcpu

__all__ = ["Exceptions", "EXCEPTION_OPT_IN", "EXCP_UDEF", "EXCP_SWI", "EXCP_PREFETCH_ABORT", "EXCP_DATA_ABORT",
           "EXCP_BKPT", "EXCP_HVC", "EXCP_SMC", "EXCP_UNALIGNED"]

_MASK64 = (1 << 64) - 1

# Exception numbers Unicorn gives UC_HOOK_INTR (QEMU target/arm/cpu.h, EXCP_*).
EXCP_UDEF, EXCP_SWI, EXCP_PREFETCH_ABORT, EXCP_DATA_ABORT, EXCP_BKPT = 1, 2, 3, 4, 7
EXCP_HVC, EXCP_SMC, EXCP_UNALIGNED = 11, 13, 22
_EXCP_NAMES = {1: "Undefined Instruction", 2: "SVC", 3: "Prefetch Abort", 4: "Data Abort", 5: "IRQ", 6: "FIQ",
               7: "Breakpoint", 11: "Hypervisor Call", 13: "Secure Monitor Call", 22: "Unaligned Access"}

#: the guest's opt-in to exception delivery: a u64 global, bit EC set = take exceptions of that ESR.EC at the
#: guest's own vector (guest_fw/lib/exceptions.c keeps it; docs/DESIGN.md "Harness API")
EXCEPTION_OPT_IN = "exception_handled_ecs"
PSTATE_DAIF = 0xF << 6
PSTATE_NZCV, PSTATE_PAN = 0xF << 28, 1 << 22
# Exception-entry registers per target EL: ESR, ELR, FAR, VBAR, SP_ELx (Unicorn register ids) and SPSR_ELx
# (no Unicorn register id: written as a system register, Arm ARM D17.2.124/D17.2.125).
_ENTRY_REGS = {1: (UC_ARM64_REG_ESR_EL1, UC_ARM64_REG_ELR_EL1, UC_ARM64_REG_FAR_EL1, UC_ARM64_REG_VBAR_EL1,
                   UC_ARM64_REG_SP_EL1, (3, 0, 4, 0, 0)),
               2: (UC_ARM64_REG_ESR_EL2, UC_ARM64_REG_ELR_EL2, UC_ARM64_REG_FAR_EL2, UC_ARM64_REG_VBAR_EL2,
                   UC_ARM64_REG_SP_EL2, (3, 4, 4, 0, 0))}
_UNMAPPED = (ucc.UC_ERR_READ_UNMAPPED, ucc.UC_ERR_WRITE_UNMAPPED)
_UNALIGNED = (ucc.UC_ERR_READ_UNALIGNED, ucc.UC_ERR_WRITE_UNALIGNED, ucc.UC_ERR_FETCH_UNALIGNED)


class Exceptions:
    """Exception routing, entry and deaths for every vCPU of `machine` (see the module docstring)."""

    def __init__(self, machine: "Machine"):
        self.machine = machine

    # -- what Unicorn reports ------------------------------------------------------------------------
    def unicorn_exception(self, vcpu: "Vcpu", intno: int) -> None:
        """`UC_HOOK_INTR`: firmware call, semihosting, or a synchronous exception of the guest."""
        m = self.machine
        if intno == EXCP_UDEF and m.semihosting_call(vcpu):     # HLT #0xF000 (harness/semihost.py)
            return
        pc = vcpu.uc.reg_read(UC_ARM64_REG_PC)
        if intno in (EXCP_HVC, EXCP_SMC):
            m.psci_call(vcpu, "hvc" if intno == EXCP_HVC else "smc", pc)
            return
        if intno == EXCP_UDEF:
            if pc + 4 == STOP_ADDRESS:          # the guest jumped to the scheduler's emu_start end, where Unicorn
                # stops by imitating a WFI, trapped by SCR_EL3.TWI (harness/scheduler.py trap_wfi)
                self.die(vcpu, Kind.ABORT, "instruction fetch from the harness stop address", STOP_ADDRESS,
                         esr_value(EC_IABT_CUR, FSC_SYNC_EXTERNAL), STOP_ADDRESS)
                return
            if vcpu.insn_at(pc) == WFI:                     # SCR_EL3.TWI or the guest's own WFI trap (harness/scheduler.py)
                m.scheduler.wfi(vcpu, pc)
                return
        if "int" in m.log.enabled:
            m.log("int", f"{vcpu.dvm_name}: exception {intno} [{_EXCP_NAMES.get(intno, '?')}] at pc {pc:#x} "
                         f"<{vcpu.vm.symbolize(pc)}>")
        self._synchronous(vcpu, intno, pc)

    def _synchronous(self, vcpu: "Vcpu", intno: int, pc: int) -> None:
        if intno == EXCP_UDEF:
            self.take_undefined(vcpu, pc)
        elif intno == EXCP_BKPT:
            self.take(vcpu, Kind.UNDEF, "breakpoint (BRK) with no debugger", pc,
                      esr_value(EC_BRK64, _imm16(vcpu, pc)))
        elif intno == EXCP_SWI:
            self.take(vcpu, Kind.UNDEF, "SVC with no handler", pc - 4, esr_value(EC_SVC64, _imm16(vcpu, pc - 4)),
                      elr=pc)
        elif intno == EXCP_PREFETCH_ABORT:
            w = vcpu.translate(pc)
            self.take(vcpu, Kind.ABORT, "instruction abort", pc,
                      esr_value(EC_IABT_CUR, w.fsc if not w.ok else FSC_SYNC_EXTERNAL), pc,
                      w.detail if not w.ok else "")
        elif intno in (EXCP_DATA_ABORT, EXCP_UNALIGNED):
            self._data_abort(vcpu, intno, pc)
        else:
            self.die(vcpu, Kind.ABORT, f"unexpected exception {intno} [{_EXCP_NAMES.get(intno, '?')}]", pc, None)

    def _data_abort(self, vcpu: "Vcpu", intno: int, pc: int) -> None:
        addr, write = self._data_address(vcpu, pc)
        fsc, detail = 0x21, "alignment fault"                # DFSC 0b100001
        if intno == EXCP_DATA_ABORT:
            w = vcpu.translate(addr) if addr is not None else None
            if w is not None and not w.ok:
                fsc, detail = w.fsc, w.detail
            else:
                fsc, detail = 0x0C | 3, "permission fault" if w is not None else "fault"
        iss = fsc | (int(bool(write)) << 6)
        self.take(vcpu, Kind.ABORT, "data abort", pc, esr_value(EC_DABT_CUR, iss), addr,
                  detail + (" (FAR computed from the instruction's operands)" if addr is not None else ""))

    def _data_address(self, vcpu: "Vcpu", pc: int) -> tuple[int | None, bool | None]:
        """Best-effort VA of the load/store at `pc` from its operands (Unicorn does not expose FAR)."""
        word = vcpu.insn_at(pc)
        if word is None:
            return None, None
        dis = self.machine.disasm
        try:
            from capstone import arm64 as a64
            insn = next(dis.disasm(word.to_bytes(4, "little"), pc))
            write = insn.mnemonic.startswith(("st", "swp", "cas", "ldadd", "ldclr", "ldeor", "ldset"))
            for op in insn.operands:
                if op.type == a64.ARM64_OP_MEM:
                    addr = _reg(vcpu, dis.reg_name(op.mem.base)) + op.mem.disp
                    if op.mem.index:
                        idx = _reg(vcpu, dis.reg_name(op.mem.index))
                        addr += idx << (op.shift.value if op.shift.type else 0)
                    return addr & _MASK64, write
        except (StopIteration, ValueError, KeyError):
            pass
        return None, None

    def emulation_error(self, v: "Vcpu", e: UcError) -> None:
        """`emu_start` ended with an error: the abort or undefined instruction it stands for."""
        m = self.machine
        if v.vm.outcome is not None or m.outcome is not None:
            return              # a stop already decided the outcome
        pc = v.pc
        f = v.unmapped
        # Delivered exceptions (take*) leave the vCPU on, its PC on the vector: the next slice runs there.
        if e.errno == ucc.UC_ERR_FETCH_UNMAPPED:
            addr = f[1] if f else pc
            self.take(v, Kind.ABORT, "instruction fetch from unmapped address", addr,
                      esr_value(EC_IABT_CUR, FSC_SYNC_EXTERNAL), addr, _lr_detail(v))
        elif e.errno in _UNMAPPED:
            write = e.errno == ucc.UC_ERR_WRITE_UNMAPPED
            kind = f"{'write' if write else 'read'} of {f[2]} bytes" if f else ("write" if write else "read")
            # the PC after the error is the faulting instruction; the hook's PC (f[4]) is the block's start
            self.take(v, Kind.ABORT, "data abort", pc, esr_value(EC_DABT_CUR, FSC_SYNC_EXTERNAL | (int(write) << 6)),
                      f[1] if f else None, f"{kind} to an unmapped address (no RAM or device there)")
        elif e.errno in _UNALIGNED:
            self.take(v, Kind.ABORT, "alignment fault", pc, esr_value(EC_DABT_CUR, 0x21), None, str(e))
        elif e.errno == ucc.UC_ERR_INSN_INVALID:
            self.take_undefined(v, pc, str(e))
        else:
            self.die(v, Kind.ABORT, f"emulation error ({e})", pc, None)

    # -- taking an exception, or dying of it ------------------------------------------------------------
    def take_undefined(self, vcpu: "Vcpu", pc: int | None = None, why: str = "") -> Outcome | None:
        """An undefined instruction at `pc`: taken at the guest's vector when it opted in for EC 0 (returns
        None; the vCPU's PC is then the vector), else `die_undefined` (returns its outcome). Safe in hooks."""
        pc = vcpu.pc if pc is None else pc
        if self.deliver(vcpu, esr_value(EC_UNKNOWN), pc):
            return None
        return self.die_undefined(vcpu, pc, why)

    def take(self, vcpu: "Vcpu", kind: Kind, what: str, pc: int, esr: int | None, far: int | None = None,
             detail: str = "", *, elr: int | None = None) -> Outcome | None:
        """A synchronous exception caused by the instruction at `pc`: delivered to the guest's vector when it
        opted in for ESR.EC (returns None), else the death line of `die` (returns its outcome). `elr` is the
        preferred return address when it is not `pc` (SVC: the next instruction)."""
        if esr is not None and self.deliver(vcpu, esr, pc if elr is None else elr, far, pc=pc):
            return None
        return self.die(vcpu, kind, what, pc, esr, far, detail)

    def deliver(self, vcpu: "Vcpu", esr: int, elr: int, far: int | None = None, *, pc: int | None = None,
                force: bool = False) -> bool:
        """Exception entry to AArch64 (Arm ARM D1.10) at the guest's vector, if the guest opted in for ESR.EC
        (`VM.handles_ec`; `force=True` skips that check). Returns False (nothing written) when it did not."""
        if not force and vcpu.vm.exception_ecs_ipa is None:
            return False
        uc = vcpu.uc
        old = uc.reg_read(UC_ARM64_REG_PSTATE)
        el = (old >> 2) & 3
        target = max(el, 1)
        ec = (esr >> 26) & 0x3F
        if el < target and ec in (EC_IABT_CUR, EC_DABT_CUR):      # aborts from EL0: the "lower EL" classes
            ec -= 1
            esr = (esr & ~(0x3F << 26)) | (ec << 26)
        if not force and not vcpu.vm.handles_ec(ec):
            return False
        vbar = uc.reg_read(_ENTRY_REGS[target][3])
        offset = 0x400 if el < target else (0x200 if old & 1 else 0x000)
        if ec in (EC_IABT_LOW, EC_IABT_CUR) and vbar <= (pc if pc is not None else elr) < vbar + 0x800:
            return False                  # the vector itself cannot be fetched: entering it again would loop
        vector = (vbar + offset) & _MASK64
        _enter(uc, old, target, esr, elr, far, vector)
        self._report(vcpu, elr if pc is None else pc, target, ec, esr, elr, far, vector, old)
        return True

    def _report(self, vcpu: "Vcpu", pc: int, target: int, ec: int, esr: int, elr: int, far: int | None,
                vector: int, spsr: int) -> None:
        m = self.machine
        if "guest_exception" in m.tracer.enabled:
            m.tracer.emit("guest_exception", cpu=vcpu.id, pc=pc, el=target, ec=ec, esr=esr, elr=elr, far=far,
                          vector=vector)
        if "int" in m.log.enabled:
            m.log("int", f"{vcpu.dvm_name}: exception EC {ec:#04x} ({EC_NAMES.get(ec, 'exception')}) at pc "
                         f"{pc:#x} <{vcpu.vm.symbolize(pc)}> taken to EL{target} vector {vector:#x} "
                         f"<{vcpu.vm.symbolize(vector)}>: ESR {esr:#010x} ELR {elr:#x} "
                         f"FAR {'-' if far is None else hex(far)} SPSR {spsr:#x}")

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
            parts.append(f"EC {ec:#04x} ({EC_NAMES.get(ec, 'exception')}) ESR {esr:#010x}")
        parts.append(f"FAR {far:#x}" if far is not None else "FAR -")
        if detail:
            parts.append(detail)
        out = Outcome(kind, parts[0] + "; " + ", ".join(parts[1:]), vcpu=vcpu.dvm_name, pc=pc, esr=esr, far=far)
        self.machine.stop(vcpu, out)
        return out

    def die_undefined(self, vcpu: "Vcpu", pc: int | None = None, why: str = "") -> Outcome:
        """Undefined instruction death (e.g. from a SYS hook that refuses an encoding): exit status 132."""
        pc = vcpu.pc if pc is None else pc
        return self.die(vcpu, Kind.UNDEF, "undefined instruction", pc, esr_value(EC_UNKNOWN), None, why)


def _enter(uc, old: int, target: int, esr: int, elr: int, far: int | None, vector: int) -> None:
    """The register writes of exception entry (D1.10.2): SP_ELx selected (SP_EL0 banked when the interrupted
    code used it), PSTATE = ELxh with DAIF masked (NZCV, PAN kept), SPSR/ESR/ELR/FAR_ELx, PC = vector."""
    r_esr, r_elr, r_far, _vbar, r_sp, spsr = _ENTRY_REGS[target]
    el = (old >> 2) & 3
    sp = uc.reg_read(UC_ARM64_REG_SP)
    if el < target or not old & 1:
        # The interrupted code ran on SP_EL0 (Unicorn's SP is the live one): bank it, switch to SP_ELx.
        uc.reg_write(UC_ARM64_REG_SP_EL0, sp)
        sp = uc.reg_read(r_sp)
    uc.reg_write(UC_ARM64_REG_PSTATE, (old & (PSTATE_NZCV | PSTATE_PAN)) | PSTATE_DAIF | (target << 2) | 1)
    uc.reg_write(UC_ARM64_REG_SP, sp)
    uc.cpr_write(*spsr, old)          # also makes a PSTATE.EL change take effect (unicorn issue #2333)
    uc.reg_write(r_esr, esr & 0xFFFF_FFFF)
    uc.reg_write(r_elr, elr & _MASK64)
    if far is not None:
        uc.reg_write(r_far, far & _MASK64)
    uc.reg_write(UC_ARM64_REG_PC, vector)


def _reg(vcpu: "Vcpu", name: str) -> int:
    from unicorn import arm64_const as c
    if name in ("sp", "wsp"):
        return vcpu.uc.reg_read(UC_ARM64_REG_SP)
    if name in ("xzr", "wzr"):
        return 0
    return vcpu.uc.reg_read(getattr(c, f"UC_ARM64_REG_{name.upper()}"))


def _imm16(vcpu: "Vcpu", pc: int) -> int:
    """imm16 of the SVC/BRK at `pc` (ESR.ISS of EC 0x15/0x3C, Arm ARM D17.2.37); 0 if unreadable."""
    word = vcpu.insn_at(pc)
    return 0 if word is None else (word >> 5) & 0xFFFF


def _lr_detail(v: "Vcpu") -> str:
    lr = v.uc.reg_read(UC_ARM64_REG_LR)
    return f"LR {lr:#x} <{v.vm.symbolize(lr)}>"
