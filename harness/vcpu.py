"""A virtual CPU: one Unicorn instance, its architectural reset state, registers, and memory by VA.

* Unicorn: the CPU model the VM was given (harness/cpu.py: `max` by default, set right after `Uc()`), the VM's
  RAM mapped zero-copy (`mem_map_ptr`), its MMIO regions with `mmio_map` calling the device's `read`/`write`; a
  32 MiB translation buffer by default (`Machine(tcg_buffer_size=)`).
* Reset state: the EL3/EL2 controls QEMU's `-kernel` boot leaves (`harness.cpu.reset_controls`: SCR_EL3 =
  NS|RW|HCE|API|APK, CPTR_EL3.EZ, ZCR_EL3/EL2.LEN = 0xF, HCR_EL2 = RW|API|APK for a guest started at EL1; EL2's
  own reset values for a guest started at EL2). NS makes EL2 enabled for EL1, so that EL1 reads VMPIDR_EL2 as
  its MPIDR_EL1 (Arm ARM D17.2.101): each vCPU's own MPIDR goes there. `power_on(entry)` starts it at
  EL`start_el`h with DAIF masked and the MMU off (PSCI CPU_ON, Arm DEN0022). At EL2 Unicorn's MPIDR_EL1 is
  0x80000000 on every vCPU and cannot be set: an MRS handler on the vCPU's system-register registry (`sysregs`,
  harness/sysregs.py) answers it.
* Memory by VA (`translate`, `translate_at`, `read_virt`, `write_virt`, `insn_at`): the guest's stage-1 tables
  walked by harness/vmem.py (semihosting parameter blocks, death lines, abort causes); these are slow paths.
* Unicorn hooks: exceptions (`UC_HOOK_INTR`) go to the machine's `Exceptions` (harness/exceptions.py), the last
  unmapped access is kept for the abort that follows (`unmapped`), and `-d in_asm` logs each block once. Every
  Python callback of the vCPU's Unicorn, and the return of its `emu_start`, is an observation point
  (harness/observe.py, installed before the first hook): work native hooks deferred is done there first.
* Exception bookkeeping the machine keeps here: `exc_nest` (exception entries at the same EL since the last
  ERET, the loop detector of harness/exceptions.py), `last_exception` (what the last entry was, for the death
  line when the guest's runtime reports it unhandled); `debug` (harness/debug.py) is attached by the machine.
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from unicorn import UC_HOOK_BLOCK, UC_HOOK_INTR, UC_HOOK_MEM_UNMAPPED, UC_PROT_ALL, Uc
from unicorn import unicorn_const as ucc
from unicorn.arm64_const import (UC_ARM64_REG_PC, UC_ARM64_REG_PSTATE, UC_ARM64_REG_SP, UC_ARM64_REG_X0,
                                 UC_ARM64_REG_X29, UC_ARM64_REG_X30)

from devmodel.bus import BusError

from . import console, observe
from .cpu import ID_REGS, advertised_isar0, features, new_uc, reset_controls
from .sysregs import SysregHooks
from .vmem import TranslationRegs, Walk, translate

if TYPE_CHECKING:
    from .machine import VM

__all__ = ["Vcpu", "mpidr_of", "PAGE", "MPIDR_EL1"]

PAGE = 0x1000
_MASK64 = (1 << 64) - 1
_GPRS = [UC_ARM64_REG_X0 + i for i in range(29)] + [UC_ARM64_REG_X29, UC_ARM64_REG_X30, UC_ARM64_REG_SP]

# System registers (op0, op1, CRn, CRm, op2), Arm ARM D17.
VMPIDR_EL2 = (3, 4, 0, 0, 5)
MPIDR_EL1 = (3, 0, 0, 0, 5)
SCTLR_EL1, SCTLR_EL2 = (3, 0, 1, 0, 0), (3, 4, 1, 0, 0)
TCR_EL1, TCR_EL2 = (3, 0, 2, 0, 2), (3, 4, 2, 0, 2)
TTBR0_EL1, TTBR1_EL1, TTBR0_EL2 = (3, 0, 2, 0, 0), (3, 0, 2, 0, 1), (3, 4, 2, 0, 0)
ID_AA64MMFR0_EL1, ID_AA64MMFR1_EL1, ID_AA64MMFR2_EL1 = (3, 0, 0, 7, 0), (3, 0, 0, 7, 1), (3, 0, 0, 7, 2)
SCTLR_M, SCTLR_C, SCTLR_I = 1 << 0, 1 << 2, 1 << 12
PSTATE_DAIF = 0xF << 6
PSTATE_EL1H, PSTATE_EL2H = 0b0101, 0b1001


def mpidr_of(index: int) -> int:
    """MPIDR of CPU `index`: bit 31 RES1, Aff0 = index % 16, Aff1 = index // 16 (QEMU virt with GICv3)."""
    return (1 << 31) | ((index // 16) << 8) | (index % 16)


def _mmio_read(uc: Uc, offset: int, size: int, ud: tuple["Vcpu", Any]) -> int:
    v, dev = ud
    if v.replay is not None:
        hit = v.replayed("r", dev, offset, size, 0)
        if hit is not None:
            return hit
    v.context = "mmio"
    try:
        value = dev.read(offset, size)
    finally:
        v.context = None
    if v.mmio_log is not None:
        v.mmio_log.append(("r", dev, offset, size, value))
    return value


def _mmio_write(uc: Uc, offset: int, size: int, value: int, ud: tuple["Vcpu", Any]) -> None:
    v, dev = ud
    if v.replay is not None and v.replayed("w", dev, offset, size, value) is not None:
        return
    v.context = "mmio"
    try:
        dev.write(offset, value, size)
    finally:
        v.context = None
    if v.mmio_log is not None:
        v.mmio_log.append(("w", dev, offset, size, value))


class Vcpu:
    """One virtual CPU. Public state others rely on: `uc`, `index`, `id`, `vm`, `machine`, `mpidr`, `el`,
    `pstate`, `start_el`, `cpu` (model name), `features` (harness.cpu.CpuFeatures), `hcr_fb`, `vmid`,
    `dvm_name`, `on`, `pc`, `slices`, `retired`, `sysregs`, `unmapped`, `exc_nest`, `last_exception`, `debug`."""

    def __init__(self, vm: "VM", index: int):
        self.vm = vm
        self.machine = vm.machine
        self.index = index                       # CPU number inside the VM (PSCI, MPIDR)
        self.id = len(vm.machine.vcpus)          # machine-wide number (scheduling order)
        self.mpidr = mpidr_of(index)
        self.dvm_name = f"{vm.name}.cpu{index}"
        self.start_el = vm.start_el
        self.cpu = vm.cpu                        # CPU model (harness/cpu.py)
        self.features = features(self.cpu)
        self.hcr_fb = True                       # HCR_EL2.FB as KVM sets it; the TLBI trap reads it
        self.vmid = vm.vmid                      # current VMID (KVM overrides it per slice)
        self.on = False
        self.slices = 0
        self.retired = 0                         # instructions charged (an upper bound, harness/scheduler.py)
        self.tlb_flushes = 0
        # (access, addr, size, value, pc) of the last access to unmapped memory, for the abort that follows
        self.unmapped: tuple[int, int, int, int, int] | None = None
        self.exc_nest = 0                        # exception entries at the same EL since the last ERET
        self.last_exception: Any = None          # harness.exceptions.Taken of the last entry
        self.debug: Any = None                   # harness.debug.VcpuDebug, attached by the machine
        # what the vCPU is doing inside emu_start: "mmio" in an MMIO callback, "sysreg" in an MRS/MSR handler
        self.context: str | None = None
        self.irq_poll = False                    # an interrupt became deliverable during an MRS/MSR handler
        self.mmio_log: list[tuple[str, Any, int, int, int]] | None = None   # see stop_after_access
        self.replay: deque | None = None
        self._saved_gprs: list[int] | None = None
        self._seen_blocks: set[int] = set()
        uc = new_uc(self.cpu)
        observe.install(uc)                      # every Python callback below is an observation point
        uc.ctl_set_tcg_buffer_size(self.machine.tcg_buffer_size)
        self.uc = uc
        chunk = vm.ram_chunk or vm.ram.size
        for off in range(0, vm.ram.size, chunk):  # pieces: a later mem_protect splits only its piece (mte.py)
            uc.mem_map_ptr(vm.ram_ipa + off, min(chunk, vm.ram.size - off), UC_PROT_ALL, vm.ram_ptr + off)
        self.native_console = console.attach(self)    # console calls and the PL011 in C (harness/console.py)
        for region in vm.ipa.regions:
            if not region.is_ram:
                self.map_mmio(region.base, region.size, region.target)
        if self.native_console is None:               # else console.c's hook calls `_on_intr`
            uc.hook_add(UC_HOOK_INTR, self._on_intr)
        uc.hook_add(UC_HOOK_MEM_UNMAPPED, self._on_unmapped)
        if "in_asm" in self.machine.log.enabled:
            uc.hook_add(UC_HOOK_BLOCK, self._on_block)
        self.sysregs = SysregHooks(self)
        if self.start_el == 2:
            self.sysregs.register(MPIDR_EL1, read=_mpidr_at_el2)
        if self.cpu == "max":
            self.sysregs.register(ID_REGS["isar0"], read=_isar0_advertised)
        self._reset()

    # -- architectural state ------------------------------------------------------------------------
    def _reset(self) -> None:
        uc = self.uc
        reset_controls(uc, self.features, self.start_el)
        uc.cpr_write(*VMPIDR_EL2, self.mpidr)

    def power_on(self, entry: int, context_id: int = 0) -> None:
        """Start the vCPU at `entry` (PSCI CPU_ON / boot): EL`start_el`h, DAIF masked, MMU off, X0=context."""
        uc = self.uc
        el_bits = PSTATE_EL2H if self.start_el == 2 else PSTATE_EL1H
        uc.reg_write(UC_ARM64_REG_PSTATE, PSTATE_DAIF | el_bits)
        sctlr = SCTLR_EL2 if self.start_el == 2 else SCTLR_EL1
        # A PSTATE write takes effect on the next system-register write (unicorn issue #2333).
        uc.cpr_write(*sctlr, uc.cpr_read(*sctlr) & ~(SCTLR_M | SCTLR_C | SCTLR_I))
        uc.reg_write(UC_ARM64_REG_X0, context_id & _MASK64)
        uc.reg_write(UC_ARM64_REG_PC, entry)
        self.flush_tlb()
        self.on = True

    @property
    def el(self) -> int:
        """Current exception level (PSTATE.EL)."""
        return (self.uc.reg_read(UC_ARM64_REG_PSTATE) >> 2) & 3

    @property
    def pstate(self) -> int:
        """PSTATE as SPSR_ELx would hold it (Unicorn's PSTATE register: NZCV, DAIF, EL, SP, PAN, BTYPE, ...)."""
        return self.uc.reg_read(UC_ARM64_REG_PSTATE)

    @property
    def pc(self) -> int:
        return self.uc.reg_read(UC_ARM64_REG_PC)

    def flush_tlb(self) -> None:
        """Drop Unicorn's softmmu TLB for this vCPU (after page-table changes made behind its back)."""
        self.uc.ctl(ucc.UC_CTL_TLB_FLUSH, ucc.UC_CTL_IO_WRITE)
        self.tlb_flushes += 1

    # -- memory by virtual address (slow paths) ---------------------------------------------------
    def translation_regs(self, el: int | None = None) -> TranslationRegs:
        """The stage-1 registers of the regime of `el` (default: the current EL; EL0 and EL1 share EL1&0)."""
        uc = self.uc
        ids = (uc.cpr_read(*ID_AA64MMFR0_EL1), uc.cpr_read(*ID_AA64MMFR1_EL1), uc.cpr_read(*ID_AA64MMFR2_EL1))
        if (self.el if el is None else el) == 2:
            return TranslationRegs(2, uc.cpr_read(*SCTLR_EL2), uc.cpr_read(*TCR_EL2), uc.cpr_read(*TTBR0_EL2), 0,
                                   *ids)
        return TranslationRegs(1, uc.cpr_read(*SCTLR_EL1), uc.cpr_read(*TCR_EL1), uc.cpr_read(*TTBR0_EL1),
                               uc.cpr_read(*TTBR1_EL1), *ids)

    def _read_desc(self, ipa: int) -> int:
        return self.vm.ipa.read(ipa, 8)

    def translate(self, va: int) -> Walk:
        """The guest's stage-1 translation of `va` (harness/vmem.py)."""
        return translate(self.translation_regs(), va, self._read_desc)

    def translate_at(self, regs: TranslationRegs, va: int) -> Walk:
        """`va` translated with the registers `regs` (`translation_regs(el)`), reading this VM's tables."""
        return translate(regs, va, self._read_desc)

    def pages(self, va: int, size: int):
        """(ipa, n) pieces of [va, va + size), one per 4 KiB page; BusError where the VA does not translate
        (a generator: `list()` of it translates every page before any is used, as gdb's `M` needs)."""
        regs = self.translation_regs()
        while size > 0:
            w = translate(regs, va, self._read_desc)
            if not w.ok:
                raise BusError(va, size, f"VA not mapped ({w.detail})")
            n = min(size, PAGE - (va & (PAGE - 1)))
            yield w.ipa, n
            va, size = va + n, size - n

    def read_virt(self, va: int, size: int) -> bytes:
        """Read guest memory by VA through the guest's stage-1 tables; BusError if unmapped."""
        return b"".join(self.vm.ipa.read_bytes(ipa, n) for ipa, n in self.pages(va, size))

    def write_virt(self, va: int, data: bytes) -> None:
        """Write guest memory by VA; BusError if a page is unmapped (the pages before it are written)."""
        off = 0
        for ipa, n in self.pages(va, len(data)):
            self.vm.ipa.write_bytes(ipa, data[off:off + n])
            off += n

    # GuestMemory protocol for devmodel.semihosting
    read_bytes = read_virt
    write_bytes = write_virt

    def insn_at(self, va: int) -> int | None:
        try:
            return int.from_bytes(self.read_virt(va, 4), "little")
        except BusError:
            return None

    # -- MMIO glue ----------------------------------------------------------------------------------
    def map_mmio(self, base: int, size: int, dev: Any) -> None:
        """Map an MMIO device at IPA `base` into this vCPU: Unicorn calls `dev.read`/`dev.write` with offsets."""
        ud = (self, dev)
        nc = self.native_console
        if nc is not None and dev is self.vm.pl011 and nc.map_uart(base, size, dev, ud):
            return
        self.uc.mmio_map(base, size, _mmio_read, ud, _mmio_write, ud)

    def unmap_mmio(self, base: int, size: int) -> None:
        """Remove the MMIO mapping at IPA `base` (a board change before the vCPU ran)."""
        self.uc.mem_unmap(base, size)

    # -- stopping after the current instruction ------------------------------------------------------
    def stop_after_access(self) -> None:
        """End the running slice once the current instruction has completed: its effects happen once. Safe in
        every hook. Unicorn 2.1.4 ends `emu_start` at once from an MRS/MSR or code hook (after the MRS/MSR,
        before the hooked instruction), but from an MMIO callback it stops right after that memory access, in
        the middle of the instruction (a pair's second access and any writeback not done) with the PC left
        on it, and the next `emu_start` executes it again - device
        side effects included (tests/harness/test_interrupts.py checks these facts). So in an MMIO callback the
        general-purpose registers are saved (every load/store writes its registers after its last access, so
        they still hold the instruction's inputs), the accesses from this one on are recorded (`mmio_log`), and
        the scheduler runs the instruction again at once (`Scheduler.request_step`) from those registers with
        `replay` set: the recorded accesses are not repeated (a read returns the recorded value), the rest of
        the instruction (its other accesses, register writes, writeback) happens as Unicorn executes it. An
        access the instruction made before this one (a store pair whose second store requested the stop) is
        repeated: no interrupt source of this board is written that way."""
        if self.context == "mmio":
            if self.native_console is not None:
                self.native_console.suspend()   # the rest of the instruction and its replay: Python's path
            if self.mmio_log is None:
                self.mmio_log = []
                self._saved_gprs = self.uc.reg_read_batch(_GPRS)
            self.machine.scheduler.request_step(self)
        self.uc.emu_stop()

    def begin_replay(self) -> None:
        """The scheduler re-executes the instruction a stop interrupted in an MMIO callback (its recorded
        accesses are not performed again, its input registers are put back)."""
        log, self.mmio_log = self.mmio_log, None
        self.replay = deque(log) if log else None
        if self._saved_gprs is not None:
            self.uc.reg_write_batch(list(zip(_GPRS, self._saved_gprs)))
            self._saved_gprs = None

    def end_replay(self) -> None:
        self.replay = None

    def replayed(self, kind: str, dev: Any, offset: int, size: int, value: int) -> int | None:
        """During a replay: the recorded result of this access (0 for a write) when it is the next recorded
        one, else None - and the replay ends (anything else the instruction does is performed)."""
        rp = self.replay
        if rp:
            k, d, o, s, val = rp[0]
            if k == kind and d is dev and o == offset and s == size and (kind == "r" or val == value):
                rp.popleft()
                return val if kind == "r" else 0
        self.replay = None
        return None

    # -- hooks (exception and fault paths only; nothing per instruction) ----------------------------
    def _on_intr(self, uc: Uc, intno: int, _ud: Any) -> None:
        self.machine.exceptions.unicorn_exception(self, intno)

    def _on_unmapped(self, uc: Uc, access: int, addr: int, size: int, value: int, _ud: Any) -> bool:
        self.unmapped = (access, addr, size, value, uc.reg_read(UC_ARM64_REG_PC))
        return False

    def _on_block(self, uc: Uc, addr: int, size: int, _ud: Any) -> None:
        if addr in self._seen_blocks:
            return
        self._seen_blocks.add(addr)
        try:
            code = self.read_virt(addr, size)
        except BusError:
            return
        lines = ["----------------", f"IN: {self.vm.symbolize(addr)} ({self.dvm_name})"]
        for insn in self.machine.disasm.disasm(code, addr):
            word = int.from_bytes(insn.bytes, "little")
            lines.append(f"{insn.address:#018x}:  {word:08x}      {insn.mnemonic} {insn.op_str}".rstrip())
        self.machine.log("in_asm", "\n".join(lines) + "\n")

    def __repr__(self) -> str:
        return f"<Vcpu {self.dvm_name} {'on' if self.on else 'off'}>"


def _isar0_advertised(vcpu: Vcpu) -> int | None:
    """ID_AA64ISAR0_EL1 with the TLB field `max` advertises (harness/cpu.py); EL0 reads stay Unicorn's."""
    if vcpu.el == 0:
        return None
    return advertised_isar0(vcpu.cpu, dict(vcpu.features.ids)["isar0"])


def _mpidr_at_el2(vcpu: Vcpu) -> int | None:
    """MRS MPIDR_EL1 at EL2 reads the vCPU's MPIDR; below EL2 Unicorn answers from VMPIDR_EL2 itself."""
    return vcpu.mpidr if vcpu.el >= 2 else None
