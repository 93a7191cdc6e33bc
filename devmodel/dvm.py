"""The DVM interconnect: broadcast TLB maintenance between PEs (vCPUs) and SMMUs.

Participants (vCPUs, SMMUs, the simulated host's CPU-side maintenance) attach to one `Interconnect`.
`tlbi(op, source)` delivers a TLBI to every *other* participant when `op.broadcast` is true (IS/OS
operations, or EL1 operations with HCR_EL2.FB=1: the decoder has already decided); a local operation is
delivered to nobody (the issuing PE handles its own TLB). `sync(source)` is the DVM Sync a DSB issues after
TLBIs: every other participant completes the invalidations it received before acknowledging. The model is
synchronous, so a Sync completes when every `dvm_sync` call has returned; the number of acknowledgements is
traced and returned.

A receiver may say `dvm_repeatable = True`: what its `dvm_tlbi`/`dvm_sync` do depends neither on the message
numbers nor on the order of the messages it gets between two points where other code runs, and it offers
`dvm_tlbi_repeat(op, n)` / `dvm_sync_repeat(n)`, the same as `n` such calls. Then a caller that delivers a batch
(the native TLBI trap's compact traces, harness/trap.py) may hand over each distinct message once with its count
(`tlbi_repeat`, `sync_repeat`).

A participant may refuse broadcasts (an SMMU with IDR0.BTM=0 or CR2.PTM=1): it still attaches, and decides in
its own `dvm_tlbi`.

On the TLBI path this is step 3 of 5: trap (`harness/trap.py`) -> decode (`tlbi.py` -> `tlbi_types.TlbiOp`) ->
interconnect (here: who receives a message, message numbers, the Sync's acks) -> receiver (a vCPU's TLB flush
in the harness; for an SMMU `smmuv3/device.py` `dvm_tlbi`: is BTM in use?) -> IOTLB (`smmuv3/btm.py` selects,
`smmuv3/translate.py` applies to `smmuv3/iotlb.py` and accounts).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from .tlbi_types import TlbiOp
from .trace import NULL_TRACER, Payload, Tracer, define

__all__ = ["Participant", "Interconnect", "DvmSync"]

define("dvm_tlbi", ("src", "dst", "op", "vmid", "asid", "addr", "size", "leaf", "stage", "regime", "msg"),
       "a broadcast TLBI delivered to one DVM receiver")
define("dvm_sync", ("src", "acks", "msg", "acked"),
       "DVM Sync issued by a DSB after TLBIs, with the receivers' acks (acked: their names, comma-separated)")


class DvmSync(NamedTuple):
    """Immutable; a NamedTuple because one is built per DSB on the trap's hot path."""
    source: str
    msg: int          # message number of the Sync on this interconnect


class Participant(Protocol):
    dvm_name: str

    def dvm_tlbi(self, op: TlbiOp, msg: int) -> None:
        """Apply a broadcast TLBI (msg = its message number, to link traces)."""

    def dvm_sync(self, sync: DvmSync) -> None:
        """Complete every invalidation received before this Sync."""


