"""Arm PrimeCell UART (PL011) subset: the console of the `virt`-like board.

Register map from the PL011 Technical Reference Manual (Arm DDI 0183G, section 3.2 "Summary of registers").
What a guest console needs is modelled: UARTDR writes transmit a byte to `output`, UARTFR reports an empty,
never-full transmit FIFO (TXFE=1) and the receive FIFO's state, the configuration registers keep their
values, the ID registers read the TRM values.

Like QEMU's `hw/char/pl011.c`, bytes are transmitted even when UARTCR.UARTEN or UARTCR.TXE is clear, and
that is reported as a guest error. Byte and halfword accesses at a register's offset act on its low bits
(guests commonly use `strb` to UARTDR).

Interrupts (TRM 3.4 and 2.8; the behaviour QEMU 7.2's pl011 shows, checked by a guest run under both):
UARTRIS holds the raw status (TXRIS bit 5, RXRIS bit 4; 0 at reset), UARTIMSC the mask (1 = enabled, all 11
bits stored), UARTMIS = RIS & IMSC, a UARTICR write clears the RIS bits it sets. The transmitter takes each
byte at once, so every UARTDR write sets TXRIS; a byte received (`receive`) into an empty receive FIFO sets
RXRIS and reading the last byte clears it (QEMU's trigger level of 1: its read_trigger). `irq(level)` is the
combined line UARTINTR (MIS != 0), called when it changes; QEMU virt wires it to SPI 1.

Receive path: `receive(data)` puts bytes into the receive FIFO (16 entries with UARTLCR_H.FEN, else 1, as
QEMU's pl011_can_receive) and returns how many fitted; UARTDR reads take them (0 when empty), UARTFR shows
RXFE/RXFF. With a `source` (`source(n) -> bytes | None`: up to n bytes of the line's input, None or b"" when
there are none), the UART pulls from it itself once the guest has shown it receives - a UARTDR read, or RXIM
set in UARTIMSC (`listening`) - at its UARTDR/UARTFR reads with an empty FIFO and at `poll()` (the board
calls it at scheduling points): a guest that only transmits never takes input another consumer (semihosting
SYS_READC) reads.

Not modelled: the modem status, receive timeout and error interrupts (never raised), DMA, break/framing
errors, baud-rate timing, the trigger levels of UARTIFLS (stored).
"""
from __future__ import annotations

from collections import deque
from typing import Callable

from .regs import Access, Reg, RegField, RegisterFile
from .trace import NULL_TRACER, Tracer, define

__all__ = ["PL011", "PL011_REGS", "PL011_SIZE", "INT_RX", "INT_TX", "FIFO_DEPTH"]

PL011_SIZE = 0x1000
INT_RX, INT_TX = 1 << 4, 1 << 5          # UARTRIS/UARTMIS/UARTIMSC/UARTICR bits RXRIS, TXRIS (TRM 3.3.13)
INT_ALL = 0x7FF
FIFO_DEPTH = 16
_FR_RXFE, _FR_RXFF = 1 << 4, 1 << 6
_LCRH_FEN = 1 << 4

