"""The vCPU side of Arm semihosting: the `HLT #0xF000` call site, guest memory by VA for the model
(devmodel/semihosting.py), and the console input it reads.

`SemihostingPort` (one per vCPU, made on its first exception) is what `Machine.semihosting_call` runs from
Unicorn's `UC_HOOK_INTR` for an undefined-instruction exception:

1. one batched register read (harness/ucregs.py): PC, X0, X1, PSTATE, SCTLR_EL1/EL2, and the regime's
   TCR/TTBRs when its MMU is on;
2. the instruction word at PC through the vCPU's translation cache (harness/vacache.py: exact, never stale);
   anything but `HLT #0xF000` is not a semihosting call (the caller goes on with the undefined instruction),
   nor is one at EL0 (QEMU 7.2 treats it as undefined unless `-semihosting-config userspace=on`, here
   `Machine(semihosting_userspace=True)`);
3. `vm.semihosting.call(op, param, port)`: the port is the model's `GuestMemory`, reading and writing by VA
   through the cache, guest RAM directly (`vm.ram.buf`), the VM's IPA bus otherwise (a write to a device is
   dropped: QEMU's semihosting writes with address_space_write_rom, which skips MMIO; a write to RAM drops the
   code Unicorn translated from those bytes, as QEMU's does);
4. the result: X0 and PC + 4 in one batched write; an exit ends the VM; `fatal` (an unsupported
   operation: QEMU abort()s) is a death line with status 134; `blocked` (console input not there yet, or
   over) leaves PC on the HLT so that the call is made again, as QEMU re-executes it when input arrives
   (see `ConsoleInput` and `Machine.semihosting_call`).

`ConsoleInput` is the console input of SYS_READC and SYS_READ of `:tt`: non-blocking reads of a file
descriptor (the harness's stdin by default) or of fixed bytes, `wait(timeout)`, and `ended`.
"""
from __future__ import annotations

import os
import select
from typing import TYPE_CHECKING

from unicorn.arm64_const import (UC_ARM64_REG_PC, UC_ARM64_REG_PSTATE, UC_ARM64_REG_X0, UC_ARM64_REG_X1)

from devmodel.bus import BusError
from devmodel.semihosting import HLT_SEMIHOSTING

from .ucregs import RegBatch, RegWriter
from .vacache import VaCache

if TYPE_CHECKING:
    from .vcpu import Vcpu

__all__ = ["SemihostingPort", "ConsoleInput"]

_PAGE = 0x1000
_MASK64 = (1 << 64) - 1
# System registers (op0, op1, CRn, CRm, op2), Arm ARM D17.2
SCTLR_EL1, SCTLR_EL2 = (3, 0, 1, 0, 0), (3, 4, 1, 0, 0)
TCR_EL1, TTBR0_EL1, TTBR1_EL1 = (3, 0, 2, 0, 2), (3, 0, 2, 0, 0), (3, 0, 2, 0, 1)
TCR_EL2, TTBR0_EL2 = (3, 4, 2, 0, 2), (3, 4, 2, 0, 0)
ID_AA64MMFR = ((3, 0, 0, 7, 0), (3, 0, 0, 7, 1), (3, 0, 0, 7, 2))


class ConsoleInput:
    """Console input that never blocks the machine: `read(n)` returns up to n bytes, None when nothing is
    there yet, b"" at the end (then `ended` is set); `wait(timeout)` sleeps until input (or its end) is
    there and says whether it is. Over a file descriptor (default 0, the harness's stdin) or fixed bytes."""

    def __init__(self, fd: int | None = 0, data: bytes | None = None):
        self.fd = fd if data is None else None
        self.data = bytearray(data or b"")
        self.ended = False

    @classmethod
    def from_bytes(cls, data: bytes) -> "ConsoleInput":
        return cls(None, bytes(data))

    def _ready(self, timeout: float | None) -> bool:
        try:
            return bool(select.select([self.fd], [], [], timeout)[0])
        except (OSError, ValueError):        # a closed or invalid descriptor: no more input
            self.ended = True
            return True

    def read(self, n: int) -> bytes | None:
        if self.ended or n <= 0:
            return b""
        if self.fd is None:
            out = bytes(self.data[:n])
            del self.data[:n]
            self.ended = not out
            return out
        if not self._ready(0):
            return None
        if self.ended:
            return b""
        try:
            out = os.read(self.fd, n)
        except BlockingIOError:
            return None
        except OSError:
            out = b""
        self.ended = not out
        return out

    def wait(self, timeout: float | None) -> bool:
        """Sleep until input or its end is there (at most `timeout` seconds; None: no limit)."""
        if self.ended or self.fd is None:
            return True
        return self._ready(timeout)


