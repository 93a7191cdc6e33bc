"""The SMMU's PCIe side (IHI 0070 3.9 "Support for PCI Express, PASIDs, PRI and ATS", chapter 8 "Page request
queue"): the ATS Translation Request service, translated transactions, and the PRI queue. A mixin of
`device.SMMUv3` (this module holds that class's PCIe methods; their records and rules are in `ats.py`).

* `ats_translate(sid, ssid, addr, nw, exec_, priv) -> AtsCompletion`. UR when the SMMU has no ATS (IDR0.ATS=0)
  or is disabled (SMMUEN=0); a configuration error is recorded as usual and answered CA; an abort STE: CA, no
  event; STE.EATS=0b00 (or the reserved 0b11): F_BAD_ATS_TREQ recorded, UR; bypass: the address itself with
  R/W. Otherwise the translation: EATS=0b01 (full ATS) the whole translation, stage 1 and 2 (VA -> PA, IPA -> PA
  for stage-2-only streams), EATS=0b10 (split-stage, nested only) stage 1 (VA -> IPA). A translation-related
  fault (F_TRANSLATION, F_ADDR_SIZE, F_ACCESS, F_PERMISSION) is neither recorded nor stalled: the completion
  grants nothing (R=W=0) and the function may ask for the page with PRI; other faults are recorded, CA. A
  request for write permission (No-Write=0) is translated as a write first, so hardware dirty state is updated
  now (the SMMU will not see the function's writes, IHI 0070 3.13), then as a read.
* `translated(sid, addr, write, exec_, priv)`: a transaction the function already translated (PCIe AT=10b).
  SMMUEN=0: GBPA. CR0.ATSCHK=0 ("fast" mode): it passes unchecked; ATSCHK=1: the STE is looked up: EATS=0b01
  passes, EATS=0b10 goes through stage 2 (its address is an IPA), anything else is F_TRANS_FORBIDDEN (recorded).
  Split-stage streams need ATSCHK=1: the fast mode does not look at the STE.
* `page_request(req)`: a Page Request Message. Queued in the PRI queue when IDR0.PRI=1, SMMUEN=1 and
  CR0.PRIQEN=1 (PROD moves; the PRIQ interrupt or MSI when IRQ_CTRL.PRIQ_IRQEN=1). A request the SMMU cannot
  queue is lost: the queue is full (PRIQ_PROD.OVFLG toggles, as for the EVTQ) or its write aborts
  (GERROR.PRIQ_ABT_ERR); then, if it was the last of its group, the SMMU itself answers the group with
  Success, so that the function retries and asks again (its PRI must not wait forever). A request the SMMU
  does not accept (no PRI, SMMU or PRI queue disabled) is answered, when Last, with Invalid Request. These
  automatic answers are the model's reading of IHI 0070 8; they are traced with auto=1.
* Responses: `_send_prg_response` is the one path from a CMD_PRI_RESP or an automatic answer to the endpoint.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ..bus import BusError
from .ats import EATS_FULL, EATS_SPLIT, AtsCompletion, AtsStatus, PageRequest, PrgResponse, encode_pri
from .config import PERM_R, PERM_W, PERM_X, CfgKind, TransCfg, TransResult
from .fault import TRANSLATION_FAULTS, EventType, Fault

if TYPE_CHECKING:
    from .device import SMMUv3

__all__ = ["PcieMixin"]

_RWX = PERM_R | PERM_W | PERM_X


class PcieMixin:
    """ATS, translated transactions and PRI for `device.SMMUv3` (see the module docstring)."""

    # -- ATS Translation Requests --------------------------------------------------------------------------------
    def ats_translate(self: "SMMUv3", sid: int, ssid: int | None, addr: int, nw: bool = True, exec_: bool = False,
                      priv: bool = False) -> AtsCompletion:
        """Answer an ATS Translation Request (`nw`: No-Write, the function wants read permission only)."""
        comp = self._ats_answer(sid, ssid, addr, nw, exec_, priv)
        self.stats[f"ats_{comp.status.name.lower()}"] += 1
        if self.traced("smmuv3_ats_treq"):
            self.tracer.emit("smmuv3_ats_treq", dev=self.name, sid=sid, ssid=ssid, addr=addr, nw=int(nw),
                             status=comp.status.value, out=comp.addr, size=comp.size, r=int(comp.r), w=int(comp.w),
                             reason=comp.reason)
        return comp

    def _ats_answer(self: "SMMUv3", sid: int, ssid: int | None, addr: int, nw: bool, exec_: bool,
                    priv: bool) -> AtsCompletion:
        if not self.features.ats:
            return AtsCompletion(AtsStatus.UR, reason="IDR0.ATS=0")
        if not self.field("CR0ACK", "SMMUEN"):
            return AtsCompletion(AtsStatus.UR, reason="SMMUEN=0")
        cfg = self.config(sid, ssid)
        if isinstance(cfg, Fault):
            self.record_fault(dataclasses.replace(cfg, addr=addr, rnw=nw, ind=exec_, pnu=priv, record=cfg.record and (
                cfg.type != EventType.C_BAD_STREAMID or bool(self.field("CR2", "RECINVSID")))))
            return AtsCompletion(AtsStatus.CA, reason=cfg.reason)
        if cfg.kind == CfgKind.ABORT:
            return AtsCompletion(AtsStatus.CA, reason="STE.Config abort")
        if cfg.eats not in (EATS_FULL, EATS_SPLIT):
            self.record_fault(Fault(EventType.F_BAD_ATS_TREQ, sid=sid, ssid=ssid, addr=addr, rnw=nw, ind=exec_,
                                    pnu=priv, reason=f"ATS Translation Request with STE.EATS={cfg.eats:#04b}"))
            return AtsCompletion(AtsStatus.UR, reason=f"STE.EATS={cfg.eats:#04b}")
        if cfg.kind == CfgKind.BYPASS:
            return AtsCompletion(AtsStatus.SUCCESS, addr & ~0xFFF, 4096, True, not nw, exec_, priv, False, "bypass")
        if self.core is None:
            return AtsCompletion(AtsStatus.CA, reason="this SMMU has no translation backend")
        out = self.core.ats_translate(cfg, addr, not nw, priv, cfg.eats == EATS_SPLIT)
        if isinstance(out, Fault):
            if out.type in TRANSLATION_FAULTS:
                return AtsCompletion(AtsStatus.SUCCESS, addr & ~0xFFF, 4096, priv=priv, reason=out.reason)
            self.record_fault(dataclasses.replace(out, sid=sid, ssid=ssid, rnw=nw, ind=exec_, pnu=priv))
            return AtsCompletion(AtsStatus.CA, reason=out.reason)
        base, size, perm, global_ = out
        return AtsCompletion(AtsStatus.SUCCESS, base, size, bool(perm & PERM_R), not nw and bool(perm & PERM_W),
                             exec_ and bool(perm & PERM_X), priv, global_)

    # -- translated transactions ---------------------------------------------------------------------------------
    def translated(self: "SMMUv3", sid: int, addr: int, write: bool = False, exec_: bool = False,
                   priv: bool = False) -> TransResult | Fault:
        """A Translated transaction (the function's ATC gave `addr`): see the module docstring."""
        if not self.field("CR0ACK", "SMMUEN"):
            return self._disabled(sid, None, addr, write, exec_, priv)
        if self.features.ats and not self.field("CR0ACK", "ATSCHK"):
            return TransResult(addr, _RWX, 4096)
        cfg = self.config(sid, None)
        if isinstance(cfg, Fault):
            return self._fail(dataclasses.replace(cfg, addr=addr, rnw=not write, ind=exec_, pnu=priv))
        eats = cfg.eats if self.features.ats else 0
        if eats == EATS_FULL and cfg.kind != CfgKind.ABORT:
            return TransResult(addr, _RWX, 4096)
        if eats == EATS_SPLIT and cfg.s2 is not None and self.core is not None:
            res = self.core.translate(self._s2_only(cfg), addr, write, exec_, priv)
            if isinstance(res, Fault):
                return self._fail(dataclasses.replace(res, sid=sid, ssid=None))
            return res
        return self._fail(Fault(EventType.F_TRANS_FORBIDDEN, sid=sid, addr=addr, rnw=not write, ind=exec_, pnu=priv,
                                reason=f"Translated transaction on a stream with STE.EATS={eats:#04b}"))

    def _s2_only(self: "SMMUv3", cfg: TransCfg) -> TransCfg:
        """One stable stage-2-only configuration per stage-2 description (the core caches contexts by object)."""
        s2cfg = self._s2_cfgs.get(cfg.s2)
        if s2cfg is None:
            s2cfg = self._s2_cfgs[cfg.s2] = TransCfg(cfg.sid, None, CfgKind.S2, s2=cfg.s2, oas=cfg.oas)
        return s2cfg

    # -- PRI ---------------------------------------------------------------------------------------------------
    def page_request(self: "SMMUv3", req: PageRequest) -> None:
        """A Page Request Message from a function: queued, lost, or refused (module docstring)."""
        if not (self.features.pri and self.field("CR0ACK", "SMMUEN") and self.field("CR0ACK", "PRIQEN")):
            self._pri_outcome(req, -1, "refused")
            if req.last:
                self._send_prg_response(req.sid, req.ssid_or_none, req.prg_index, PrgResponse.INVALID_REQUEST, True)
            return
        assert self.priq is not None
        st = self.priq.state()
        if st.full:
            if self.field("PRIQ_PROD", "OVFLG") == self.field("PRIQ_CONS", "OVACKFLG"):
                self.regs.set_field("PRIQ_PROD", "OVFLG", self.field("PRIQ_PROD", "OVFLG") ^ 1)
            self.stats["priq_overflow"] += 1
            self._pri_lost(req, st.prod, "overflow")
            return
        try:
            self.bus.write_bytes(self.priq.slot(st, st.prod), encode_pri(req))
        except BusError:
            self.raise_gerror("PRIQ_ABT_ERR")
            self._pri_lost(req, st.prod, "aborted")
            return
        self.priq.set_prod(st.next(st.prod))
        self.page_requests.append(req)
        self._pri_outcome(req, st.prod, "queued")
        if self.field("IRQ_CTRLACK", "PRIQ_IRQEN"):
            self._signal("PRIQ", "priq", "MSI_PRIQ_ABT_ERR")

    def _pri_lost(self: "SMMUv3", req: PageRequest, prod: int, why: str) -> None:
        self._pri_outcome(req, prod, why)
        if req.last:
            self._send_prg_response(req.sid, req.ssid_or_none, req.prg_index, PrgResponse.SUCCESS, True)

    def _pri_outcome(self: "SMMUv3", req: PageRequest, prod: int, outcome: str) -> None:
        self.stats[f"pri_{outcome}"] += 1
        if self.traced("smmuv3_pri_request"):
            self.tracer.emit("smmuv3_pri_request", dev=self.name, sid=req.sid, ssid=req.ssid_or_none,
                             grpid=req.prg_index, last=req.last, addr=req.addr, prod=prod, outcome=outcome)

    def _send_prg_response(self: "SMMUv3", sid: int, ssid: int | None, grpid: int, code: PrgResponse,
                           auto: bool) -> None:
        ep = self.endpoints.get(sid)
        self.stats["prg_auto_responses" if auto else "prg_responses"] += 1
        if self.traced("smmuv3_pri_resp"):
            self.tracer.emit("smmuv3_pri_resp", dev=self.name, sid=sid, ssid=ssid, grpid=grpid, code=code.name,
                             auto=int(auto), endpoint=int(ep is not None))
        if ep is not None:
            ep.pri_response(ssid, grpid, code)
