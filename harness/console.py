"""The native console path: semihosting SYS_WRITEC/SYS_WRITE0/SYS_WRITE (of `:tt`) and the PL011's transmit side
without a Python callback per character (harness/native/console.c does the common case in C).

`attach(vcpu)` (from `Vcpu.__init__`, before any MMIO region is mapped) gives a vCPU a `NativeConsole` when
the native helpers are on and the library loads (else None: the Python hooks run, with the same output and
traces). It replaces the vCPU's Python `UC_HOOK_INTR` hook by console.c's, which does the console calls it can
prove it answers as devmodel/semihosting.py would (module docstring of console.c) and hands every other
exception to `Vcpu._on_intr`; and `map_uart` maps the VM's PL011 with console.c's accessors, which buffer
UARTDR writes and answer UARTFR reads while the flags Python keeps say that the PL011 model would do nothing
else (`uart_flags`), and hand every other access to the Vcpu's MMIO glue.

Ordering. The buffered bytes are delivered (`drain`: to `vm.semihosting.output(data, 1)` or the PL011's
`output`, with `PL011.transmitted` and the stored UARTDR value brought up to date) at every observation point
of the vCPU's Unicorn (harness/observe.py: this drain is the first deferred work, so it runs before the TLBI
trap's records, which console.c never lets be older than a buffered byte), when the buffer is full or its
source changes, after bytes that end a line (as `write_console` flushes at newlines), and before any access
or exception console.c hands to Python. So everything else the
harness prints (other vCPUs and VMs, the PL011 or semihosting on the slow path, logs, report lines, the
outcome of a fault, a budget or a timeout) comes after the bytes the guest printed before it, as on the
Python path. The flags are recomputed at every slice start (`slice_start`: trace events or `-d int` turned
on since give the Python path, which emits them) and after every PL011 access or input that reaches the
model (`PL011.changed`); `suspend()` (Vcpu.stop_after_access in an MMIO callback) sends everything to Python
until the next slice, while an interrupted instruction is recorded and replayed.
"""
from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

from devmodel.pl011 import INT_TX, PL011

from . import observe
from .native import console as cn

if TYPE_CHECKING:
    from .vcpu import Vcpu

__all__ = ["NativeConsole", "attach", "uart_flags", "BUFFER", "SLICE_PLUGIN"]

BUFFER = 64 << 10                    # bytes a vCPU buffers before Python delivers them
_UARTCR_TX = 0x101                   # UARTCR.UARTEN | UARTCR.TXE (PL011 TRM 3.3.8)
_UARTFR = 0x018
_UART_EVENTS = frozenset(("pl011_write", "pl011_putchar"))
_SEMIHOSTING_EVENT = "semihosting_call"


def uart_flags(uart: PL011) -> tuple[int, int]:
    """(console.c flags, UARTFR value) for `uart` now: CN_UART_TX when a UARTDR write would only transmit its
    byte (UART and transmitter enabled, so no guest-error report; TXRIS already set, so no interrupt change;
    no PL011 trace event on), CN_UART_FR with the value a UARTFR read gives while the guest does not listen
    (no input is pulled, so the value only changes through the model, which calls `changed`)."""
    flags = 0
    if not (_UART_EVENTS & uart.tracer.enabled):
        if uart.regs["UARTCR"] & _UARTCR_TX == _UARTCR_TX and uart.int_level & INT_TX:
            flags |= cn.CN_UART_TX
    if not uart.listening:
        return flags | cn.CN_UART_FR, uart.regs.read(_UARTFR, 4)
    return flags, 0


