"""virtio-iommu (virtio v1.2 section 5.13, device ID 23): the device a guest driver talks to, its
architectural state (endpoints, domains, mappings or attached tables, bypass) and its own translation of
emulated endpoints' DMA.

Queues (5.13.2): 0 requestq, 1 eventq, 256 entries each (QEMU's VIOMMU_DEFAULT_QUEUE_SIZE). Offered
features: INPUT_RANGE, DOMAIN_RANGE, MAP_UNMAP, BYPASS_CONFIG, PROBE and MMIO (each of the last two can be
turned off), VERSION_1 and the ring features; BYPASS (3) is not offered (5.13.3.2: new devices SHOULD NOT);
F_ATTACH_TABLE (pgtable.py) only when the VMM enables page-table sharing. Configuration (5.13.4): the VMM's
page_size_mask, input_range, domain_range, probe_size 512 and bypass (boot value 1) as QEMU's defaults.

Requests (5.13.6), one chain each: the device-readable part is the request without its tail, the tail is the
last 4 bytes of the device-writable part (Linux `viommu_get_req_errno`), everything before it is zeroed (or
holds PROBE properties) and the used length is the whole device-writable part, which Linux requires before it
copies a PROBE reply back. What the device cannot parse it returns unwritten with used length 0 (5.13.6, which
Linux turns into IOERR): no device-writable tail, no head, a type it does not recognize (5.13.6.2: SHOULD NOT
write -- QEMU writes UNSUPP instead), or a device-writable part over `MAX_REPLY`. A recognized request whose
device-readable part is too short for its type gets IOERR, "virtio communication error" (QEMU: INVAL). The
rules of each request, with their order, are in the handlers below and in docs/virtio-iommu.md.

Faults (5.13.6.9): `report_fault` (the VMM, for faults of assigned endpoints) and `translate` (emulated
endpoints) write `struct virtio_iommu_fault` into the next event buffer; without one the report waits in a
bounded queue (`max_pending_events`, QEMU drops it), beyond which reports are dropped and counted.

Not modelled: ACPI/VIOT or PCI topology (endpoint IDs are what the VMM gives), F_BYPASS (3) and its legacy
semantics, hot-plugged endpoints after DRIVER_OK, the 2018 draft's IDENTITY reserved regions.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Iterable, Sequence

from ...bus import BusError
from ...fields import Layout
from ...smmuv3 import cd as cdmod
from ...smmuv3 import strtab
from ...smmuv3.fault import EventType, Fault
from ...smmuv3.walk import WalkFault, need_of, walk_s1
from ...trace import NULL_TRACER, Tracer
from ..config import ConfigSpace
from ..constants import VIRTIO_ID_IOMMU, Status
from ..device import Log, VirtioDevice
from ..ring import Chain, DmaMemory, Virtqueue
from . import events  # noqa: F401  (declares the trace events)
from .backend import IommuBackend
from .layouts import (ATTACH_LAYOUT, CONFIG_FIELDS, CONFIG_SIZE, DETACH_LAYOUT, FAULT_LAYOUT, MAP_LAYOUT,
                      PROBE_LAYOUT, TAIL_SIZE, UNMAP_LAYOUT, AttachReq, DetachReq, MapReq, ProbeReq, UnmapReq, decode,
                      resv_mem_property, tail)
from .mappings import Mapping, MappingTree, unmap_plan
from .pgtable import (ATTACH_TABLE_LAYOUT, F_ATTACH_TABLE, INVALIDATE_LAYOUT, PGT_ARM_LAYOUT, PGTF_ARM_LPAE,
                      PST_ARM_LAYOUT, PSTF_ARM_SV3, AttachTableReq, InvalidateReq, PageTable, PasidTable,
                      PgtArmReq, PstArmReq, TableFormat, invalidation, page_table, pasid_table)
from .spec import (ATTACH_F_BYPASS, EVENTQ, F_BYPASS_CONFIG, F_DOMAIN_RANGE, F_INPUT_RANGE, F_MAP_UNMAP, F_MMIO,
                   F_PROBE, FAULT_F_ADDRESS, FAULT_F_EXEC, FAULT_F_READ, FAULT_F_WRITE, FEATURE_NAMES, MAP_F_MMIO,
                   MAP_F_READ, MAP_F_WRITE, REQUESTQ, RESV_MEM_T_MSI, RESV_MEM_T_RESERVED, FaultReason,
                   IommuStatus, Reject, ReqType)

__all__ = ["VirtioIommu", "Endpoint", "ResvMem", "Domain", "DomainKind", "TranslateFault", "EndpointMemory",
           "QUEUE_SIZE", "PROBE_SIZE", "MAX_REPLY", "QEMU_PAGE_SIZE_MASK"]

QUEUE_SIZE = 256                         # QEMU VIOMMU_DEFAULT_QUEUE_SIZE
PROBE_SIZE = 512                         # QEMU VIOMMU_PROBE_SIZE
MAX_REPLY = 64 << 10                     # device limit on the device-writable part of one request
QEMU_PAGE_SIZE_MASK = ~0xFFF & (2**64 - 1)   # QEMU's default: TARGET_PAGE_MASK of a 4 KiB target
_U64 = 2**64 - 1


@dataclass(frozen=True)
class ResvMem:
    """A reserved region of an endpoint's virtual address space (RESV_MEM property, 5.13.6.8.1): `subtype`
    RESV_MEM_T_RESERVED or RESV_MEM_T_MSI (the MSI doorbell window, translated 1:1), [start; end]."""
    subtype: int
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.subtype not in (RESV_MEM_T_RESERVED, RESV_MEM_T_MSI) or not 0 <= self.start <= self.end <= _U64:
            raise ValueError(f"ResvMem: subtype {self.subtype}, [{self.start:#x}; {self.end:#x}]")


@dataclass(frozen=True)
class Endpoint:
    """An endpoint the VMM puts behind the device: its ID (the `iommus` cell of the device tree), its reserved
    regions, and the stage-1 format its host SMMU takes (None: the device's `table_format`)."""
    id: int
    resv: tuple[ResvMem, ...] = ()
    table_format: TableFormat | None = None


class DomainKind(str, Enum):
    MAP = "map"              # ATTACH: mappings by MAP/UNMAP
    BYPASS = "bypass"        # ATTACH with ATTACH_F_BYPASS: identity
    TABLE = "table"          # ATTACH_TABLE: the guest's tables


@dataclass
class Domain:
    id: int
    kind: DomainKind
    endpoints: set[int] = field(default_factory=set)
    mappings: MappingTree = field(default_factory=MappingTree)
    table: PageTable | PasidTable | None = None


@dataclass(frozen=True, slots=True)
class TranslateFault:
    """A DMA access the device refused: what it reported (or would have) on the event queue."""
    reason: FaultReason
    flags: int
    endpoint: int
    address: int
    why: str


@dataclass(frozen=True)
class _Kind:
    """How the device serves one request type."""
    name: str
    layout: Layout
    record: type
    serve: Callable[[Any, bytes, int], bytes]      # (request, readable bytes, properties room) -> reply body
    event: str
    fields: tuple[str, ...]


class VirtioIommu(VirtioDevice):
    """The virtio-iommu device. `endpoints` are the endpoints behind it; `backend` the VMM's (default: all
    emulated); `page_tables` offers F_ATTACH_TABLE with `table_format` (per endpoint if they say);
    `phys_ranges` ((base, size) pairs) is the guest-physical memory MAP and table addresses may name
    (None: any)."""

    device_id = VIRTIO_ID_IOMMU
    device_feature_names = {**FEATURE_NAMES, F_ATTACH_TABLE: "IOMMU_F_ATTACH_TABLE"}

    def __init__(self, memory: DmaMemory, endpoints: Iterable[Endpoint] = (), *,
                 backend: IommuBackend | None = None, page_size_mask: int = QEMU_PAGE_SIZE_MASK,
                 input_range: tuple[int, int] = (0, _U64), domain_range: tuple[int, int] = (0, 2**32 - 1),
                 probe_size: int = PROBE_SIZE, boot_bypass: bool = True, probe: bool = True, mmio: bool = True,
                 page_tables: bool = False, table_format: TableFormat | None = None,
                 phys_ranges: Sequence[tuple[int, int]] | None = None, max_domains: int = 1 << 16,
                 max_mappings: int = 1 << 16, max_pending_events: int = 64, queue_size: int = QUEUE_SIZE,
                 name: str = "virtio-iommu", tracer: Tracer = NULL_TRACER, log: Log | None = None):
        if not page_size_mask or page_size_mask >> 64:
            raise ValueError("page_size_mask needs at least one bit (5.13.4.2) and fits 64 bits")
        if not 0 <= input_range[0] <= input_range[1] <= _U64 or not 0 <= domain_range[0] <= domain_range[1] < 2**32:
            raise ValueError(f"input_range {input_range} / domain_range {domain_range}")
        if not 0 <= probe_size <= MAX_REPLY - TAIL_SIZE:
            raise ValueError(f"probe_size {probe_size} outside 0..{MAX_REPLY - TAIL_SIZE}")
        features = (F_INPUT_RANGE | F_DOMAIN_RANGE | F_MAP_UNMAP | F_BYPASS_CONFIG | (F_PROBE if probe else 0)
                    | (F_MMIO if mmio else 0) | (F_ATTACH_TABLE if page_tables else 0))
        super().__init__(memory, queue_sizes=[queue_size, queue_size], features=features,
                         config=ConfigSpace(CONFIG_FIELDS, size=CONFIG_SIZE), name=name, tracer=tracer, log=log)
        for key, value in (("page_size_mask", page_size_mask), ("input_start", input_range[0]),
                           ("input_end", input_range[1]), ("domain_start", domain_range[0]),
                           ("domain_end", domain_range[1]), ("probe_size", probe_size),
                           ("bypass", int(boot_bypass))):
            self.config.set(key, value, notify=False)
        self.backend = backend if backend is not None else IommuBackend()
        self.granule = page_size_mask & -page_size_mask       # the least significant bit: the page granule
        self.input_range, self.domain_range, self.probe_size = input_range, domain_range, probe_size
        self.boot_bypass = boot_bypass
        self.bypass = boot_bypass
        self.table_format = table_format or TableFormat()
        self.phys_ranges = tuple(phys_ranges) if phys_ranges is not None else None
        self.max_domains, self.max_mappings, self.max_pending_events = max_domains, max_mappings, max_pending_events
        self.endpoints: dict[int, Endpoint] = {}
        self.domains: dict[int, Domain] = {}
        self.attached: dict[int, int] = {}                 # endpoint -> domain
        self.pending_events: deque[bytes] = deque()
        self.requests: Counter[tuple[str, str]] = Counter()     # (request type, status) -> count
        self._kinds = self._request_kinds(probe, page_tables)
        for ep in endpoints:
            self.add_endpoint(ep)

    def _request_kinds(self, probe: bool, page_tables: bool) -> dict[int, _Kind]:
        kinds = [_Kind("ATTACH", ATTACH_LAYOUT, AttachReq, self._attach, "virtio_iommu_attach",
                       ("domain", "endpoint", "flags")),
                 _Kind("DETACH", DETACH_LAYOUT, DetachReq, self._detach, "virtio_iommu_detach", ("domain", "endpoint")),
                 _Kind("MAP", MAP_LAYOUT, MapReq, self._map, "virtio_iommu_map",
                       ("domain", "virt_start", "virt_end", "phys_start", "flags")),
                 _Kind("UNMAP", UNMAP_LAYOUT, UnmapReq, self._unmap, "virtio_iommu_unmap",
                       ("domain", "virt_start", "virt_end"))]
        if probe:
            kinds.append(_Kind("PROBE", PROBE_LAYOUT, ProbeReq, self._probe, "virtio_iommu_probe", ("endpoint",)))
        if page_tables:
            kinds += [_Kind("ATTACH_TABLE", ATTACH_TABLE_LAYOUT, AttachTableReq, self._attach_table,
                            "virtio_iommu_attach_table", ("domain", "endpoint", "format")),
                      _Kind("INVALIDATE", INVALIDATE_LAYOUT, InvalidateReq, self._invalidate,
                            "virtio_iommu_invalidate", ("domain", "scope", "flags", "pasid", "id", "virt_start",
                                                        "nr_pages", "granule"))]
        return {int(ReqType[k.name]): k for k in kinds}

    # -- the VMM's side ---------------------------------------------------------------------------------
    def add_endpoint(self, ep: Endpoint) -> None:
        """Put an endpoint behind the device (before the guest probes it). Its PROBE reply must fit."""
        if ep.id in self.endpoints or not 0 <= ep.id < 2**32:
            raise ValueError(f"endpoint {ep.id:#x} is a duplicate or not a 32-bit ID")
        self.endpoints[ep.id] = ep
        need = len(self.properties(ep.id, extension=bool(self.host_features & F_ATTACH_TABLE)))
        if need > self.probe_size:
            del self.endpoints[ep.id]
            raise ValueError(f"endpoint {ep.id:#x}: {need} bytes of probe properties > probe_size {self.probe_size}")

    def format_of(self, endpoint: int) -> TableFormat:
        ep = self.endpoints[endpoint]
        return ep.table_format or self.table_format

    def properties(self, endpoint: int, extension: bool | None = None) -> bytes:
        """The PROBE properties of `endpoint` (5.13.6.7): its RESV_MEM regions, then the page-table format
        when the extension is negotiated (or `extension`)."""
        ep = self.endpoints[endpoint]
        out = b"".join(resv_mem_property(r.subtype, r.start, r.end) for r in ep.resv)
        if extension is None:
            extension = self.negotiated(F_ATTACH_TABLE)
        return out + self.format_of(endpoint).properties() if extension else out

    def system_reset(self) -> None:
        """System reset: field `bypass` back to its boot value (5.13.4.2; it survives device resets), and a
        device reset."""
        self.bypass = self.boot_bypass
        self.config.set("bypass", int(self.boot_bypass), notify=False)
        self._emit("virtio_iommu_system_reset", bypass=int(self.bypass))
        self.backend.set_bypass(self.bypass)
        self.reset()

    def negotiated(self, feature: int) -> bool:
        return bool(self.guest_features & feature)

    # -- VirtioDevice hooks -----------------------------------------------------------------------------
    def handle_queue(self, vq: Virtqueue) -> None:
        if vq.index == REQUESTQ:
            self._requests(vq)
        elif vq.index == EVENTQ:
            self._flush_events()

    def status_changed(self, old: int, new: int) -> None:
        if new & ~old & Status.DRIVER_OK:
            self._flush_events()

    def reset_device(self) -> None:
        """5.13.5: after a reset no endpoint is attached to a domain."""
        for ep, dom in sorted(self.attached.items()):
            self.backend.detach(dom, ep)
        for dom in sorted(self.domains):
            self.backend.free_domain(dom)
        self.attached.clear()
        self.domains.clear()
        self.pending_events.clear()
        self._emit("virtio_iommu_device_reset")

    def config_written(self, names: tuple[str, ...]) -> None:
        """Field `bypass` (5.13.4.1): writable once BYPASS_CONFIG is negotiated, values 0 and 1. A write the
        spec forbids puts the device in its error state with the old value kept, as QEMU's
        `virtio_iommu_set_config` (`virtio_error`)."""
        if "bypass" not in names:
            return
        value = self.config["bypass"]
        if value == self.bypass:
            return
        self.config.set("bypass", int(self.bypass), notify=False)
        accepted = self.negotiated(F_BYPASS_CONFIG) and value in (0, 1)
        self._emit("virtio_iommu_set_config", bypass=value, accepted=int(accepted))
        if not accepted:
            self.error(f"config.bypass written with {value}" + ("" if self.negotiated(F_BYPASS_CONFIG)
                                                                else " without VIRTIO_IOMMU_F_BYPASS_CONFIG"))
            return
        self.bypass = bool(value)
        self.config.set("bypass", value, notify=False)
        self.backend.set_bypass(self.bypass)

    # -- the request queue ------------------------------------------------------------------------------
    def _requests(self, vq: Virtqueue) -> None:
        while (chain := vq.pop()) is not None:
            reply = self._serve(chain)
            if not vq.push(chain, reply if reply is not None else 0):
                break
        self.notify(vq)

    def _serve(self, chain: Chain) -> bytes | None:
        """The device-writable bytes for one request chain, or None (returned unwritten, used length 0)."""
        data, room = chain.readable, chain.capacity - TAIL_SIZE
        rtype = data[0] if data else None
        kind = self._kinds.get(rtype) if rtype is not None else None
        why = self._unparseable(room, rtype, kind)
        if why:
            self._bad_request(rtype, None, why)
            return None
        if len(data) < kind.layout.nbytes:
            why = f"{kind.name}: {len(data)} device-readable bytes, the request has {kind.layout.nbytes}"
            self._bad_request(rtype, IommuStatus.IOERR, why)
            self.requests[(kind.name, "IOERR")] += 1
            return bytes(room) + tail(IommuStatus.IOERR)
        req = decode(kind.record, kind.layout, data[:kind.layout.nbytes])
        try:
            body, status, why = kind.serve(req, data, room), IommuStatus.OK, ""
        except Reject as r:
            body, status, why = b"", r.status, r.why
            self.guest_error(f"{kind.name} -> {status.name}: {why}")
        self.requests[(kind.name, status.name)] += 1
        if kind.event in self.tracer.enabled:
            self.tracer.emit(kind.event, dev=self.name, status=status.name, why=why,
                             **{k: getattr(req, k) for k in kind.fields})
        return body.ljust(room, b"\0") + tail(status)

    @staticmethod
    def _unparseable(room: int, rtype: int | None, kind: _Kind | None) -> str:
        """Why a chain cannot be answered at all (5.13.6: returned unwritten), or ""."""
        if room < 0:
            return "no device-writable tail"
        if room > MAX_REPLY - TAIL_SIZE:
            return f"device-writable part over {MAX_REPLY} bytes"
        if rtype is None:
            return "no request head"
        if kind is None:
            return f"request type {rtype} not recognized (5.13.6.2: not written)"
        return ""

    def _bad_request(self, rtype: int | None, status: IommuStatus | None, why: str) -> None:
        self.errors["bad_request"] += 1
        self.guest_error(f"requestq: {why}")
        self._emit("virtio_iommu_bad_request", type=rtype, status=status.name if status is not None else None,
                   why=why)

    # -- request handlers (each raises Reject or returns the reply body) -----------------------------------
    def _endpoint(self, endpoint: int) -> Endpoint:
        ep = self.endpoints.get(endpoint)
        if ep is None:
            raise Reject(IommuStatus.NOENT, f"endpoint {endpoint:#x} does not exist")
        return ep

    def _need(self, feature: int, what: str) -> None:
        if not self.negotiated(feature):
            raise Reject(IommuStatus.UNSUPP, f"{what} without VIRTIO_{self.device_feature_names[feature]} "
                         "negotiated")

    def _attach(self, req, _data: bytes, _room: int) -> bytes:
        """5.13.6.3.2, in this order: reserved != 0 -> INVAL; unknown flag (BYPASS needs BYPASS_CONFIG) ->
        INVAL; unknown endpoint -> NOENT; then `_join`."""
        if req.reserved:
            raise Reject(IommuStatus.INVAL, "ATTACH reserved bytes are not zero (MUST reject)")
        known = ATTACH_F_BYPASS if self.negotiated(F_BYPASS_CONFIG) else 0
        if req.flags & ~known:
            raise Reject(IommuStatus.INVAL, f"ATTACH flags {req.flags:#x} not recognized")
        ep = self._endpoint(req.endpoint)
        bypass = bool(req.flags & ATTACH_F_BYPASS)
        self._join(req.domain, ep, DomainKind.BYPASS if bypass else DomainKind.MAP, None,
                   lambda: self.backend.attach(req.domain, ep.id, bypass=bypass))
        return b""

    def _join(self, domain: int, ep: Endpoint, kind: DomainKind, table: PageTable | PasidTable | None,
              call: Callable[[], IommuStatus]) -> None:
        """Attach `ep` to `domain` (created if new, of `kind`): domain outside domain_range -> RANGE; an
        existing domain of another kind (bypass flag or table inconsistent) -> INVAL; another table ->
        UNSUPP; the endpoint's reserved regions over the domain's mappings (incompatible properties) ->
        UNSUPP; no room for a new domain -> NOMEM; the backend's refusal -> its status. An endpoint attached
        elsewhere moves (5.13.6.3.2: as DETACH then ATTACH) only once all of that succeeded."""
        dom = self.domains.get(domain)
        old = self.attached.get(ep.id)
        if dom is None:
            lo, hi = self.domain_range
            if not lo <= domain <= hi:
                raise Reject(IommuStatus.RANGE, f"domain {domain:#x} outside domain_range [{lo:#x}; {hi:#x}]")
            frees = old is not None and len(self.domains[old].endpoints) == 1
            if len(self.domains) - frees >= self.max_domains:
                raise Reject(IommuStatus.NOMEM, f"{self.max_domains} domains exist already")
        else:
            self._compatible(dom, ep, kind, table)
            if old == domain:
                return                                    # attached there already: nothing to do
        status = call()
        if status != IommuStatus.OK:
            raise Reject(IommuStatus(status), f"the VMM refused to attach endpoint {ep.id:#x} to {domain:#x}")
        if old is not None:
            self._leave(old, ep.id, detach=False)         # the backend moved it
        if dom is None:
            dom = self.domains[domain] = Domain(domain, kind, table=table)
            self._emit("virtio_iommu_get_domain", domain=domain, kind=kind.value)
        dom.endpoints.add(ep.id)
        self.attached[ep.id] = domain

    def _compatible(self, dom: Domain, ep: Endpoint, kind: DomainKind, table: PageTable | PasidTable | None) -> None:
        if dom.kind is not kind:
            raise Reject(IommuStatus.INVAL, f"domain {dom.id:#x} is a {dom.kind.value} domain, not {kind.value}")
        if dom.table != table:
            raise Reject(IommuStatus.UNSUPP, f"domain {dom.id:#x} has another table attached")
        for r in ep.resv:
            if dom.mappings.overlaps(r.start, r.end):
                raise Reject(IommuStatus.UNSUPP, f"endpoint {ep.id:#x}'s reserved region [{r.start:#x}; "
                             f"{r.end:#x}] overlaps mappings of domain {dom.id:#x}")

    def _leave(self, domain: int, endpoint: int, detach: bool) -> None:
        dom = self.domains[domain]
        dom.endpoints.discard(endpoint)
        del self.attached[endpoint]
        if detach:
            self.backend.detach(domain, endpoint)
        if not dom.endpoints:                              # 5.13.6.4: the domain ceases to exist
            del self.domains[domain]
            dom.mappings.clear()
            self.backend.free_domain(domain)
            self._emit("virtio_iommu_put_domain", domain=domain)

    def _detach(self, req, _data: bytes, _room: int) -> bytes:
        """5.13.6.4.2: reserved ignored; unknown endpoint -> NOENT; domain missing or not the endpoint's ->
        INVAL (the spec's MAY)."""
        ep = self._endpoint(req.endpoint)
        if self.attached.get(ep.id) != req.domain:
            raise Reject(IommuStatus.INVAL, f"endpoint {ep.id:#x} is not attached to domain {req.domain:#x}")
        self._leave(req.domain, ep.id, detach=True)
        return b""

    def _map_domain(self, domain: int, what: str) -> Domain:
        dom = self.domains.get(domain)
        if dom is None:
            raise Reject(IommuStatus.NOENT, f"{what}: domain {domain:#x} does not exist")
        if dom.kind is not DomainKind.MAP:
            raise Reject(IommuStatus.INVAL, f"{what} on a {dom.kind.value} domain")
        return dom

    def _virt_range(self, start: int, end: int, what: str) -> None:
        if end < start:
            raise Reject(IommuStatus.INVAL, f"{what}: virt_end {end:#x} < virt_start {start:#x}")
        lo, hi = self.input_range
        if start < lo or end > hi:
            raise Reject(IommuStatus.RANGE, f"{what} [{start:#x}; {end:#x}] outside input_range [{lo:#x}; {hi:#x}]")

    def _map(self, req, _data: bytes, _room: int) -> bytes:
        """5.13.6.5.2, in this order: MAP_UNMAP not negotiated -> UNSUPP; unknown flag (MMIO needs F_MMIO) ->
        INVAL; no domain -> NOENT; bypass or table domain -> INVAL; virt_end < virt_start -> INVAL; range
        outside input_range, start/end+1/phys not on the granule, phys wrapping -> RANGE; phys outside
        guest memory -> FAULT; overlap with a mapping or an attached endpoint's reserved region -> INVAL;
        too many mappings -> NOMEM; the backend's refusal -> its status."""
        self._need(F_MAP_UNMAP, "MAP")
        known = MAP_F_READ | MAP_F_WRITE | (MAP_F_MMIO if self.negotiated(F_MMIO) else 0)
        if req.flags & ~known:
            raise Reject(IommuStatus.INVAL, f"MAP flags {req.flags:#x} not recognized")
        dom = self._map_domain(req.domain, "MAP")
        start, end, phys = req.virt_start, req.virt_end, req.phys_start
        self._virt_range(start, end, "MAP")
        size = end - start + 1
        if (start | phys | ((end + 1) & _U64)) & (self.granule - 1):
            raise Reject(IommuStatus.RANGE, f"MAP [{start:#x}; {end:#x}] -> {phys:#x} not aligned on the "
                         f"{self.granule:#x}-byte granule")
        if phys + size - 1 > _U64:
            raise Reject(IommuStatus.RANGE, f"MAP phys range {phys:#x} + {size:#x} wraps")
        if not self.phys_ok(phys, size):
            raise Reject(IommuStatus.FAULT, f"MAP phys range {phys:#x} + {size:#x} is not guest memory")
        if dom.mappings.overlaps(start, end):
            raise Reject(IommuStatus.INVAL, f"MAP [{start:#x}; {end:#x}]: a mapping exists in the range")
        for r in (r for e in dom.endpoints for r in self.endpoints[e].resv):
            if r.start <= end and start <= r.end:
                raise Reject(IommuStatus.INVAL, f"MAP [{start:#x}; {end:#x}] overlaps reserved region "
                             f"[{r.start:#x}; {r.end:#x}]")
        if len(dom.mappings) >= self.max_mappings:
            raise Reject(IommuStatus.NOMEM, f"domain {dom.id:#x} has {self.max_mappings} mappings already")
        status = self.backend.map(dom.id, start, phys, size, req.flags)
        if status != IommuStatus.OK:
            raise Reject(IommuStatus(status), f"the VMM refused MAP [{start:#x}; {end:#x}]")
        dom.mappings.insert(Mapping(start, end, phys, req.flags))
        return b""

    def _unmap(self, req, _data: bytes, _room: int) -> bytes:
        """5.13.6.6.2, in this order: MAP_UNMAP not negotiated -> UNSUPP; reserved != 0 -> INVAL (the MAY,
        nothing removed); no domain -> NOENT; bypass or table domain -> INVAL; virt_end < virt_start ->
        INVAL; outside input_range -> RANGE; a mapping it would split -> RANGE, nothing removed; else every
        mapping it covers goes (the backend told once per mapping; its refusal stops there, with its
        status)."""
        self._need(F_MAP_UNMAP, "UNMAP")
        if req.reserved:
            raise Reject(IommuStatus.INVAL, "UNMAP reserved bytes are not zero")
        dom = self._map_domain(req.domain, "UNMAP")
        self._virt_range(req.virt_start, req.virt_end, "UNMAP")
        plan = unmap_plan(dom.mappings, req.virt_start, req.virt_end)
        if isinstance(plan, Mapping):
            raise Reject(IommuStatus.RANGE, f"UNMAP [{req.virt_start:#x}; {req.virt_end:#x}] would split "
                         f"mapping [{plan.start:#x}; {plan.end:#x}]")
        for n, m in enumerate(plan):
            status = self.backend.unmap(dom.id, m.start, m.size)
            if status != IommuStatus.OK:
                raise Reject(IommuStatus(status), f"the VMM refused to unmap [{m.start:#x}; {m.end:#x}] "
                             f"({n} of {len(plan)} mappings removed)")
            dom.mappings.remove(m)
            self._emit("virtio_iommu_unmap_done", domain=dom.id, virt_start=m.start, virt_end=m.end)
        return b""

    def _probe(self, req, _data: bytes, room: int) -> bytes:
        """5.13.6.7.2: PROBE not negotiated -> UNSUPP; unknown endpoint -> NOENT; properties field smaller
        than probe_size -> INVAL, no property written; else the properties, zero-filled (NONE ends them)."""
        self._need(F_PROBE, "PROBE")
        ep = self._endpoint(req.endpoint)
        if room < self.probe_size:
            raise Reject(IommuStatus.INVAL, f"PROBE properties field of {room} bytes < probe_size {self.probe_size}")
        for r in ep.resv:
            self._emit("virtio_iommu_fill_resv_property", endpoint=ep.id, subtype=r.subtype, start=r.start,
                       end=r.end)
        return self.properties(ep.id)

    def _attach_table(self, req, data: bytes, _room: int) -> bytes:
        """ATTACH_TABLE (pgtable.py): extension not negotiated -> UNSUPP; unknown endpoint -> NOENT; unknown
        format -> UNSUPP; the table checked against the endpoint's format (INVAL / UNSUPP / RANGE / FAULT);
        then `_join` with the table (an existing table domain must hold the same table)."""
        self._need(F_ATTACH_TABLE, "ATTACH_TABLE")
        ep = self._endpoint(req.endpoint)
        fmt = self.format_of(ep.id)
        raw = data[:PGT_ARM_LAYOUT.nbytes]
        table: PageTable | PasidTable
        if req.format == PGTF_ARM_LPAE:
            table = page_table(decode(PgtArmReq, PGT_ARM_LAYOUT, raw), fmt, self.phys_ok)
        elif req.format == PSTF_ARM_SV3:
            table = pasid_table(decode(PstArmReq, PST_ARM_LAYOUT, raw), fmt, self.phys_ok)
        else:
            raise Reject(IommuStatus.UNSUPP, f"table format {req.format} not supported")
        self._join(req.domain, ep, DomainKind.TABLE, table,
                   lambda: self.backend.attach_table(req.domain, ep.id, table))
        return b""

    def _invalidate(self, req, _data: bytes, _room: int) -> bytes:
        """INVALIDATE (pgtable.py): extension not negotiated -> UNSUPP; no domain -> NOENT; a domain without a
        table -> INVAL; the scope's rules (pgtable.invalidation); the backend's refusal -> its status."""
        self._need(F_ATTACH_TABLE, "INVALIDATE")
        dom = self.domains.get(req.domain)
        if dom is None:
            raise Reject(IommuStatus.NOENT, f"INVALIDATE: domain {req.domain:#x} does not exist")
        if dom.table is None:
            raise Reject(IommuStatus.INVAL, f"INVALIDATE of {dom.kind.value} domain {dom.id:#x} (no table)")
        status = self.backend.invalidate(dom.id, invalidation(req, dom.table))
        if status != IommuStatus.OK:
            raise Reject(IommuStatus(status), f"the VMM refused INVALIDATE of domain {dom.id:#x}")
        return b""

    def phys_ok(self, addr: int, size: int) -> bool:
        """Is [addr, addr + size) inside the guest-physical memory the VMM declared?"""
        if self.phys_ranges is None:
            return True
        return any(base <= addr and addr + size <= base + n for base, n in self.phys_ranges)

    # -- faults and the event queue ----------------------------------------------------------------------
    def report_fault(self, endpoint: int, reason: FaultReason, *, address: int | None = None, read: bool = False,
                     write: bool = False, exec_: bool = False) -> None:
        """Report a fault of `endpoint` on the event queue (5.13.6.9); the VMM calls this for assigned
        endpoints (it picks the closest reason)."""
        flags = ((FAULT_F_READ if read else 0) | (FAULT_F_WRITE if write else 0) | (FAULT_F_EXEC if exec_ else 0)
                 | (FAULT_F_ADDRESS if address is not None else 0))
        self.report(TranslateFault(FaultReason(reason), flags, endpoint, address or 0, "reported by the VMM"))

    def report(self, fault: TranslateFault) -> None:
        """Queue the report of `fault` and deliver what the driver's event buffers can take."""
        record = FAULT_LAYOUT.to_bytes(FAULT_LAYOUT.pack(reason=int(fault.reason), flags=fault.flags,
                                                         endpoint=fault.endpoint, address=fault.address))
        if len(self.pending_events) >= self.max_pending_events:
            self.stats["events_dropped"] += 1
            self._emit("virtio_iommu_fault_dropped", reason=int(fault.reason), endpoint=fault.endpoint,
                       why=f"{self.max_pending_events} reports wait for event buffers")
            return
        self.pending_events.append(record)
        self._flush_events()
        if "virtio_iommu_report_fault" in self.tracer.enabled:
            queued = any(r is record for r in self.pending_events)
            self.tracer.emit("virtio_iommu_report_fault", dev=self.name, reason=int(fault.reason), flags=fault.flags,
                             endpoint=fault.endpoint, address=fault.address, queued=int(queued))

    def _flush_events(self) -> int:
        """Write waiting reports into the driver's event buffers; returns how many were delivered."""
        vq = self.vqs[EVENTQ]
        sent = 0
        while self.pending_events and self.may_consume() and (chain := vq.pop()) is not None:
            if chain.readable_segments or chain.capacity < FAULT_LAYOUT.nbytes:
                self.errors["bad_event_buffer"] += 1
                self.guest_error(f"eventq: buffer with {len(chain.readable_segments)} device-readable parts and "
                                 f"{chain.capacity} device-writable bytes (needs {FAULT_LAYOUT.nbytes}): returned")
                if not vq.push(chain, 0):
                    break
                continue
            if not vq.push(chain, self.pending_events.popleft()):
                break
            sent += 1
        if sent:
            self.stats["events_sent"] += sent
            self.notify(vq)
        return sent

    # -- the device's own translation (emulated endpoints) ------------------------------------------------
    def translate(self, endpoint: int, iova: int, *, write: bool = False, exec_: bool = False,
                  pasid: int | None = None, report: bool = True) -> int | TranslateFault:
        """The guest-physical address of an access of `endpoint` to `iova`, or the fault (reported on the
        event queue unless `report` is False): QEMU's `virtio_iommu_translate` order -- unknown endpoint
        (UNKNOWN), reserved regions (MSI: identity; RESERVED: MAPPING), unattached (bypass: identity, else
        DOMAIN), bypass domain (identity), mappings or the attached tables (MAPPING, with the access flags)."""
        out = self.resolve(endpoint, iova, write=write, exec_=exec_, pasid=pasid)
        if isinstance(out, TranslateFault):
            if report:
                self.report(out)
            return out
        pa = out[0]
        if "virtio_iommu_translate_out" in self.tracer.enabled:
            self.tracer.emit("virtio_iommu_translate_out", dev=self.name, endpoint=endpoint, iova=iova, pa=pa)
        return pa

    def resolve(self, endpoint: int, iova: int, *, write: bool = False, exec_: bool = False,
                pasid: int | None = None) -> tuple[int, int] | TranslateFault:
        """`translate` without reporting: (pa, last iova of the contiguous range it belongs to) or the fault."""
        ep = self.endpoints.get(endpoint)
        if ep is None:
            return self._fault(FaultReason.UNKNOWN, endpoint, iova, write, exec_, "unknown endpoint")
        for r in ep.resv:
            if r.start <= iova <= r.end:
                if r.subtype == RESV_MEM_T_MSI:
                    return iova, r.end
                return self._fault(FaultReason.MAPPING, endpoint, iova, write, exec_, "reserved region")
        domain = self.attached.get(endpoint)
        if domain is None:
            if self.bypass:
                return iova, _U64
            return self._fault(FaultReason.DOMAIN, endpoint, iova, write, exec_, "not attached to a domain")
        dom = self.domains[domain]
        if dom.kind is DomainKind.BYPASS:
            return iova, _U64
        if dom.kind is DomainKind.TABLE:
            return self._walk(ep, dom.table, iova, write, exec_, pasid)
        m = dom.mappings.lookup(iova)
        if m is None:
            return self._fault(FaultReason.MAPPING, endpoint, iova, write, exec_, "not mapped")
        if not m.flags & (MAP_F_WRITE if write else MAP_F_READ):
            return self._fault(FaultReason.MAPPING, endpoint, iova, write, exec_, f"mapping flags {m.flags:#x}")
        return m.phys + iova - m.start, m.end

    def _walk(self, ep: Endpoint, table: PageTable | PasidTable, iova: int, write: bool, exec_: bool,
              pasid: int | None) -> tuple[int, int] | TranslateFault:
        """Translate through the guest's stage-1 tables with the SMMU model's CD/STE decoding and walker."""
        fmt = self.format_of(ep.id)
        if isinstance(table, PageTable):
            if pasid:
                return self._fault(FaultReason.MAPPING, ep.id, iova, write, exec_, "PASID on a one-table domain")
            s1 = cdmod.s1_config(table.cd, fmt.features)
        else:
            cfg = strtab.resolve(self._fetch, table.ste, fmt.features, ep.id, pasid)
            if isinstance(cfg, Fault):
                return self._fault(FaultReason.UNKNOWN, ep.id, iova, write, exec_, f"{cfg.name}: {cfg.reason}")
            if cfg.s1 is None:                       # S1DSS bypass of the no-PASID stream
                return iova, _U64
            s1 = cfg.s1
        leaf = walk_s1(s1, iova, self._read64, oas=fmt.output_bits)
        if isinstance(leaf, WalkFault):
            return self._fault(FaultReason.MAPPING, ep.id, iova, write, exec_, f"{leaf.type.name}: {leaf.reason}")
        if not leaf.perm_user & need_of(write, exec_):
            return self._fault(FaultReason.MAPPING, ep.id, iova, write, exec_, "stage-1 permission")
        return leaf.oa, leaf.in_base + leaf.size - 1

    def _fault(self, reason: FaultReason, endpoint: int, iova: int, write: bool, exec_: bool,
               why: str) -> TranslateFault:
        flags = FAULT_F_ADDRESS | (FAULT_F_WRITE if write else FAULT_F_EXEC if exec_ else FAULT_F_READ)
        return TranslateFault(reason, flags, endpoint, iova, why)

    def _read64(self, addr: int) -> int:
        return int.from_bytes(self.memory.read_bytes(addr, 8), "little")

    def _fetch(self, addr: int, n: int, kind: str) -> bytes | Fault:
        try:
            return self.memory.read_bytes(addr, n)
        except BusError as e:
            return Fault(EventType.F_CD_FETCH, ipa=addr, reason=f"{kind} fetch at {addr:#x}: {e}")

    def _emit(self, event: str, **fields: Any) -> None:
        if event in self.tracer.enabled:
            self.tracer.emit(event, dev=self.name, **fields)


class EndpointMemory:
    """The `DmaMemory` of an emulated endpoint behind the device: every access translated by
    `VirtioIommu.translate` (faults reported, then `BusError`), in pieces that stay within one mapping."""

    def __init__(self, iommu: VirtioIommu, endpoint: int, pasid: int | None = None):
        self.iommu, self.endpoint, self.pasid = iommu, endpoint, pasid

    def _pieces(self, addr: int, size: int, write: bool) -> list[tuple[int, int]]:
        out = []
        while size > 0:
            r = self.iommu.resolve(self.endpoint, addr, write=write, pasid=self.pasid)
            if isinstance(r, TranslateFault):
                self.iommu.report(r)
                raise BusError(addr, size, f"virtio-iommu: endpoint {self.endpoint:#x}: {r.why}")
            n = min(size, r[1] - addr + 1)
            out.append((r[0], n))
            addr, size = addr + n, size - n
        return out

    def read_bytes(self, addr: int, size: int) -> bytes:
        return b"".join(self.iommu.memory.read_bytes(pa, n) for pa, n in self._pieces(addr, size, False))

    def write_bytes(self, addr: int, data: bytes) -> None:
        off = 0
        for pa, n in self._pieces(addr, len(data), True):
            self.iommu.memory.write_bytes(pa, data[off:off + n])
            off += n
