"""System-register access hooks per vCPU: one registry that owns the vCPU's Unicorn MRS and MSR hooks.

Devices that live in the CPU (the generic timer's CNT* registers, the GICv3 CPU interface's ICC_* registers, an
MPIDR_EL1 the vCPU cannot set itself) register a handler per encoding (op0, op1, CRn, CRm, op2), Arm ARM
DDI 0487 C5.3 (the MRS/MSR encoding space) and D17 (the registers):

    vcpu.sysregs.register((3, 0, 0, 0, 5), read=lambda vcpu: vcpu.mpidr)     # MPIDR_EL1
    vcpu.sysregs.register(CNTV_CTL_EL0, read=timer.read_ctl, write=timer.write_ctl)

`read(vcpu) -> int | None` gives the value MRS returns; `write(vcpu, value) -> bool` takes the value MSR writes.
A read returning None (a write returning False) declines: Unicorn then executes the instruction itself, which
is an undefined instruction for registers it does not implement. A handler must not change the PC.

Unicorn 2.1.4 facts this relies on (tests/harness/test_sysregs.py checks each of them):
* `UC_HOOK_INSN` with `UC_ARM64_INS_MRS` / `UC_ARM64_INS_MSR` fires for every MRS / MSR (register) instruction,
  before Unicorn looks the register up: implemented registers (CNTV_CTL_EL0, TPIDR_EL0) and unimplemented ones
  (ICC_PMR_EL1, APGAKEYHI_EL1, IMPLEMENTATION DEFINED S3_x_C15_x_x) alike. The callback gets `reg` (the Xt
  register id) and `cp` (`op0, op1, crn, crm, op2, val`; `val` = Xt, the value an MSR writes). MSR immediate
  (`MSR DAIFSet, #i`...) and SYS (`TLBI`, `DC`, `AT`: `UC_ARM64_INS_SYS`, the TLBI trap's) are other hooks.
* Only the first hook added for MRS (or for MSR) runs: two owners of one hook type cannot coexist, hence this
  registry. A hook added after code was translated is not seen by that code until the translation cache is
  flushed (`ctl_flush_tb`), which `register` does when it installs a hook.
* Returning 0 lets Unicorn execute the instruction. Returning 1 skips it, and how the PC moves depends on what
  Unicorn would have done: for an access it executes (an implemented register, allowed at the current EL) it
  advances the PC itself and the hook must not write it (writing PC+4 there ends the translation block and makes
  a counted `emu_start` retire one instruction less); for an access it would make undefined (an unimplemented
  register, a write to a read-only one, an EL2 register at EL1) the PC is NOT advanced and the translation
  block restarts from its first instruction, re-running the instructions before the MRS/MSR: the hook must
  write PC+4. Which case applies is found once per (encoding, direction, EL, CPU model, start EL) by running the
  instruction on a scratch Unicorn of the vCPU's model and reset state (`unicorn_undefines`), a few
  milliseconds, cached for the process.

vCPUs with no handler pay nothing: the hooks are installed the first time a handler is registered for that
direction (every machine vCPU has the generic timer's, harness/timer.py). `stand_in(enc, name, value)` serves a
register with a fixed value and no behaviour, logged under `-d unimp`. Not modelled yet: traps of the accesses
to EL2 (HCR_EL2.TID*...), AArch32 MRC/MCR.
"""
from __future__ import annotations

import ctypes
import weakref
from typing import TYPE_CHECKING, Any, Callable

from unicorn import UC_HOOK_INSN, Uc
from unicorn.arm64_const import UC_ARM64_INS_MRS, UC_ARM64_INS_MSR, UC_ARM64_REG_PC
from unicorn.unicorn_py3.arch.arm64 import CpReg

from . import observe
from .cpu import probe_undefined
from .native.sysreg import index as _native_index

if TYPE_CHECKING:
    from .vcpu import Vcpu

__all__ = ["Encoding", "SysregHooks", "unicorn_undefines", "mrs_word", "msr_word"]

Encoding = tuple[int, int, int, int, int]          # (op0, op1, CRn, CRm, op2)
ReadHandler = Callable[["Vcpu"], "int | None"]
WriteHandler = Callable[["Vcpu", int], bool]
_MASK64 = (1 << 64) - 1


