"""DMA test device, modelled on QEMU's `iommu-testdev` (hw/misc/iommu-testdev.c): an MMIO device with a
StreamID whose DMA goes through an SMMU `translate(sid, ssid, addr, write, exec_, priv)` callable, so guests
or Python can trigger reads, writes and copies and observe translations and faults.

Register map (offsets from the device base, default 0x0910_0000; 32-bit registers, 64-bit ones also accept
32-bit halves; other sizes and unknown offsets are RAZ/WI). The same table is in README.md
("DMA test device").

    0x00 ID         RO  0x444D4154 ("DMAT")
    0x04 STATUS     RO  bit0 DONE, bit1 FAULT (SMMU fault), bit2 BUSERR (bus error after translation),
                        bit3 BADCMD (unknown command or LEN > MAX_LEN); cleared by the next command
    0x08 SID        RW  StreamID the device presents (reset: constructor `sid`)
    0x0C SSID       RW  bits[19:0] SubstreamID, bit31 SSV (SubstreamID valid)
    0x10 IOVA       RW  64-bit: source / target address of the DMA
    0x18 LEN        RW  byte count for COPY (at most MAX_LEN = 1 MiB)
    0x1C CMD        WO  1 READ64 (IOVA -> DATA), 2 WRITE64 (DATA -> IOVA), 3 COPY (LEN bytes IOVA -> DST)
    0x20 DATA       RW  64-bit data register
    0x28 DST        RW  64-bit: COPY destination address
    0x30 FAULT_TYPE RO  event type of the last fault (SMMU EventType number), 0 if none
    0x34 COUNT      RO  commands completed without error
    0x38 FAULT_ADDR RO  64-bit: input address of the faulting access
    0x40 ATTR       RW  bit0 PRIV (privileged access), bit1 EXEC (instruction fetch, reads only)

Accesses are split at 4 KiB boundaries and each piece is translated separately (a fault stops the command;
pieces before it stay written). Not modelled: asynchronous completion, interrupts, ATS.
"""
from __future__ import annotations

from typing import Any, Callable

from .bus import Bus, BusError
from .regs import Access, Reg, RegField, RegisterFile
from .trace import NULL_TRACER, Tracer, define

__all__ = ["DmaTestDevice", "DMATEST_BASE", "DMATEST_SIZE", "CMD_READ64", "CMD_WRITE64", "CMD_COPY",
           "STATUS_DONE", "STATUS_FAULT", "STATUS_BUSERR", "STATUS_BADCMD", "DMATEST_ID", "MAX_LEN", "REGS"]

DMATEST_BASE = 0x0910_0000
DMATEST_SIZE = 0x1000
DMATEST_ID = 0x444D4154
CMD_READ64, CMD_WRITE64, CMD_COPY = 1, 2, 3
STATUS_DONE, STATUS_FAULT, STATUS_BUSERR, STATUS_BADCMD = 1, 2, 4, 8
MAX_LEN = 1 << 20
_PAGE = 4096

define("dmatest_cmd", ("dev", "cmd", "sid", "ssid", "iova", "len", "status", "fault"), "DMA test command done")

RO, RW, WO = Access.RO, Access.RW, Access.WO
REGS = (
    Reg("ID", 0x00, 4, DMATEST_ID, access=RO),
    Reg("STATUS", 0x04, 4, 0, (RegField("DONE", 0, 1, access=RO), RegField("FAULT", 1, 1, access=RO),
                               RegField("BUSERR", 2, 1, access=RO), RegField("BADCMD", 3, 1, access=RO))),
    Reg("SID", 0x08, 4, 0),
    Reg("SSID", 0x0C, 4, 0, (RegField("SSID", 0, 20), RegField("SSV", 31, 1))),
    Reg("IOVA", 0x10, 8, 0),
    Reg("LEN", 0x18, 4, 0),
    Reg("CMD", 0x1C, 4, 0, access=WO),
    Reg("DATA", 0x20, 8, 0),
    Reg("DST", 0x28, 8, 0),
    Reg("FAULT_TYPE", 0x30, 4, 0, access=RO),
    Reg("COUNT", 0x34, 4, 0, access=RO),
    Reg("FAULT_ADDR", 0x38, 8, 0, access=RO),
    Reg("ATTR", 0x40, 4, 0, (RegField("PRIV", 0, 1), RegField("EXEC", 1, 1))),
)

