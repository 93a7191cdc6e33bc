"""Arm PrimeCell UART (PL011) subset: the console of the `virt`-like board.

Register map from the PL011 Technical Reference Manual (Arm DDI 0183G, section 3.2 "Summary of registers").
What a guest console needs is modelled: UARTDR writes transmit a byte to `output`, UARTFR reports an empty,
never-full transmit FIFO and an empty receive FIFO (TXFE=1, RXFE=1), the configuration registers keep their
values, the ID registers read the TRM values.

Like QEMU's `hw/char/pl011.c`, bytes are transmitted even when UARTCR.UARTEN or UARTCR.TXE is clear, and
that is reported as a guest error. Byte and halfword accesses at a register's offset act on its low bits
(guests commonly use `strb` to UARTDR).

Not modelled yet: receive path (no console input; UARTDR reads 0), interrupts (UARTIMSC/RIS/MIS are stored
and reported as unimplemented when enabled), DMA, break/framing errors, baud-rate timing.
"""
from __future__ import annotations

from typing import Callable

from .regs import Access, Reg, RegField, RegisterFile
from .trace import NULL_TRACER, Tracer, define

__all__ = ["PL011", "PL011_REGS", "PL011_SIZE"]

PL011_SIZE = 0x1000

define("pl011_write", ("offset", "value", "reg"), "guest write to a PL011 register")
define("pl011_putchar", ("ch",), "a byte transmitted by the PL011")

_RW = Access.RW
_RO = Access.RO

# PL011 TRM table 3-1. UARTFR reset is 0b-10010--- (TXFE and RXFE set); UARTCR resets with TXE|RXE.
PL011_REGS: tuple[Reg, ...] = (
    Reg("UARTDR", 0x000, fields=(RegField("DATA", 0, 8), RegField("FE", 8, 1, access=_RO),
                                 RegField("PE", 9, 1, access=_RO), RegField("BE", 10, 1, access=_RO),
                                 RegField("OE", 11, 1, access=_RO)), doc="data"),
    Reg("UARTRSR", 0x004, fields=(RegField("FE", 0, 1, access=_RO), RegField("PE", 1, 1, access=_RO),
                                  RegField("BE", 2, 1, access=_RO), RegField("OE", 3, 1, access=_RO)),
        doc="receive status / error clear (UARTECR on write)"),
    Reg("UARTFR", 0x018, reset=0x90, fields=(
        RegField("CTS", 0, 1, access=_RO), RegField("DSR", 1, 1, access=_RO), RegField("DCD", 2, 1, access=_RO),
        RegField("BUSY", 3, 1, access=_RO), RegField("RXFE", 4, 1, access=_RO),
        RegField("TXFF", 5, 1, access=_RO), RegField("RXFF", 6, 1, access=_RO),
        RegField("TXFE", 7, 1, access=_RO), RegField("RI", 8, 1, access=_RO)), doc="flags"),
    Reg("UARTILPR", 0x020, fields=(RegField("ILPDVSR", 0, 8),)),
    Reg("UARTIBRD", 0x024, fields=(RegField("BAUD_DIVINT", 0, 16),)),
    Reg("UARTFBRD", 0x028, fields=(RegField("BAUD_DIVFRAC", 0, 6),)),
    Reg("UARTLCR_H", 0x02C, fields=(RegField("BRK", 0, 1), RegField("PEN", 1, 1), RegField("EPS", 2, 1),
                                    RegField("STP2", 3, 1), RegField("FEN", 4, 1), RegField("WLEN", 5, 2),
                                    RegField("SPS", 7, 1))),
    Reg("UARTCR", 0x030, reset=0x300, fields=(
        RegField("UARTEN", 0, 1), RegField("SIREN", 1, 1), RegField("SIRLP", 2, 1), RegField("LBE", 7, 1),
        RegField("TXE", 8, 1), RegField("RXE", 9, 1), RegField("DTR", 10, 1), RegField("RTS", 11, 1),
        RegField("OUT1", 12, 1), RegField("OUT2", 13, 1), RegField("RTSEN", 14, 1),
        RegField("CTSEN", 15, 1))),
    Reg("UARTIFLS", 0x034, reset=0x12, fields=(RegField("TXIFLSEL", 0, 3), RegField("RXIFLSEL", 3, 3))),
    Reg("UARTIMSC", 0x038, fields=(RegField("IM", 0, 11, implemented=False),), doc="interrupt mask"),
    Reg("UARTRIS", 0x03C, access=_RO, doc="raw interrupt status (no interrupts modelled: 0)"),
    Reg("UARTMIS", 0x040, access=_RO, doc="masked interrupt status (0)"),
    Reg("UARTICR", 0x044, access=Access.WO, doc="interrupt clear"),
    Reg("UARTDMACR", 0x048, fields=(RegField("RXDMAE", 0, 1, implemented=False),
                                    RegField("TXDMAE", 1, 1, implemented=False),
                                    RegField("DMAONERR", 2, 1, implemented=False))),
    # Identification registers, TRM section 3.3.14-3.3.17 (UARTPeriphID r1p5: 0x11 0x10 0x34 0x00;
    # UARTPCellID: 0x0D 0xF0 0x05 0xB1).
    Reg("UARTPERIPHID0", 0xFE0, reset=0x11, access=_RO),
    Reg("UARTPERIPHID1", 0xFE4, reset=0x10, access=_RO),
    Reg("UARTPERIPHID2", 0xFE8, reset=0x34, access=_RO),
    Reg("UARTPERIPHID3", 0xFEC, reset=0x00, access=_RO),
    Reg("UARTPCELLID0", 0xFF0, reset=0x0D, access=_RO),
    Reg("UARTPCELLID1", 0xFF4, reset=0xF0, access=_RO),
    Reg("UARTPCELLID2", 0xFF8, reset=0x05, access=_RO),
    Reg("UARTPCELLID3", 0xFFC, reset=0xB1, access=_RO),
)