class Interconnect:
    def __init__(self, tracer: Tracer = NULL_TRACER):
        self.participants: list[Participant] = []
        self.tracer = tracer
        self.msgs = 0            # messages sent (TLBI deliveries + syncs), used as flow ids in traces
        self.tlbis = 0           # broadcast TLBI operations sent
        self.syncs = 0
        # trace payloads (devmodel/trace.py): (id(op), id(source)) -> (op, source, [one per receiver]) and
        # id(source) -> (source, dvm_sync payload); kept with the objects, so an id is never reused for another
        self._tlbi_payloads: dict[tuple[int, int], tuple[Any, Any, list[Payload]]] = {}
        self._sync_payloads: dict[int, tuple[Any, Payload]] = {}
        self.generation = 0      # bumped when the participants change (what callers cache from here is stale)
        self._say: dict[tuple[str, int], tuple[Any, bool]] = {}   # receivers_say: (attr, id(source)) -> answer

    def attach(self, p: Participant) -> None:
        if any(q is p for q in self.participants):
            raise ValueError(f"{p.dvm_name} is already attached")
        self.participants.append(p)
        self._forget_payloads()

    def detach(self, p: Participant) -> None:
        self.participants = [q for q in self.participants if q is not p]
        self._forget_payloads()

    def _forget_payloads(self) -> None:
        self._tlbi_payloads.clear()
        self._sync_payloads.clear()
        self._say.clear()
        self.generation += 1

    def quiet(self, source: Participant | None) -> bool:
        """Does no receiver of `source`'s messages trace anything or read the clock in `dvm_tlbi`/`dvm_sync`
        (each says so with a true `dvm_quiet`)? Then the traces of a TLBI or Sync from `source` are contiguous
        and a caller may emit them itself (`tlbi(..., trace=False)`, `tlbi_payloads`, `sync_payload`)."""
        return self.receivers_say(source, "dvm_quiet")

    def receivers_say(self, source: Participant | None, attr: str) -> bool:
        """Does every receiver of `source`'s messages have a true `attr` (a fixed property of its class, such
        as `dvm_quiet`)? Kept until the participants change (`generation`), so hot paths may ask per batch."""
        key = (attr, id(source))
        hit = self._say.get(key)
        if hit is None or hit[0] is not source:
            hit = self._say[key] = (source, all(getattr(p, attr, False) for p in self.participants
                                                if p is not source))
        return hit[1]

    def tlbi(self, op: TlbiOp, source: Participant | None, trace: bool = True) -> int:
        """Broadcast `op` to every participant except `source`. Returns the number of receivers. With
        `trace=False` the caller has emitted the `dvm_tlbi` records (`tlbi_payloads`, messages `msgs + 1`...)."""
        if not op.broadcast:
            return 0
        self.tlbis += 1
        tr = self.tracer
        payloads = self.tlbi_payloads(op, source) if trace and "dvm_tlbi" in tr.enabled else None
        n = 0
        for p in self.participants:
            if p is source:
                continue
            self.msgs += 1
            if payloads is not None:
                tr.emit_payload(payloads[n], self.msgs)
            n += 1
            p.dvm_tlbi(op, self.msgs)
        return n

    def tlbi_payloads(self, op: TlbiOp, source: Participant | None) -> list[Payload]:
        """The `dvm_tlbi` payloads of `op` from `source`, one per receiver in delivery order."""
        key = (id(op), id(source))
        hit = self._tlbi_payloads.get(key)
        if hit is not None and hit[0] is op and hit[1] is source:
            return hit[2]
        src = source.dvm_name if source is not None else "host"
        tr = self.tracer
        out = [tr.payload("dvm_tlbi", ("msg",), src=src, dst=p.dvm_name, op=op.name, vmid=op.vmid, asid=op.asid,
                          addr=op.addr, size=op.size, leaf=op.leaf, stage=op.stage.value, regime=op.regime.value,
                          msg=None)
               for p in self.participants if p is not source]
        if len(self._tlbi_payloads) > 4096:
            self._tlbi_payloads.clear()
        self._tlbi_payloads[key] = (op, source, out)
        return out

    def tlbi_repeat(self, op: TlbiOp, source: Participant | None, n: int) -> None:
        """`n` times `tlbi(op, source, trace=False)`, when every receiver says `dvm_repeatable`: each gets one
        `dvm_tlbi_repeat(op, n)`; the counters and message numbers advance as for the `n` calls."""
        if not op.broadcast or n <= 0:
            return
        self.tlbis += n
        for p in self.participants:
            if p is not source:
                self.msgs += n
                p.dvm_tlbi_repeat(op, n)

    def sync_repeat(self, source: Participant | None, n: int) -> None:
        """`n` times `sync(source, trace=False)`, when every receiver says `dvm_repeatable`."""
        if n <= 0:
            return
        self.syncs += n
        self.msgs += n
        for p in self.participants:
            if p is not source:
                p.dvm_sync_repeat(n)

    def sync(self, source: Participant | None, trace: bool = True) -> int:
        """DVM Sync from `source`; returns the number of acknowledgements (every other participant). With
        `trace=False` the caller emits the `dvm_sync` record (`sync_payload`, message `msgs + 1`)."""
        self.syncs += 1
        self.msgs += 1
        s = DvmSync(source.dvm_name if source is not None else "host", self.msgs)
        acks = 0
        for p in self.participants:
            if p is source:
                continue
            p.dvm_sync(s)
            acks += 1
        if trace and "dvm_sync" in self.tracer.enabled:
            self.tracer.emit_payload(self.sync_payload(source), s.msg)
        return acks

    def sync_payload(self, source: Participant | None) -> Payload:
        """The `dvm_sync` payload of a Sync from `source` (dynamic: `msg`)."""
        hit = self._sync_payloads.get(id(source))
        if hit is None or hit[0] is not source:
            others = [p.dvm_name for p in self.participants if p is not source]
            hit = self._sync_payloads[id(source)] = (source, self.tracer.payload(
                "dvm_sync", ("msg",), src=source.dvm_name if source is not None else "host", acks=len(others),
                msg=None, acked=",".join(others)))
        return hit[1]
