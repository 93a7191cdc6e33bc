"""The board: host platform, VMs and their devices; the vCPUs, the scheduler and exception handling live in
their own modules and are put together here.

* `Machine` is the platform: the host physical `Bus` (each VM's RAM at its own PA, host devices), the DVM
  `Interconnect`, the `Tracer`, the VMs, the plugins, the firmware services every vCPU calls (PSCI 1.1 over
  HVC/SMC, Arm semihosting over `HLT #0xF000`), and `run()`, which boots each VM's first vCPU and hands over to
  the `Scheduler` (harness/scheduler.py). Exceptions go through `machine.exceptions` (harness/exceptions.py:
  routing, exception entry of Arm ARM D1.10, death lines); `die`, `take_exception`... are kept here as the API.
* `VM`: one `Ram` object, on the host bus at `ram_pa` and on the VM's IPA `Bus` (`vm.ipa`) at `ram_ipa`
  (default 0x4000_0000); MMIO regions of the IPA space (the PL011 console, passed-through host devices) are
  mapped into every vCPU with `Uc.mmio_map` and call the device's `read`/`write`. PSCI and semihosting state.
* `Vcpu` (harness/vcpu.py): one Unicorn instance with its architectural reset state, registers, memory by VA
  and system-register handlers (harness/sysregs.py).

Plugins (`machine.add_plugin(p)`) may define `attach_vcpu(vcpu)`, `before_run(machine)`, `slice_start(vcpu)`,
`slice_end(vcpu)`, `stopped(machine)` (the run stopped on a debugger's request: return to resume),
`after_run(machine)`; see docs/DESIGN.md "Harness API".

Time: `machine.clock` (harness/clock.py) is the one virtual clock - the generic timers (`machine.timers`,
harness/timer.py), semihosting's SYS_CLOCK/SYS_ELAPSED/SYS_TIME and trace timestamps read it; the scheduler
advances it.

Not modelled yet: stage 2 for vCPUs (the IPA space is the Unicorn address space), interrupts (WFI sleeps until a
timer output or a host kick wakes it, harness/scheduler.py); exceptions: see harness/exceptions.py.
"""
from __future__ import annotations

import ctypes
import os
import sys
import time
from typing import Any, Callable

from unicorn.arm64_const import UC_ARM64_REG_X0, UC_ARM64_REG_X1, UC_ARM64_REG_X2, UC_ARM64_REG_X3

from devmodel.bus import Bus
from devmodel.dvm import Interconnect
from devmodel.pl011 import PL011, PL011_SIZE
from devmodel.psci import CpuOff, CpuOn, Psci, Standby, SystemOff, SystemReset
from devmodel.fdt import FdtError
from devmodel.semihosting import Semihosting, heapinfo_for_layout, qemu_cmdline
from devmodel.trace import NULL_TRACER, Tracer, define

from .board import board_spec
from .clock import VirtualClock
from .console import SLICE_PLUGIN
from .cpu import DEFAULT_CPU, cpu_model
from .debug import Debug
from .devicetree import BoardSpecError, DeferredBoardDtb, board_dtb, load_user_dtb, psci_method
from .elfload import ElfImage, Symbolizer
from .exceptions import EXCEPTION_OPT_IN, Exceptions
from .exits import HarnessInputError, Kind, Outcome, exit_line_status
from .gic import UART_INTID, VmGic, default_gic_version
from .image import BootPlan, plan_boot
from .interrupts import InterruptDelivery
from .log import Log
from .pci import PcieBoard
from .pmu import Pmus
from .scheduler import DEFAULT_QUANTUM, Scheduler
from .interrupt import stoppable
from .semihost import ConsoleInput, SemihostingPort
from .timer import GenericTimers
from .userfile import user_file
from .vcpu import PAGE, Vcpu, mpidr_of
from .virtio import WINDOW_BASE as VIRTIO_MMIO_IPA
from .virtio import WINDOW_SIZE as VIRTIO_MMIO_WINDOW
from .virtio import VirtioTransports