def _check(enc: Encoding) -> Encoding:
    op0, op1, crn, crm, op2 = enc
    if op0 not in (2, 3) or not (0 <= op1 < 8 and 0 <= crn < 16 and 0 <= crm < 16 and 0 <= op2 < 8):
        raise ValueError(f"{enc!r} is not an MRS/MSR system-register encoding (op0 2-3, op1/op2 0-7, CRn/CRm 0-15)")
    return tuple(enc)          # type: ignore[return-value]


def mrs_word(enc: Encoding, rt: int = 0) -> int:
    """`MRS Xt, <enc>` (DDI 0487 C6.2: 1101010100 L=1 op0[1:0] op1 CRn CRm op2 Rt)."""
    op0, op1, crn, crm, op2 = _check(enc)
    return 0xD5200000 | (op0 & 3) << 19 | op1 << 16 | crn << 12 | crm << 8 | op2 << 5 | rt


def msr_word(enc: Encoding, rt: int = 0) -> int:
    """`MSR <enc>, Xt` (L=0)."""
    return mrs_word(enc, rt) & ~(1 << 21)


def unicorn_undefines(enc: Encoding, write: bool, el: int, cpu: str = "a72", start_el: int = 1) -> bool:
    """Would Unicorn make this MRS (MSR when `write`) an undefined instruction at `el`? Found by running it once
    on a scratch Unicorn of model `cpu` (default: Unicorn's own default, the Cortex-A72) in the reset state the
    harness gives a vCPU started at `start_el` (`harness.cpu.probe_undefined`, cached)."""
    return probe_undefined(cpu, start_el, msr_word(enc) if write else mrs_word(enc), el)