class SemihostingPort:
    """The semihosting call site of one vCPU (see the module docstring); also the model's `GuestMemory`."""

    def __init__(self, vcpu: "Vcpu"):
        uc = vcpu.uc
        self.vcpu = vcpu
        vm = vcpu.vm
        self.ram = vm.ram.buf
        self.ram_base, self.ram_end = vm.ram_ipa, vm.ram_ipa + vm.ram.size
        self.bus = vm.ipa
        self.state = RegBatch(uc, (UC_ARM64_REG_PC, UC_ARM64_REG_X0, UC_ARM64_REG_X1, UC_ARM64_REG_PSTATE,
                                   SCTLR_EL1, SCTLR_EL2))
        self.mmu_el1 = RegBatch(uc, (TCR_EL1, TTBR0_EL1, TTBR1_EL1))
        self.mmu_el2 = RegBatch(uc, (TCR_EL2, TTBR0_EL2))
        self.finish = RegWriter(uc, (UC_ARM64_REG_X0, UC_ARM64_REG_PC))
        self.resume = RegWriter(uc, UC_ARM64_REG_PC)
        self.remove_cache = uc.ctl_remove_cache
        self.cache = VaCache(vm.ipa.read64, tuple(uc.cpr_read(*r) for r in ID_AA64MMFR))
        self.pc = self.op = self.param = self.el = 0

    # -- the call -------------------------------------------------------------------------------------------
    def decode(self) -> bool:
        """Read the vCPU's state; True when it stopped on a semihosting `HLT #0xF000` (PC, X0, X1, EL kept)."""
        pc, x0, x1, pstate, sctlr1, sctlr2 = self.state.read()
        el = (pstate >> 2) & 3
        cache = self.cache
        if el == 2:
            if sctlr2 & 1:
                tcr, ttbr0 = self.mmu_el2.read()
                cache.use(2, sctlr2, tcr, ttbr0, 0)
            else:
                cache.use(2, sctlr2, 0, 0, 0)
        elif sctlr1 & 1:
            cache.use(1, sctlr1, *self.mmu_el1.read())
        else:
            cache.use(1, sctlr1, 0, 0, 0)
        try:
            word = int.from_bytes(self.read_bytes(pc, 4), "little")
        except BusError:
            return False
        self.pc, self.op, self.param, self.el = pc, x0, x1, el
        return word == HLT_SEMIHOSTING

    # -- GuestMemory (devmodel.semihosting): by VA, BusError where nothing is mapped --------------------------
    def read_bytes(self, va: int, size: int) -> bytes:
        if (va & (_PAGE - 1)) + size <= _PAGE:
            ipa = self.cache.ipa(va)
            if self.ram_base <= ipa and ipa + size <= self.ram_end:
                off = ipa - self.ram_base
                return bytes(self.ram[off:off + size])
            return self.bus.read_bytes(ipa, size)
        return b"".join(self.read_bytes(a, n) for a, n in _pages(va, size))

    def write_bytes(self, va: int, data: bytes) -> None:
        size = len(data)
        if (va & (_PAGE - 1)) + size <= _PAGE:
            ipa = self.cache.ipa(va)
            if self.ram_base <= ipa and ipa + size <= self.ram_end:
                off = ipa - self.ram_base
                self.ram[off:off + size] = data
                self.remove_cache(va, min(va + size, _MASK64))   # their translated code goes (as QEMU's write)
            else:
                r = self.bus.find(ipa)
                if r is not None and not r.is_ram and ipa + size <= r.end:
                    return                       # a device: QEMU's address_space_write_rom skips MMIO
                self.bus.write_bytes(ipa, data)
            return
        done = 0
        for a, n in _pages(va, size):            # the pages before an unmapped one are written
            self.write_bytes(a, data[done:done + n])
            done += n


def _pages(va: int, size: int):
    """(va, n) pieces of [va, va + size) that do not cross a 4 KiB boundary."""
    va &= _MASK64
    while size > 0:
        n = min(size, _PAGE - (va & (_PAGE - 1)))
        yield va, n
        va, size = (va + n) & _MASK64, size - n
