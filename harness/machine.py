"""The machine: host platform, VMs, vCPUs (one Unicorn each) and the deterministic scheduler.

* `Machine` is the platform: the host physical `Bus` (each VM's RAM at its own PA, host devices), the DVM
  `Interconnect`, the `Tracer`, the VMs, the plugins and the round-robin scheduler over every vCPU of every VM.
* `VM`: one `Ram` object, on the host bus at `ram_pa` and on the VM's IPA `Bus` (`vm.ipa`) at `ram_ipa`
  (default 0x4000_0000); MMIO regions of the IPA space (the PL011 console, passed-through host devices) are
  mapped into every vCPU with `Uc.mmio_map` and call the device's `read`/`write`. PSCI and semihosting state.
* `Vcpu`: one Unicorn instance with the VM's RAM mapped zero-copy by `mem_map_ptr`, SCR_EL3 = NS|RW|HCE,
  HCR_EL2.RW, its own MPIDR (through VMPIDR_EL2, which is what EL1 reads when EL2 is enabled, Arm ARM D17.2.101),
  starting at EL1h or EL2h (`start_el`). Exceptions reach `UC_HOOK_INTR` (REFERENCE.md "Unicorn 2.1.x facts"):
  HVC/SMC are PSCI calls, `HLT #0xF000` is semihosting, anything else is a death (exits.py statuses) unless the
  guest opted in to exception delivery (below).

Exception delivery (opt-in): Unicorn never enters the guest's vectors itself. A guest that defines the 64-bit
global `exception_handled_ecs` (ELF symbol table; guest_fw/lib/exceptions.c sets bit EC when
`install_exception_handler(EC, fn)` installs a handler) has each synchronous exception whose ESR.EC bit is
set there taken at its own vector, as Arm ARM D1.10 "Exception entry" says: ESR_ELx, FAR_ELx (aborts),
ELR_ELx = preferred return address, SPSR_ELx = old PSTATE, PSTATE = ELxh with DAIF masked, PC = VBAR_ELx +
0x000 (SP0) / 0x200 (SPx) / 0x400 (lower EL), x = max(current EL, 1). This covers undefined instructions
(including TLBIs the trap finds undefined at the current EL), BRK, SVC, instruction and data aborts (also
accesses to unmapped IPAs); the bitmap is read from guest RAM at each exception, so guests without it pay
nothing. `Machine.deliver_exception` does the entry, traced `guest_exception` and logged under `-d int`.

Scheduling: when a single vCPU is on and no instruction budget is set, it runs uncounted in one `emu_start`
(full Unicorn speed) until an event (CPU_ON, WFI, exit); otherwise every powered-on vCPU runs in turn for
`quantum` instructions (`emu_start(count=quantum)`), in vCPU creation order, so SMP runs are deterministic.
Instruction budgets are charged per slice (an upper bound: a slice that ends early at WFI or an event is
charged in full).

Plugins (`machine.add_plugin(p)`) may define `attach_vcpu(vcpu)`, `before_run(machine)`, `slice_start(vcpu)`,
`slice_end(vcpu)`, `after_run(machine)`; see docs/DESIGN.md "Harness API".

Not modelled yet: delivery of exceptions the guest has not opted in for (an unexpected exception ends the run
with a death line), HVC/SMC to the guest's vectors (they are PSCI calls), asynchronous exceptions, interrupts
and timers (WFI/WFE only end the slice), stage 2 for vCPUs (the IPA space is the Unicorn address space), E2H,
routing to EL2 (HCR_EL2.TGE) and the PSTATE bits of FEAT_PAN/UAO/SSBS/BTI/MTE on exception entry (PAN is kept).
"""
from __future__ import annotations

import ctypes
import sys
import time
from typing import Any, Callable

from unicorn import (UC_ARCH_ARM64, UC_HOOK_BLOCK, UC_HOOK_INSN, UC_HOOK_INTR, UC_HOOK_MEM_UNMAPPED, UC_MODE_ARM,
                     UC_PROT_ALL, Uc, UcError)
from unicorn import unicorn_const as ucc
from unicorn.arm64_const import (UC_ARM64_INS_MRS, UC_ARM64_REG_ELR_EL1, UC_ARM64_REG_ELR_EL2, UC_ARM64_REG_ESR_EL1,
                                 UC_ARM64_REG_ESR_EL2, UC_ARM64_REG_FAR_EL1, UC_ARM64_REG_FAR_EL2, UC_ARM64_REG_LR,
                                 UC_ARM64_REG_PC, UC_ARM64_REG_PSTATE, UC_ARM64_REG_SP, UC_ARM64_REG_SP_EL0,
                                 UC_ARM64_REG_SP_EL1, UC_ARM64_REG_SP_EL2, UC_ARM64_REG_VBAR_EL1,
                                 UC_ARM64_REG_VBAR_EL2, UC_ARM64_REG_X0, UC_ARM64_REG_X1, UC_ARM64_REG_X2,
                                 UC_ARM64_REG_X3)

from devmodel.bus import Bus, BusError
from devmodel.dvm import DvmSync, Interconnect
from devmodel.pl011 import PL011, PL011_SIZE
from devmodel.psci import CpuOff, CpuOn, Psci, Standby, SystemOff, SystemReset
from devmodel.semihosting import HLT_SEMIHOSTING, Semihosting
from devmodel.tlbi_types import TlbiOp
from devmodel.trace import Tracer, define

from .elfload import ElfImage, Symbolizer, load_elf
from .exits import (EC_BRK64, EC_DABT_CUR, EC_IABT_CUR, EC_IABT_LOW, EC_NAMES, EC_SVC64, EC_UNKNOWN,
                    FSC_SYNC_EXTERNAL, HarnessInputError, Kind, Outcome, esr_value)
from .log import Log
from .vmem import TranslationRegs, Walk, walk_s1

__all__ = ["Machine", "VM", "Vcpu", "CodeRange", "DEFAULT_RAM_IPA", "DEFAULT_RAM_SIZE", "PL011_IPA",
           "DEFAULT_QUANTUM", "EXCEPTION_OPT_IN", "mpidr_of"]