Log = Callable[[str, str], None]   # (category, message); categories as QEMU -d: guest_errors, unimp


class PL011:
    """PL011 UART. `output(data: bytes)` receives transmitted bytes; `log(category, msg)` gets guest errors."""

    def __init__(self, output: Callable[[bytes], None], *, name: str = "pl011", log: Log | None = None,
                 tracer: Tracer = NULL_TRACER):
        self.name = name
        self.output = output
        self.log = log
        self.tracer = tracer
        self.transmitted = 0
        self.regs = RegisterFile(self, PL011_REGS, on_bad_access=self._bad_access,
                                 on_unimplemented=self._unimplemented)

    # -- MMIO ---------------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if size in (1, 2) and not offset & 3:
            return self.regs.read(offset, 4) & ((1 << (8 * size)) - 1)
        return self.regs.read(offset, size)

    def write(self, offset: int, value: int, size: int) -> None:
        if size in (1, 2) and not offset & 3:
            size = 4
        if "pl011_write" in self.tracer.enabled:
            hit = self.regs.lookup(offset, size)
            self.tracer.emit("pl011_write", offset=offset, value=value,
                             reg=hit[0].name if hit else None)
        self.regs.write(offset, value, size)

    # -- register hooks -----------------------------------------------------------------------------
    def _on_uartdr_write(self, old: int, new: int) -> None:
        ch = new & 0xFF
        cr = self.regs["UARTCR"]
        if not (cr & 1 and cr & 0x100) and self.log:
            self.log("guest_errors", f"{self.name}: data written with UARTCR.UARTEN/TXE clear "
                                     f"(UARTCR={cr:#x}); transmitted anyway")
        self.transmitted += 1
        if "pl011_putchar" in self.tracer.enabled:
            self.tracer.emit("pl011_putchar", ch=ch)
        self.output(bytes((ch,)))

    def _on_uartdr_read(self, value: int) -> int:
        return 0          # receive FIFO is always empty

    def _on_uartrsr_write(self, old: int, new: int) -> None:
        pass              # UARTECR: clears error bits, which are never set

    # -- reporting ----------------------------------------------------------------------------------
    def _bad_access(self, kind: str, offset: int, size: int, value: int | None) -> None:
        if self.log:
            what = f"{kind} size {size} at offset {offset:#x}"
            if value is not None:
                what += f" value {value:#x}"
            self.log("guest_errors", f"{self.name}: bad {what} (RAZ/WI)")

    def _unimplemented(self, reg: Reg, value: int) -> None:
        if self.log:
            self.log("unimp", f"{self.name}: {reg.name}={value:#x} uses unimplemented bits "
                              f"{value & reg.unimpl_mask:#x}")
