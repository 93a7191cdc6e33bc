"""The SMMUv3 device (IHI 0070): MMIO programming interface, command queue, event queue, GERROR, IRQ/MSI,
configuration cache, `translate()`, and DVM participation (BTM).

Software reaches it only through `read(offset, size)` / `write(offset, value, size)` over the 0x20000-byte
window (page 0 and page 1) and through memory (tables, queues) on the `Bus`. Register behaviour is declared in
`regs.py`; this class adds the register file's named hooks (`_on_cr0_write`, ...) and the state-dependent
write locks.

The model is synchronous: every Update handshake (CR0/CR0ACK, IRQ_CTRL/IRQ_CTRLACK, GBPA.Update) completes
before the MMIO write returns, and the command queue is consumed inside the write that moved CMDQ_PROD (or
enabled the queue, or acknowledged a command error). Consumption per kick is bounded (4x the queue size) so
a queue whose own MSI writes keep moving PROD cannot hang the caller.

Interrupts: `irq(line)` is called with "eventq", "gerror" or "cmd_sync" for wired interrupts; when IDR0.MSI=1
and the matching *_IRQ_CFG0.ADDR is non-zero, a 32-bit MSI write of *_IRQ_CFG1.DATA goes through the bus
instead (an aborted MSI write sets the GERROR MSI_*_ABT_ERR bit). The SMMU's own MSIs go out untranslated
(they are not client transactions of the SMMU), with `msi_requester` as their requester ID (`Bus.write_from`;
an ITS takes it as the DeviceID: the board's choice, firmware's `msi-parent` specifier), or none when None.

Translation: `translate()` handles SMMU-disabled (GBPA), abort and bypass itself and hands stage 1/2/nested
configurations to `self.core`, the translation backend (`translate.TranslationCore` unless the constructor's
`core` says otherwise; None: the device translates nothing). Faults are values; `record_fault` is the only
path from a Fault into the EVTQ and it uses `events.from_fault`.

DVM (BTM): on the TLBI path (see `dvm.py`) the device is the SMMU's receiver: `dvm_tlbi` decides whether a
broadcast applies (IDR0.BTM=1, CR2.PTM=0, SMMUEN=1, a backend present) and hands it to the backend
(`translate.TranslationCore.dvm_tlbi`, which selects through `btm.py` and removes from `iotlb.py`).

Extension points (`hooks.py`), for devices built on the model such as a VMM's vSMMU: the command handler
table (`handler`, `set_handler`), the backend (`core=`), observers (`hooks`: SMMUEN, GBPA, STE/CD
invalidation, end of a CMDQ pass, EVTQ_PROD reads) and public actions: `record_fault`, `write_event`,
`command_error`, `complete_sync`, `raise_gerror`, `field`, `reg_at`, `find_ste`, `traced`.

Stalls (IHI 0070 3.12.2; `stall.py`): with IDR0.STALL_MODEL 0b00 or 0b10, a translation-related fault of a
stage whose CD.S / STE.S2S is 1 holds the transaction: `translate` returns the Fault with `stall=True` and a
STAG, its event record (always recorded, R notwithstanding) carries Stall=1 and the STAG, and a device that
waits (`wait_stall`) is told how it ends: CMD_RESUME (retry: translated again; abort; RAZ/WI), CMD_STALL_TERM,
SMMUEN 1 -> 0, or EVTQEN 1 -> 0 for a stall whose record was still waiting. Not stalled but terminated (an
ordinary fault): when the EVTQ is disabled or its write aborts (the record cannot reach software), or
IDR5.STALL_MAX stalls are outstanding. A full EVTQ does not lose a stall's record: it waits for room (the next
EVTQ_CONS write), without OVFLG.

PCIe (`pcie.py`, `ats.py`): the ATS Translation Request service (`ats_translate`), translated transactions
(`translated`), page requests into the PRI queue (`page_request`; PRIQ_BASE/PROD/CONS, PRIQ_IRQ_CFG0-2,
PRIQEN, PRIQ_IRQEN, PRIQ_ABT_ERR), and the endpoints (`attach_endpoint`) that CMD_ATC_INV and CMD_PRI_RESP
reach; an ATC invalidation that does not complete makes the next CMD_SYNC fail with CERROR_ATC_INV_SYNC.

HTTU (IHI 0070 3.13): the backend is built with `cas=bus.cas64`, the atomic descriptor update of AF/dirty.

Not modelled: Secure/Realm interfaces, the PIDR/CIDR identification block, memory attributes, prefetching
(PREFETCH_* are accepted), event merging.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Callable

from ..bus import Bus, BusError
from ..regs import Reg, RegisterFile
from ..tlbi_types import TlbiOp
from ..trace import NULL_TRACER, Tracer, define
from . import commands as cmds
from . import events as evmod
from . import ste as stemod
from . import strtab
from .ats import PRI_RESP_CODES, PRIQ_ENTRY_SIZE, AtsEndpoint, PageRequest, atc_inv_range
from .config import PERM_R, PERM_W, PERM_X, CfgKind, TransCfg, TransResult
from .fault import TRANSLATION_FAULTS, EventType, Fault, FaultClass
from .pcie import PcieMixin
from .hooks import ALL_STREAMS, BackendFactory, CommandHandler, SmmuHooks, TranslationBackend
from .queue import Queue
from .regs import EVTQ_PAGE0_ALIASES, WRITE_LOCKS, SmmuFeatures, build_regs
from .stall import Resume, StallEnd, Stalled, StallTable, resume_action
from .translate import TranslationCore

__all__ = ["SMMUv3", "MMIO_SIZE"]

MMIO_SIZE = 0x20000

define("smmuv3_read_mmio", ("dev", "addr", "val", "size", "r"), "MMIO read (r=1: RAZ, no register)")
define("smmuv3_write_mmio", ("dev", "addr", "val", "size", "r"), "MMIO write (r=1: ignored)")
define("smmuv3_write_mmio_idr", ("dev", "addr", "val", "why"),
       "write to a RO/locked/unimplemented register or a RAZ/WI location")
define("smmuv3_trigger_irq", ("dev", "irq", "msi", "addr", "data"), "wired interrupt or MSI write")
define("smmuv3_write_gerror", ("dev", "toggled", "gerror"), "the SMMU toggled GERROR bits")
define("smmuv3_write_gerrorn", ("dev", "acked", "gerrorn"), "software acknowledged GERROR bits")
define("smmuv3_cmdq_consume", ("dev", "prod", "cons", "prod_wrap", "cons_wrap"), "CMDQ state before a command")
define("smmuv3_cmdq_opcode", ("dev", "opcode", "cons", "sid", "vmid", "asid", "addr"),
       "command about to execute (operand fields as decoded; 0 where the opcode has none)")
define("smmuv3_cmdq_consume_error", ("dev", "cmd_name", "cmd_error", "cons"), "CMDQ stopped with a CERROR")
define("smmuv3_cmdq_cfgi_ste", ("dev", "streamid",), "CFGI_STE")
define("smmuv3_cmdq_cfgi_ste_range", ("dev", "start", "end"), "CFGI_STE_RANGE (end=-1: all)")
define("smmuv3_cmdq_cfgi_cd", ("dev", "sid", "ssid", "all"), "CFGI_CD / CFGI_CD_ALL")
define("smmuv3_cmdq_sync", ("dev", "cs", "msiaddr", "msidata"), "CMD_SYNC completed")
define("smmuv3_record_event", ("dev", "type", "sid", "ssid", "reason"), "a fault is to be recorded")
define("smmuv3_propagate_event", ("dev", "type", "sid", "prod", "written"),
       "event record written to the EVTQ (written=0: lost: queue disabled, full or aborted)")
define("smmuv3_evtq_overflow", ("dev", "prod", "cons"), "EVTQ full: OVFLG toggled")
define("smmuv3_find_ste", ("dev", "sid", "addr"), "STE located")
define("smmuv3_find_ste_2lvl", ("dev", "strtab_base", "l1ptr", "l2ptr", "span"), "2-level stream table walk")
define("smmuv3_get_cd", ("dev", "addr"), "CD fetch address (IPA for nested STEs)")
define("smmuv3_config_cache_hit", ("dev", "sid", "ssid", "hits", "misses"), "config cache hit")
define("smmuv3_config_cache_miss", ("dev", "sid", "ssid", "hits", "misses"), "config cache miss")
define("smmuv3_config_cache_inv", ("dev", "sid", "n"), "config cache entries dropped")
define("smmuv3_translate_disable", ("dev", "sid", "addr", "is_write", "abort"), "SMMUEN=0: GBPA applies")
define("smmuv3_translate_bypass", ("dev", "sid", "addr", "is_write"), "STE bypass")
define("smmuv3_translate_abort", ("dev", "sid", "addr", "is_write", "type", "reason"), "transaction aborted")
define("smmuv3_translate_success", ("dev", "sid", "iova", "translated", "perm"), "translated")
define("smmuv3_dvm_tlbi", ("dev", "op", "msg", "applied"),
       "broadcast TLBI received (applied=0: ignored, or malformed)")
define("smmuv3_stall", ("dev", "sid", "ssid", "stag", "addr", "type", "event"),
       "a faulting transaction is stalled (event: written | pending, while the EVTQ is full)")
define("smmuv3_stall_end", ("dev", "sid", "ssid", "stag", "action", "why"),
       "a stall ended (action retry | abort | razwi; why resume | stall_term | smmuen_off | evtq_disabled | "
       "evtq_abort | reset)")
define("smmuv3_resume_ignored", ("dev", "sid", "stag"), "CMD_RESUME for no outstanding stall: ignored")
define("smmuv3_ats_treq", ("dev", "sid", "ssid", "addr", "nw", "status", "out", "size", "r", "w", "reason"),
       "ATS Translation Request answered")
define("smmuv3_atc_inv", ("dev", "sid", "ssid", "lo", "hi", "global_", "endpoint", "ok"),
       "CMD_ATC_INV sent to the endpoint of a StreamID (endpoint=0: none registered)")
define("smmuv3_pri_request", ("dev", "sid", "ssid", "grpid", "last", "addr", "prod", "outcome"),
       "page request received (outcome: queued | overflow | aborted | refused)")
define("smmuv3_pri_resp", ("dev", "sid", "ssid", "grpid", "code", "auto", "endpoint"),
       "PRG response to an endpoint (auto=1: the SMMU's own, for a request it could not queue)")

_RWX = PERM_R | PERM_W | PERM_X
_ACCEPTED = ("PREFETCH_CONFIG", "PREFETCH_ADDR")   # no effect modelled (no prefetching)


class SMMUv3(PcieMixin):
    """One SMMUv3 on a bus. See the module docstring for the interfaces.

    `core`: the translation backend's factory, called as `core(read, tracer, features, cas=bus.cas64)` (default
    `TranslationCore`); None for a device that translates nothing."""

    def __init__(self, bus: Bus, features: SmmuFeatures = SmmuFeatures(), tracer: Tracer = NULL_TRACER,
                 name: str = "smmu0", irq: Callable[[str], Any] | None = None, *,
                 core: BackendFactory | None = TranslationCore, msi_requester: int | None = None):
        self.bus = bus
        self.msi_requester = msi_requester
        self.features = features
        self.tracer = tracer
        self.name = name
        self.dvm_name = name
        self.irq = irq
        self.hooks = SmmuHooks()
        self.regs = RegisterFile(self, build_regs(features), on_bad_access=self._bad_access,
                                 on_unimplemented=self._unimplemented)
        self.cmdq = Queue(self.regs, "CMDQ", cmds.CMD_SIZE, features.cmdqs, owner="CONS")
        self.evtq = Queue(self.regs, "EVTQ", evmod.EVENT_SIZE, features.eventqs, owner="PROD")
        self.priq = Queue(self.regs, "PRIQ", PRIQ_ENTRY_SIZE, features.priqs, owner="PROD") if features.pri else None
        self.stalls = StallTable(features.stall_max)
        self.endpoints: dict[int, AtsEndpoint] = {}  # PCIe functions with an ATC / PRI, by StreamID
        self.page_requests: list[PageRequest] = []  # written into the PRI queue
        self._evtq_pending: list[evmod.Event] = []  # stall records waiting for room in a full EVTQ
        self._atc_inv_failed = False
        self.events: list[evmod.Event] = []         # written into the EVTQ
        self.dropped: list[evmod.Event] = []        # recorded but lost (EVTQ disabled, full, or aborted)
        self.faults: list[Fault] = []               # every Fault translate() returned
        self.config_cache: dict[tuple[int, int | None], TransCfg] = {}
        self.stats: Counter[str] = Counter()
        self._cmdq_busy = False
        self._cmdq_rekick = False
        self._s2_cfgs: dict[Any, TransCfg] = {}
        self._handlers: dict[str, CommandHandler] = self._default_handlers()
        r = self.regs.regs
        # the fault path's register tests as masks: SMMUEN, EVTQEN (CR0ACK), EVTQ_IRQEN (IRQ_CTRLACK)
        self._smmuen = r["CR0ACK"].field("SMMUEN").mask
        self._evtqen = r["CR0ACK"].field("EVTQEN").mask
        self._evtq_irqen = r["IRQ_CTRLACK"].field("EVTQ_IRQEN").mask
        self.core: TranslationBackend | None = None if core is None else core(bus.read64, tracer, features,
                                                                               cas=bus.cas64)

    def reset(self) -> None:
        self.regs.reset()
        self.config_cache.clear()
        self._evtq_pending.clear()
        self._end_stalls(self.stalls.take_all(), "reset")

    def traced(self, name: str) -> bool:
        """Is trace event `name` enabled (guard for `self.tracer.emit(name, ...)`)?"""
        return name in self.tracer.enabled

    def field(self, reg: str, fld: str) -> int:
        """Current value of register field `reg.fld` (no MMIO side effects)."""
        return self.regs.get_field(reg, fld)

    # -- MMIO --------------------------------------------------------------------------------------------
    def _alias(self, offset: int) -> int:
        if self.features.evtq_page0_alias:
            return EVTQ_PAGE0_ALIASES.get(offset, offset)
        return offset

    def reg_at(self, offset: int, size: int) -> Reg | None:
        """The register an MMIO access of `size` bytes at `offset` reaches (page-0 aliases applied), or None
        for RAZ/WI locations and illegal sizes/alignments."""
        off = self._alias(offset)
        hit = self.regs.lookup(off, size) if 0 <= off < MMIO_SIZE else None
        return hit[0] if hit is not None else None

    def read(self, offset: int, size: int) -> int:
        off = self._alias(offset)
        hit = self.regs.lookup(off, size) if 0 <= off < MMIO_SIZE else None
        val = self.regs.read(off, size) if hit is not None else 0
        if hit is None:
            self.stats["bad_read"] += 1
        if self.traced("smmuv3_read_mmio"):
            self.tracer.emit("smmuv3_read_mmio", dev=self.name, addr=offset, val=val, size=size,
                             r=int(hit is None))
        return val

    def write(self, offset: int, value: int, size: int) -> None:
        off = self._alias(offset)
        hit = self.regs.lookup(off, size) if 0 <= off < MMIO_SIZE else None
        ignored = hit is None
        if hit is not None:
            reg = hit[0]
            lock = WRITE_LOCKS.get(reg.name)
            if lock is not None and self.field(*lock):
                ignored = True
                self._log_ignored(offset, value, f"{reg.name} is RO while {lock[0]}.{lock[1]}=1")
            elif reg.wmask == 0:
                ignored = True
                self._log_ignored(offset, value, f"{reg.name} is read-only")
        else:
            self.stats["bad_write"] += 1
            self._log_ignored(offset, value, "no register (RAZ/WI)")
        if self.traced("smmuv3_write_mmio"):
            self.tracer.emit("smmuv3_write_mmio", dev=self.name, addr=offset, val=value, size=size,
                             r=int(ignored))
        if not ignored:
            self.regs.write(off, value, size)

    def _log_ignored(self, offset: int, value: int, why: str) -> None:
        self.stats["ignored_write"] += 1
        if self.traced("smmuv3_write_mmio_idr"):
            self.tracer.emit("smmuv3_write_mmio_idr", dev=self.name, addr=offset, val=value, why=why)

    def _bad_access(self, kind: str, offset: int, size: int, value: int | None) -> None:
        self.stats[f"bad_{kind}"] += 1

    def _unimplemented(self, reg: Reg, new: int) -> None:
        self.stats["unimplemented_write"] += 1
        if self.traced("smmuv3_write_mmio_idr"):
            self.tracer.emit("smmuv3_write_mmio_idr", dev=self.name, addr=reg.offset, val=new,
                             why=f"{reg.name}: unimplemented field changed (stored, no effect)")

    # -- register hooks (called by the RegisterFile) ---------------------------------------------------------
    def _on_cr0_write(self, old: int, new: int) -> None:
        self.regs["CR0ACK"] = new & self.regs.regs["CR0ACK"].rmask
        changed = bool((old ^ new) & 1)
        if changed:
            self.stats["smmuen_on" if new & 1 else "smmuen_off"] += 1
        if old & ~new & self._evtqen and self._evtq_pending:    # their records can no longer be written
            self._drop_pending_stall_records("evtq_disabled")
        if changed and not new & 1:                             # the SMMU no longer holds transactions
            self._end_stalls(self.stalls.take_all(), "smmuen_off")
        self._process_cmdq()
        if changed:
            for fn in self.hooks.smmuen:
                fn(bool(new & 1))

    def _on_irq_ctrl_write(self, old: int, new: int) -> None:
        self.regs["IRQ_CTRLACK"] = new & self.regs.regs["IRQ_CTRLACK"].rmask

    def _on_gbpa_write(self, old: int, new: int) -> None:
        update = self.regs.regs["GBPA"].field("UPDATE")
        if not update.get(new):
            self.regs["GBPA"] = old       # SMMUv3.2: a write without Update is IGNORED
            self.stats["gbpa_write_ignored"] += 1
            return
        self.regs["GBPA"] = update.put(new, 0)   # the update completes at once
        for fn in self.hooks.gbpa:
            fn(old, self.regs["GBPA"])

    def _on_gerrorn_write(self, old: int, new: int) -> None:
        if self.traced("smmuv3_write_gerrorn"):
            self.tracer.emit("smmuv3_write_gerrorn", dev=self.name, acked=(old ^ new), gerrorn=new)
        self._process_cmdq()

    def _on_cmdq_prod_write(self, old: int, new: int) -> None:
        self._process_cmdq()

    def _on_evtq_cons_write(self, old: int, new: int) -> None:
        """Software consumed events: stall records held back by a full queue go in now (in order)."""
        while self._evtq_pending and not self.evtq.state().full:
            ev = self._evtq_pending.pop(0)
            if not self.write_event(ev):                         # the write aborted: nobody can resume it
                st = self.stalls.take(ev.sid, ev.stag)
                if st is not None:
                    self._end_stall(st, Resume.ABORT, "evtq_abort")

    def _on_evtq_prod_read(self, value: int) -> int:
        return self._prod_read(self.hooks.evtq_prod_read, "EVTQ_PROD", value)

    def _on_priq_prod_read(self, value: int) -> int:
        return self._prod_read(self.hooks.priq_prod_read, "PRIQ_PROD", value)

    def _prod_read(self, observers: list, reg: str, value: int) -> int:
        """Software reads a PROD the SMMU owns: its observers may add entries first (`SmmuHooks`)."""
        if not observers:
            return value
        for fn in observers:
            fn()
        return self.regs[reg]

    # -- GERROR and interrupts -------------------------------------------------------------------------------
    def gerror_active(self) -> int:
        """Active global errors: GERROR bits that differ from GERRORN."""
        return self.regs["GERROR"] ^ self.regs["GERRORN"]

    def raise_gerror(self, bit: str) -> None:
        """Activate GERROR field `bit` ("CMDQ_ERR", "EVTQ_ABT_ERR", ...) unless already active, and signal the
        GERROR interrupt when IRQ_CTRL.GERROR_IRQEN is set (IHI 0070 7.2)."""
        mask = self.regs.regs["GERROR"].field(bit).mask
        if self.gerror_active() & mask:
            return                                   # already active: no new toggle
        self.regs["GERROR"] = self.regs["GERROR"] ^ mask
        self.stats[f"gerror_{bit.lower()}"] += 1
        if self.traced("smmuv3_write_gerror"):
            self.tracer.emit("smmuv3_write_gerror", dev=self.name, toggled=mask, gerror=self.regs["GERROR"])
        if self.field("IRQ_CTRLACK", "GERROR_IRQEN"):
            self._signal("GERROR", "gerror", "MSI_GERROR_ABT_ERR")

    def _signal(self, prefix: str, line: str, abt_bit: str) -> None:
        addr = self.field(f"{prefix}_IRQ_CFG0", "ADDR")
        if self.features.msi and addr:
            data = self.field(f"{prefix}_IRQ_CFG1", "DATA")
            self._msi(line, addr, data, abt_bit)
            return
        self._wired(line)

    def _wired(self, line: str) -> None:
        self.stats[f"irq_{line}"] += 1
        if self.traced("smmuv3_trigger_irq"):
            self.tracer.emit("smmuv3_trigger_irq", dev=self.name, irq=line, msi=0, addr=0, data=0)
        if self.irq is not None:
            self.irq(line)

    def _msi(self, line: str, addr: int, data: int, abt_bit: str) -> None:
        self.stats[f"msi_{line}"] += 1
        if self.traced("smmuv3_trigger_irq"):
            self.tracer.emit("smmuv3_trigger_irq", dev=self.name, irq=line, msi=1, addr=addr, data=data)
        try:
            self.bus.write_from(self.msi_requester, addr, data, 4)
        except BusError:
            if abt_bit == "MSI_GERROR_ABT_ERR":      # no interrupt for a failed GERROR MSI (no recursion)
                mask = self.regs.regs["GERROR"].field(abt_bit).mask
                if not self.gerror_active() & mask:
                    self.regs["GERROR"] = self.regs["GERROR"] ^ mask
            else:
                self.raise_gerror(abt_bit)

    # -- command queue ---------------------------------------------------------------------------------------
    def handler(self, name: str) -> CommandHandler:
        """The handler that executes command `name` (an opcode name of `commands.OPCODES`)."""
        return self._handlers[name]

    def set_handler(self, name: str, fn: CommandHandler) -> CommandHandler:
        """Execute command `name` with `fn(cmd) -> CERROR` from now on; returns the previous handler (to wrap
        it). `fn` sees only commands that passed `commands.check`. KeyError for names that are no opcode."""
        if name not in cmds.OPCODES:
            raise KeyError(f"{name!r} is not an SMMUv3 command")
        old, self._handlers[name] = self._handlers[name], fn
        return old

    def _default_handlers(self) -> dict[str, CommandHandler]:
        table: dict[str, CommandHandler] = {n: self._tlbi for n in cmds.OPCODES if n.startswith("TLBI_")}
        table.update({n: self._accept for n in _ACCEPTED})
        table.update(ATC_INV=self._atc_inv, CFGI_STE=self._cfgi_ste, CFGI_STE_RANGE=self._cfgi_ste_range,
                     CFGI_CD=self._cfgi_cd, CFGI_CD_ALL=self._cfgi_cd_all, CMD_SYNC=self._cmd_sync,
                     RESUME=self._resume, STALL_TERM=self._stall_term, PRI_RESP=self._pri_resp)
        assert table.keys() == cmds.OPCODES.keys(), "every opcode has a default handler"
        return table

    def _process_cmdq(self) -> None:
        """Consume commands. A kick that arrives while consuming (an MSI handler writing CMDQ_PROD or
        acknowledging CMDQ_ERR through GERRORN from inside a CMD_SYNC or GERROR MSI) is remembered and served
        when the current pass ends, a bounded number of times, so a self-feeding queue cannot hang the model.
        The `cmdq_pass_end` hooks run when the outermost pass is over."""
        if self._cmdq_busy:
            self._cmdq_rekick = True
            return
        self._cmdq_busy = True
        try:
            for _ in range(8):
                self._cmdq_rekick = False
                self._consume_cmdq()
                if not self._cmdq_rekick:
                    break
            else:
                self.stats["cmdq_budget_exhausted"] += 1
        finally:
            self._cmdq_busy = False
        for fn in self.hooks.cmdq_pass_end:
            fn()

    def _consume_cmdq(self) -> None:
        budget = 4 * (1 << min(self.field("CMDQ_BASE", "LOG2SIZE"), self.features.cmdqs)) + 16
        cerr_mask = self.regs.regs["GERROR"].field("CMDQ_ERR").mask
        while budget > 0:
            budget -= 1
            if not self.field("CR0ACK", "CMDQEN") or self.gerror_active() & cerr_mask:
                return
            st = self.cmdq.state()
            if self.traced("smmuv3_cmdq_consume"):
                self.tracer.emit("smmuv3_cmdq_consume", dev=self.name, prod=st.idx(st.prod),
                                 cons=st.idx(st.cons), prod_wrap=st.wrap(st.prod), cons_wrap=st.wrap(st.cons))
            if st.empty:
                return
            try:
                raw = self.bus.read_bytes(self.cmdq.slot(st, st.cons), cmds.CMD_SIZE)
            except BusError:
                self.command_error(cmds.CERROR_ABT, "fetch", st.cons)
                return
            cmd = cmds.decode(raw)
            if self.traced("smmuv3_cmdq_opcode"):
                self.tracer.emit("smmuv3_cmdq_opcode", dev=self.name, opcode=cmd.name, cons=st.cons, sid=cmd.sid,
                                 vmid=cmd.vmid, asid=cmd.asid, addr=cmd.addr)
            err = cmds.check(cmd, self.features) or self._handlers[cmd.name](cmd)
            if err:
                self.command_error(err, cmd.name, st.cons)
                return
            self.stats[f"cmd_{cmd.name}"] += 1
            self.cmdq.set_cons(st.next(st.cons))
        self.stats["cmdq_budget_exhausted"] += 1

    def command_error(self, err: int, name: str, cons: int) -> None:
        """Stop the command queue with CMDQ_CONS.ERR = `err` (a CERROR_*) and GERROR.CMDQ_ERR (IHI 0070 7.1);
        `name`/`cons` say which command (for the trace). CONS itself is left where it is."""
        self.regs.set_field("CMDQ_CONS", "ERR", err)
        if self.traced("smmuv3_cmdq_consume_error"):
            self.tracer.emit("smmuv3_cmdq_consume_error", dev=self.name, cmd_name=name, cmd_error=err, cons=cons)
        self.raise_gerror("CMDQ_ERR")

    # the model's own command handlers (the defaults of the table)
    def _accept(self, cmd: cmds.Command) -> int:
        return cmds.CERROR_NONE

    def _tlbi(self, cmd: cmds.Command) -> int:
        if self.core is not None:
            self.core.invalidate(cmd)
        else:
            self.stats["invalidate_without_core"] += 1
        return cmds.CERROR_NONE

    def _cfgi_ste(self, cmd: cmds.Command) -> int:
        self._inv_config(lambda sid, ssid: sid == cmd.sid, cmd.sid)
        if self.traced("smmuv3_cmdq_cfgi_ste"):
            self.tracer.emit("smmuv3_cmdq_cfgi_ste", dev=self.name, streamid=cmd.sid)
        for fn in self.hooks.ste_invalidated:
            fn(cmd.sid, cmd.sid)
        return cmds.CERROR_NONE

    def _cfgi_ste_range(self, cmd: cmds.Command) -> int:
        rng = cmds.ste_range(cmd)
        if rng is None:
            self._inv_config(lambda sid, ssid: True, -1)
        else:
            lo, hi = rng
            self._inv_config(lambda sid, ssid: lo <= sid <= hi, cmd.sid)
        if self.traced("smmuv3_cmdq_cfgi_ste_range"):
            self.tracer.emit("smmuv3_cmdq_cfgi_ste_range", dev=self.name, start=rng[0] if rng else 0,
                             end=rng[1] if rng else -1)
        first, last = rng if rng is not None else ALL_STREAMS
        for fn in self.hooks.ste_invalidated:
            fn(first, last)
        return cmds.CERROR_NONE

    def _cfgi_cd(self, cmd: cmds.Command) -> int:
        # the entry of that SubstreamID, and transactions without one (S1DSS may map them to SSID 0)
        self._inv_config(lambda sid, ssid: sid == cmd.sid and ssid in (cmd.ssid, None), cmd.sid)
        if self.traced("smmuv3_cmdq_cfgi_cd"):
            self.tracer.emit("smmuv3_cmdq_cfgi_cd", dev=self.name, sid=cmd.sid, ssid=cmd.ssid, all=0)
        for fn in self.hooks.cd_invalidated:
            fn(cmd.sid, cmd.ssid)
        return cmds.CERROR_NONE

    def _cfgi_cd_all(self, cmd: cmds.Command) -> int:
        self._inv_config(lambda sid, ssid: sid == cmd.sid, cmd.sid)
        if self.traced("smmuv3_cmdq_cfgi_cd"):
            self.tracer.emit("smmuv3_cmdq_cfgi_cd", dev=self.name, sid=cmd.sid, ssid=0, all=1)
        for fn in self.hooks.cd_invalidated:
            fn(cmd.sid, None)
        return cmds.CERROR_NONE

    def _inv_config(self, match: Callable[[int, int | None], bool], sid: int) -> None:
        keys = [k for k in self.config_cache if match(*k)]
        for k in keys:
            del self.config_cache[k]
        self.stats["config_inv"] += len(keys)
        if self.traced("smmuv3_config_cache_inv"):
            self.tracer.emit("smmuv3_config_cache_inv", dev=self.name, sid=sid, n=len(keys))

    def _cmd_sync(self, cmd: cmds.Command) -> int:
        if self._atc_inv_failed:          # an earlier CMD_ATC_INV did not complete (IHI 0070 4.7.3, 7.1)
            self._atc_inv_failed = False
            self.stats["atc_inv_sync_error"] += 1
            return cmds.CERROR_ATC_INV_SYNC
        self.complete_sync(cmd)
        return cmds.CERROR_NONE

    def _atc_inv(self, cmd: cmds.Command) -> int:
        """CMD_ATC_INV (IHI 0070 3.9.1, 4.5): an ATS Invalidate Request to the endpoint of StreamID; its
        completion is waited for by the next CMD_SYNC. No endpoint registered: nothing is cached there."""
        lo, hi = atc_inv_range(cmd)
        ssid = cmd.ssid if cmd.ssv else None
        ep = self.endpoints.get(cmd.sid)
        ok = True if ep is None else bool(ep.atc_invalidate(ssid, lo, hi, bool(cmd.global_)))
        if not ok:
            self._atc_inv_failed = True
        self.stats["atc_inv_sent" if ep is not None else "atc_inv_no_endpoint"] += 1
        if self.traced("smmuv3_atc_inv"):
            self.tracer.emit("smmuv3_atc_inv", dev=self.name, sid=cmd.sid, ssid=ssid, lo=lo, hi=hi,
                             global_=cmd.global_, endpoint=int(ep is not None), ok=int(ok))
        return self._tlbi(cmd)

    def _resume(self, cmd: cmds.Command) -> int:
        """CMD_RESUME (IHI 0070 3.12.2, 4.6): end the stall (StreamID, STAG) as Resp says; a RESUME that names
        no outstanding stall is ignored (not an error)."""
        st = self.stalls.take(cmd.sid, cmd.stag)
        if st is None:
            self.stats["resume_ignored"] += 1
            if self.traced("smmuv3_resume_ignored"):
                self.tracer.emit("smmuv3_resume_ignored", dev=self.name, sid=cmd.sid, stag=cmd.stag)
            return cmds.CERROR_NONE
        action = resume_action(cmd.resp)
        result = None
        if action is Resume.RETRY:        # a new translation: what software changed and invalidated is seen
            f = st.fault
            result = self.translate(f.sid, f.ssid, f.addr, write=not f.rnw, exec_=f.ind, priv=f.pnu)
        self._end_stall(st, action, "resume", result)
        return cmds.CERROR_NONE

    def _stall_term(self, cmd: cmds.Command) -> int:
        """CMD_STALL_TERM: every stall of the StreamID ends with an abort."""
        self._end_stalls(self.stalls.take_sid(cmd.sid), "stall_term")
        return cmds.CERROR_NONE

    def _pri_resp(self, cmd: cmds.Command) -> int:
        """CMD_PRI_RESP (IHI 0070 4.5, 8): the PRG response to the function of StreamID."""
        self._send_prg_response(cmd.sid, cmd.ssid if cmd.ssv else None, cmd.grpid, PRI_RESP_CODES[cmd.resp], False)
        return cmds.CERROR_NONE

    def complete_sync(self, cmd: cmds.Command) -> None:
        """Complete CMD_SYNC `cmd` (IHI 0070 4.7.3): every earlier command is done when this is called; signal
        completion as CS says (MSI write of MSIData to MSIAddress, or the wired "cmd_sync" interrupt; SEV)."""
        if cmd.cs == cmds.CS_IRQ:
            if self.features.msi and cmd.msiaddr:
                self._msi("cmd_sync", cmd.msiaddr, cmd.msidata, "MSI_CMDQ_ABT_ERR")
            else:
                self._wired("cmd_sync")
        elif cmd.cs == cmds.CS_SEV:
            self.stats["sev"] += 1
        self.stats["sync"] += 1
        if self.traced("smmuv3_cmdq_sync"):
            self.tracer.emit("smmuv3_cmdq_sync", dev=self.name, cs=cmd.cs, msiaddr=cmd.msiaddr,
                             msidata=cmd.msidata)

    # -- event queue ------------------------------------------------------------------------------------------
    def record_fault(self, fault: Fault) -> evmod.Event | None:
        """The only path from a Fault to the EVTQ: the event record (written, dropped, or for a stall held until
        the full queue has room), or None when the fault is not to be recorded (`fault.record` False)."""
        return self._record(fault)[0]

    def _record(self, fault: Fault) -> tuple[evmod.Event | None, str]:
        if not fault.record:
            self.stats["fault_not_recorded"] += 1
            return None, "not recorded"
        if self.traced("smmuv3_record_event"):
            self.tracer.emit("smmuv3_record_event", dev=self.name, type=fault.type.name, sid=fault.sid,
                             ssid=fault.ssid, reason=fault.reason)
        ev = evmod.from_fault(fault)
        if fault.stall and self.regs.values["CR0ACK"] & self._evtqen and self.evtq.state().full:
            # a stall's record is not lost to a full queue: it waits for room (IHI 0070 7.4), and so does the
            # transaction; OVFLG is not set for it
            self._evtq_pending.append(ev)
            self.stats["evtq_stall_pending"] += 1
            return ev, "pending"
        return ev, "written" if self.write_event(ev) else "lost"

    def write_event(self, ev: evmod.Event) -> bool:
        """Put event record `ev` into the EVTQ (IHI 0070 7.4): False when it is lost (queue disabled, full:
        OVFLG toggles, or the write aborts: GERROR.EVTQ_ABT_ERR); else PROD moves and the EVTQ interrupt is
        signalled when enabled. The record is appended to `events` or `dropped`."""
        written = self._evtq_put(ev)
        (self.events if written else self.dropped).append(ev)
        return written

    def _evtq_put(self, ev: evmod.Event) -> bool:
        values = self.regs.values
        if not values["CR0ACK"] & self._evtqen:
            self._propagated(ev, -1, False)
            return False
        st = self.evtq.state()
        if st.full:
            if self.field("EVTQ_PROD", "OVFLG") == self.field("EVTQ_CONS", "OVACKFLG"):
                self.regs.set_field("EVTQ_PROD", "OVFLG", self.field("EVTQ_PROD", "OVFLG") ^ 1)
                if self.traced("smmuv3_evtq_overflow"):
                    self.tracer.emit("smmuv3_evtq_overflow", dev=self.name, prod=st.prod, cons=st.cons)
            self.stats["evtq_overflow"] += 1
            self._propagated(ev, st.prod, False)
            return False
        try:
            self.bus.write_bytes(self.evtq.slot(st, st.prod), evmod.encode(ev))
        except BusError:
            self.raise_gerror("EVTQ_ABT_ERR")
            self._propagated(ev, st.prod, False)
            return False
        self.evtq.set_prod(st.next(st.prod))
        self._propagated(ev, st.prod, True)
        if values["IRQ_CTRLACK"] & self._evtq_irqen:
            self._signal("EVTQ", "eventq", "MSI_EVTQ_ABT_ERR")
        return True

    def _propagated(self, ev: evmod.Event, prod: int, written: bool) -> None:
        if self.traced("smmuv3_propagate_event"):
            self.tracer.emit("smmuv3_propagate_event", dev=self.name, type=ev.name, sid=ev.sid, prod=prod,
                             written=int(written))

    # -- configuration lookup ------------------------------------------------------------------------------
    def _fetch_pa(self, addr: int, n: int, kind: str) -> bytes | Fault:
        try:
            return self.bus.read_bytes(addr, n)
        except BusError as e:
            et = EventType.F_STE_FETCH if kind == "ste" else EventType.F_CD_FETCH
            return Fault(et, ipa=addr, reason=f"{kind} fetch: {e}")

    def find_ste(self, sid: int, ssid: int | None = None) -> strtab.SteLookup | Fault:
        """Locate and read the STE of `sid` through the stream table the registers describe now (no
        validation, no configuration cache): C_BAD_STREAMID / F_STE_FETCH faults as values."""
        base = self.field("STRTAB_BASE", "ADDR")
        look = strtab.find_ste(self._fetch_pa, base, self.regs["STRTAB_BASE_CFG"], self.features, sid, ssid)
        if isinstance(look, Fault):
            return look
        if look.l1ptr is not None and self.traced("smmuv3_find_ste_2lvl"):
            self.tracer.emit("smmuv3_find_ste_2lvl", dev=self.name, strtab_base=base, l1ptr=look.l1ptr,
                             l2ptr=look.l2ptr, span=look.span)
        if self.traced("smmuv3_find_ste"):
            self.tracer.emit("smmuv3_find_ste", dev=self.name, sid=sid, addr=look.addr)
        return look

    def config(self, sid: int, ssid: int | None = None) -> TransCfg | Fault:
        """Decoded configuration of (sid, ssid), through the configuration cache."""
        key = (sid, ssid)
        hit = self.config_cache.get(key)
        if hit is not None:
            self.stats["config_hit"] += 1
            if self.traced("smmuv3_config_cache_hit"):
                self.tracer.emit("smmuv3_config_cache_hit", dev=self.name, sid=sid, ssid=ssid,
                                 hits=self.stats["config_hit"], misses=self.stats["config_miss"])
            return hit
        self.stats["config_miss"] += 1
        if self.traced("smmuv3_config_cache_miss"):
            self.tracer.emit("smmuv3_config_cache_miss", dev=self.name, sid=sid, ssid=ssid,
                             hits=self.stats["config_hit"], misses=self.stats["config_miss"])
        cfg = self._decode_config(sid, ssid)
        if isinstance(cfg, Fault):
            return dataclasses.replace(cfg, sid=sid, ssid=ssid)
        self.config_cache[key] = cfg
        return cfg

    def _decode_config(self, sid: int, ssid: int | None) -> TransCfg | Fault:
        look = self.find_ste(sid, ssid)
        if isinstance(look, Fault):
            return look
        ste = look.ste
        fetch: strtab.Fetch = self._fetch_pa
        if ste.config == stemod.CONFIG_NESTED and ste.v:
            fetch = self._nested_fetcher(ste, sid, ssid)
        on_cd = (lambda a: self.tracer.emit("smmuv3_get_cd", dev=self.name, addr=a)) \
            if self.traced("smmuv3_get_cd") else None
        return strtab.resolve(fetch, ste, self.features, sid, ssid, e2h=bool(self.field("CR2", "E2H")),
                              on_cd=on_cd)

    def _nested_fetcher(self, ste: stemod.Ste, sid: int, ssid: int | None) -> strtab.Fetch:
        """For nested STEs the CD table pointers are IPAs: translate them through stage 2 (CLASS=CD)."""
        if stemod.validate(ste, self.features, sid, ssid) is not None:
            return self._fetch_pa
        s2 = stemod.s2_config(ste, self.features)
        # one stable TransCfg per stage-2 configuration: the core caches contexts per config object
        s2cfg = self._s2_cfgs.get(s2)
        if s2cfg is None:
            s2cfg = self._s2_cfgs[s2] = TransCfg(sid, None, CfgKind.S2, s2=s2, oas=self.features.oas)
        core = self.core

        def fetch(ipa: int, n: int, kind: str) -> bytes | Fault:
            if core is None:
                return Fault(EventType.F_CD_FETCH, ipa=ipa, record=False,
                             reason="nested CD fetch: this SMMU has no translation backend")
            pa = core.translate_s2(s2cfg, ipa, cls=FaultClass.CD)
            if isinstance(pa, Fault):
                return pa
            return self._fetch_pa(pa, n, kind)
        return fetch

    # -- translation ------------------------------------------------------------------------------------------
    def translate(self, sid: int, ssid: int | None, addr: int, write: bool = False, exec_: bool = False,
                  priv: bool = False) -> TransResult | Fault:
        """Translate one transaction; any Fault is recorded in the EVTQ (unless its record flag is off)."""
        if not self.regs.values["CR0ACK"] & self._smmuen:
            return self._disabled(sid, ssid, addr, write, exec_, priv)
        cfg = self.config(sid, ssid)
        if isinstance(cfg, Fault):
            f = dataclasses.replace(cfg, addr=addr, rnw=not write, ind=exec_, pnu=priv,
                                    record=cfg.record and (cfg.type != EventType.C_BAD_STREAMID
                                                           or bool(self.field("CR2", "RECINVSID"))))
            return self._fail(f)
        if cfg.kind == CfgKind.ABORT:
            return self._fail(Fault(EventType.F_TRANS_FORBIDDEN, sid=sid, ssid=ssid, addr=addr, rnw=not write,
                                    ind=exec_, pnu=priv, record=False,
                                    reason="STE.Config=0b0xx: abort, no event"))
        if cfg.kind == CfgKind.BYPASS:
            if self.traced("smmuv3_translate_bypass"):
                self.tracer.emit("smmuv3_translate_bypass", dev=self.name, sid=sid, addr=addr, is_write=write)
            return TransResult(addr, _RWX, 4096)
        if self.core is None:
            return self._fail(Fault(EventType.F_TRANSLATION, sid=sid, ssid=ssid, addr=addr, rnw=not write,
                                    ind=exec_, pnu=priv, record=False,
                                    reason="this SMMU has no translation backend"))
        res = self.core.translate(cfg, addr, write, exec_, priv)
        if isinstance(res, Fault):
            f = res if res.sid == sid and res.ssid == ssid else dataclasses.replace(res, sid=sid, ssid=ssid)
            stage = cfg.s2 if f.stage2 else cfg.s1
            if stage is not None and stage.stall and f.type in TRANSLATION_FAULTS and self.features.stall_model != 1:
                return self._stall(f)
            return self._fail(f)
        if self.traced("smmuv3_translate_success"):
            self.tracer.emit("smmuv3_translate_success", dev=self.name, sid=sid, iova=addr, translated=res.pa,
                             perm=res.perm)
        return res

    def _disabled(self, sid: int, ssid: int | None, addr: int, write: bool, exec_: bool,
                  priv: bool) -> TransResult | Fault:
        """SMMUEN=0: GBPA decides (IHI 0070 6.3.14)."""
        abort = bool(self.field("GBPA", "ABORT"))
        if self.traced("smmuv3_translate_disable"):
            self.tracer.emit("smmuv3_translate_disable", dev=self.name, sid=sid, addr=addr, is_write=write,
                             abort=int(abort))
        if abort:
            return self._fail(Fault(EventType.F_TRANS_FORBIDDEN, sid=sid, ssid=ssid, addr=addr,
                                    rnw=not write, ind=exec_, pnu=priv, record=False,
                                    reason="SMMUEN=0 and GBPA.ABORT=1: abort, no event"))
        return TransResult(addr, _RWX, 4096)

    def _fail(self, f: Fault) -> Fault:
        self.faults.append(f)
        if self.traced("smmuv3_translate_abort"):
            self.tracer.emit("smmuv3_translate_abort", dev=self.name, sid=f.sid, addr=f.addr,
                             is_write=int(not f.rnw), type=f.type.name, reason=f.reason)
        self.record_fault(f)
        return f

    # -- stalls (IHI 0070 3.12.2) -------------------------------------------------------------------------------
    def _stall(self, f: Fault) -> Fault:
        """Hold the transaction of translation-related fault `f` whose stage says stall (CD.S / STE.S2S). It is
        terminated instead, as a fault, when its event cannot be recorded: the EVTQ is disabled, or its write
        aborts; and when IDR5.STALL_MAX stalls are outstanding already (the model's choice)."""
        if not self.regs.values["CR0ACK"] & self._evtqen:
            self.stats["stall_terminated_evtq_off"] += 1
            return self._fail(dataclasses.replace(f, reason=f.reason + "; not stalled: the EVTQ is disabled"))
        sf = self.stalls.alloc(f)
        if sf is None:
            self.stats["stall_terminated_max"] += 1
            return self._fail(dataclasses.replace(
                f, reason=f.reason + f"; not stalled: {self.stalls.capacity} stalls outstanding (STALL_MAX)"))
        _ev, how = self._record(sf)
        if how == "lost":
            self.stalls.take(sf.sid, sf.stag)
            self.stats["stall_terminated_evtq_abort"] += 1
            sf = dataclasses.replace(sf, stall=False, reason=sf.reason + "; not stalled: the EVTQ write aborted")
        else:
            self.stats["stalls"] += 1
            if self.traced("smmuv3_stall"):
                self.tracer.emit("smmuv3_stall", dev=self.name, sid=sf.sid, ssid=sf.ssid, stag=sf.stag, addr=sf.addr,
                                 type=sf.type.name, event=how)
        self.faults.append(sf)
        return sf

    def wait_stall(self, fault: Fault, waiter: Callable[[StallEnd], None]) -> bool:
        """A device holding the stalled transaction of `fault` (returned by `translate`) asks to be told how it
        ends (`StallEnd`: retried with the new result, aborted, or terminated RAZ/WI). False when `fault` is not
        an outstanding stall."""
        return fault.stall and self.stalls.wait(fault.sid, fault.stag, waiter)

    def _end_stall(self, st: Stalled, action: Resume, why: str, result: Any = None) -> None:
        f = st.fault
        self.stats[f"stall_{action.value}"] += 1
        if self.traced("smmuv3_stall_end"):
            self.tracer.emit("smmuv3_stall_end", dev=self.name, sid=f.sid, ssid=f.ssid, stag=f.stag,
                             action=action.value, why=why)
        if st.waiter is None:
            self.stats["stall_end_unwaited"] += 1
            return
        st.waiter(StallEnd(action, result, why))

    def _end_stalls(self, stalls: list[Stalled], why: str) -> None:
        for st in stalls:
            self._end_stall(st, Resume.ABORT, why)

    def _drop_pending_stall_records(self, why: str) -> None:
        pending, self._evtq_pending = self._evtq_pending, []
        for ev in pending:
            self.dropped.append(ev)
            st = self.stalls.take(ev.sid, ev.stag)
            if st is not None:
                self._end_stall(st, Resume.ABORT, why)

    # -- ATS, ATC and PRI (IHI 0070 3.9, 8) ---------------------------------------------------------------------
    def attach_endpoint(self, sid: int, endpoint: AtsEndpoint) -> None:
        """`endpoint` (a PCIe function with an ATC and/or PRI) presents StreamID `sid`: it receives the
        CMD_ATC_INV and PRG responses for it."""
        self.endpoints[sid] = endpoint

    def detach_endpoint(self, sid: int, endpoint: AtsEndpoint | None = None) -> None:
        if endpoint is None or self.endpoints.get(sid) is endpoint:
            self.endpoints.pop(sid, None)

    # -- DVM participant (BTM) ---------------------------------------------------------------------------------
    @property
    def btm_active(self) -> bool:
        return (self.features.btm and not self.field("CR2", "PTM") and bool(self.field("CR0ACK", "SMMUEN"))
                and self.core is not None)

    def dvm_tlbi(self, op: TlbiOp, msg: int) -> None:
        """A broadcast TLBI from the interconnect: applied by the backend when BTM is in use (IDR0.BTM=1,
        CR2.PTM=0, SMMUEN=1), else ignored; a malformed message applies to nothing (`btm_malformed`)."""
        applied = self.btm_active
        if applied:
            assert self.core is not None
            if self.core.dvm_tlbi(op)["malformed"]:
                applied = False
                self.stats["btm_malformed"] += 1
            else:
                self.stats["btm_applied"] += 1
        else:
            self.stats["btm_ignored"] += 1
        if self.traced("smmuv3_dvm_tlbi"):
            self.tracer.emit("smmuv3_dvm_tlbi", dev=self.name, op=op.name, msg=msg, applied=int(applied))

    def dvm_sync(self, sync: Any) -> None:
        self.stats["dvm_sync"] += 1