class SysregHooks:
    """The system-register handlers of one vCPU (`vcpu.sysregs`). See the module docstring."""

    def __init__(self, vcpu: "Vcpu"):
        self.vcpu = vcpu
        self.reads: dict[Encoding, ReadHandler] = {}
        self.writes: dict[Encoding, WriteHandler] = {}
        self.installed: set[str] = set()           # "mrs", "msr": hooks added to the vCPU's Unicorn
        self.served = 0                            # accesses a handler answered
        self.native: Any = None                    # the native MRS hook's state (native/sysreg.py SrCpu), or None
        self._keep: Any = None                     # its callback object (alive as long as the hook)
        self._cntvoff: Callable[[], int] = lambda: 0

    def register(self, enc: Encoding, *, read: ReadHandler | None = None, write: WriteHandler | None = None) -> None:
        """Handle MRS (`read`) and/or MSR (`write`) of `enc` on this vCPU; one handler per encoding and
        direction (ValueError if taken)."""
        enc = _check(enc)
        if read is None and write is None:
            raise ValueError(f"register({enc!r}) needs a read or a write handler")
        for table, fn, what in ((self.reads, read, "read"), (self.writes, write, "write")):
            if fn is not None and enc in table:
                raise ValueError(f"a {what} handler for system register {enc!r} exists on {self.vcpu.dvm_name}")
        if read is not None:
            self.reads[enc] = read
            self._install("mrs", UC_ARM64_INS_MRS, self._on_mrs)
            if self.native is not None:
                i = _native_index(enc)
                self.native.python[i >> 3] |= 1 << (i & 7)
        if write is not None:
            self.writes[enc] = write
            self._install("msr", UC_ARM64_INS_MSR, self._on_msr)

    def stand_in(self, enc: Encoding, name: str, value: int = 0, *, writable: bool = True) -> None:
        """Serve `enc` as a stand-in: reads return `value`, writes (when `writable`) are accepted and ignored - a
        register the guest may touch but the harness gives no behaviour. The first access of each direction is
        logged under `-d unimp` (QEMU logs its unimplemented registers under LOG_UNIMP too)."""
        logged: set[bool] = set()

        def note(vcpu: "Vcpu", write: bool) -> None:
            log = vcpu.machine.log
            if write not in logged and "unimp" in log.enabled:
                logged.add(write)
                log("unimp", f"{vcpu.dvm_name}: {'write to' if write else 'read of'} system register {name} "
                             f"at pc {vcpu.pc:#x}: a stand-in (reads as {value:#x}, writes ignored)")

        def read(vcpu: "Vcpu") -> int:
            note(vcpu, False)
            return value

        def write(vcpu: "Vcpu", _value: int) -> bool:
            note(vcpu, True)
            return True
        self.register(enc, read=read, write=write if writable else None)

    def _install(self, name: str, insn: int, cb: Callable) -> None:
        if name in self.installed:
            return
        uc = self.vcpu.uc
        if name != "mrs" or not self._install_native_mrs():
            uc.hook_add(UC_HOOK_INSN, cb, None, 1, 0, insn)
        uc.ctl_flush_tb()                          # code translated before now would not call the hook
        self.installed.add(name)

    # -- the native MRS hook (harness/native/sysreg.c) ------------------------------------------------------------
    def _install_native_mrs(self) -> bool:
        """The MRS hook in C: it declines the encodings nobody serves and answers counter samples itself while
        the clock is lent (`counters_in_c`); the rest comes to `_on_mrs`. False: not available (Python hook)."""
        from .native import sysreg
        lib = sysreg.library()
        if lib is None:
            return False
        uc, clock = self.vcpu.uc, self.vcpu.machine.clock
        if clock.native is None:
            clock.native = sysreg.SrClock()
        obs = observe.install(uc, force=True)

        def callback(_cpu: Any, reg: int, cp: Any) -> int:
            try:
                obs.sync()                         # the clock back first, then the other deferred work
                p = cp.contents
                return self._on_mrs(uc, reg, CpReg(p.crn, p.crm, p.op0, p.op1, p.op2, p.val), None)
            except BaseException as e:             # nothing may propagate into Unicorn: emu_start raises it
                observe.fail(uc, e)
                return 0

        keep = sysreg.CALLBACK(callback)
        ptr = lib.sr_new(uc._uch, clock.native, keep)
        if not ptr:
            return False
        self.native, self._keep = ptr.contents, keep
        weakref.finalize(uc, lib.sr_free, ctypes.cast(ptr, ctypes.c_void_p).value)
        for enc in self.reads:
            i = _native_index(enc)
            self.native.python[i >> 3] |= 1 << (i & 7)
        obs.add(self._take_back, first=True)
        obs.before.append(self._lend)
        return True

    def counters_in_c(self, fast: int, cntvoff: Callable[[], int]) -> None:
        """Let the native hook answer the counter reads `fast` names (native/sysreg.py FAST_PCT, FAST_VCT: at
        EL1, where the caller - harness/timer.py - found them always allowed and executed by Unicorn), CNTVCT
        less `cntvoff()`. Nothing without the native hook."""
        if self.native is not None:
            self.native.fast = fast
            self._cntvoff = cntvoff

    def _lend(self) -> None:
        n = self.native
        if n.fast and self.vcpu.machine.clock.lend(self.vcpu.machine.clock.native):
            n.cntvoff = self._cntvoff() & _MASK64

    def _take_back(self) -> None:
        clock = self.vcpu.machine.clock
        clock.take_back(clock.native)
        n = self.native
        if n.served:
            self.served += n.served
            n.served = 0

    def _skip(self, uc: Uc, enc: Encoding, write: bool) -> int:
        """Return value for a handled access: 1, with the PC moved past it when Unicorn would not move it.
        An interrupt that became deliverable in the handler (`vcpu.irq_poll`, harness/interrupts.py) is then
        taken: at once when the PC was written here (the next instruction is known), else at the end of this
        instruction (the hook stops the slice)."""
        self.served += 1
        v = self.vcpu
        moved = unicorn_undefines(enc, write, v.el, v.cpu, v.start_el)
        if moved:
            uc.reg_write(UC_ARM64_REG_PC, uc.reg_read(UC_ARM64_REG_PC) + 4)
        if v.irq_poll:
            v.irq_poll = False
            v.machine.interrupts.after_sysreg(v, moved)
        return 1

    def _on_mrs(self, uc: Uc, reg: int, cp, _ud: object) -> int:
        enc = (cp.op0, cp.op1, cp.crn, cp.crm, cp.op2)
        fn = self.reads.get(enc)
        if fn is None:
            return 0
        v = self.vcpu
        v.context = "sysreg"
        try:
            value = fn(v)
        finally:
            v.context = None
        if value is None:
            return 0
        uc.reg_write(reg, value & _MASK64)
        return self._skip(uc, enc, False)

    def _on_msr(self, uc: Uc, _reg: int, cp, _ud: object) -> int:
        enc = (cp.op0, cp.op1, cp.crn, cp.crm, cp.op2)
        fn = self.writes.get(enc)
        if fn is None:
            return 0
        v = self.vcpu
        v.context = "sysreg"
        try:
            done = fn(v, cp.val & _MASK64)
        finally:
            v.context = None
        return self._skip(uc, enc, True) if done else 0