__all__ = ["Machine", "VM", "Vcpu", "CodeRange", "DEFAULT_RAM_IPA", "DEFAULT_RAM_SIZE", "PL011_IPA",
           "DEFAULT_QUANTUM", "EXCEPTION_OPT_IN", "mpidr_of", "write_console", "ConsoleInput"]

DEFAULT_RAM_IPA = 0x4000_0000
DEFAULT_RAM_SIZE = 128 << 20
PL011_IPA = 0x0900_0000
HOST_RAM_BASE = 0x1_0000_0000          # first host PA handed out for VM RAM
_MASK64 = (1 << 64) - 1

# Emitted by harness/exceptions.py; declared here, in the module the trace catalogue (harness/trace/catalog.py)
# imports for the machine's events.
define("guest_exception", ("cpu", "pc", "el", "ec", "esr", "elr", "far", "vector"),
       "an exception taken at the guest's own vector (harness/exceptions.py): pc of the instruction, target EL, "
       "ESR/ELR/FAR written, vector address entered (esr/far are None when not written)")


class CodeRange:
    """Executable bytes loaded into a VM: `vaddr` is where the guest executes them, `ipa` where they are."""

    __slots__ = ("vaddr", "ipa", "data")

    def __init__(self, vaddr: int, ipa: int, data: bytes):
        self.vaddr, self.ipa, self.data = vaddr, ipa, data

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


#: largest guest RAM: the default IPA layout puts RAM at 0x4000_0000 below the 40-bit IPA space used by
#: the host stage 2, and each VM's RAM is one host buffer
MAX_RAM = 16 << 30