define("pl011_write", ("offset", "value", "reg"), "guest write to a PL011 register")
define("pl011_putchar", ("ch",), "a byte transmitted by the PL011")
define("pl011_irq_state", ("dev", "level"), "the PL011's combined interrupt line UARTINTR (MIS != 0) changed")

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
    Reg("UARTIMSC", 0x038, fields=(RegField("IM", 0, 11),), doc="interrupt mask set/clear (1 = enabled)"),
    Reg("UARTRIS", 0x03C, access=_RO, doc="raw interrupt status"),
    Reg("UARTMIS", 0x040, access=_RO, doc="masked interrupt status: RIS & IMSC"),
    Reg("UARTICR", 0x044, access=Access.WO, doc="interrupt clear: 1 clears the RIS bit"),
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
                 tracer: Tracer = NULL_TRACER, irq: Callable[[bool], None] | None = None):
        self.name = name
        self.output = output
        self.log = log
        self.tracer = tracer
        self.irq = irq                          # UARTINTR: irq(level) on every change
        self.transmitted = 0
        self.int_level = 0                      # UARTRIS
        self.level = False                      # UARTINTR as last signalled
        self.rx: deque[int] = deque()           # receive FIFO
        self.source: Callable[[int], bytes | None] | None = None
        self.listening = False                  # the guest read UARTDR or set RXIM: pull from `source`
        self.changed: Callable[[], None] | None = None   # called after every access and every input received
        self.regs = RegisterFile(self, PL011_REGS, on_bad_access=self._bad_access,
                                 on_unimplemented=self._unimplemented)

    # -- MMIO ---------------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if size in (1, 2) and not offset & 3:
            value = self.regs.read(offset, 4) & ((1 << (8 * size)) - 1)
        else:
            value = self.regs.read(offset, size)
        if self.changed is not None:
            self.changed()
        return value

    def write(self, offset: int, value: int, size: int) -> None:
        if size in (1, 2) and not offset & 3:
            size = 4
        if "pl011_write" in self.tracer.enabled:
            hit = self.regs.lookup(offset, size)
            self.tracer.emit("pl011_write", offset=offset, value=value,
                             reg=hit[0].name if hit else None)
        self.regs.write(offset, value, size)
        if self.changed is not None:
            self.changed()

    # -- receive path -------------------------------------------------------------------------------
    def rx_capacity(self) -> int:
        """Bytes the receive FIFO can take now (16 entries with UARTLCR_H.FEN, else 1)."""
        depth = FIFO_DEPTH if self.regs["UARTLCR_H"] & _LCRH_FEN else 1
        return max(0, depth - len(self.rx))

    def receive(self, data: bytes) -> int:
        """Bytes arriving on the line: as many as fit go into the receive FIFO; returns how many."""
        n = min(len(data), self.rx_capacity())
        for b in data[:n]:
            self.rx.append(b)
            if len(self.rx) == 1:             # QEMU's read_trigger of 1
                self.int_level |= INT_RX
        self._update()
        if self.changed is not None:
            self.changed()
        return n

    def poll(self) -> None:
        """Take what the input `source` has, while the guest listens and the FIFO is empty."""
        if self.listening and not self.rx and self.source is not None:
            data = self.source(self.rx_capacity())
            if data:
                self.receive(data)

    # -- interrupts ---------------------------------------------------------------------------------
    def _update(self) -> None:
        level = bool(self.int_level & self.regs["UARTIMSC"])
        if level != self.level:
            self.level = level
            if "pl011_irq_state" in self.tracer.enabled:
                self.tracer.emit("pl011_irq_state", dev=self.name, level=int(level))
            if self.irq is not None:
                self.irq(level)

    def _on_uartris_read(self, value: int) -> int:
        return self.int_level

    def _on_uartmis_read(self, value: int) -> int:
        return self.int_level & self.regs["UARTIMSC"]

    def _on_uartimsc_write(self, old: int, new: int) -> None:
        if new & INT_RX:
            self.listening = True
            self.poll()
        self._update()

    def _on_uarticr_write(self, old: int, new: int) -> None:
        self.int_level &= ~new & INT_ALL
        self._update()

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
        self.int_level |= INT_TX                  # the byte left the (always empty) transmit FIFO at once
        self._update()

    def _on_uartdr_read(self, value: int) -> int:
        self.listening = True
        self.poll()
        if not self.rx:
            return 0
        ch = self.rx.popleft()
        if not self.rx:
            self.int_level &= ~INT_RX
            self._update()
        return ch

    def _on_uartfr_read(self, value: int) -> int:
        self.poll()
        value &= ~(_FR_RXFE | _FR_RXFF)
        if not self.rx:
            value |= _FR_RXFE
        elif not self.rx_capacity():
            value |= _FR_RXFF
        return value

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