class NativeConsole:
    """One vCPU's console.c state (see the module docstring)."""

    def __init__(self, vcpu: "Vcpu", lib: Any, obs: observe.Observer, ptr: Any, keep: Any):
        self.vcpu, self.lib, self.obs = vcpu, lib, obs
        self.ptr, self.c, self.keep = ptr, ptr.contents, keep
        self.uart: PL011 | None = None
        self.uart_ud: tuple | None = None
        self.suspended = False
        self.uart_bits = 0
        self.tlbi_linked = False
        self.python_trap = False
        from .exceptions import EXCP_UDEF
        from .vcpu import _mmio_read, _mmio_write    # here, once: harness/vcpu.py imports this module
        self._mmio_read, self._mmio_write, self._udef = _mmio_read, _mmio_write, EXCP_UDEF
        self.refresh()

    # -- flags ---------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Recompute every flag (the semihosting and UART conditions)."""
        m = self.vcpu.machine
        traced = _SEMIHOSTING_EVENT in self.vcpu.vm.semihosting.tracer.enabled or "int" in m.log.enabled
        self.semi_bits = 0 if traced else cn.CN_SEMIHOSTING
        if self.uart is not None:
            self.uart_bits, self.c.uart_fr = uart_flags(self.uart)
        self.handles_changed()
        self._store()

    def handles_changed(self) -> None:
        """Which semihosting handles (< 64) are `:tt` for writing, per stream (after any Python call)."""
        masks = [0, 0]
        for h, stream in self.vcpu.vm.semihosting.console_handles().items():
            if h < 64:
                masks[stream - 1] |= 1 << h
        self.c.tt_out[0], self.c.tt_out[1] = masks

    def _store(self) -> None:
        flags = self.semi_bits | self.uart_bits
        if self.python_trap:            # its hooks run Python code unobserved: no output may wait in C meanwhile
            flags &= cn.CN_UART_FR
        self.c.flags = flags | (cn.CN_SUSPEND if self.suspended else 0)

    def uart_changed(self) -> None:
        self.uart_bits, self.c.uart_fr = uart_flags(self.uart)
        self._store()

    def suspend(self) -> None:
        """Everything to Python until the next slice (an instruction interrupted in an MMIO callback)."""
        if not self.suspended:
            self.suspended = True
            self._store()

    def slice_start(self) -> None:
        v = self.vcpu
        self.suspended = v.mmio_log is not None or v.replay is not None
        if not self.tlbi_linked:
            self._link_tlbi()
        self.refresh()

    def _link_tlbi(self) -> None:
        """Point console.c at the native TLBI trap's record count of this vCPU (harness/trap.py), if any; a
        trap on its Python hooks (which do not wait for an observation point) turns console output native off."""
        uc = self.vcpu.uc
        for p in self.vcpu.machine.plugins:
            for c in getattr(p, "cpus", ()):
                if getattr(c, "uc", None) is uc:
                    if getattr(c, "tc", None) is not None:
                        self.c.tlbi_n = ctypes.addressof(c.tc)      # tt_cpu.n is its first field
                    else:
                        self.python_trap = True
                    self.tlbi_linked = True
                    return

    # -- the UART ------------------------------------------------------------------------------------
    def map_uart(self, base: int, size: int, uart: PL011, ud: tuple) -> bool:
        """Map the VM's PL011 at `base` with console.c's accessors (False: the caller maps it)."""
        if self.lib.cn_map_uart(self.ptr, base, size) != 0:
            return False
        self.uart, self.uart_ud = uart, ud
        self.dr_wmask = uart.regs.regs["UARTDR"].wmask & 0xFFFF_FFFF     # a 4-byte write's mask (PL011.write)
        watchers = getattr(uart, "native_consoles", None)
        if watchers is None:
            watchers = uart.native_consoles = []
            uart.changed = lambda: [w.uart_changed() for w in watchers]
        watchers.append(self)
        self.uart_changed()
        return True

    # -- delivery ------------------------------------------------------------------------------------
    def drain(self) -> None:
        c = self.c
        n = c.n
        if not n:
            return
        data = ctypes.string_at(c.buf, n)
        c.n = 0
        if c.src == cn.CN_SRC_UART:
            uart, wmask = self.uart, self.dr_wmask
            uart.transmitted += n
            values = uart.regs.values                    # UARTDR as the last write left it (RegisterFile.write)
            values["UARTDR"] = (values["UARTDR"] & ~wmask) | (c.uart_last & wmask)
            uart.output(data)
        else:
            self.vcpu.vm.semihosting.output(data, 2 if c.src == cn.CN_SRC_SEMIHOSTING_ERR else 1)

    def _callback(self, _c: Any, why: int) -> int:
        try:
            if why == cn.CN_WHY_FULL:
                self.drain()
                return 0
            self.obs.sync()                              # this buffer first, then the TLBI trap's records
            c, uc = self.c, self.vcpu.uc
            if why == cn.CN_WHY_INTR:
                self.vcpu._on_intr(uc, c.arg[0], None)
                if c.arg[0] == self._udef:               # semihosting (HLT #0xF000): a SYS_OPEN or SYS_CLOSE
                    self.handles_changed()
            elif why == cn.CN_WHY_MMIO_READ:
                return self._mmio_read(uc, c.arg[0], c.arg[1], self.uart_ud) & 0xFFFF_FFFF_FFFF_FFFF
            elif why == cn.CN_WHY_MMIO_WRITE:
                self._mmio_write(uc, c.arg[0], c.arg[1], c.arg[2], self.uart_ud)
        except BaseException as e:                       # nothing may propagate into Unicorn: emu_start raises it
            observe.fail(self.vcpu.uc, e)
        return 0


def attach(vcpu: "Vcpu") -> NativeConsole | None:
    """The native console of `vcpu` (its C `UC_HOOK_INTR` hook installed), or None (then the caller installs
    the Python hook)."""
    obs = observe.observer(vcpu.uc)
    lib = cn.library() if obs is not None else None
    if lib is None:
        return None
    holder: list[NativeConsole] = []
    keep = cn.CALLBACK(lambda c, why: holder[0]._callback(c, why))
    vm = vcpu.vm
    ptr = lib.cn_new(vcpu.uc._uch, BUFFER, keep, vm.ram_ptr, vm.ram_ipa, vm.ram.size)
    if not ptr:
        return None
    import weakref

    weakref.finalize(vcpu.uc, lib.cn_free, ctypes.cast(ptr, ctypes.c_void_p).value)   # memory only
    console = NativeConsole(vcpu, lib, obs, ptr, keep)
    holder.append(console)
    obs.work.insert(0, console.drain)                    # before the TLBI trap's delivery (module docstring)
    return console


class _SlicePlugin:
    """Machine plugin: each vCPU's native console flags at every slice start."""

    @staticmethod
    def slice_start(vcpu: "Vcpu") -> None:
        nc = getattr(vcpu, "native_console", None)
        if nc is not None:
            nc.slice_start()


SLICE_PLUGIN = _SlicePlugin()