Translate = Callable[..., Any]


class _Failed(Exception):
    """Internal: a DMA piece faulted (carries status bits); never leaves this module."""

    def __init__(self, status: int, fault_type: int, addr: int):
        super().__init__(status)
        self.status, self.fault_type, self.addr = status, fault_type, addr


class DmaTestDevice:
    def __init__(self, bus: Bus, translate: Translate, sid: int = 0, tracer: Tracer = NULL_TRACER,
                 name: str = "dmatest0"):
        self.bus = bus
        self.translate = translate
        self.tracer = tracer
        self.name = name
        self.regs = RegisterFile(self, REGS)
        self.regs["SID"] = sid
        self._reset_sid = sid

    def reset(self) -> None:
        self.regs.reset()
        self.regs["SID"] = self._reset_sid

    def read(self, offset: int, size: int) -> int:
        return self.regs.read(offset, size)

    def write(self, offset: int, value: int, size: int) -> None:
        self.regs.write(offset, value, size)

    # -- command execution -----------------------------------------------------------------------------------
    def _on_cmd_write(self, old: int, new: int) -> None:
        self.regs["CMD"] = 0
        self.run(new)

    def run(self, cmd: int) -> int:
        """Execute a command as if written to CMD; returns STATUS."""
        r = self.regs
        sid = r["SID"]
        ssid = r.get_field("SSID", "SSID") if r.get_field("SSID", "SSV") else None
        iova, length = r["IOVA"], r["LEN"]
        status, ftype, faddr = STATUS_DONE, 0, 0
        try:
            if cmd == CMD_READ64:
                r["DATA"] = int.from_bytes(self._dma_read(sid, ssid, iova, 8), "little")
            elif cmd == CMD_WRITE64:
                self._dma_write(sid, ssid, iova, r["DATA"].to_bytes(8, "little"))
            elif cmd == CMD_COPY and length <= MAX_LEN:
                data = self._dma_read(sid, ssid, iova, length)
                self._dma_write(sid, ssid, r["DST"], data)
            else:
                status = STATUS_BADCMD
        except _Failed as e:
            status, ftype, faddr = e.status, e.fault_type, e.addr
        r["STATUS"] = status
        r["FAULT_TYPE"] = ftype
        r["FAULT_ADDR"] = faddr
        if status == STATUS_DONE:
            r["COUNT"] = r["COUNT"] + 1
        if "dmatest_cmd" in self.tracer.enabled:
            self.tracer.emit("dmatest_cmd", dev=self.name, cmd=cmd, sid=sid, ssid=ssid, iova=iova, len=length,
                             status=status, fault=ftype)
        return status

    def _pieces(self, addr: int, n: int):
        while n > 0:
            chunk = min(n, _PAGE - (addr & (_PAGE - 1)))
            yield addr, chunk
            addr = (addr + chunk) & (2**64 - 1)
            n -= chunk

    def _pa(self, sid: int, ssid: int | None, iova: int, write: bool) -> int:
        res = self.translate(sid, ssid, iova, write=write, exec_=bool(self.regs.get_field("ATTR", "EXEC"))
                             and not write, priv=bool(self.regs.get_field("ATTR", "PRIV")))
        pa = getattr(res, "pa", None)
        if pa is None:
            raise _Failed(STATUS_FAULT, int(getattr(res, "type", 0)), iova)
        return pa

    def _dma_read(self, sid: int, ssid: int | None, iova: int, n: int) -> bytes:
        out = bytearray()
        for a, chunk in self._pieces(iova, n):
            pa = self._pa(sid, ssid, a, False)
            try:
                out += self.bus.read_bytes(pa, chunk)
            except BusError:
                raise _Failed(STATUS_BUSERR, 0, a) from None
        return bytes(out)

    def _dma_write(self, sid: int, ssid: int | None, iova: int, data: bytes) -> None:
        off = 0
        for a, chunk in self._pieces(iova, len(data)):
            pa = self._pa(sid, ssid, a, True)
            try:
                self.bus.write_bytes(pa, data[off:off + chunk])
            except BusError:
                raise _Failed(STATUS_BUSERR, 0, a) from None
            off += chunk