DEFAULT_RAM_IPA = 0x4000_0000
DEFAULT_RAM_SIZE = 128 << 20
PL011_IPA = 0x0900_0000
DEFAULT_QUANTUM = 10_000
HOST_RAM_BASE = 0x1_0000_0000          # first host PA handed out for VM RAM
PAGE = 0x1000
_UNTIL = 0xFFFF_FFFF_FFFF_FFFC         # emu_start's stop address: never a guest PC in practice
_MASK64 = (1 << 64) - 1

# Exception numbers Unicorn gives UC_HOOK_INTR (QEMU target/arm/cpu.h, EXCP_*).
EXCP_UDEF, EXCP_SWI, EXCP_PREFETCH_ABORT, EXCP_DATA_ABORT, EXCP_BKPT = 1, 2, 3, 4, 7
EXCP_HVC, EXCP_SMC, EXCP_UNALIGNED = 11, 13, 22
_EXCP_NAMES = {1: "Undefined Instruction", 2: "SVC", 3: "Prefetch Abort", 4: "Data Abort", 5: "IRQ", 6: "FIQ",
               7: "Breakpoint", 11: "Hypervisor Call", 13: "Secure Monitor Call", 22: "Unaligned Access"}

# System registers (op0, op1, CRn, CRm, op2), Arm ARM D17.
SCR_EL3 = (3, 6, 1, 1, 0)
HCR_EL2 = (3, 4, 1, 1, 0)
VMPIDR_EL2 = (3, 4, 0, 0, 5)
MPIDR_EL1 = (3, 0, 0, 0, 5)
SCTLR_EL1, SCTLR_EL2 = (3, 0, 1, 0, 0), (3, 4, 1, 0, 0)
TCR_EL1, TCR_EL2 = (3, 0, 2, 0, 2), (3, 4, 2, 0, 2)
TTBR0_EL1, TTBR1_EL1, TTBR0_EL2 = (3, 0, 2, 0, 0), (3, 0, 2, 0, 1), (3, 4, 2, 0, 0)
SCR_NS, SCR_HCE, SCR_RW = 1 << 0, 1 << 8, 1 << 10
HCR_RW = 1 << 31
SCTLR_M, SCTLR_C, SCTLR_I = 1 << 0, 1 << 2, 1 << 12
PSTATE_DAIF = 0xF << 6
PSTATE_EL1H, PSTATE_EL2H = 0b0101, 0b1001
PSTATE_NZCV, PSTATE_PAN = 0xF << 28, 1 << 22
WFI_INSN = 0xD503207F

#: the guest's opt-in to exception delivery: a u64 global, bit EC set = take exceptions of that ESR.EC at the
#: guest's own vector (guest_fw/lib/exceptions.c keeps it; docs/DESIGN.md "Harness API")
EXCEPTION_OPT_IN = "exception_handled_ecs"
# Exception-entry registers per target EL: ESR, ELR, FAR, VBAR, SP_ELx (Unicorn register ids) and SPSR_ELx
# (no Unicorn register id: written as a system register, Arm ARM D17.2.124/D17.2.125).
_ENTRY_REGS = {1: (UC_ARM64_REG_ESR_EL1, UC_ARM64_REG_ELR_EL1, UC_ARM64_REG_FAR_EL1, UC_ARM64_REG_VBAR_EL1,
                   UC_ARM64_REG_SP_EL1, (3, 0, 4, 0, 0)),
               2: (UC_ARM64_REG_ESR_EL2, UC_ARM64_REG_ELR_EL2, UC_ARM64_REG_FAR_EL2, UC_ARM64_REG_VBAR_EL2,
                   UC_ARM64_REG_SP_EL2, (3, 4, 4, 0, 0))}

define("guest_exception", ("cpu", "pc", "el", "ec", "esr", "elr", "far", "vector"),
       "a synchronous exception taken at the guest's own vector (the guest opted in for its EC): pc of the "
       "instruction, target EL, ESR/ELR/FAR written, vector address entered (far is None when not written)")


