"""GICv3 Interrupt Translation Service (IHI 0069 chapter 5 and 12.19), as QEMU's `arm-gicv3-its`
(hw/intc/arm_gicv3_its.c) presents it on `-M virt,gic-version=3`: it turns an MSI (DeviceID, EventID) into an
LPI pending at the redistributor of the collection the event is mapped to.

Frames: control at +0x00000 (GITS_CTLR, IIDR 0x43B, TYPER, CBASER, CWRITER, CREADR, BASER0-7, ID registers
PIDR0 0x94 PIDR2 0x3B), translation at +0x10000 (GITS_TRANSLATER at +0x10040, 16- or 32-bit writes of the
EventID). GITS_TYPER as QEMU 7.2: Physical=1, ITT_entry_size 12 bytes, 16 EventID bits, 16 DeviceID bits,
CIL=1 with 16 collection ID bits, PTA=0 (collections target processor numbers), HCC=0, SEIS=0.
GITS_BASER0 is the Device table and GITS_BASER1 the Collection table (8-byte entries, 64 KiB pages at reset,
page size and Indirect writable: flat and two-level tables); BASER2-7 are unimplemented (RAZ/WI).
GITS_CTLR.Quiescent reads 1 (commands complete synchronously). GITS_CBASER and GITS_BASER<n> ignore writes while
the ITS is enabled; writing GITS_CBASER resets GITS_CREADR and GITS_CWRITER to 0; GITS_CREADR is writable
(GICD_CTLR.DS=1, as QEMU) except Stalled.

Command queue: processed synchronously when GITS_CWRITER is written (or the ITS is enabled), up to CWRITER.
MAPD, MAPC, MAPTI, MAPI, MOVI, MOVALL, DISCARD, INV, INVALL, SYNC, INT and CLEAR are implemented. A command
whose parameters are wrong (DeviceID out of range, unmapped device/collection/interrupt, ...) is a *command
error*: it is ignored, recorded with its IHI 0069 error code (`errors`, trace `gicv3_its_cmd_error`) and the
queue goes on, as QEMU does; an unimplemented command (GICv4 V* commands, unknown opcodes) is a command error
too. A memory fault reading the queue or a table stalls the queue (GITS_CREADR.Stalled=1) until software
writes GITS_CWRITER with Retry=1.

MSIs: `msi(device_id, event_id)` is the bus-side input; `doorbell(device_id)` is an MMIO device for the
translation frame whose GITS_TRANSLATER writes are MSIs of that DeviceID (on hardware the DeviceID travels with
the write, it is never chosen by the guest). An MSI that translates to nothing (ITS disabled, DeviceID or
EventID out of range, no mapping, LPI not accepted) is dropped and counted, never raised. Tables are read
through `dma`, the address space the ITS masters: give each VM its own ITS over its own IPA space, so a guest's
tables and MSIs never reach another VM's interrupts.

Not modelled: GICv4 (virtual LPIs), GITS_TYPER.PTA=1, SEI, GITS_UMSIR/MPAM/MPIDR, command-queue and table
memory attributes (stored only), ITS power management.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..bus import BusError
from ..regs import Access, Reg, RegField, RegisterFile
from . import events  # noqa: F401  (declares the trace events)
from .its_cmd import CMD_SIZE, ItsCommand, Reason, decode, error_code
from .its_tables import (BASER_TYPE_COLLECTION, BASER_TYPE_DEVICE, CTE, CTE_SIZE, DTE, DTE_SIZE, ITE, ITE_SIZE,
                         TableDesc)
from .lpi import LPI_BASE
from .mmio import BadAccess, Log, id_regs

if TYPE_CHECKING:
    from .gicv3 import Dma, GicV3

__all__ = ["Its", "ItsDoorbell", "ItsCmdError", "ITS_SIZE", "GITS_TRANSLATER"]

ITS_SIZE = 0x20000
TRANSLATION_FRAME = 0x10000
GITS_TRANSLATER = 0x10040
RO, RW = Access.RO, Access.RW

_CBASER_FIELDS = (RegField("Size", 0, 8), RegField("Shareability", 10, 2), RegField("PA", 12, 40, shift=12),
                  RegField("OuterCache", 53, 3), RegField("InnerCache", 59, 3), RegField("Valid", 63, 1))
_QUEUE_OFFSET = (RegField("Offset", 5, 15, shift=5),)


def _baser(n: int, table_type: int, entry_size: int) -> Reg:
    if not table_type:
        return Reg(f"GITS_BASER{n}", 0x100 + 8 * n, size=8, access=RO)
    reset = table_type << 56 | (entry_size - 1) << 48 | 2 << 8        # 64 KiB pages
    return Reg(f"GITS_BASER{n}", 0x100 + 8 * n, size=8, reset=reset, fields=(
        RegField("Size", 0, 8), RegField("Page_Size", 8, 2), RegField("Shareability", 10, 2),
        RegField("PA", 12, 36), RegField("Entry_Size", 48, 5, access=RO), RegField("OuterCache", 53, 3),
        RegField("Type", 56, 3, access=RO), RegField("InnerCache", 59, 3), RegField("Indirect", 62, 1),
        RegField("Valid", 63, 1)))


def _its_regs(typer: int) -> tuple[Reg, ...]:
    return (
        Reg("GITS_CTLR", 0x0000, reset=1 << 31, fields=(RegField("Enabled", 0, 1),
                                                        RegField("Quiescent", 31, 1, access=RO))),
        Reg("GITS_IIDR", 0x0004, reset=0x43B, access=RO),
        Reg("GITS_TYPER", 0x0008, size=8, reset=typer, access=RO),
        Reg("GITS_CBASER", 0x0080, size=8, fields=_CBASER_FIELDS),
        Reg("GITS_CWRITER", 0x0088, size=8, fields=(RegField("Retry", 0, 1, access=Access.WO), *_QUEUE_OFFSET)),
        Reg("GITS_CREADR", 0x0090, size=8, fields=(RegField("Stalled", 0, 1, access=RO), *_QUEUE_OFFSET)),
        _baser(0, BASER_TYPE_DEVICE, DTE_SIZE),
        _baser(1, BASER_TYPE_COLLECTION, CTE_SIZE),
        *(_baser(n, 0, 0) for n in range(2, 8)),
        *id_regs(0xFFD0, (0x94, 0xB4, 0x3B, 0x00, 0x44), "GITS_"),
    )


@dataclass(frozen=True)
class ItsCmdError:
    """A command the ITS ignored: where it was, what it was and why (code: IHI 0069 encoding or None)."""
    offset: int
    cmd: str
    code: int | None
    reason: str


class _CmdError(Exception):
    def __init__(self, reason: Reason | str):
        super().__init__(str(reason))
        self.reason = reason


class ItsDoorbell:
    """The translation frame as one requester sees it: a write to GITS_TRANSLATER is an MSI of `device_id`."""

    __slots__ = ("its", "device_id")

    def __init__(self, its: "Its", device_id: int):
        self.its = its
        self.device_id = device_id

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, value: int, size: int) -> None:
        if offset == GITS_TRANSLATER - TRANSLATION_FRAME and size in (2, 4):
            self.its.translation_write(self.device_id, value, size)
        else:
            self.its.bad(None, "gits_translation", "write", offset, size, value)


class Its:
    """A GICv3 ITS for `gic`, reading its tables through `dma` (default: the GIC's). `read`/`write` serve the
    whole 128 KiB region as a CPU sees it; a CPU write to GITS_TRANSLATER is an MSI of `cpu_device_id`
    (QEMU: requester ID 0), or ignored when that is None."""

    def __init__(self, gic: "GicV3", dma: "Dma | None" = None, *, device_bits: int = 16, event_bits: int = 16,
                 collection_bits: int = 16, cpu_device_id: int | None = 0, log: Log | None = None,
                 name: str = "its", max_errors: int = 256):
        if not gic.lpis:
            raise ValueError("an ITS needs a GICv3 with LPIs")
        for what, bits in (("device_bits", device_bits), ("event_bits", event_bits),
                           ("collection_bits", collection_bits)):
            if not 1 <= bits <= 16 + 16 * (what != "collection_bits"):
                raise ValueError(f"{what}={bits} out of range")
        self.gic = gic
        self.dma = dma if dma is not None else gic.dma
        self.tracer = gic.tracer
        self.name = name
        self.device_bits, self.event_bits, self.collection_bits = device_bits, event_bits, collection_bits
        self.cpu_device_id = cpu_device_id
        typer = (1 | (ITE_SIZE - 1) << 4 | (event_bits - 1) << 8 | (device_bits - 1) << 13
                 | (collection_bits - 1) << 32 | 1 << 36)
        self.bad = BadAccess(name, "gicv3_bad_access", gic.tracer, log)
        self.regs = RegisterFile(self, _its_regs(typer),
                                 on_bad_access=lambda k, o, s, v: self.bad(None, "gits", k, o, s, v))
        self.errors: deque[ItsCmdError] = deque(maxlen=max_errors)
        self.stats: Counter[str] = Counter()
        self._dt = self._ct = TableDesc(False, False, 0x10000, 8, 0, 1)

    # -- MMIO --------------------------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset >= TRANSLATION_FRAME:
            return 0                                # GITS_TRANSLATER is write-only; the rest is reserved
        value = self.regs.read(offset, size)
        if "gicv3_its_read" in self.tracer.enabled:
            self.tracer.emit("gicv3_its_read", offset=offset, value=value, size=size)
        return value

    def write(self, offset: int, value: int, size: int) -> None:
        if offset >= TRANSLATION_FRAME:
            if offset == GITS_TRANSLATER and size in (2, 4) and self.cpu_device_id is not None:
                self.translation_write(self.cpu_device_id, value, size)
            elif offset != GITS_TRANSLATER or size not in (2, 4):
                self.bad(None, "gits_translation", "write", offset, size, value)
            return
        if "gicv3_its_write" in self.tracer.enabled:
            self.tracer.emit("gicv3_its_write", offset=offset, value=value, size=size)
        self.regs.write(offset, value, size)

    def write_from(self, offset: int, value: int, size: int, requester: int) -> None:
        """A bus master's write (`Bus.write_from`): at GITS_TRANSLATER it is an MSI whose DeviceID is the
        requester's ID, as QEMU's `gicv3_its_translation_write` takes `attrs.requester_id`; elsewhere it is
        an ordinary register write."""
        if offset == GITS_TRANSLATER and size in (2, 4):
            self.translation_write(requester, value, size)
        else:
            self.write(offset, value, size)

    def doorbell(self, device_id: int) -> ItsDoorbell:
        """The translation frame (64 KiB) as requester `device_id` sees it."""
        return ItsDoorbell(self, device_id)

    @property
    def enabled(self) -> bool:
        return bool(self.regs["GITS_CTLR"] & 1)

    # -- register hooks ----------------------------------------------------------------------------------------
    def _on_gits_ctlr_write(self, old: int, new: int) -> None:
        if (old ^ new) & 1 and new & 1:
            self._dt = TableDesc.from_baser(self.regs["GITS_BASER0"])
            self._ct = TableDesc.from_baser(self.regs["GITS_BASER1"])
            self.process()

    def _on_gits_cbaser_write(self, old: int, new: int) -> None:
        if self.enabled:
            self.regs["GITS_CBASER"] = old              # read-only while enabled (as QEMU)
            return
        self.regs["GITS_CREADR"] = 0
        self.regs["GITS_CWRITER"] = 0

    def _on_gits_cwriter_write(self, old: int, new: int) -> None:
        retry = new & 1
        self.regs["GITS_CWRITER"] = new & ~1
        if retry and self.regs["GITS_CREADR"] & 1:
            self.regs["GITS_CREADR"] &= ~1
        self.process()

    def _baser_write(self, name: str, old: int, new: int) -> None:
        if self.enabled:
            self.regs[name] = old                       # read-only while enabled (as QEMU)

    def _on_gits_baser0_write(self, old: int, new: int) -> None:
        self._baser_write("GITS_BASER0", old, new)

    def _on_gits_baser1_write(self, old: int, new: int) -> None:
        self._baser_write("GITS_BASER1", old, new)

    # -- command queue -----------------------------------------------------------------------------------------
    def process(self) -> None:
        """Execute commands from GITS_CREADR up to GITS_CWRITER (when enabled and not stalled)."""
        if not self.enabled or self.regs["GITS_CREADR"] & 1:
            return
        cbaser = self.regs["GITS_CBASER"]
        if not cbaser >> 63:
            return
        qsize = ((cbaser & 0xFF) + 1) * 0x1000
        base = self.regs.get_field("GITS_CBASER", "PA")
        wr = self.regs["GITS_CWRITER"] & 0xF_FFE0
        rd = self.regs["GITS_CREADR"] & 0xF_FFE0
        if wr >= qsize or rd >= qsize:
            self.stats["queue_offset_out_of_range"] += 1
            return
        for _ in range(qsize // CMD_SIZE):
            if rd == wr:
                break
            try:
                raw = self.dma_read_bytes(base + rd, CMD_SIZE)
                cmd = decode(raw)
                if "gicv3_its_process_command" in self.tracer.enabled:
                    self.tracer.emit("gicv3_its_process_command", rd_offset=rd, cmd=cmd.name)
                self._execute(rd, cmd)
            except BusError as e:
                self.regs["GITS_CREADR"] = rd | 1
                self.stats["stalls"] += 1
                if "gicv3_its_cmdq_stall" in self.tracer.enabled:
                    self.tracer.emit("gicv3_its_cmdq_stall", rd_offset=rd, reason=e.why)
                self.gic.settle()
                return
            rd = (rd + CMD_SIZE) % qsize
            self.regs["GITS_CREADR"] = rd
        self.gic.settle()

    def _execute(self, offset: int, cmd: ItsCommand) -> None:
        self.stats[cmd.name] += 1
        handler = _HANDLERS.get(cmd.name)
        if handler is None:
            self._error(offset, cmd, None, "unsupported command")
            return
        try:
            handler(self, cmd)
        except _CmdError as e:
            reason = e.reason
            if isinstance(reason, Reason):
                self._error(offset, cmd, error_code(cmd.opcode, reason), reason.name.lower())
            else:
                self._error(offset, cmd, None, reason)

    def _error(self, offset: int, cmd: ItsCommand, code: int | None, reason: str) -> None:
        err = ItsCmdError(offset, cmd.name if cmd.name != "UNKNOWN" else f"opcode {cmd.opcode:#04x}", code, reason)
        self.errors.append(err)
        self.stats["errors"] += 1
        if "gicv3_its_cmd_error" in self.tracer.enabled:
            self.tracer.emit("gicv3_its_cmd_error", cmd=err.cmd, code=code, reason=reason)

    # -- tables ------------------------------------------------------------------------------------------------
    def dma_read(self, addr: int, size: int) -> int:
        if self.dma is None:
            raise BusError(addr, size, "the ITS has no DMA bus")
        return self.dma.read(addr, size)

    def dma_read_bytes(self, addr: int, size: int) -> bytes:
        if self.dma is None:
            raise BusError(addr, size, "the ITS has no DMA bus")
        return self.dma.read_bytes(addr, size)

    def dma_write_bytes(self, addr: int, data: bytes) -> None:
        if self.dma is None:
            raise BusError(addr, len(data), "the ITS has no DMA bus")
        self.dma.write_bytes(addr, data)

    def _entry(self, table: TableDesc, index: int, bits: int) -> int | None:
        if index >> bits:
            return None
        return table.entry_addr(index, lambda a: self.dma_read(a, 8))

    def read_dte(self, devid: int) -> dict[str, int] | None:
        """The DeviceID's table entry (None: out of range or no level-2 page). May raise BusError."""
        addr = self._entry(self._dt, devid, self.device_bits)
        return None if addr is None else DTE.unpack(self.dma_read(addr, DTE_SIZE))

    def read_cte(self, icid: int) -> dict[str, int] | None:
        addr = self._entry(self._ct, icid, self.collection_bits)
        return None if addr is None else CTE.unpack(self.dma_read(addr, CTE_SIZE))

    def _write_table(self, table: TableDesc, index: int, bits: int, layout, raw: int, reason: Reason) -> None:
        addr = self._entry(table, index, bits)
        if addr is None:
            raise _CmdError(reason)
        self.dma_write_bytes(addr, layout.to_bytes(raw))

    def _ite_addr(self, dte: dict[str, int], eventid: int) -> int:
        return dte["itt_addr"] + eventid * ITE_SIZE

    def read_ite(self, dte: dict[str, int], eventid: int) -> dict[str, int]:
        return ITE.unpack(int.from_bytes(self.dma_read_bytes(self._ite_addr(dte, eventid), ITE_SIZE), "little"))

    def _write_ite(self, dte: dict[str, int], eventid: int, raw: int) -> None:
        self.dma_write_bytes(self._ite_addr(dte, eventid), ITE.to_bytes(raw))

    def _device(self, devid: int) -> dict[str, int]:
        dte = self.read_dte(devid)
        if dte is None:
            raise _CmdError(Reason.DEVICE_OOR)
        if not dte["valid"]:
            raise _CmdError(Reason.UNMAPPED_DEVICE)
        return dte

    def _event(self, devid: int, eventid: int) -> tuple[dict[str, int], dict[str, int]]:
        """(DTE, ITE) of a mapped event; _CmdError otherwise."""
        dte = self._device(devid)
        if eventid >> (dte["size"] + 1):
            raise _CmdError(Reason.ID_OOR)
        ite = self.read_ite(dte, eventid)
        if not ite["valid"] or not ite["inttype"]:
            raise _CmdError(Reason.UNMAPPED_INTERRUPT)
        return dte, ite

    def _collection_cpu(self, icid: int) -> int:
        cte = self.read_cte(icid)
        if cte is None:
            raise _CmdError(Reason.COLLECTION_OOR)
        if not cte["valid"]:
            raise _CmdError(Reason.UNMAPPED_COLLECTION)
        if cte["rdbase"] >= self.gic.ncpus:
            raise _CmdError(Reason.UNMAPPED_COLLECTION)
        return cte["rdbase"]

    def translate(self, devid: int, eventid: int) -> tuple[int, int]:
        """(LPI INTID, target CPU) of an event; raises _CmdError / BusError when there is none."""
        _, ite = self._event(devid, eventid)
        return ite["intid"], self._collection_cpu(ite["icid"])

    # -- MSIs --------------------------------------------------------------------------------------------------
    def translation_write(self, devid: int, value: int, size: int) -> None:
        eventid = value & ((1 << (8 * size)) - 1)
        if "gicv3_its_translation_write" in self.tracer.enabled:
            self.tracer.emit("gicv3_its_translation_write", devid=devid, eventid=eventid, size=size)
        self.msi(devid, eventid)

    def msi(self, device_id: int, event_id: int) -> bool:
        """An MSI from `device_id` with `event_id`: True when it set an LPI pending."""
        if not self.enabled:
            return self._drop(device_id, event_id, "ITS disabled")
        try:
            intid, cpu = self.translate(device_id, event_id)
        except _CmdError as e:
            return self._drop(device_id, event_id, e.reason.name.lower() if isinstance(e.reason, Reason)
                              else str(e.reason))
        except BusError as e:
            return self._drop(device_id, event_id, f"table read fault: {e.why}")
        if not self.gic.set_lpi(cpu, intid, True):
            return self._drop(device_id, event_id, "LPI not accepted by the redistributor")
        self.stats["msis"] += 1
        if "gicv3_its_lpi" in self.tracer.enabled:
            self.tracer.emit("gicv3_its_lpi", devid=device_id, eventid=event_id, intid=intid, cpu=cpu)
        return True

    def _drop(self, devid: int, eventid: int, reason: str) -> bool:
        self.stats["msis_dropped"] += 1
        if "gicv3_its_translation_error" in self.tracer.enabled:
            self.tracer.emit("gicv3_its_translation_error", devid=devid, eventid=eventid, reason=reason)
        return False

    # -- commands ----------------------------------------------------------------------------------------------
    def _cmd_mapd(self, c: ItsCommand) -> None:
        devid, size, itt, valid = c["deviceid"], c["size"], c["itt_addr"], c["v"]
        if "gicv3_its_cmd_mapd" in self.tracer.enabled:
            self.tracer.emit("gicv3_its_cmd_mapd", devid=devid, size=size, ittaddr=itt, valid=valid)
        if size + 1 > self.event_bits:
            raise _CmdError(Reason.SIZE_OOR)
        raw = DTE.pack(valid=1, size=size, itt_addr=itt) if valid else 0
        self._write_table(self._dt, devid, self.device_bits, DTE, raw, Reason.DEVICE_OOR)

    def _cmd_mapc(self, c: ItsCommand) -> None:
        icid, rdbase, valid = c["icid"], c["rdbase"] >> 16, c["v"]
        if "gicv3_its_cmd_mapc" in self.tracer.enabled:
            self.tracer.emit("gicv3_its_cmd_mapc", icid=icid, rdbase=rdbase, valid=valid)
        if valid and rdbase >= self.gic.ncpus:
            raise _CmdError(Reason.SIZE_OOR)                # MAPC processor number out of range
        raw = CTE.pack(valid=1, rdbase=rdbase) if valid else 0
        self._write_table(self._ct, icid, self.collection_bits, CTE, raw, Reason.COLLECTION_OOR)

    def _cmd_mapti(self, c: ItsCommand) -> None:
        devid, eventid, icid = c["deviceid"], c["eventid"], c["icid"]
        intid = c["pintid"] if c.name == "MAPTI" else eventid
        if "gicv3_its_cmd_mapti" in self.tracer.enabled:
            self.tracer.emit("gicv3_its_cmd_mapti", devid=devid, eventid=eventid, icid=icid, intid=intid)
        dte = self._device(devid)
        if eventid >> (dte["size"] + 1):
            raise _CmdError(Reason.ID_OOR)
        if not LPI_BASE <= intid < 1 << (self.gic.idbits + 1):
            raise _CmdError(Reason.PHYSICALID_OOR)
        if icid >> self.collection_bits or icid >= self._ct.entries:
            raise _CmdError(Reason.COLLECTION_OOR)
        self._write_ite(dte, eventid, ITE.pack(valid=1, inttype=1, intid=intid, doorbell=1023, icid=icid))

    def _cmd_movi(self, c: ItsCommand) -> None:
        devid, eventid, icid = c["deviceid"], c["eventid"], c["icid"]
        if "gicv3_its_cmd_movi" in self.tracer.enabled:
            self.tracer.emit("gicv3_its_cmd_movi", devid=devid, eventid=eventid, icid=icid)
        dte, ite = self._event(devid, eventid)
        new_cpu = self._collection_cpu(icid)
        old_cpu = self._collection_cpu(ite["icid"])
        if old_cpu != new_cpu and self.gic.redists[old_cpu].lpi_pending(ite["intid"]):
            self.gic.redists[old_cpu].clear_lpi(ite["intid"])
            self.gic.redists[new_cpu].set_lpi(ite["intid"], True)
        self._write_ite(dte, eventid, ITE.pack(**{**ite, "icid": icid}))

    def _cmd_movall(self, c: ItsCommand) -> None:
        rd1, rd2 = c["rdbase"] >> 16, c["rdbase2"] >> 16
        if "gicv3_its_cmd_movall" in self.tracer.enabled:
            self.tracer.emit("gicv3_its_cmd_movall", rd1=rd1, rd2=rd2)
        if rd1 >= self.gic.ncpus or rd2 >= self.gic.ncpus:
            raise _CmdError(Reason.DEVICE_OOR)              # E_ITS_MOVALL_PROCNUM_OOR (0x010e01)
        if rd1 == rd2:
            return
        src, dst = self.gic.redists[rd1], self.gic.redists[rd2]
        for intid in sorted(src.lpis):
            src.clear_lpi(intid)
            dst.set_lpi(intid, True)

    def _cmd_pending(self, c: ItsCommand) -> None:
        """INT, CLEAR, DISCARD, INV: act on the LPI an event maps to."""
        devid, eventid = c["deviceid"], c["eventid"]
        ev = f"gicv3_its_cmd_{c.name.lower()}"
        if ev in self.tracer.enabled:
            self.tracer.emit(ev, devid=devid, eventid=eventid)
        dte, ite = self._event(devid, eventid)
        cpu = self._collection_cpu(ite["icid"]) if c.name != "DISCARD" else self._discard_target(ite)
        rd = self.gic.redists[cpu] if cpu is not None else None
        if c.name == "INT":
            if not rd.set_lpi(ite["intid"], True):
                self.stats["int_not_accepted"] += 1
        elif c.name == "INV":
            rd.invalidate(ite["intid"])
        else:                                               # CLEAR, DISCARD
            if rd is not None:
                rd.clear_lpi(ite["intid"])
            if c.name == "DISCARD":
                self._write_ite(dte, eventid, 0)

    def _discard_target(self, ite: dict[str, int]) -> int | None:
        try:
            return self._collection_cpu(ite["icid"])
        except _CmdError:
            return None                                     # DISCARD removes the mapping even then

    def _cmd_invall(self, c: ItsCommand) -> None:
        if "gicv3_its_cmd_invall" in self.tracer.enabled:
            self.tracer.emit("gicv3_its_cmd_invall", icid=c["icid"])
        self.gic.redists[self._collection_cpu(c["icid"])].invalidate(None)

    def _cmd_sync(self, c: ItsCommand) -> None:
        if "gicv3_its_cmd_sync" in self.tracer.enabled:
            self.tracer.emit("gicv3_its_cmd_sync", rdbase=c["rdbase"] >> 16)
        # every earlier command has already taken effect: nothing to wait for

    # -- whole device ------------------------------------------------------------------------------------------
    def reset(self) -> None:
        self.regs.reset()
        self.errors.clear()
        self.stats.clear()
        self._dt = self._ct = TableDesc(False, False, 0x10000, 8, 0, 1)

    def state(self) -> dict[str, Any]:
        creadr = self.regs["GITS_CREADR"]
        return {"enabled": self.enabled, "cbaser": self.regs["GITS_CBASER"], "cwriter": self.regs["GITS_CWRITER"],
                "creadr": creadr & ~1, "stalled": bool(creadr & 1), "baser": [self.regs[f"GITS_BASER{n}"]
                                                                          for n in range(8)],
                "errors": [e.__dict__ for e in self.errors], "stats": dict(self.stats)}


_HANDLERS = {"MAPD": Its._cmd_mapd, "MAPC": Its._cmd_mapc, "MAPTI": Its._cmd_mapti, "MAPI": Its._cmd_mapti,
             "MOVI": Its._cmd_movi, "MOVALL": Its._cmd_movall, "INT": Its._cmd_pending, "CLEAR": Its._cmd_pending,
             "DISCARD": Its._cmd_pending, "INV": Its._cmd_pending, "INVALL": Its._cmd_invall,
             "SYNC": Its._cmd_sync}
