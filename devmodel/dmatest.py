"""DMA test device, modelled on QEMU's `iommu-testdev` (hw/misc/iommu-testdev.c): an MMIO device with a
StreamID whose DMA goes through an SMMU `translate(sid, ssid, addr, write, exec_, priv)` callable, so guests
or Python can trigger reads, writes and copies and observe translations and faults. It can also act as a PCIe
function with ATS (its own ATC, `atc.py`) and PRI, and it waits for stalled transactions.

Register map (offsets from the device base, default 0x0910_0000; 32-bit registers, 64-bit ones also accept
32-bit halves; other sizes and unknown offsets are RAZ/WI). The same table is in README.md
("DMA test device").

    0x00 ID         RO  0x444D4154 ("DMAT")
    0x04 STATUS     RO  bit0 DONE, bit1 FAULT (SMMU fault), bit2 BUSERR (bus error after translation),
                        bit3 BADCMD (unknown command, LEN > MAX_LEN, or a command while one is outstanding),
                        bit4 STALLED (the transfer waits: its transaction is stalled in the SMMU),
                        bit5 PRI_WAIT (the transfer waits for a page request group response),
                        bit6 ATS_ERR (a Translation Request failed (UR/CA), or granted no access without PRI),
                        bit7 PRI_ERR (a PRG response other than Success, or the page requests gave up);
                        replaced by the next command (BADCMD for a refused command is added, the rest kept)
    0x08 SID        RW  StreamID the device presents (reset: constructor `sid`)
    0x0C SSID       RW  bits[19:0] SubstreamID, bit31 SSV (SubstreamID valid)
    0x10 IOVA       RW  64-bit: source / target address of the DMA
    0x18 LEN        RW  byte count for COPY (at most MAX_LEN = 1 MiB)
    0x1C CMD        WO  1 READ64 (IOVA -> DATA), 2 WRITE64 (DATA -> IOVA), 3 COPY (LEN bytes IOVA -> DST)
    0x20 DATA       RW  64-bit data register
    0x28 DST        RW  64-bit: COPY destination address
    0x30 FAULT_TYPE RO  event type of the last fault (SMMU EventType number), 0 if none
    0x34 COUNT      RO  commands completed without error
    0x38 FAULT_ADDR RO  64-bit: input address of the faulting (or stalled, or page-requested) access
    0x40 ATTR       RW  bit0 PRIV (privileged access), bit1 EXEC (instruction fetch, reads only)
    0x44 PCIE_CTRL  RW  bit0 ATS_EN (ATS Control.Enable), bit1 PRI_EN (PRI Control.Enable), bit2 PRI_RESET
                        (write 1: PRI Control.Reset: PRI_STATUS cleared, outstanding requests forgotten; reads 0)
    0x48 PRI_STATUS RO  bit0 RF (Response Failure received), bit1 UPRGI (Unexpected PRG Index), bit8 STOPPED
    0x4C PRI_ALLOC  RW  Outstanding Page Request Allocation (page requests the device may have outstanding)
    0x50 STAG       RO  STAG of the stall the transfer waits on
    0x54 PRG_INDEX  RO  PRG index of the page request group the transfer waits on
    0x58 ATC_ENTRIES RO translations in the ATC
    0x5C ATC_INVS   RO  ATS Invalidate Requests received
    0x60 MSI_ADDR   RW  64-bit: address of the completion MSI (bits [1:0] read as 0: a DWORD write)
    0x68 MSI_DATA   RW  data of the completion MSI (the EventID at an ITS)
    0x6C MSI_CTRL   RW  bit0 EN: each command that ends (completes or fails; not one that waits) sends the MSI
    0x70 MSI_COUNT  RO  completion MSIs that reached the bus
    0x74 MSI_STATUS RO  outcome of the last MSI: bit0 SENT, bit1 FAULT (the SMMU refused its translation),
                        bit2 BUSERR (nothing at its address), bit3 STALLED (held in the SMMU)

Accesses are split at 4 KiB boundaries and each piece is translated separately (a fault stops the command;
pieces before it stay written).

* Untranslated DMA (ATS_EN=0): `translate()`. A stalled result (`Fault.stall`, IHI 0070 3.12.2) parks the
  transfer (STATUS=STALLED; nothing completes) when the SMMU lets it wait (`iommu.wait_stall`): CMD_RESUME retry
  continues it with the new translation, abort fails it (FAULT), RAZ/WI completes the piece with zeros / a
  dropped write.
* ATS (ATS_EN=1, `iommu.ats_translate`/`translated`): each piece is looked up in the ATC; a miss, or an entry
  without the needed permission, sends a Translation Request (No-Write for reads); a successful completion is
  cached and the access goes out Translated. A completion without the needed access, with PRI_EN=1, makes the
  device send a page request group: the faulting page and the next pages of the same direction of the transfer
  (as many as PRI_ALLOC leaves), Last on the final one, then wait (PRI_WAIT). Success: the group's ATC entries
  are dropped and the translation requested again (at most 4 groups per piece: then PRI_ERR); Invalid Request:
  PRI_ERR; Response Failure: PRI_ERR and PRI_STATUS.RF, no page requests until PRI_RESET. ATS Invalidate
  Requests (`atc_invalidate`, CMD_ATC_INV) remove ATC entries; `atc_inv_fails=True` makes the device not
  complete them (a completion timeout: the SMMU's next CMD_SYNC fails).
* Completion MSI (a PCI MSI capability reduced to its address and data): a 32-bit DMA write of MSI_DATA to
  MSI_ADDR, translated by the SMMU like any other write of the device (StreamID, no SubstreamID: PCIe MSIs
  carry no PASID; untranslated even with ATS_EN), then sent on the bus with the device's StreamID as requester
  ID (`Bus.write_from`): at an ITS's GITS_TRANSLATER the StreamID is the DeviceID, the identity msi-map Linux
  applies between RID, StreamID and DeviceID on QEMU virt. So the doorbell address must be mapped in the
  device's translation, as on hardware (Linux's MSI cookie, `iommu_dma_prepare_msi`). A fault loses the MSI
  (MSI_STATUS.FAULT; the SMMU records its event); a stalled MSI is sent when CMD_RESUME retries it.

`iommu` is the SMMU side (an `SMMUv3`): by default the object `translate` is a bound method of, when it offers
`wait_stall`; without it stalled results are faults and ATS is unavailable (ATS_ERR). The device registers
itself as the ATS endpoint of its StreamID (`iommu.attach_endpoint`). Not modelled: interrupts, the PCIe
configuration space itself (PCIE_CTRL stands for the ATS and PRI capabilities' control registers), ATS STU,
  wired interrupts, MSI-X, MSI masking and multiple vectors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .atc import Atc
from .bus import Bus, BusError
from .regs import Access, Reg, RegField, RegisterFile
from .smmuv3.ats import PageRequest, PrgResponse
from .smmuv3.stall import Resume, StallEnd
from .trace import NULL_TRACER, Tracer, define

__all__ = ["DmaTestDevice", "DMATEST_BASE", "DMATEST_SIZE", "CMD_READ64", "CMD_WRITE64", "CMD_COPY",
           "STATUS_DONE", "STATUS_FAULT", "STATUS_BUSERR", "STATUS_BADCMD", "STATUS_STALLED", "STATUS_PRI_WAIT",
           "STATUS_ATS_ERR", "STATUS_PRI_ERR", "PCIE_ATS_EN", "PCIE_PRI_EN", "PCIE_PRI_RESET", "PRI_RF",
           "PRI_UPRGI", "PRI_STOPPED", "DMATEST_ID", "MAX_LEN", "REGS", "MSI_SENT", "MSI_FAULT", "MSI_BUSERR",
           "MSI_STALLED"]

DMATEST_BASE = 0x0910_0000
DMATEST_SIZE = 0x1000
DMATEST_ID = 0x444D4154
CMD_READ64, CMD_WRITE64, CMD_COPY = 1, 2, 3
STATUS_DONE, STATUS_FAULT, STATUS_BUSERR, STATUS_BADCMD = 1, 2, 4, 8
STATUS_STALLED, STATUS_PRI_WAIT, STATUS_ATS_ERR, STATUS_PRI_ERR = 16, 32, 64, 128
PCIE_ATS_EN, PCIE_PRI_EN, PCIE_PRI_RESET = 1, 2, 4
PRI_RF, PRI_UPRGI, PRI_STOPPED = 1, 2, 1 << 8            # PCIe PRI Status bits
MSI_SENT, MSI_FAULT, MSI_BUSERR, MSI_STALLED = 1, 2, 4, 8  # MSI_STATUS
MAX_LEN = 1 << 20
PRI_ROUNDS = 4              # page request groups per piece before the device gives up (PRI_ERR)
_PAGE = 4096

define("dmatest_cmd", ("dev", "cmd", "sid", "ssid", "iova", "len", "status", "fault"), "DMA test command done")
define("dmatest_wait", ("dev", "cmd", "iova", "what", "stag", "grpid"),
       "the transfer waits (what: stall | pri) at input address iova")
define("dmatest_wake", ("dev", "what", "outcome"), "the transfer's wait ended (stall action or PRG response)")
define("dmatest_ats", ("dev", "sid", "ssid", "iova", "status", "out", "size", "r", "w"),
       "ATS Translation Request and its completion")
define("dmatest_atc_inv", ("dev", "ssid", "lo", "hi", "global_", "removed", "completed"),
       "ATS Invalidate Request received")
define("dmatest_prg", ("dev", "grpid", "pages", "first", "write"), "page request group sent")
define("msi_write", ("dev", "requester", "iova", "pa", "data", "outcome"),
       "a device's MSI write: its translation and where it went (outcome: sent | fault | buserr | stalled)")
define("dmatest_prg_resp", ("dev", "grpid", "code", "known"), "PRG response received (known=0: UPRGI)")

RO, RW, WO = Access.RO, Access.RW, Access.WO
REGS = (
    Reg("ID", 0x00, 4, DMATEST_ID, access=RO),
    Reg("STATUS", 0x04, 4, 0, tuple(RegField(n, i, 1, access=RO) for i, n in enumerate(
        ("DONE", "FAULT", "BUSERR", "BADCMD", "STALLED", "PRI_WAIT", "ATS_ERR", "PRI_ERR")))),
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
    Reg("PCIE_CTRL", 0x44, 4, 0, (RegField("ATS_EN", 0, 1), RegField("PRI_EN", 1, 1), RegField("PRI_RESET", 2, 1))),
    Reg("PRI_STATUS", 0x48, 4, 0, (RegField("RF", 0, 1, access=RO), RegField("UPRGI", 1, 1, access=RO),
                                   RegField("STOPPED", 8, 1, access=RO))),
    Reg("PRI_ALLOC", 0x4C, 4, 0),
    Reg("STAG", 0x50, 4, 0, access=RO),
    Reg("PRG_INDEX", 0x54, 4, 0, access=RO),
    Reg("ATC_ENTRIES", 0x58, 4, 0, access=RO),
    Reg("ATC_INVS", 0x5C, 4, 0, access=RO),
    Reg("MSI_ADDR", 0x60, 8, 0, (RegField("ADDR", 2, 62, shift=2),)),
    Reg("MSI_DATA", 0x68, 4, 0),
    Reg("MSI_CTRL", 0x6C, 4, 0, (RegField("EN", 0, 1),)),
    Reg("MSI_COUNT", 0x70, 4, 0, access=RO),
    Reg("MSI_STATUS", 0x74, 4, 0, access=RO),
)

Translate = Callable[..., Any]
_WAIT = object()            # a piece's translation parks the transfer
_RAZWI = object()           # a terminated stall completes the piece as RAZ/WI


class _Failed(Exception):
    """Internal: a DMA piece faulted (carries status bits); never leaves this module."""

    def __init__(self, status: int, fault_type: int, addr: int):
        super().__init__(status)
        self.status, self.fault_type, self.addr = status, fault_type, addr


@dataclass(eq=False)
class _Transfer:
    """One command in flight: its pieces (address, length, write, offset in `buf`) in order."""
    cmd: int
    sid: int
    ssid: int | None
    iova: int
    length: int
    steps: list[tuple[int, int, bool, int]]
    buf: bytearray
    exec_: bool
    priv: bool
    i: int = 0
    wait: str | None = None           # "stall" | "pri" while parked
    outcome: Any = None               # what ended the wait: ("stall", StallEnd) | ("pri", PrgResponse)
    fault_type: int = 0
    rounds: dict[int, int] = field(default_factory=dict)   # page request groups per piece


@dataclass(eq=False)
class _Group:
    transfer: _Transfer
    ssid: int | None
    pages: list[int]
    write: bool


class DmaTestDevice:
    def __init__(self, bus: Bus, translate: Translate, sid: int = 0, tracer: Tracer = NULL_TRACER,
                 name: str = "dmatest0", *, iommu: Any = None, atc_size: int = 32):
        self.bus = bus
        self.translate = translate
        self.tracer = tracer
        self.name = name
        if iommu is None:
            owner = getattr(translate, "__self__", None)
            iommu = owner if hasattr(owner, "wait_stall") else None
        self.iommu = iommu
        self.atc = Atc(atc_size)
        self.atc_inv_fails = False          # test knob: ATS Invalidate Requests are never completed
        self.regs = RegisterFile(self, REGS)
        self.regs["SID"] = sid
        self._reset_sid = sid
        self._xfer: _Transfer | None = None
        self._groups: dict[int, _Group] = {}
        self._next_prg = 0
        self._driving = False
        self._endpoint_sid: int | None = None
        self._attach()

    def reset(self) -> None:
        """Device reset: an outstanding transfer is abandoned (a stall it waited on stays in the SMMU until
        software terminates it), the ATC is emptied and outstanding page requests are forgotten."""
        self.regs.reset()
        self.regs["SID"] = self._reset_sid
        self._xfer = None
        self._groups.clear()
        self.atc.flush()
        self._attach()

    def _attach(self) -> None:
        attach = getattr(self.iommu, "attach_endpoint", None)
        if attach is None:
            return
        sid = self.regs["SID"]
        if self._endpoint_sid is not None and self._endpoint_sid != sid:
            self.iommu.detach_endpoint(self._endpoint_sid, self)
        attach(sid, self)
        self._endpoint_sid = sid

    def read(self, offset: int, size: int) -> int:
        return self.regs.read(offset, size)

    def write(self, offset: int, value: int, size: int) -> None:
        self.regs.write(offset, value, size)

    # -- register hooks ------------------------------------------------------------------------------------------
    def _on_cmd_write(self, old: int, new: int) -> None:
        self.regs["CMD"] = 0
        self.run(new)

    def _on_sid_write(self, old: int, new: int) -> None:
        self._attach()

    def _on_pcie_ctrl_write(self, old: int, new: int) -> None:
        r = self.regs
        if new & PCIE_PRI_RESET:
            r["PRI_STATUS"] = 0
            self._groups.clear()
        if old & PCIE_ATS_EN and not new & PCIE_ATS_EN:
            self.atc.flush()
        r["PCIE_CTRL"] = new & ~PCIE_PRI_RESET
        self._pri_status()

    def _pri_status(self) -> None:
        r = self.regs
        stopped = not r["PCIE_CTRL"] & PCIE_PRI_EN and not self._groups
        r["PRI_STATUS"] = (r["PRI_STATUS"] & ~PRI_STOPPED) | (PRI_STOPPED if stopped else 0)
        r["ATC_ENTRIES"] = len(self.atc)

    # -- command execution -----------------------------------------------------------------------------------
    def run(self, cmd: int) -> int:
        """Execute a command as if written to CMD; returns STATUS (STALLED / PRI_WAIT while it waits)."""
        r = self.regs
        if self._xfer is not None:                   # one transfer at a time
            r["STATUS"] = r["STATUS"] | STATUS_BADCMD
            return r["STATUS"]
        t = self._transfer(cmd)
        if t is None:
            self._done(_Transfer(cmd, r["SID"], None, r["IOVA"], r["LEN"], [], bytearray(), False, False),
                       STATUS_BADCMD, 0, 0)
            return r["STATUS"]
        self._xfer = t
        self._drive()
        return r["STATUS"]

    def _transfer(self, cmd: int) -> _Transfer | None:
        r = self.regs
        sid = r["SID"]
        ssid = r.get_field("SSID", "SSID") if r.get_field("SSID", "SSV") else None
        iova, length = r["IOVA"], r["LEN"]
        exec_, priv = bool(r.get_field("ATTR", "EXEC")), bool(r.get_field("ATTR", "PRIV"))
        if cmd == CMD_READ64:
            steps, buf = self._steps(iova, 8, False, 0), bytearray(8)
        elif cmd == CMD_WRITE64:
            steps, buf = self._steps(iova, 8, True, 0), bytearray(r["DATA"].to_bytes(8, "little"))
        elif cmd == CMD_COPY and length <= MAX_LEN:
            steps = self._steps(iova, length, False, 0) + self._steps(r["DST"], length, True, 0)
            buf = bytearray(length)
        else:
            return None
        return _Transfer(cmd, sid, ssid, iova, length, steps, buf, exec_, priv)

    @staticmethod
    def _steps(addr: int, n: int, write: bool, off: int) -> list[tuple[int, int, bool, int]]:
        out = []
        while n > 0:
            chunk = min(n, _PAGE - (addr & (_PAGE - 1)))
            out.append((addr, chunk, write, off))
            addr = (addr + chunk) & (2**64 - 1)
            off += chunk
            n -= chunk
        return out

    def _drive(self) -> None:
        """Run the transfer until it completes, fails or waits. Wake-ups that arrive while it runs (an SMMU
        answering a page request at once, a DMA that reaches the SMMU's own registers) are taken by this loop."""
        if self._driving:
            return
        self._driving = True
        try:
            while self._xfer is not None and self._xfer.wait is None:
                t = self._xfer
                try:
                    if not self._advance(t):
                        break
                except _Failed as e:
                    self._done(t, e.status, e.fault_type, e.addr)
                    continue
                self._done(t, STATUS_DONE, 0, 0)
        finally:
            self._driving = False

    def _advance(self, t: _Transfer) -> bool:
        """Do the transfer's pieces; False when it parked."""
        while t.i < len(t.steps):
            addr, n, write, off = t.steps[t.i]
            pa = self._xlate(t, addr, write)
            if pa is _WAIT:
                if t.wait is not None:
                    self._parked(t, addr)
                    return False
                continue                                # woken while parking: this piece again
            if pa is not _RAZWI:
                self._access(pa, addr, n, write, t.buf, off)
            elif not write:
                t.buf[off:off + n] = bytes(n)
            t.i += 1
        return True

    def _access(self, pa: int, addr: int, n: int, write: bool, buf: bytearray, off: int) -> None:
        try:
            if write:
                self.bus.write_bytes(pa, bytes(buf[off:off + n]))
            else:
                buf[off:off + n] = self.bus.read_bytes(pa, n)
        except BusError:
            raise _Failed(STATUS_BUSERR, 0, addr) from None

    def _done(self, t: _Transfer, status: int, ftype: int, faddr: int) -> None:
        r = self.regs
        if t.cmd == CMD_READ64 and status == STATUS_DONE:
            r["DATA"] = int.from_bytes(t.buf, "little")
        r["STATUS"] = status
        r["FAULT_TYPE"] = ftype
        r["FAULT_ADDR"] = faddr
        if status == STATUS_DONE:
            r["COUNT"] = r["COUNT"] + 1
        self._xfer = None
        self._pri_status()
        if "dmatest_cmd" in self.tracer.enabled:
            self.tracer.emit("dmatest_cmd", dev=self.name, cmd=t.cmd, sid=t.sid, ssid=t.ssid, iova=t.iova,
                             len=t.length, status=status, fault=ftype)
        if r["MSI_CTRL"] & 1:
            self.send_msi()

    # -- the completion MSI ------------------------------------------------------------------------------------
    def send_msi(self) -> int:
        """Send the completion MSI now (what a completed command does with MSI_CTRL.EN); returns MSI_STATUS."""
        r = self.regs
        sid, iova, data = r["SID"], r["MSI_ADDR"], r["MSI_DATA"]
        res = self.translate(sid, None, iova, write=True, exec_=False, priv=False)
        return self._msi_write(sid, iova, data, res)

    def _msi_write(self, sid: int, iova: int, data: int, res: Any) -> int:
        pa = getattr(res, "pa", None)
        if pa is not None:
            try:
                self.bus.write_from(sid, pa, data, 4)
                outcome, status = "sent", MSI_SENT
                self.regs["MSI_COUNT"] = (self.regs["MSI_COUNT"] + 1) & 0xFFFF_FFFF
            except BusError:
                outcome, status = "buserr", MSI_BUSERR
        elif getattr(res, "stall", False) and self.iommu is not None and self.iommu.wait_stall(
                res, lambda end: self._msi_resumed(sid, iova, data, end)):
            outcome, status = "stalled", MSI_STALLED
        else:
            outcome, status = "fault", MSI_FAULT
        self.regs["MSI_STATUS"] = status
        if "msi_write" in self.tracer.enabled:
            self.tracer.emit("msi_write", dev=self.name, requester=sid, iova=iova, pa=pa, data=data, outcome=outcome)
        return status

    def _msi_resumed(self, sid: int, iova: int, data: int, end: StallEnd) -> None:
        if end.action is Resume.RETRY:
            self._msi_write(sid, iova, data, end.result)
        else:                                           # aborted, or completed as a dropped write (RAZ/WI)
            self._msi_write(sid, iova, data, None)

    def _parked(self, t: _Transfer, addr: int) -> None:
        r = self.regs
        r["STATUS"] = STATUS_STALLED if t.wait == "stall" else STATUS_PRI_WAIT
        r["FAULT_ADDR"] = addr
        r["FAULT_TYPE"] = t.fault_type
        if "dmatest_wait" in self.tracer.enabled:
            self.tracer.emit("dmatest_wait", dev=self.name, cmd=t.cmd, iova=addr, what=t.wait, stag=r["STAG"],
                             grpid=r["PRG_INDEX"])

    def _wake(self, t: _Transfer, what: str, outcome: Any) -> None:
        if "dmatest_wake" in self.tracer.enabled:
            self.tracer.emit("dmatest_wake", dev=self.name, what=what,
                             outcome=getattr(getattr(outcome, "action", outcome), "name", str(outcome)))
        if t is not self._xfer or t.wait != what:
            return                                      # abandoned by a reset, or not waiting for this
        t.wait, t.outcome = None, (what, outcome)
        self._drive()

    # -- translation of one piece ---------------------------------------------------------------------------------
    def _xlate(self, t: _Transfer, addr: int, write: bool) -> Any:
        """The PA of a piece, `_WAIT` (parked, or woken while parking), `_RAZWI`; raises _Failed."""
        if t.outcome is not None:
            what, oc = t.outcome
            t.outcome = None
            if what == "stall":
                return self._after_stall(t, addr, oc)
            if oc is not PrgResponse.SUCCESS:
                raise _Failed(STATUS_PRI_ERR, 0, addr)
        if self.regs["PCIE_CTRL"] & PCIE_ATS_EN:
            return self._ats_xlate(t, addr, write)
        res = self.translate(t.sid, t.ssid, addr, write=write, exec_=t.exec_ and not write, priv=t.priv)
        return self._untranslated(t, addr, res)

    def _untranslated(self, t: _Transfer, addr: int, res: Any) -> Any:
        pa = getattr(res, "pa", None)
        if pa is not None:
            return pa
        if getattr(res, "stall", False) and self.iommu is not None:
            t.wait, t.fault_type = "stall", int(res.type)
            self.regs["STAG"] = res.stag
            if self.iommu.wait_stall(res, lambda end, t=t: self._wake(t, "stall", end)):
                return _WAIT
            t.wait = None
        raise _Failed(STATUS_FAULT, int(getattr(res, "type", 0)), addr)

    def _after_stall(self, t: _Transfer, addr: int, end: StallEnd) -> Any:
        if end.action is Resume.RETRY:
            return self._untranslated(t, addr, end.result)
        if end.action is Resume.RAZWI:
            return _RAZWI
        raise _Failed(STATUS_FAULT, t.fault_type, addr)

    def _ats_xlate(self, t: _Transfer, addr: int, write: bool) -> Any:
        exec_ = t.exec_ and not write
        e = self.atc.lookup(t.ssid, addr, t.priv)
        if e is None or not e.allows(write, exec_):
            if self.iommu is None or not hasattr(self.iommu, "ats_translate"):
                raise _Failed(STATUS_ATS_ERR, 0, addr)
            comp = self.iommu.ats_translate(t.sid, t.ssid, addr, nw=not write, exec_=exec_, priv=t.priv)
            if "dmatest_ats" in self.tracer.enabled:
                self.tracer.emit("dmatest_ats", dev=self.name, sid=t.sid, ssid=t.ssid, iova=addr,
                                 status=comp.status.value, out=comp.addr, size=comp.size, r=int(comp.r),
                                 w=int(comp.w))
            if not comp.ok:
                raise _Failed(STATUS_ATS_ERR, 0, addr)
            if comp.r or comp.w or comp.x:
                e = self.atc.insert(t.ssid, addr, comp)
                self.regs["ATC_ENTRIES"] = len(self.atc)
            if not comp.allows(write, exec_):
                return self._page_request(t, addr, write)
        res = self.iommu.translated(t.sid, e.translate(addr), write=write, exec_=exec_, priv=t.priv)
        pa = getattr(res, "pa", None)
        if pa is None:
            raise _Failed(STATUS_FAULT, int(getattr(res, "type", 0)), addr)
        return pa

    # -- PRI -------------------------------------------------------------------------------------------------------
    def _page_request(self, t: _Transfer, addr: int, write: bool) -> Any:
        r = self.regs
        if not r["PCIE_CTRL"] & PCIE_PRI_EN or r["PRI_STATUS"] & PRI_RF or not hasattr(self.iommu, "page_request"):
            raise _Failed(STATUS_ATS_ERR, 0, addr)
        rounds = t.rounds.get(t.i, 0)
        room = r["PRI_ALLOC"] - sum(len(g.pages) for g in self._groups.values())
        if rounds >= PRI_ROUNDS or room <= 0 or len(self._groups) >= 512:
            raise _Failed(STATUS_PRI_ERR, 0, addr)
        t.rounds[t.i] = rounds + 1
        pages: list[int] = []
        for a, _n, w, _off in t.steps[t.i:]:
            page = a & ~(_PAGE - 1)
            if w != write or len(pages) >= room:
                break
            if page not in pages:
                pages.append(page)
        while self._next_prg in self._groups:
            self._next_prg = (self._next_prg + 1) & 0x1FF
        grp, self._next_prg = self._next_prg, (self._next_prg + 1) & 0x1FF
        self._groups[grp] = _Group(t, t.ssid, pages, write)
        t.wait = "pri"
        r["PRG_INDEX"] = grp
        if "dmatest_prg" in self.tracer.enabled:
            self.tracer.emit("dmatest_prg", dev=self.name, grpid=grp, pages=len(pages), first=pages[0], write=write)
        ssv, exec_ = t.ssid is not None, t.exec_ and not write
        for i, page in enumerate(pages):
            self.iommu.page_request(PageRequest(sid=t.sid, ssv=int(ssv), ssid=t.ssid or 0, prg_index=grp,
                                                last=int(i == len(pages) - 1), read=int(not write),
                                                write=int(write), exec=int(exec_), priv=int(t.priv), addr=page))
        return _WAIT

    # -- the SMMU's requests (AtsEndpoint) ------------------------------------------------------------------------
    def pri_response(self, ssid: int | None, grpid: int, code: PrgResponse) -> None:
        """A PRG response from the SMMU (CMD_PRI_RESP, or its automatic answer)."""
        g = self._groups.pop(grpid, None)
        if "dmatest_prg_resp" in self.tracer.enabled:
            self.tracer.emit("dmatest_prg_resp", dev=self.name, grpid=grpid, code=code.name, known=int(g is not None))
        if g is None:                                   # PCIe: Unexpected Page Request Group Index
            self.regs["PRI_STATUS"] = self.regs["PRI_STATUS"] | PRI_UPRGI
            return
        if code is PrgResponse.RESPONSE_FAILURE:
            self.regs["PRI_STATUS"] = self.regs["PRI_STATUS"] | PRI_RF
        elif code is PrgResponse.SUCCESS:               # the function asks for the translations again
            for page in g.pages:
                self.atc.invalidate(g.ssid, page, page + _PAGE)
        self._pri_status()
        self._wake(g.transfer, "pri", code)

    def atc_invalidate(self, ssid: int | None, lo: int, hi: int, global_: bool) -> bool:
        """An ATS Invalidate Request from the SMMU (CMD_ATC_INV); False: never completed (`atc_inv_fails`)."""
        removed = self.atc.invalidate(ssid, lo, hi, global_)
        r = self.regs
        r["ATC_INVS"] = (r["ATC_INVS"] + 1) & 0xFFFF_FFFF
        r["ATC_ENTRIES"] = len(self.atc)
        if "dmatest_atc_inv" in self.tracer.enabled:
            self.tracer.emit("dmatest_atc_inv", dev=self.name, ssid=ssid, lo=lo, hi=hi, global_=int(global_),
                             removed=removed, completed=int(not self.atc_inv_fails))
        return not self.atc_inv_fails