class VM:
    """A guest: RAM (one buffer, at `ram_pa` on the host bus and `ram_ipa` in `ipa`), devices, vCPUs."""

    def __init__(self, machine: "Machine", name: str, *, ram_size: int, ram_pa: int, ram_ipa: int, ncpus: int,
                 vmid: int, start_el: int, console: bool, cpu: str = DEFAULT_CPU,
                 virtio_modern: bool = False, chr_testdev: bool = False, gic_version: int | None = None,
                 ram_chunk: int = 0):
        if ram_size <= 0 or ram_size % PAGE or ram_ipa % PAGE or ram_pa % PAGE:
            raise ValueError(f"{name}: RAM size/addresses must be 4 KiB aligned "
                             f"(size {ram_size:#x}, ipa {ram_ipa:#x}, pa {ram_pa:#x})")
        if not 1 <= ncpus <= 256:
            raise ValueError(f"{name}: {ncpus} vCPUs (1-256 supported)")
        if start_el not in (1, 2):
            raise ValueError(f"{name}: start_el {start_el} (1 or 2)")
        cpu_model(cpu)                               # ValueError naming the models
        self.machine = machine
        self.name = name
        self.vmid = vmid
        self.start_el = start_el
        self.cpu = cpu                               # CPU model of its vCPUs (harness/cpu.py)
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
        self.ram_chunk = ram_chunk                   # vCPUs map RAM in pieces of this size (0: one region)
        self.ipa = Bus()
        self.ipa.add_ram(ram_ipa, ram_size, "ram", self.ram)
        self.output = bytearray()                    # everything the guest printed (console + semihosting)
        self.outcome: Outcome | None = None
        self.image: ElfImage | None = None
        self.symbolizer = Symbolizer()
        self.code: list[CodeRange] = []
        self._loaded_code: list[CodeRange] = []      # the last image's ranges (a second load replaces them)
        self.entry: int | None = None
        self.exception_ecs_ipa: int | None = None    # IPA of the guest's EXCEPTION_OPT_IN bitmap, if it has one
        log = machine.log
        self.pl011 = self._pl011() if console else None
        self.virtio = self._virtio_transports(virtio_modern, chr_testdev)
        self.pcie = PcieBoard(self)                  # QEMU virt's ECAM host bridge (harness/pci.py)
        self.pcie.map(self.ipa)
        self.psci = Psci([mpidr_of(i) for i in range(ncpus)], entry_ok=self.in_ram, tracer=machine.tracer, log=log)
        self.semihosting = machine.new_semihosting(self)
        self.boot: BootPlan | None = None             # how the image was placed (harness/image.py)
        self.bootargs = ""                           # --append: /chosen/bootargs and SYS_GET_CMDLINE
        self.initrd: tuple[int, int] | None = None   # [start, end) of the loaded initrd (-initrd), for the tree
        self.user_dtb: str | None = None             # --dtb FILE (None: the board's own tree)
        self.dtb: bytes | None = None                # the tree the guest got at boot (None: no tree)
        self._board_dtb: tuple[Any, bytes] | None = None   # (BoardSpec, DTB) of the last board tree built
        self.vcpus: list[Vcpu] = []
        for i in range(ncpus):
            v = Vcpu(self, i)
            self.vcpus.append(v)
            machine.vcpus.append(v)
        self.gic = VmGic(self, default_gic_version(ncpus) if gic_version is None else gic_version)
        self._wire_interrupts()

    def _wire_interrupts(self) -> None:
        """The board's wired interrupts into this VM's GIC (harness/gic.py, at QEMU virt's addresses): the PL011's
        UARTINTR (SPI 1), the virtio-mmio transports (SPI 16 + i), the SMMUs mapped in (`device_added`)."""
        if self.pl011 is not None:
            self.pl011.irq = self.gic.line(UART_INTID)
        self.virtio.irq_handler = lambda spi, level: self.gic.set_spi(32 + spi, bool(level))
        for region in self.ipa.regions:
            self.gic.device_added(region.target)

    @property
    def gic_version(self) -> int:
        """2 or 3: the VM's GIC (QEMU's -machine gic-version=N). Settable until the VM has run (the controller is
        rebuilt; the tree describes the new one)."""
        return self.gic.version

    @gic_version.setter
    def gic_version(self, version: int | None) -> None:
        version = default_gic_version(len(self.vcpus)) if version is None else version
        if version == self.gic.version:
            return
        if any(v.slices for v in self.vcpus) or self.gic.armed:
            raise HarnessInputError(f"{self.name}: the GIC version cannot change once the VM has run")
        old = self.gic
        old.unmap()
        try:
            self.gic = VmGic(self, version)
        except HarnessInputError:
            old.remap()
            self.gic = old
            raise
        self._wire_interrupts()

    def _pl011(self) -> PL011:
        """The console UART at QEMU virt's 0x0900_0000; its receive side reads the machine's console input once
        the guest listens (devmodel/pl011.py)."""
        m = self.machine
        uart = PL011(lambda b: self._console(b, 1), name=f"{self.name}.pl011", log=m.log, tracer=m.tracer)
        uart.source = lambda n: m.console_input.read(n)
        self.ipa.add_device(PL011_IPA, PL011_SIZE, uart, "pl011")
        return uart

    def _virtio_transports(self, modern: bool, chr_testdev: bool) -> VirtioTransports:
        """QEMU virt's 32 virtio-mmio transports (harness/virtio.py); arm/run's chr-testdev on the highest."""
        t = VirtioTransports(self, modern=modern)
        self.ipa.add_device(VIRTIO_MMIO_IPA, VIRTIO_MMIO_WINDOW, t, "virtio-mmio")
        if chr_testdev:
            t.defer_chr_testdev()                     # built at the guest's first access (start-up)
        return t

    # -- address space ------------------------------------------------------------------------------
    def in_ram(self, ipa: int, size: int = 1) -> bool:
        return self.ram_ipa <= ipa and ipa + size <= self.ram_ipa + self.ram.size

    def add_device(self, ipa: int, size: int, device: Any, name: str | None = None) -> None:
        """Map an MMIO device (emulated, or a host device passed through) at `ipa` in this VM."""
        if ipa % PAGE or size % PAGE:
            raise ValueError(f"{name or device}: MMIO window [{ipa:#x}, +{size:#x}) must be 4 KiB aligned")
        self.ipa.add_device(ipa, size, device, name)
        for v in self.vcpus:
            v.map_mmio(ipa, size, device)
        self.gic.device_added(device)

    # -- loading ------------------------------------------------------------------------------------
    def load(self, image: ElfImage | str | os.PathLike, *, append: str | None = None,
             dtb: str | os.PathLike | None = None, initrd: bytes | str | os.PathLike | None = None) -> BootPlan:
        """Load an image as QEMU's `-kernel` does (harness/image.py: an ELF's PT_LOAD segments, a raw `.bin`/
        `.flat` or an arm64 `Image` at RAM + 0x80000 behind QEMU's boot stub, gzip inflated) with the device
        tree (the board's, built at boot from the devices the VM has then, or the user's `dtb` file with QEMU's
        fix-ups) where QEMU puts it; `append` is the kernel command line (/chosen/bootargs and
        SYS_GET_CMDLINE); `initrd` (bytes, or a file: QEMU's -initrd) goes where QEMU puts it, named in the
        tree's /chosen. vCPU 0 starts at the plan's entry. Raises ImageError (an ElfLoadError) or
        HarnessInputError with a one-line message naming the file."""
        path = image.path if isinstance(image, ElfImage) else image
        before = self.bootargs, self.user_dtb, self.initrd
        self.bootargs, self.user_dtb = append or "", None if dtb is None else str(dtb)
        try:
            rd = _initrd_bytes(initrd)
            self.initrd = None
            blob, why_none = self._planned_dtb()
            plan = plan_boot(path, ram_base=self.ram_ipa, ram_size=self.ram.size, dtb=blob, initrd=rd)
            if plan.initrd is not None and blob is not None:       # the tree names the initrd: same size
                self.initrd = plan.initrd
                plan = plan_boot(path, ram_base=self.ram_ipa, ram_size=self.ram.size, dtb=self.device_tree(),
                                 initrd=rd)
            if why_none and plan.kind != "elf":
                raise HarnessInputError(f"{path}: no device tree for this board ({why_none})")
        except HarnessInputError:
            self.bootargs, self.user_dtb, self.initrd = before       # a refused image changes nothing
            raise
        self._place(plan)
        elf = plan.elf
        self.boot, self.image, self.entry = plan, elf, plan.entry
        self.symbolizer = elf.symbolizer if elf is not None else Symbolizer()
        ipa = elf.object_ipa(EXCEPTION_OPT_IN) if elf is not None else None
        self.exception_ecs_ipa = ipa if ipa is not None and self.in_ram(ipa, 8) else None
        sh = self.semihosting
        sh.heap = heapinfo_for_layout(self.ram_ipa, self.ram.size, plan.rom_regions())
        # argv's bytes as given (a path or --append that is not UTF-8 arrives as surrogate escapes), as QEMU
        sh.cmdline = qemu_cmdline(str(path), append).encode("utf-8", "surrogateescape")
        log = self.machine.log
        for note in plan.notes + ((f"no device tree: {why_none}",) if why_none else ()):
            log("guest_errors", f"{self.name}: {path}: {note}")
        return plan

    def _planned_dtb(self) -> tuple[bytes | DeferredBoardDtb | None, str]:
        """The tree to plan the boot with (the board's is rebuilt at boot: same size), or None and why not.
        The board's is built when the plan needs its bytes: an ELF with less room below it than the tree's
        size gets none (harness/image.py), and its boot builds and pads no tree."""
        try:
            if self.user_dtb is not None:
                return self.device_tree(), ""
            spec = board_spec(self, bootargs=self.bootargs, gic_version=self.gic_version, initrd=self.initrd)
            spec.validate()
        except BoardSpecError as e:
            return None, str(e)
        except FdtError as e:
            raise HarnessInputError(str(e)) from None
        return DeferredBoardDtb(spec, self._board_tree), ""

    def _place(self, plan: BootPlan) -> None:
        elf_vaddr = {f"elf[{i}]": s.vaddr for i, s in enumerate(plan.elf.segments)} if plan.elf else {}
        self.code = [c for c in self.code if c not in self._loaded_code]
        self._loaded_code = []
        for s in plan.segments:
            off = s.addr - self.ram_ipa
            self.ram.buf[off:off + len(s.data)] = s.data
            self.ram.buf[off + len(s.data):off + s.memsz] = bytes(s.memsz - len(s.data))
            if s.executable:
                self._loaded_code.append(CodeRange(elf_vaddr.get(s.name, s.addr), s.addr, s.data))
        self.code += self._loaded_code

    def device_tree(self, bootargs: str | None = None) -> bytes:
        """The DTB this VM's guest gets (`--dtb` file fixed up as QEMU does, or the board's tree padded to
        QEMU's 1 MiB), from the devices it has now (harness/board.py). BoardSpecError for a board the tree
        cannot describe; FdtError (one line naming the file) for a bad user tree."""
        args = self.bootargs if bootargs is None else bootargs
        if self.user_dtb is not None:
            return load_user_dtb(self.user_dtb, ram=((self.ram_ipa, self.ram.size),), bootargs=args,
                                 psci=psci_method(self.start_el), initrd=self.initrd)
        return self._board_tree(board_spec(self, bootargs=args, gic_version=self.gic_version, initrd=self.initrd))

    def _board_tree(self, spec: Any) -> bytes:
        """board_dtb(spec), built once for a spec (BoardSpec is a value: a load and its boot share the tree)."""
        last = self._board_dtb
        if last is not None and last[0] == spec:
            return last[1]
        blob = board_dtb(spec)
        self._board_dtb = (spec, blob)
        return blob

    def write_device_tree(self) -> None:
        """At boot: the board's tree rebuilt from the devices the VM has now, written where the plan put it
        (same size: QEMU's 1 MiB). A user's tree was written at load."""
        plan = self.boot
        if plan is None or plan.dtb_addr is None:
            return
        seg = next(s for s in plan.segments if s.name == "dtb")
        blob = seg.data if self.user_dtb is not None else self.device_tree()
        if len(blob) != len(seg.data):
            raise HarnessInputError(f"{self.name}: the device tree grew to {len(blob)} bytes, more than the "
                                    f"{len(seg.data)} planned")
        off = plan.dtb_addr - self.ram_ipa
        self.ram.buf[off:off + len(blob)] = blob
        self.dtb = blob

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
        """Has an old guest (one with the EXCEPTION_OPT_IN bitmap) opted in to exceptions of class `ec`?"""
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
    """The platform. See the module docstring."""

    def __init__(self, *, tracer: Tracer | None = None, log: Log | None = None,
                 console: Callable[[VM, bytes, int], None] | None = None, quantum: int = DEFAULT_QUANTUM,
                 tcg_buffer_size: int = 32 << 20, semihosting_root: str | os.PathLike | None = None,
                 semihosting_allow_system: bool = False, semihosting_userspace: bool = False,
                 console_input: ConsoleInput | None = None, isatty: Callable[[int], bool] | None = None,
                 cpu: str = DEFAULT_CPU):
        self.clock = VirtualClock()
        self.scheduler = Scheduler(self, quantum, self.clock)
        self.exceptions = Exceptions(self)
        self.debug = Debug(self)
        self.cpu = cpu                          # default CPU model of the VMs (harness/cpu.py)
        self.bus = Bus()
        self.tracer = tracer if tracer is not None else Tracer()
        owner = getattr(self.tracer.clock, "__self__", None)
        if self.tracer is not NULL_TRACER and (self.tracer.clock is None or isinstance(owner, VirtualClock)):
            self.tracer.clock = self.clock.now          # Record.ts: this machine's virtual time in ticks
        self.interconnect = Interconnect(self.tracer)
        self.log = log if log is not None else Log()
        self.console = console if console is not None else _default_console
        self.tcg_buffer_size = tcg_buffer_size
        self.vms: list[VM] = []
        self.vcpus: list[Vcpu] = []
        self.plugins: list[Any] = []
        self.outcome: Outcome | None = None
        self._next_pa = HOST_RAM_BASE
        self._disasm = None
        self.timers = GenericTimers(self)
        self.scheduler.add_wake_source(self.timers.wakes, "generic timer")
        self.pmus = Pmus(self)                           # each vCPU's PMUv3 (harness/pmu.py)
        self.interrupts = InterruptDelivery(self)      # the GICs' outputs into the vCPUs (harness/interrupts.py)
        # semihosting (harness/semihost.py, devmodel/semihosting.py): every VM's host files live under the root
        # (None: no host files); SYS_SYSTEM only when allowed; EL0 calls only with `semihosting_userspace`
        # (QEMU's -semihosting-config userspace=on); SYS_READC/SYS_READ of `:tt` read `console_input`
        # (default: the harness's stdin, never blocking the machine).
        self.semihosting_root = None if semihosting_root is None else os.fspath(semihosting_root)
        self.semihosting_allow_system = semihosting_allow_system
        self.semihosting_userspace = semihosting_userspace
        self.console_input = console_input if console_input is not None else ConsoleInput(0)
        self.isatty = isatty
        self.deadline: float | None = None          # time.monotonic() at which the run times out (scheduler)
        self._ports: dict[int, SemihostingPort] = {}
        self.add_plugin(self.exceptions)        # ERETs and the runtime's unhandled-exception call (before_run)
        self.add_plugin(self.debug)             # per-vCPU debug state; applies debug register writes per slice
        self.add_plugin(self.interrupts)        # IRQ/FIQ taken at slice starts, unmask sites, ISR_EL1
        self.add_plugin(SLICE_PLUGIN)           # the native console's flags at slice starts (harness/console.py)

    @property
    def quantum(self) -> int:
        return self.scheduler.quantum

    @property
    def retired(self) -> int:
        """Instructions charged machine-wide (the `max_insns` budget; virtual time is `clock`)."""
        return self.scheduler.retired

    def virtual_ns(self) -> int:
        """Virtual time in nanoseconds, the one clock semihosting reads (SYS_CLOCK, SYS_ELAPSED, SYS_TIME at
        SYS_TICKFREQ = 10^9, QEMU's): the machine's virtual clock (harness/clock.py), sampled as a guest read."""
        return self.clock.sample_ns()

    def new_semihosting(self, vm: "VM") -> Semihosting:
        """A VM's semihosting state with the machine's settings (root, SYSTEM, console input, clock)."""
        try:
            return Semihosting(vm._console, clock=self.virtual_ns, log=self.log, tracer=self.tracer,
                               root=self.semihosting_root, allow_system=self.semihosting_allow_system,
                               stdin=self.console_input.read, isatty=self.isatty, overdue=self._overdue)
        except OSError as e:
            raise HarnessInputError(f"semihosting root {self.semihosting_root}: {e.strerror or e}") from None

    def _overdue(self) -> bool:
        """The run's --timeout has passed (a semihosting call without end stops then: harness/semihost.py)."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def close(self) -> None:
        """Release what the VMs hold on the host (semihosting files left open, the semihosting root)."""
        for vm in self.vms:
            vm.semihosting.close()

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
               start_el: int = 1, console: bool = True, cpu: str | None = None,
               virtio_modern: bool = False, chr_testdev: bool = False, gic_version: int | None = None,
               mte: bool = False) -> VM:
        name = name or f"vm{len(self.vms)}"
        if any(vm.name == name for vm in self.vms):
            raise ValueError(f"a VM named {name} exists")
        pa = self.alloc_pa(ram_size) if ram_pa is None else ram_pa
        if mte:                                   # -machine mte=on (harness/mte.py)
            from .mte import enable, ram_chunk
        vm = VM(self, name, ram_size=ram_size, ram_pa=pa, ram_ipa=ram_ipa, ncpus=ncpus,
                vmid=len(self.vms) + 1 if vmid is None else vmid, start_el=start_el, console=console,
                cpu=self.cpu if cpu is None else cpu, virtio_modern=virtio_modern, chr_testdev=chr_testdev,
                gic_version=gic_version, ram_chunk=ram_chunk(ram_size) if mte else 0)
        self.vms.append(vm)
        for v in vm.vcpus:
            self.timers.attach(v)
            self.pmus.attach(v)
            for p in self.plugins:
                _call(p, "attach_vcpu", v)
        if mte:
            enable(vm)
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

    # -- exceptions (harness/exceptions.py; these are the API plugins and the TLBI trap use) ----------------
    def die(self, vcpu: Vcpu, kind: Kind, what: str, pc: int, esr: int | None, far: int | None = None,
            detail: str = "") -> Outcome:
        """Stop with a one-line death message (`Exceptions.die`)."""
        return self.exceptions.die(vcpu, kind, what, pc, esr, far, detail)

    def die_undefined(self, vcpu: Vcpu, pc: int | None = None, why: str = "") -> Outcome:
        """Undefined instruction death, exit status 132 (`Exceptions.die_undefined`); safe in any hook."""
        return self.exceptions.die_undefined(vcpu, pc, why)

    def take_undefined(self, vcpu: Vcpu, pc: int | None = None, why: str = "") -> Outcome | None:
        """An undefined instruction: the guest's vector if it has one, else death (`Exceptions.take_undefined`)."""
        return self.exceptions.take_undefined(vcpu, pc, why)

    def take_exception(self, vcpu: Vcpu, kind: Kind, what: str, pc: int, esr: int | None, far: int | None = None,
                       detail: str = "", *, elr: int | None = None) -> Outcome | None:
        """A synchronous exception: the guest's vector if it has one, else death (`Exceptions.take`)."""
        return self.exceptions.take(vcpu, kind, what, pc, esr, far, detail, elr=elr)

    def deliver_exception(self, vcpu: Vcpu, esr: int, elr: int, far: int | None = None, *,
                          pc: int | None = None, force: bool = False) -> bool:
        """Exception entry at the guest's vector if it can be taken there (`Exceptions.deliver`)."""
        return self.exceptions.deliver(vcpu, esr, elr, far, pc=pc, force=force)

    # -- firmware services (called from harness/exceptions.py) -----------------------------------------------
    def psci_call(self, vcpu: Vcpu, conduit: str, pc: int) -> None:
        """An HVC (SMC from EL2) from `vcpu`: a PSCI call (x0-x3 in, x0 out), its power-state action done."""
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
            self.scheduler.sleep(vcpu, pc - 4, "PSCI CPU_SUSPEND")     # QEMU's CPU_SUSPEND is a WFI
        elif isinstance(act, SystemOff):
            # kvm-unit-tests without chr-testdev: its "EXIT: STATUS=" line is the status (harness/exits.py)
            line = exit_line_status(bytes(vm.output)) if not vm.virtio.chr_testdev and b"EXIT: " in vm.output \
                else None
            self.stop(vcpu, Outcome(Kind.EXIT, f"{vm.name}: PSCI SYSTEM_OFF" + (
                "" if line is None else f" after the guest's 'EXIT: STATUS=' line (arm/run: status {line})"),
                0 if line is None else line, vcpu.dvm_name, pc))
        elif isinstance(act, SystemReset):
            self.stop(vcpu, Outcome(Kind.EXIT, f"{vm.name}: PSCI SYSTEM_RESET (no reboot, like qemu -no-reboot)",
                                    0, vcpu.dvm_name, pc))

    def semihosting_call(self, vcpu: Vcpu) -> bool:
        """An undefined-instruction exception of `vcpu`: when it is a semihosting `HLT #0xF000` (at EL1/EL2, or
        EL0 with `semihosting_userspace`), make the call (x0 operation, x1 parameter, result in x0, resume
        after it) and return True; else False (nothing done). harness/semihost.py has the details."""
        port = self._ports.get(vcpu.id)
        if port is None:
            port = self._ports[vcpu.id] = SemihostingPort(vcpu)
        if not port.decode() or (port.el == 0 and not self.semihosting_userspace):
            return False
        pc, vm = port.pc, vcpu.vm
        res = vm.semihosting.call(port.op, port.param, port, vcpu.index)
        if "int" in self.log.enabled:
            self.log("int", f"{vcpu.dvm_name}: semihosting {res.name}({port.param:#x}) at pc {pc:#x} -> "
                            f"{res.ret if res.exit_status is None else 'exit ' + str(res.exit_status)}"
                            f"{' (blocked: no console input)' if res.blocked else ''}")
        if res.fatal:                                   # an unsupported operation: QEMU abort()s
            self.exceptions.die(vcpu, Kind.FATAL, f"semihosting: {res.fatal}", pc, None)
        elif res.exit_status is not None:
            self.stop(vcpu, Outcome(Kind.EXIT, f"{vm.name}: semihosting {res.name}({res.exit_status})",
                                    res.exit_status, vcpu.dvm_name, pc))
        elif res.blocked:
            self._semihosting_wait(vcpu, res.name, pc)
        elif res.interrupted:                           # out of time inside the call: the timeout ends the run
            vcpu.uc.emu_stop()
        elif res.ret is None:
            port.resume.write(pc + 4)
        else:
            port.finish.write(res.ret & _MASK64, pc + 4)
        return True

    def _semihosting_wait(self, vcpu: Vcpu, name: str, pc: int) -> None:
        """A call found no console input: the PC stays on the HLT and the vCPU makes the call again when it next
        runs (QEMU halts it and re-executes the HLT when input arrives). With no other vCPU to run, wait for the
        input here (up to the run's deadline); once the input has ended nothing can wake it (QEMU would wait
        forever): the run ends (status 124) when no other vCPU can run."""
        inp = self.console_input
        others = any(v is not vcpu and self.scheduler.runnable(v) for v in self.vcpus)
        if not others and not inp.ended:
            inp.wait(None if self.deadline is None else max(0.0, self.deadline - time.monotonic()))
        if not others and inp.ended:
            self.stop(vcpu, Outcome(Kind.IDLE, f"{vcpu.dvm_name}: semihosting {name} at pc {pc:#x} "
                                               f"<{vcpu.vm.symbolize(pc)}> waits for console input after its "
                                               f"end, and no other vCPU can run", vcpu=vcpu.dvm_name, pc=pc))
        vcpu.uc.emu_stop()

    # -- running -------------------------------------------------------------------------------------
    def run(self, *, max_insns: int | None = None, timeout: float | None = None) -> Outcome:
        """Boot (vCPU 0 of each VM at its entry), then schedule until every VM exited, a vCPU died, or a budget
        ran out. Returns the machine's outcome."""
        if self.outcome is not None:
            return self.outcome
        for vm in self.vms:
            if vm.entry is None:
                raise HarnessInputError(f"{vm.name}: nothing loaded")
            if not vm.vcpus[0].on and vm.outcome is None and vm.vcpus[0].slices == 0:
                vm.write_device_tree()
                vm.vcpus[0].power_on(vm.entry)
        for p in self.plugins:
            _call(p, "before_run", self)
        try:
            # a debugger's stop ends `scheduler.run` without an outcome: the plugins' `stopped(machine)` (the
            # gdb stub's session) returns when the machine may go on, and the run resumes where it stopped
            with stoppable(self):                        # ^C stops a vCPU inside emu_start (harness/interrupt.py)
                while self.scheduler.run(max_insns, timeout):
                    for p in self.plugins:
                        _call(p, "stopped", self)
        finally:
            for p in self.plugins:
                _call(p, "after_run", self)
        return self.outcome


def _initrd_bytes(initrd: bytes | str | os.PathLike | None) -> bytes | None:
    """-initrd's contents: the bytes given, or the file's (a one-line HarnessInputError naming it)."""
    if initrd is None or isinstance(initrd, (bytes, bytearray)):
        return initrd
    with user_file(initrd, HarnessInputError) as f:
        return f.read()


def _call(plugin: Any, hook: str, arg: Any) -> None:
    f = getattr(plugin, hook, None)
    if f is not None:
        f(arg)