def mpidr_of(index: int) -> int:
    """MPIDR of CPU `index`: bit 31 RES1, Aff0 = index % 16, Aff1 = index // 16 (QEMU virt with GICv3)."""
    return (1 << 31) | ((index // 16) << 8) | (index % 16)


class CodeRange:
    """Executable bytes loaded into a VM: `vaddr` is where the guest executes them, `ipa` where they are."""

    __slots__ = ("vaddr", "ipa", "data")

    def __init__(self, vaddr: int, ipa: int, data: bytes):
        self.vaddr, self.ipa, self.data = vaddr, ipa, data

    @property
    def end(self) -> int:
        return self.vaddr + len(self.data)

    def __repr__(self) -> str:
        return f"CodeRange(vaddr={self.vaddr:#x}, ipa={self.ipa:#x}, size={len(self.data):#x})"


def write_console(out, data: bytes) -> None:
    """Write guest console bytes to a text stream (its binary buffer when it has one), flushing at newlines."""
    buf = getattr(out, "buffer", None)
    if buf is not None:
        buf.write(data)
    else:
        out.write(data.decode("utf-8", "replace"))
    if b"\n" in data:
        out.flush()


def _default_console(vm: "VM", data: bytes, stream: int) -> None:
    write_console(sys.stdout if stream == 1 else sys.stderr, data)


class Vcpu:
    """One virtual CPU. Public state others rely on: `uc`, `index`, `vm`, `machine`, `el`, `start_el`,
    `hcr_fb`, `vmid`, `dvm_name`, `on`, `pc`."""

    def __init__(self, vm: "VM", index: int):
        self.vm = vm
        self.machine = vm.machine
        self.index = index                       # CPU number inside the VM (PSCI, MPIDR)
        self.id = len(vm.machine.vcpus)          # machine-wide number (scheduling order)
        self.mpidr = mpidr_of(index)
        self.dvm_name = f"{vm.name}.cpu{index}"
        self.start_el = vm.start_el
        self.hcr_fb = True                       # HCR_EL2.FB as KVM sets it; the TLBI trap reads it
        self.vmid = vm.vmid                      # current VMID (KVM overrides it per slice)
        self.on = False
        self.slices = 0
        self.retired = 0                         # instructions charged (upper bound, see module doc)
        self.tlb_flushes = 0
        self._fault: tuple[int, int, int, int, int] | None = None
        self._counted: bool | None = None          # mode of the last slice (see Machine._slice)
        self._seen_blocks: set[int] = set()
        uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        uc.ctl_set_tcg_buffer_size(self.machine.tcg_buffer_size)
        self.uc = uc
        uc.mem_map_ptr(vm.ram_ipa, vm.ram.size, UC_PROT_ALL, vm.ram_ptr)
        for region in vm.ipa.regions:
            if not region.is_ram:
                self._map_mmio(region.base, region.size, region.target)
        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        uc.hook_add(UC_HOOK_MEM_UNMAPPED, self._on_unmapped)
        if "in_asm" in self.machine.log.enabled:
            uc.hook_add(UC_HOOK_BLOCK, self._on_block)
        if self.start_el == 2:
            # At EL2 Unicorn's MPIDR_EL1 is 0x80000000 on every vCPU and cannot be set: answer MRS MPIDR_EL1
            # ourselves (only vCPUs that start at EL2 pay for this MRS hook).
            uc.hook_add(UC_HOOK_INSN, self._on_mrs, aux1=UC_ARM64_INS_MRS)
        self._setup_el3()

    # -- architectural setup ----------------------------------------------------------------------
    def _setup_el3(self) -> None:
        uc = self.uc
        # REFERENCE.md: SCR_EL3.RW makes EL1 AArch64, HCE enables HVC; NS=1 so EL2 is enabled for EL1
        # (then EL1 reads VMPIDR_EL2 as its MPIDR and HCR_EL2.RW keeps EL1 AArch64).
        uc.cpr_write(*SCR_EL3, SCR_NS | SCR_RW | SCR_HCE)
        uc.cpr_write(*HCR_EL2, HCR_RW)
        uc.cpr_write(*VMPIDR_EL2, self.mpidr)

    def power_on(self, entry: int, context_id: int = 0) -> None:
        """Start the vCPU at `entry` (PSCI CPU_ON / boot): EL`start_el`h, DAIF masked, MMU off, X0=context."""
        uc = self.uc
        el_bits = PSTATE_EL2H if self.start_el == 2 else PSTATE_EL1H
        uc.reg_write(UC_ARM64_REG_PSTATE, PSTATE_DAIF | el_bits)
        sctlr = SCTLR_EL2 if self.start_el == 2 else SCTLR_EL1
        # A PSTATE write takes effect on the next system-register write (unicorn issue #2333).
        uc.cpr_write(*sctlr, uc.cpr_read(*sctlr) & ~(SCTLR_M | SCTLR_C | SCTLR_I))
        uc.cpr_write(*HCR_EL2, uc.cpr_read(*HCR_EL2) | HCR_RW)
        uc.reg_write(UC_ARM64_REG_X0, context_id & _MASK64)
        uc.reg_write(UC_ARM64_REG_PC, entry)
        self.flush_tlb()
        self.on = True

    @property
    def el(self) -> int:
        """Current exception level (PSTATE.EL)."""
        return (self.uc.reg_read(UC_ARM64_REG_PSTATE) >> 2) & 3

    @property
    def pc(self) -> int:
        return self.uc.reg_read(UC_ARM64_REG_PC)

    def flush_tlb(self) -> None:
        """Drop Unicorn's softmmu TLB for this vCPU (after page-table changes made behind its back)."""
        self.uc.ctl(ucc.UC_CTL_TLB_FLUSH, ucc.UC_CTL_IO_WRITE)
        self.tlb_flushes += 1

    # DVM participant (the TLBI trap plugin attaches vCPUs to machine.interconnect).
    def dvm_tlbi(self, op: TlbiOp, msg: int) -> None:
        self.flush_tlb()

    def dvm_sync(self, sync: DvmSync) -> None:
        pass

    # -- memory by virtual address (slow paths) ---------------------------------------------------
    def translation_regs(self) -> TranslationRegs:
        uc = self.uc
        if self.el == 2:
            return TranslationRegs(2, uc.cpr_read(*SCTLR_EL2), uc.cpr_read(*TCR_EL2), uc.cpr_read(*TTBR0_EL2))
        return TranslationRegs(1, uc.cpr_read(*SCTLR_EL1), uc.cpr_read(*TCR_EL1), uc.cpr_read(*TTBR0_EL1),
                               uc.cpr_read(*TTBR1_EL1))

    def translate(self, va: int) -> Walk:
        return walk_s1(self.translation_regs(), va, lambda a: self.vm.ipa.read(a, 8))

    def read_virt(self, va: int, size: int) -> bytes:
        """Read guest memory by VA through the guest's stage-1 tables; BusError if unmapped."""
        out = bytearray()
        regs = self.translation_regs()
        while size > 0:
            w = walk_s1(regs, va, lambda a: self.vm.ipa.read(a, 8))
            if not w.ok:
                raise BusError(va, size, f"VA not mapped ({w.fault} fault level {w.level})")
            n = min(size, PAGE - (va & (PAGE - 1)))
            out += self.vm.ipa.read_bytes(w.ipa, n)
            va, size = va + n, size - n
        return bytes(out)

    def write_virt(self, va: int, data: bytes) -> None:
        regs = self.translation_regs()
        while data:
            w = walk_s1(regs, va, lambda a: self.vm.ipa.read(a, 8))
            if not w.ok:
                raise BusError(va, len(data), f"VA not mapped ({w.fault} fault level {w.level})")
            n = min(len(data), PAGE - (va & (PAGE - 1)))
            self.vm.ipa.write_bytes(w.ipa, data[:n])
            va, data = va + n, data[n:]

    # GuestMemory protocol for devmodel.semihosting
    read_bytes = read_virt
    write_bytes = write_virt

    def insn_at(self, va: int) -> int | None:
        try:
            return int.from_bytes(self.read_virt(va, 4), "little")
        except BusError:
            return None

    # -- MMIO glue ----------------------------------------------------------------------------------
    def _map_mmio(self, base: int, size: int, dev: Any) -> None:
        self.uc.mmio_map(base, size, _mmio_read, dev, _mmio_write, dev)

    # -- hooks (exception and fault paths only; nothing per instruction) ----------------------------
    def _on_intr(self, uc: Uc, intno: int, _ud: Any) -> None:
        pc = uc.reg_read(UC_ARM64_REG_PC)
        m = self.machine
        if intno in (EXCP_HVC, EXCP_SMC):
            m._psci(self, "hvc" if intno == EXCP_HVC else "smc", pc)
            return
        if intno == EXCP_UDEF and self.insn_at(pc) == HLT_SEMIHOSTING:
            m._semihosting(self, pc)
            return
        if "int" in m.log.enabled:
            m.log("int", f"{self.dvm_name}: exception {intno} [{_EXCP_NAMES.get(intno, '?')}] at pc {pc:#x} "
                         f"<{self.vm.symbolize(pc)}>")
        m._exception_death(self, intno, pc)

    def _on_mrs(self, uc: Uc, reg: int, cp: Any, _ud: Any) -> int:
        if (cp.op0, cp.op1, cp.crn, cp.crm, cp.op2) == MPIDR_EL1 and self.el >= 2:
            uc.reg_write(reg, self.mpidr)
            return 1            # skips the MRS (Unicorn advances the PC itself for implemented registers)
        return 0

    def _on_unmapped(self, uc: Uc, access: int, addr: int, size: int, value: int, _ud: Any) -> bool:
        self._fault = (access, addr, size, value, uc.reg_read(UC_ARM64_REG_PC))
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


def _mmio_read(uc: Uc, offset: int, size: int, dev: Any) -> int:
    return dev.read(offset, size)


def _mmio_write(uc: Uc, offset: int, size: int, value: int, dev: Any) -> None:
    dev.write(offset, value, size)


#: largest guest RAM: the default IPA layout puts RAM at 0x4000_0000 below the 40-bit IPA space used by
#: the host stage 2, and each VM's RAM is one host buffer
MAX_RAM = 16 << 30


class VM:
    """A guest: RAM (one buffer, at `ram_pa` on the host bus and `ram_ipa` in `ipa`), devices, vCPUs."""

    def __init__(self, machine: "Machine", name: str, *, ram_size: int, ram_pa: int, ram_ipa: int, ncpus: int,
                 vmid: int, start_el: int, console: bool):
        if ram_size <= 0 or ram_size % PAGE or ram_ipa % PAGE or ram_pa % PAGE:
            raise ValueError(f"{name}: RAM size/addresses must be 4 KiB aligned "
                             f"(size {ram_size:#x}, ipa {ram_ipa:#x}, pa {ram_pa:#x})")
        if not 1 <= ncpus <= 256:
            raise ValueError(f"{name}: {ncpus} vCPUs (1-256 supported)")
        if start_el not in (1, 2):
            raise ValueError(f"{name}: start_el {start_el} (1 or 2)")
        self.machine = machine
        self.name = name
        self.vmid = vmid
        self.start_el = start_el
        self.ram_ipa = ram_ipa
        self.ram_pa = ram_pa
        if ram_size > MAX_RAM:
            raise HarnessInputError(f"{name}: {ram_size >> 20} MiB of guest RAM is more than the "
                                    f"{MAX_RAM >> 20} MiB supported")
        try:
            self.ram = machine.bus.add_ram(ram_pa, ram_size, f"{name}.ram")
        except MemoryError:
            raise HarnessInputError(f"{name}: cannot allocate {ram_size >> 20} MiB of guest RAM on this host") \
                from None
        self._ram_c = (ctypes.c_char * ram_size).from_buffer(self.ram.buf)   # keeps the buffer pinned
        self.ram_ptr = ctypes.addressof(self._ram_c)
        self.ipa = Bus()
        self.ipa.add_ram(ram_ipa, ram_size, "ram", self.ram)
        self.output = bytearray()                    # everything the guest printed (console + semihosting)
        self.outcome: Outcome | None = None
        self.image: ElfImage | None = None
        self.symbolizer = Symbolizer()
        self.code: list[CodeRange] = []
        self.entry: int | None = None
        self.exception_ecs_ipa: int | None = None    # IPA of the guest's EXCEPTION_OPT_IN bitmap, if it has one
        log = machine.log
        self.pl011: PL011 | None = None
        if console:
            self.pl011 = PL011(lambda b: self._console(b, 1), name=f"{name}.pl011", log=log, tracer=machine.tracer)
            self.ipa.add_device(PL011_IPA, PL011_SIZE, self.pl011, "pl011")
        self.psci = Psci([mpidr_of(i) for i in range(ncpus)], entry_ok=self.in_ram, tracer=machine.tracer, log=log)
        self.semihosting = Semihosting(self._console, clock=lambda: machine.retired, log=log, tracer=machine.tracer)
        self.vcpus: list[Vcpu] = []
        for i in range(ncpus):
            v = Vcpu(self, i)
            self.vcpus.append(v)
            machine.vcpus.append(v)

    # -- address space ------------------------------------------------------------------------------
    def in_ram(self, ipa: int, size: int = 1) -> bool:
        return self.ram_ipa <= ipa and ipa + size <= self.ram_ipa + self.ram.size

    def add_device(self, ipa: int, size: int, device: Any, name: str | None = None) -> None:
        """Map an MMIO device (emulated, or a host device passed through) at `ipa` in this VM."""
        if ipa % PAGE or size % PAGE:
            raise ValueError(f"{name or device}: MMIO window [{ipa:#x}, +{size:#x}) must be 4 KiB aligned")
        self.ipa.add_device(ipa, size, device, name)
        for v in self.vcpus:
            v._map_mmio(ipa, size, device)

    # -- loading ------------------------------------------------------------------------------------
    def load(self, image: ElfImage | str) -> ElfImage:
        """Copy an ELF's PT_LOAD segments into RAM; vCPU 0 will start at its entry point."""
        if not isinstance(image, ElfImage):
            image = load_elf(image)
        end = self.ram_ipa + self.ram.size
        for i, s in enumerate(image.segments):
            if not self.in_ram(s.paddr, s.memsz):
                raise HarnessInputError(f"{image.path}: segment {i} [{s.paddr:#x}, {s.paddr + s.memsz:#x}) is "
                                        f"outside guest RAM [{self.ram_ipa:#x}, {end:#x})")
        for s in image.segments:
            off = s.paddr - self.ram_ipa
            self.ram.buf[off:off + len(s.data)] = s.data
            self.ram.buf[off + len(s.data):off + s.memsz] = bytes(s.memsz - len(s.data))
            if s.executable:
                self.code.append(CodeRange(s.vaddr, s.paddr, s.data))
        self.image = image
        self.symbolizer = image.symbolizer
        self.entry = image.entry
        ipa = image.object_ipa(EXCEPTION_OPT_IN)
        self.exception_ecs_ipa = ipa if ipa is not None and self.in_ram(ipa, 8) else None
        return image

    def load_code(self, ipa: int, code: bytes, entry: int | None = None) -> None:
        """Place raw instructions (tests, benchmarks) at `ipa`; `entry` defaults to `ipa`."""
        if not self.in_ram(ipa, len(code)):
            raise HarnessInputError(f"code [{ipa:#x}, +{len(code):#x}) is outside guest RAM")
        off = ipa - self.ram_ipa
        self.ram.buf[off:off + len(code)] = code
        self.code.append(CodeRange(ipa, ipa, bytes(code)))
        self.entry = ipa if entry is None else entry

    def symbolize(self, pc: int) -> str:
        return self.symbolizer(pc)

    def handles_ec(self, ec: int) -> bool:
        """Has the guest opted in to taking exceptions of class `ec` at its own vector (EXCEPTION_OPT_IN)?"""
        ipa = self.exception_ecs_ipa
        if ipa is None:
            return False
        off = ipa - self.ram_ipa
        return bool((int.from_bytes(self.ram.buf[off:off + 8], "little") >> (ec & 63)) & 1)

    @property
    def code_ranges(self) -> list[CodeRange]:
        """Executable ranges (for a capstone pre-scan): addresses as the guest executes them."""
        return list(self.code)

    # -- devices' output ----------------------------------------------------------------------------
    def _console(self, data: bytes, stream: int) -> None:
        self.output += data
        self.machine.console(self, data, stream)

    def __repr__(self) -> str:
        return f"<VM {self.name} vmid={self.vmid} ram={self.ram_pa:#x}+{self.ram.size:#x} cpus={len(self.vcpus)}>"


class Machine:
    """The platform and scheduler. See the module docstring."""

    def __init__(self, *, tracer: Tracer | None = None, log: Log | None = None,
                 console: Callable[[VM, bytes, int], None] | None = None, quantum: int = DEFAULT_QUANTUM,
                 tcg_buffer_size: int = 32 << 20):
        if quantum <= 0:
            raise ValueError(f"quantum {quantum} must be positive")
        self.bus = Bus()
        self.tracer = tracer if tracer is not None else Tracer()
        self.interconnect = Interconnect(self.tracer)
        self.log = log if log is not None else Log()
        self.console = console if console is not None else _default_console
        self.quantum = quantum
        self.tcg_buffer_size = tcg_buffer_size
        self.vms: list[VM] = []
        self.vcpus: list[Vcpu] = []
        self.plugins: list[Any] = []
        self.outcome: Outcome | None = None
        self.retired = 0                # instructions charged machine-wide (virtual time)
        self._next_pa = HOST_RAM_BASE
        self._disasm = None

    # -- building -----------------------------------------------------------------------------------
    def alloc_pa(self, size: int, align: int = 1 << 30) -> int:
        """A free host PA range for RAM (VMs get 1 GiB-aligned, distinct PAs)."""
        pa = (self._next_pa + align - 1) & ~(align - 1)
        while any(r.base < pa + size and pa < r.end for r in self.bus.regions):
            pa += align
        self._next_pa = pa + size
        return pa

    def add_vm(self, name: str | None = None, *, ncpus: int = 1, ram_size: int = DEFAULT_RAM_SIZE,
               ram_pa: int | None = None, ram_ipa: int = DEFAULT_RAM_IPA, vmid: int | None = None,
               start_el: int = 1, console: bool = True) -> VM:
        name = name or f"vm{len(self.vms)}"
        if any(vm.name == name for vm in self.vms):
            raise ValueError(f"a VM named {name} exists")
        pa = self.alloc_pa(ram_size) if ram_pa is None else ram_pa
        vm = VM(self, name, ram_size=ram_size, ram_pa=pa, ram_ipa=ram_ipa, ncpus=ncpus,
                vmid=len(self.vms) + 1 if vmid is None else vmid, start_el=start_el, console=console)
        self.vms.append(vm)
        for v in vm.vcpus:
            for p in self.plugins:
                _call(p, "attach_vcpu", v)
        return vm

    def add_device(self, pa: int, size: int, device: Any, name: str | None = None) -> None:
        """A host device (SMMU, DMA test device) on the host physical bus."""
        self.bus.add_device(pa, size, device, name)

    def add_plugin(self, plugin: Any) -> None:
        self.plugins.append(plugin)
        for v in self.vcpus:
            _call(plugin, "attach_vcpu", v)

    @property
    def disasm(self):
        if self._disasm is None:
            import capstone
            self._disasm = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
            self._disasm.detail = True
        return self._disasm

    # -- stopping -----------------------------------------------------------------------------------
    def stop(self, vcpu: Vcpu | None, outcome: Outcome) -> None:
        """End the run (first outcome wins for a VM; deaths end the whole machine). Safe inside hooks."""
        vm = vcpu.vm if vcpu is not None else None
        if vm is not None:
            if vm.outcome is None:
                vm.outcome = outcome
            for v in vm.vcpus:
                v.on = False
        if outcome.kind is not Kind.EXIT or all(v.outcome is not None for v in self.vms):
            if self.outcome is None or (self.outcome.kind is Kind.EXIT and outcome.kind is not Kind.EXIT):
                self.outcome = outcome
        if vcpu is not None:
            vcpu.uc.emu_stop()

    def die(self, vcpu: Vcpu, kind: Kind, what: str, pc: int, esr: int | None, far: int | None = None,
            detail: str = "") -> Outcome:
        """Stop with a death line: `what` at pc <symbol+off>: disassembly: EC/ESR/FAR (one line)."""
        word = vcpu.insn_at(pc)
        if word is None:
            insn = "<pc not mapped>"
        else:
            dis = list(self.disasm.disasm(word.to_bytes(4, "little"), pc))
            insn = f"{word:08x} {dis[0].mnemonic} {dis[0].op_str}".rstrip() if dis else f"{word:08x} <undecodable>"
        parts = [f"{vcpu.dvm_name}: {what} at pc {pc:#x} <{vcpu.vm.symbolize(pc)}>: {insn}"]
        if esr is not None:
            ec = esr >> 26
            parts.append(f"EC {ec:#04x} ({EC_NAMES.get(ec, 'exception')}) ESR {esr:#010x}")
        parts.append(f"FAR {far:#x}" if far is not None else "FAR -")
        if detail:
            parts.append(detail)
        out = Outcome(kind, ": ".join(parts[:1]) + "; " + ", ".join(parts[1:]), vcpu=vcpu.dvm_name, pc=pc,
                      esr=esr, far=far)
        self.stop(vcpu, out)
        return out

    def die_undefined(self, vcpu: Vcpu, pc: int | None = None, why: str = "") -> Outcome:
        """Undefined instruction death (e.g. from a SYS hook that refuses an encoding): exit status 132."""
        pc = vcpu.pc if pc is None else pc
        return self.die(vcpu, Kind.UNDEF, "undefined instruction", pc, esr_value(EC_UNKNOWN), None, why)

    # -- exceptions the guest may take at its own vectors --------------------------------------------
    def take_undefined(self, vcpu: Vcpu, pc: int | None = None, why: str = "") -> Outcome | None:
        """An undefined instruction at `pc`: taken at the guest's vector when it opted in for EC 0 (returns
        None; the vCPU's PC is then the vector), else `die_undefined` (returns its outcome). Safe in hooks."""
        pc = vcpu.pc if pc is None else pc
        if self.deliver_exception(vcpu, esr_value(EC_UNKNOWN), pc):
            return None
        return self.die_undefined(vcpu, pc, why)

    def take_exception(self, vcpu: Vcpu, kind: Kind, what: str, pc: int, esr: int | None, far: int | None = None,
                       detail: str = "", *, elr: int | None = None) -> Outcome | None:
        """A synchronous exception caused by the instruction at `pc`: delivered to the guest's vector when it
        opted in for ESR.EC (returns None), else the death line of `die` (returns its outcome). `elr` is the
        preferred return address when it is not `pc` (SVC: the next instruction)."""
        if esr is not None and self.deliver_exception(vcpu, esr, pc if elr is None else elr, far, pc=pc):
            return None
        return self.die(vcpu, kind, what, pc, esr, far, detail)

    def deliver_exception(self, vcpu: Vcpu, esr: int, elr: int, far: int | None = None, *,
                          pc: int | None = None, force: bool = False) -> bool:
        """Exception entry to AArch64 (Arm ARM D1.10) at the guest's vector, if the guest opted in for ESR.EC
        (`VM.handles_ec`; `force=True` skips that check). Target EL = max(current EL, 1); writes ESR_ELx,
        FAR_ELx (when `far` is given), ELR_ELx = `elr`, SPSR_ELx = old PSTATE, PSTATE = ELxh with DAIF masked
        (NZCV and PAN kept), SP = SP_ELx, PC = VBAR_ELx + 0x000 (from ELx with SP0), 0x200 (ELx with SPx) or
        0x400 (from a lower EL). Returns False (nothing written) when the guest did not opt in."""
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
        r_esr, r_elr, r_far, r_vbar, r_sp, spsr = _ENTRY_REGS[target]
        spsel = old & 1
        offset = 0x400 if el < target else (0x200 if spsel else 0x000)
        vbar = uc.reg_read(r_vbar)
        vector = (vbar + offset) & _MASK64
        if ec in (EC_IABT_LOW, EC_IABT_CUR) and vbar <= (pc if pc is not None else elr) < vbar + 0x800:
            return False                  # the vector itself cannot be fetched: entering it again would loop
        sp = uc.reg_read(UC_ARM64_REG_SP)
        if el < target or not spsel:
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
        pc = elr if pc is None else pc
        if "guest_exception" in self.tracer.enabled:
            self.tracer.emit("guest_exception", cpu=vcpu.id, pc=pc, el=target, ec=ec, esr=esr, elr=elr, far=far,
                             vector=vector)
        if "int" in self.log.enabled:
            self.log("int", f"{vcpu.dvm_name}: exception EC {ec:#04x} ({EC_NAMES.get(ec, 'exception')}) at pc "
                            f"{pc:#x} <{vcpu.vm.symbolize(pc)}> taken to EL{target} vector {vector:#x} "
                            f"<{vcpu.vm.symbolize(vector)}>: ESR {esr:#010x} ELR {elr:#x} "
                            f"FAR {'-' if far is None else hex(far)} SPSR {old:#x}")
        return True

    # -- exception glue (called from Vcpu hooks) -----------------------------------------------------
    def _psci(self, vcpu: Vcpu, conduit: str, pc: int) -> None:
        uc = vcpu.uc
        x0, x1, x2, x3 = uc.reg_read_batch([UC_ARM64_REG_X0, UC_ARM64_REG_X1, UC_ARM64_REG_X2, UC_ARM64_REG_X3])
        vm = vcpu.vm
        res = vm.psci.call(vcpu.index, x0, x1, x2, x3)
        if "int" in self.log.enabled:
            self.log("int", f"{vcpu.dvm_name}: {conduit} at pc {pc - 4:#x}: PSCI {res.name}"
                            f"({x1:#x}, {x2:#x}, {x3:#x}) -> {res.ret_text}")
        if res.ret is not None:
            uc.reg_write(UC_ARM64_REG_X0, res.ret & _MASK64)
        act = res.action
        if act is None:
            return
        if isinstance(act, CpuOn):
            vm.vcpus[act.target].power_on(act.entry, act.context_id)
            uc.emu_stop()                                # rescheduling point: another vCPU is runnable
        elif isinstance(act, CpuOff):
            vcpu.on = False
            uc.emu_stop()
        elif isinstance(act, Standby):
            uc.emu_stop()
        elif isinstance(act, SystemOff):
            self.stop(vcpu, Outcome(Kind.EXIT, f"{vm.name}: PSCI SYSTEM_OFF", 0, vcpu.dvm_name, pc))
        elif isinstance(act, SystemReset):
            self.stop(vcpu, Outcome(Kind.EXIT, f"{vm.name}: PSCI SYSTEM_RESET (no reboot, like qemu -no-reboot)",
                                    0, vcpu.dvm_name, pc))

    def _semihosting(self, vcpu: Vcpu, pc: int) -> None:
        uc = vcpu.uc
        op, param = uc.reg_read_batch([UC_ARM64_REG_X0, UC_ARM64_REG_X1])
        res = vcpu.vm.semihosting.call(op, param, vcpu, cpu=vcpu.index)
        if "int" in self.log.enabled:
            self.log("int", f"{vcpu.dvm_name}: semihosting {res.name}({param:#x}) at pc {pc:#x} -> "
                            f"{res.ret if res.exit_status is None else 'exit ' + str(res.exit_status)}")
        if res.exit_status is not None:
            self.stop(vcpu, Outcome(Kind.EXIT, f"{vcpu.vm.name}: semihosting {res.name}({res.exit_status})",
                                    res.exit_status, vcpu.dvm_name, pc))
            return
        if res.ret is not None:
            uc.reg_write(UC_ARM64_REG_X0, res.ret & _MASK64)
        uc.reg_write(UC_ARM64_REG_PC, pc + 4)

    def _exception_death(self, vcpu: Vcpu, intno: int, pc: int) -> None:
        """An exception Unicorn raised: the guest's vector when it opted in (`take_exception`), else death."""
        if intno == EXCP_UDEF:
            self.take_undefined(vcpu, pc)
        elif intno == EXCP_BKPT:
            self.take_exception(vcpu, Kind.UNDEF, "breakpoint (BRK) with no debugger", pc,
                                esr_value(EC_BRK64, _imm16(vcpu, pc)))
        elif intno == EXCP_SWI:
            self.take_exception(vcpu, Kind.UNDEF, "SVC with no handler", pc - 4,
                                esr_value(EC_SVC64, _imm16(vcpu, pc - 4)), elr=pc)
        elif intno == EXCP_PREFETCH_ABORT:
            w = vcpu.translate(pc)
            self.take_exception(vcpu, Kind.ABORT, "instruction abort", pc,
                                esr_value(EC_IABT_CUR, w.fsc if not w.ok else FSC_SYNC_EXTERNAL), pc,
                                f"{w.fault} fault level {w.level}" if not w.ok else "")
        elif intno in (EXCP_DATA_ABORT, EXCP_UNALIGNED):
            addr, write = self._data_address(vcpu, pc)
            fsc, detail = 0x21, "alignment fault"                # DFSC 0b100001
            if intno == EXCP_DATA_ABORT:
                w = vcpu.translate(addr) if addr is not None else None
                if w is not None and not w.ok:
                    fsc, detail = w.fsc, f"{w.fault} fault level {w.level}"
                else:
                    fsc, detail = 0x0C | 3, "permission fault" if w is not None else "fault"
            iss = fsc | (int(bool(write)) << 6)
            self.take_exception(vcpu, Kind.ABORT, "data abort", pc, esr_value(EC_DABT_CUR, iss), addr,
                                detail + (" (FAR computed from the instruction's operands)" if addr is not None
                                          else ""))
        else:
            self.die(vcpu, Kind.ABORT, f"unexpected exception {intno} [{_EXCP_NAMES.get(intno, '?')}]", pc, None)

    def _data_address(self, vcpu: Vcpu, pc: int) -> tuple[int | None, bool | None]:
        """Best-effort VA of the load/store at `pc` from its operands (Unicorn does not expose FAR)."""
        word = vcpu.insn_at(pc)
        if word is None:
            return None, None
        try:
            from capstone import arm64 as a64
            insn = next(self.disasm.disasm(word.to_bytes(4, "little"), pc))
            write = insn.mnemonic.startswith(("st", "swp", "cas", "ldadd", "ldclr", "ldeor", "ldset"))
            for op in insn.operands:
                if op.type == a64.ARM64_OP_MEM:
                    addr = _reg(vcpu, self.disasm.reg_name(op.mem.base)) + op.mem.disp
                    if op.mem.index:
                        idx = _reg(vcpu, self.disasm.reg_name(op.mem.index))
                        addr += idx << (op.shift.value if op.shift.type else 0)
                    return addr & _MASK64, write
        except (StopIteration, ValueError, KeyError):
            pass
        return None, None

    # -- running -------------------------------------------------------------------------------------
    def run(self, *, max_insns: int | None = None, timeout: float | None = None) -> Outcome:
        """Run until every VM exited, a vCPU died, or a budget ran out. Returns the machine's outcome."""
        if self.outcome is not None:
            return self.outcome
        for vm in self.vms:
            if vm.entry is None:
                raise HarnessInputError(f"{vm.name}: nothing loaded")
            if not vm.vcpus[0].on and vm.outcome is None and vm.vcpus[0].slices == 0:
                vm.vcpus[0].power_on(vm.entry)
        for p in self.plugins:
            _call(p, "before_run", self)
        deadline = time.monotonic() + timeout if timeout else None
        try:
            while self.outcome is None:
                runnable = [v for v in self.vcpus if v.on]
                if not runnable:
                    self._set_idle()
                    break
                if len(runnable) == 1 and max_insns is None:
                    left = deadline - time.monotonic() if deadline else 0
                    if deadline and left <= 0:
                        self._timeout(timeout)
                        break
                    self._slice(runnable[0], 0, int(left * 1e6) if deadline else 0)
                else:
                    for v in runnable:
                        if not v.on or self.outcome is not None:
                            continue
                        n = self.quantum if max_insns is None else min(self.quantum, max_insns - self.retired)
                        self._slice(v, n, 0)
                        self.retired += n
                        v.retired += n
                        if max_insns is not None and self.retired >= max_insns:
                            break
                if self.outcome is None and max_insns is not None and self.retired >= max_insns:
                    self.outcome = Outcome(Kind.BUDGET, f"instruction budget of {max_insns} exhausted "
                                                        f"(--max-insns)")
                if self.outcome is None and deadline and time.monotonic() >= deadline:
                    self._timeout(timeout)
        finally:
            for p in self.plugins:
                _call(p, "after_run", self)
        return self.outcome

    def _timeout(self, timeout: float | None) -> None:
        where = ", ".join(f"{v.dvm_name} at pc {v.pc:#x} <{v.vm.symbolize(v.pc)}>" for v in self.vcpus if v.on)
        self.outcome = Outcome(Kind.TIMEOUT, f"time budget of {timeout:g} s exhausted (--timeout); {where}")

    def _set_idle(self) -> None:
        ended = [vm for vm in self.vms if vm.outcome is not None]
        if ended and len(ended) == len(self.vms):
            exits = [vm.outcome for vm in ended]
            self.outcome = next((o for o in exits if o.exit_code != 0), exits[0])
        else:
            names = ", ".join(vm.name for vm in self.vms if vm.outcome is None)
            self.outcome = Outcome(Kind.IDLE, f"every vCPU of {names} is powered off (PSCI CPU_OFF) and "
                                              f"nothing can wake them")

    def _slice(self, v: Vcpu, count: int, timeout_us: int) -> None:
        uc = v.uc
        pc = uc.reg_read(UC_ARM64_REG_PC)
        if pc == _UNTIL:
            self.die(v, Kind.ABORT, "instruction fetch from the harness stop address", pc,
                     esr_value(EC_IABT_CUR, FSC_SYNC_EXTERNAL), pc)
            return
        v.slices += 1
        v._fault = None
        counted = count > 0
        if counted != v._counted:
            # Unicorn instruments blocks for `count` when it translates them: blocks translated in the other
            # mode would never stop (or keep paying for counting), so drop them when the mode changes.
            if v._counted is not None:
                uc.ctl_flush_tb()
            v._counted = counted
        plugins = self.plugins
        for p in plugins:
            f = getattr(p, "slice_start", None)
            if f is not None:
                f(v)
        try:
            if v.on and self.outcome is None:        # a slice_start hook may have stopped it
                uc.emu_start(pc, _UNTIL, timeout_us, count)
        except UcError as e:
            self._uc_error(v, e)
        finally:
            for p in plugins:
                f = getattr(p, "slice_end", None)
                if f is not None:
                    f(v)

    def _uc_error(self, v: Vcpu, e: UcError) -> None:
        if v.vm.outcome is not None or self.outcome is not None:
            return              # a stop already decided the outcome
        pc = v.pc
        f = v._fault
        # Delivered exceptions (take_*) leave the vCPU on, its PC on the vector: the next slice runs there.
        if e.errno == ucc.UC_ERR_FETCH_UNMAPPED:
            addr = f[1] if f else pc
            self.take_exception(v, Kind.ABORT, "instruction fetch from unmapped address", addr,
                                esr_value(EC_IABT_CUR, FSC_SYNC_EXTERNAL), addr, _lr_detail(v))
        elif e.errno in (ucc.UC_ERR_READ_UNMAPPED, ucc.UC_ERR_WRITE_UNMAPPED):
            write = e.errno == ucc.UC_ERR_WRITE_UNMAPPED
            addr = f[1] if f else None
            at = pc               # precise after the error; the hook's PC (f[4]) is the start of the block
            kind = f"{'write' if write else 'read'} of {f[2]} bytes" if f else ("write" if write else "read")
            self.take_exception(v, Kind.ABORT, "data abort", at,
                                esr_value(EC_DABT_CUR, FSC_SYNC_EXTERNAL | (int(write) << 6)), addr,
                                f"{kind} to an unmapped address (no RAM or device there)")
        elif e.errno in (ucc.UC_ERR_READ_UNALIGNED, ucc.UC_ERR_WRITE_UNALIGNED, ucc.UC_ERR_FETCH_UNALIGNED):
            self.take_exception(v, Kind.ABORT, "alignment fault", pc, esr_value(EC_DABT_CUR, 0x21), None, str(e))
        elif e.errno == ucc.UC_ERR_INSN_INVALID:
            self.take_undefined(v, pc, str(e))
        else:
            self.die(v, Kind.ABORT, f"emulation error ({e})", pc, None)


def _reg(vcpu: Vcpu, name: str) -> int:
    from unicorn import arm64_const as c
    if name in ("sp", "wsp"):
        return vcpu.uc.reg_read(UC_ARM64_REG_SP)
    if name in ("xzr", "wzr"):
        return 0
    reg = getattr(c, f"UC_ARM64_REG_{name.upper()}")
    return vcpu.uc.reg_read(reg)


def _imm16(vcpu: Vcpu, pc: int) -> int:
    """imm16 of the SVC/BRK at `pc` (ESR.ISS of EC 0x15/0x3C, Arm ARM D17.2.37); 0 if unreadable."""
    word = vcpu.insn_at(pc)
    return 0 if word is None else (word >> 5) & 0xFFFF


def _lr_detail(v: Vcpu) -> str:
    lr = v.uc.reg_read(UC_ARM64_REG_LR)
    return f"LR {lr:#x} <{v.vm.symbolize(lr)}>"


def _call(plugin: Any, hook: str, arg: Any) -> None:
    f = getattr(plugin, hook, None)
    if f is not None:
        f(arg)

