"""The VMM's virtio-iommu for a VM whose DMA test device is assigned through VFIO/iommufd: the device model
(`devmodel.virtio.iommu.VirtioIommu`) on a virtio-mmio transport of the VM, and the backend that shadows what
the guest asks into the host IOMMU, as QEMU's VFIO listener does with the map/unmap notifications of its
virtio-iommu memory region (`hw/virtio/virtio-iommu.c` `virtio_iommu_notify_map` / `_unmap`, `hw/vfio/common.c`
`vfio_iommu_map_notify`), on the iommufd calls of Linux Documentation/userspace-api/iommufd.rst:

    KVM_DEV_VFIO_FILE_ADD -> VFIO_DEVICE_BIND_IOMMUFD -> IOAS_ALLOC + IOAS_MAP(guest RAM at its IPA)
    -> HWPT_ALLOC(NEST_PARENT) -> attach (boot bypass: the VM's stage 2, IOVA = IPA)
    [page-table sharing] -> VIOMMU_ALLOC (VMID: the policy's) -> VDEVICE_ALLOC(endpoint ID) -> VEVENTQ_ALLOC
    -> IOAS_MAP of a VMM-private page for the CDs it builds

    ATTACH d, ep              -> d new: IOAS_ALLOC + HWPT_ALLOC (kernel-managed paging HWPT) over it; attach
    ATTACH d, ep, BYPASS      -> attach the nest-parent HWPT (the VM's stage 2: identity IPA)
    MAP d, iova, gpa, size    -> IOAS_MAP(d's IOAS, iova, the host pages behind gpa)  (one call per mapping)
    UNMAP d, [mapping]        -> IOAS_UNMAP(d's IOAS, iova, size)                       (one call per mapping)
    DETACH / last endpoint    -> the endpoint back to bypass or blocked (config.bypass); IOMMU_DESTROY
    ATTACH_TABLE (PGTF_ARM)   -> the CD built from TTB/TCR/MAIR/ASID written to the CD page -> nested
                                 HWPT_ALLOC on the vIOMMU, vSTE S1ContextPtr = its IPA, S1CDMax 0 -> attach
    ATTACH_TABLE (PSTF_ARM)   -> nested HWPT_ALLOC on the vIOMMU with the guest's vSTE (its CD table) -> attach
    INVALIDATE                -> IOMMU_HWPT_INVALIDATE on the vIOMMU: TLBI_NH_VA (VA scope: per page, leaf;
                                 TLBI_NH_ASID from 512 pages on, as Linux's CMDQ_MAX_TLBI_OPS), TLBI_NH_ASID
                                 (PASID scope), TLBI_NH_ALL (domain scope), CFGI_CD / CFGI_CD_ALL (config)

The kernel rewrites the VMID of every command (the vIOMMU's) and the endpoint ID into the physical StreamID,
so a guest cannot reach another VM's entries through INVALIDATE; domain IDs are per device (per VM), so
another VM's domain is NOENT at the device already.

**The BTM flag** (`pstf_arm` PSTF_F_BTM) follows `advertise_btm` exactly as the vSMMU's IDR0.BTM does
(`harness.vmm.offers_btm`): "pinned" (default) only when the host uses BTM and the vIOMMU's VMID is the VM's
pinned KVM VMID, so the guest's `TLBI ...IS` really reach its entries; "host" whenever the host SMMU uses BTM,
whatever the VMID policy (the naive VMM); "never". The CD the VMM builds has ASET = 0 only with BTM offered.

**Page-table sharing is off** unless `page_tables=True`: no vIOMMU, no F_ATTACH_TABLE, and a MAP/UNMAP guest
gets the same device (features, configuration, PROBE reply) it gets with it on, except the extension's bits.

Costs (`ViommuBackend.stats`, `ViommuVm.cost()`): `vm_exits` every guest access to the transport page (each
trapped; QueueNotify writes are `kicks`), `host_calls` the iommufd ioctls the backend issued, `host_cmds` the
commands (CMD_SYNCs included) the host driver put on the physical SMMU's queue meanwhile.

Physical faults of the endpoint with a nested HWPT (vEVENTQ records, read at the end of each of the VM's vCPU
slices) become `virtio_iommu_fault` reports: translation faults (F_TRANSLATION, F_ADDR_SIZE, F_ACCESS,
F_PERMISSION, F_WALK_EABT) reason MAPPING with the address, configuration errors (C_BAD_CD, F_CD_FETCH,
C_BAD_SUBSTREAMID ...) reason DOMAIN. Faults of kernel-managed paging HWPTs stay on the host (iommufd has no
fault path for them), as with QEMU's virtio-iommu over VFIO.

The VMM never raises into the guest: iommufd refusals become status codes (`STATUS_OF_ERRNO`), with the
request changing nothing (the backend undoes what it did before the refusal).

Not modelled: several endpoints per VM sharing a transport (the code handles several; the set-up assigns one),
hot-plug, MMIO mappings (MAP_F_MMIO: UNSUPP), the transport's interrupt (the guest polls the used ring).
"""
from __future__ import annotations

import errno as _errno
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from devmodel.smmuv3 import commands as cmds
from devmodel.smmuv3 import ste as stemod
from devmodel.smmuv3.fault import EventType
from devmodel.trace import NULL_TRACER, Tracer, define
from devmodel.virtio.iommu import Endpoint, ResvMem, TableFormat, VirtioIommu
from devmodel.virtio.iommu.pgtable import INVAL_S_DOMAIN, INVAL_S_PASID, Invalidation, PageTable, PasidTable
from devmodel.virtio.iommu.spec import MAP_F_MMIO, MAP_F_READ, MAP_F_WRITE, RESV_MEM_T_MSI, FaultReason, IommuStatus
from devmodel.virtio.iommu.backend import IommuBackend
from devmodel.virtio.mmio import VirtioMmio

from .host.iommufd import (IOMMU_HWPT_DATA_ARM_SMMUV3, IOMMU_IOAS_MAP_FIXED_IOVA, IOMMU_IOAS_MAP_READABLE,
                           IOMMU_IOAS_MAP_WRITEABLE, IommufdError)
from .its import VIRT_GITS, vm_its
from .vmm import DEFAULT_VSID, DMATEST_IPA, NestedHost, assign_dma_device, attach_nest_parent, offers_btm
from .virtio import GuestRam
from .vsmmu import vsmmu_features

__all__ = ["ViommuBackend", "ViommuVm", "CdPage", "GuestRam", "setup_viommu_vm", "add_emulated_viommu", "EmulatedDma",
           "invalidation_commands", "STATUS_OF_ERRNO",
           "GICV2M_FRAME", "ITS_MSI_FRAME", "msi_resv", "CMDQ_MAX_TLBI_OPS", "DEFAULT_ENDPOINT"]

DEFAULT_ENDPOINT = DEFAULT_VSID    # the `iommus = <&viommu ID>` cell of the DMA test device
GICV2M_FRAME = (0x0802_0000, 0x1000)   # QEMU virt's GICv2m MSI doorbell (MSI_SETSPI_NS page)
ITS_MSI_FRAME = (VIRT_GITS + 0x1_0000, 0x1_0000)   # the ITS translation frame (GITS_TRANSLATER's 64 KiB)
CMDQ_MAX_TLBI_OPS = 512            # Linux arm-smmu-v3: this many pages or more -> invalidate the whole ASID
_PAGE = 4096
_CD_SIZE = 64

#: iommufd errnos -> the status the guest gets (virtio 1.2 5.13.6: NOMEM resources, FAULT bad address, INVAL
#: invalid parameters, UNSUPP what the host cannot do; anything else is the device's internal error)
STATUS_OF_ERRNO = {_errno.ENOMEM: IommuStatus.NOMEM, _errno.ENOSPC: IommuStatus.NOMEM,
                   _errno.EFAULT: IommuStatus.FAULT, _errno.EINVAL: IommuStatus.INVAL,
                   _errno.EIO: IommuStatus.INVAL, _errno.EEXIST: IommuStatus.INVAL,
                   _errno.EOPNOTSUPP: IommuStatus.UNSUPP, _errno.ENODEV: IommuStatus.UNSUPP,
                   _errno.ENOENT: IommuStatus.NOENT}

define("viommu_host_call", ("dev", "op", "errno", "host_cmds", "why"),
       "an iommufd call the virtio-iommu backend made for a guest request (errno 0: done)")
define("viommu_fault", ("dev", "type", "endpoint", "reason", "address"),
       "a physical fault of an assigned endpoint reported on the virtio-iommu event queue")


class CdPage:
    """VMM-private memory for the CDs the VMM builds from `attach_pgt_arm`: host RAM mapped into the VM's
    stage-2 IOAS at `ipa` (above guest RAM: the vCPUs cannot see it, the SMMU fetches the CDs through the
    nested stage 2), 64 CD slots of 64 bytes."""

    def __init__(self, bus: Any, pa: int, ipa: int):
        self.bus, self.pa, self.ipa = bus, pa, ipa
        self.free = list(range(_PAGE // _CD_SIZE))

    def alloc(self, cd: bytes) -> int | None:
        if not self.free:
            return None
        slot = self.free.pop(0)
        self.bus.write_bytes(self.pa + slot * _CD_SIZE, cd.ljust(_CD_SIZE, b"\0"))
        return self.ipa + slot * _CD_SIZE

    def release(self, ipa: int) -> None:
        slot = (ipa - self.ipa) // _CD_SIZE
        self.bus.write_bytes(self.pa + slot * _CD_SIZE, bytes(_CD_SIZE))
        self.free.append(slot)


@dataclass
class _Dom:
    kind: str                      # map | bypass | table
    ioas: int = 0
    hwpt: int = 0
    cd_ipa: int = 0
    table: Any = None


class ViommuBackend(IommuBackend):
    """The VMM's `IommuBackend` over iommufd (module docstring). `endpoints`: endpoint ID -> iommufd dev_id;
    `s2_hwpt`: the VM's nest-parent HWPT; `viommu`: the vIOMMU (0 without page-table sharing); `gpa_to_pa`:
    the host pages behind a guest-physical range (None outside guest RAM); `cd_page`: where built CDs go."""

    def __init__(self, ictx: Any, *, endpoints: dict[int, int], s2_hwpt: int, viommu: int = 0,
                 gpa_to_pa: Callable[[int, int], int | None], cd_page: CdPage | None = None,
                 tracer: Tracer = NULL_TRACER, name: str = "viommu"):
        self.ictx, self.driver = ictx, ictx.driver
        self.endpoints = dict(endpoints)
        self.s2_hwpt, self.viommu = s2_hwpt, viommu
        self.gpa_to_pa, self.cd_page = gpa_to_pa, cd_page
        self.tracer, self.name = tracer, name
        self.domains: dict[int, _Dom] = {}
        self.where: dict[int, int] = {}               # assigned endpoint -> its domain
        self.unattached_bypass = True
        self.stats: Counter[str] = Counter()          # host_calls, host_cmds, refused
        self.by_op: Counter[str] = Counter()          # "op:<iommufd call>:calls" / ":cmds"
        self.refusals: list[tuple[str, int, str]] = []

    # -- iommufd calls, counted -----------------------------------------------------------------------------
    def _call(self, op: str, fn: Callable, *args: Any, **kw: Any) -> Any:
        st = self.driver.stats
        before = st["cmds"] + st["syncs"]
        err, why = 0, ""
        try:
            return fn(*args, **kw)
        except IommufdError as e:
            err, why = e.errno or _errno.EIO, e.strerror or ""
            raise
        finally:
            n = st["cmds"] + st["syncs"] - before
            self.stats["host_calls"] += 1
            self.stats["host_cmds"] += n
            self.by_op[f"op:{op}:calls"] += 1
            self.by_op[f"op:{op}:cmds"] += n
            if "viommu_host_call" in self.tracer.enabled:
                self.tracer.emit("viommu_host_call", dev=self.name, op=op, errno=err, host_cmds=n, why=why)

    def _refuse(self, op: str, e: IommufdError) -> IommuStatus:
        self.stats["refused"] += 1
        self.refusals.append((op, e.errno or _errno.EIO, e.strerror or ""))
        return STATUS_OF_ERRNO.get(e.errno or 0, IommuStatus.DEVERR)

    def _undo(self, *objs: int) -> None:
        for o in objs:
            if o:
                try:
                    self._call("destroy", self.ictx.destroy, o)
                except IommufdError:
                    pass

    def _attach_dev(self, endpoint: int, hwpt: int) -> None:
        self._call("device_attach", self.ictx.device_attach, self.endpoints[endpoint], hwpt)

    # -- IommuBackend ----------------------------------------------------------------------------------------
    def attach(self, domain: int, endpoint: int, *, bypass: bool) -> IommuStatus:
        if endpoint not in self.endpoints:
            return IommuStatus.OK                  # an emulated endpoint: the device translates it itself
        d = self.domains.get(domain)
        if bypass:
            try:
                self._attach_dev(endpoint, self.s2_hwpt)
            except IommufdError as e:
                return self._refuse("attach", e)
            self.domains.setdefault(domain, _Dom("bypass"))
            self.where[endpoint] = domain
            return IommuStatus.OK
        ioas = hwpt = 0
        try:
            if d is None:
                ioas = self._call("ioas_alloc", self.ictx.ioas_alloc)
                hwpt = self._call("hwpt_alloc", self.ictx.hwpt_alloc, self.endpoints[endpoint], ioas)
                self._attach_dev(endpoint, hwpt)
                self.domains[domain] = _Dom("map", ioas, hwpt)
            else:
                self._attach_dev(endpoint, d.hwpt)
        except IommufdError as e:
            self._undo(hwpt, ioas)
            return self._refuse("attach", e)
        self.where[endpoint] = domain
        return IommuStatus.OK

    def attach_table(self, domain: int, endpoint: int, table: PageTable | PasidTable) -> IommuStatus:
        if endpoint not in self.endpoints:
            return IommuStatus.OK
        if not self.viommu:
            return IommuStatus.UNSUPP
        d = self.domains.get(domain)
        if d is not None:                           # the device let it join: the same table
            try:
                self._attach_dev(endpoint, d.hwpt)
            except IommufdError as e:
                return self._refuse("attach_table", e)
            self.where[endpoint] = domain
            return IommuStatus.OK
        cd_ipa = 0
        if isinstance(table, PageTable):
            cd_ipa = self.cd_page.alloc(table.cd_bytes()) if self.cd_page is not None else None
            if cd_ipa is None:
                return IommuStatus.NOMEM
            ste = stemod.Ste(v=1, config=stemod.CONFIG_S1, s1fmt=0, s1contextptr=cd_ipa, s1cdmax=0,
                             s1cir=1, s1cor=1, s1csh=3)
        else:
            ste = table.ste
        hwpt = 0
        try:
            hwpt = self._call("hwpt_alloc", self.ictx.hwpt_alloc, self.endpoints[endpoint], self.viommu,
                              data_type=IOMMU_HWPT_DATA_ARM_SMMUV3, data=stemod.encode(ste)[:16])
            self._attach_dev(endpoint, hwpt)
        except IommufdError as e:
            self._undo(hwpt)
            if cd_ipa:
                self.cd_page.release(cd_ipa)
            return self._refuse("attach_table", e)
        self.domains[domain] = _Dom("table", 0, hwpt, cd_ipa, table)
        self.where[endpoint] = domain
        return IommuStatus.OK

    def detach(self, domain: int, endpoint: int) -> None:
        if endpoint in self.endpoints:
            self.where.pop(endpoint, None)
            self._unattached(endpoint)

    def _unattached(self, endpoint: int) -> None:
        """5.13.6.4.2: an unattached endpoint bypasses (the VM's stage 2) or is blocked, as config.bypass says."""
        dev_id = self.endpoints[endpoint]
        try:
            if self.unattached_bypass:
                self._call("device_attach", self.ictx.device_attach, dev_id, self.s2_hwpt)
                return
        except IommufdError as e:
            self._refuse("bypass", e)             # the host refused the stage-2 attach: blocked, the safe side
        try:
            self._call("device_detach", self.ictx.device_detach, dev_id)
        except IommufdError as e:
            self._refuse("block", e)              # the device stays as the host left it (its HWPT is gone)

    def free_domain(self, domain: int) -> None:
        d = self.domains.pop(domain, None)
        if d is None:
            return
        self._undo(d.hwpt, d.ioas)                  # IOAS last: destroying it drops its mappings
        if d.cd_ipa and self.cd_page is not None:
            self.cd_page.release(d.cd_ipa)

    def map(self, domain: int, iova: int, pa: int, size: int, flags: int) -> IommuStatus:
        d = self.domains.get(domain)
        if d is None:                               # a domain of emulated endpoints only
            return IommuStatus.OK
        if flags & MAP_F_MMIO:
            return IommuStatus.UNSUPP
        host = self.gpa_to_pa(pa, size)
        if host is None:
            return IommuStatus.FAULT
        f = IOMMU_IOAS_MAP_FIXED_IOVA | (IOMMU_IOAS_MAP_READABLE if flags & MAP_F_READ else 0) | \
            (IOMMU_IOAS_MAP_WRITEABLE if flags & MAP_F_WRITE else 0)
        try:
            self._call("ioas_map", self.ictx.ioas_map, d.ioas, length=size, pa=host, iova=iova, flags=f)
        except IommufdError as e:
            return self._refuse("map", e)
        return IommuStatus.OK

    def unmap(self, domain: int, iova: int, size: int) -> IommuStatus:
        d = self.domains.get(domain)
        if d is None:
            return IommuStatus.OK
        try:
            self._call("ioas_unmap", self.ictx.ioas_unmap, d.ioas, iova, size)
        except IommufdError as e:
            return self._refuse("unmap", e)
        return IommuStatus.OK

    def invalidate(self, domain: int, inv: Invalidation) -> IommuStatus:
        d = self.domains.get(domain)
        if d is None or d.kind != "table":
            return IommuStatus.OK
        entries = invalidation_commands(inv, d.table, sorted(ep for ep, dom in self.where.items() if dom == domain))
        try:
            self._call("hwpt_invalidate", self.ictx.hwpt_invalidate, self.viommu, entries)
        except IommufdError as e:
            return self._refuse("invalidate", e)
        return IommuStatus.OK

    def set_bypass(self, enabled: bool) -> None:
        self.unattached_bypass = enabled
        for ep in self.endpoints:
            if ep not in self.where:
                self._unattached(ep)


def invalidation_commands(inv: Invalidation, table: PageTable | PasidTable, endpoints: list[int]) -> list[bytes]:
    """The guest's INVALIDATE as the SMMU commands IOMMU_HWPT_INVALIDATE carries (VMID 0: the kernel puts the
    vIOMMU's; endpoint IDs are the vSIDs the kernel maps to StreamIDs). Page-table domains: the ASID is the
    domain's. VA scope: one TLBI_NH_VA per page of the granule (Leaf from LEAF), the whole ASID from
    CMDQ_MAX_TLBI_OPS pages on (Linux `arm_smmu_mm_arch_invalidate_secondary_tlbs`: `size >= CMDQ_MAX_TLBI_OPS *
    PAGE_SIZE` -> `arm_smmu_tlb_inv_asid`); config: CFGI_CD(_ALL) per endpoint."""
    asid = table.asid if isinstance(table, PageTable) else inv.asid
    out: list[bytes] = []
    if inv.config:
        for ep in endpoints:
            out.append(cmds.encode("CFGI_CD_ALL", sid=ep) if inv.scope == INVAL_S_DOMAIN else
                       cmds.encode("CFGI_CD", sid=ep, ssid=inv.pasid, leaf=1))
        return out
    if inv.scope == INVAL_S_DOMAIN:
        return [cmds.encode("TLBI_NH_ALL", vmid=0) if not isinstance(table, PageTable) else
                cmds.encode("TLBI_NH_ASID", vmid=0, asid=asid)]
    if inv.scope == INVAL_S_PASID or inv.nr_pages >= CMDQ_MAX_TLBI_OPS:
        return [cmds.encode("TLBI_NH_ASID", vmid=0, asid=asid)]
    step = 1 << inv.granule                          # TG = 0: no range or TTL hint, one command per leaf
    return [cmds.encode("TLBI_NH_VA", vmid=0, asid=asid, addr=inv.virt_start + i * step, leaf=int(inv.leaf))
            for i in range(inv.nr_pages)]


_MAPPING_EVENTS = frozenset({EventType.F_TRANSLATION, EventType.F_ADDR_SIZE, EventType.F_ACCESS,
                             EventType.F_PERMISSION, EventType.F_WALK_EABT})


@dataclass
class ViommuVm:
    """Handles of one VM's virtio-iommu set-up (`setup_viommu_vm`); a machine plugin that forwards the
    endpoint's physical faults (vEVENTQ) to the device's event queue at the end of the VM's vCPU slices."""
    host: NestedHost
    vm: Any
    kvm_vm: Any
    device: VirtioIommu
    transport: VirtioMmio
    transport_index: int
    backend: ViommuBackend
    dma: Any
    mmio: Any
    dev: Any
    dev_id: int
    ioas: int
    s2_hwpt: int
    endpoint: int
    psid: int
    viommu: int = 0
    vmid: int | None = None       # the vIOMMU's VMID (page-table sharing), None without one
    btm_offered: bool = False
    veventq: Any = None
    cd_page: CdPage | None = None
    vmm: Counter = field(default_factory=Counter)

    def cost(self) -> dict[str, int]:
        """Counters so far: VM exits (trapped transport accesses), kicks, host calls, physical commands, and
        per iommufd call (`op:<call>:calls`, `op:<call>:cmds`)."""
        board = self.vm.virtio
        i = self.transport_index
        return dict(vm_exits=board.accesses[i], kicks=board.notifies[i],
                    host_calls=self.backend.stats["host_calls"], host_cmds=self.backend.stats["host_cmds"],
                    **self.backend.by_op)

    def poll_faults(self) -> int:
        """vEVENTQ records of the endpoint -> virtio_iommu_fault reports (module docstring)."""
        if self.veventq is None:
            return 0
        n = 0
        for ve in self.veventq.read():
            if ve.lost:
                self.vmm["vevents_lost"] += 1
                continue
            ev = ve.event
            mapping = ev.type in _MAPPING_EVENTS
            reason = FaultReason.MAPPING if mapping else FaultReason.DOMAIN
            self.device.report_fault(ev.sid, reason, address=ev.input_addr if mapping else None,
                                     read=mapping and bool(ev.rnw), write=mapping and not ev.rnw)
            self.vmm["faults_reported"] += 1
            n += 1
            tracer = self.vm.machine.tracer
            if "viommu_fault" in tracer.enabled:
                tracer.emit("viommu_fault", dev=self.device.name, type=ev.name, endpoint=ev.sid,
                            reason=int(reason), address=ev.input_addr if mapping else 0)
        return n

    def slice_end(self, vcpu: Any) -> None:
        if getattr(vcpu, "vm", None) is self.vm:
            self.poll_faults()


def msi_resv(vm: Any) -> ResvMem:
    """The RESV_MEM MSI region QEMU virt gives every virtio-iommu endpoint (hw/arm/virt.c
    `virt_machine_device_pre_plug_cb`): the MSI controller's doorbell frame, the ITS translation frame on a
    GICv3 board (with its ITS), else the GICv2m frame."""
    base, size = ITS_MSI_FRAME if vm_its(vm) is not None else GICV2M_FRAME
    return ResvMem(RESV_MEM_T_MSI, base, base + size - 1)


def _gpa_to_pa(vm: Any) -> Callable[[int, int], int | None]:
    def to_pa(gpa: int, size: int) -> int | None:
        return vm.ram_pa + (gpa - vm.ram_ipa) if vm.in_ram(gpa, size) else None
    return to_pa


def _cd_page(machine: Any, vm: Any, ictx: Any, ioas: int) -> CdPage:
    """A host page for the VMM's CDs, mapped read-only into the VM's stage-2 IOAS just above guest RAM: the
    SMMU fetches CDs through it, the vCPUs cannot reach it, the guest's device cannot write it."""
    pa = machine.alloc_pa(_PAGE, align=_PAGE)
    machine.bus.add_ram(pa, _PAGE, f"{vm.name}.viommu-cds")
    ipa = vm.ram_ipa + vm.ram.size
    ictx.ioas_map(ioas, length=_PAGE, pa=pa, iova=ipa, flags=IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE)
    return CdPage(machine.bus, pa, ipa)


def setup_viommu_vm(machine: Any, vm: Any, host: NestedHost, *, page_tables: bool = False,
                    advertise_btm: str = "pinned", endpoint: int = DEFAULT_ENDPOINT, dmatest_ipa: int = DMATEST_IPA,
                    kvm_before_bind: bool = True, device_kw: dict | None = None) -> ViommuVm:
    """Give `vm` an assigned DMA test device behind a virtio-iommu plugged into the VM's next virtio-mmio
    transport (QEMU virt's order: 31 for the first device; Version 2 interface), module docstring.
    `page_tables` enables the page-table-sharing extension (vIOMMU, F_ATTACH_TABLE); `advertise_btm` decides
    its BTM flag (`harness.vmm.offers_btm`). iommufd refusals raise `IommufdError`
    (the VM cannot be set up)."""
    ictx = host.ictx
    psid, dma, mmio = assign_dma_device(machine, vm, host, None, endpoint, dmatest_ipa)
    # boot bypass (config.bypass = 1): the device attached to the VM's stage 2
    kvm_vm, dev, dev_id, ioas, s2 = attach_nest_parent(host, vm, psid, dma, kvm_before_bind)
    viommu, vmid, veventq, cd_page, btm = 0, None, None, None, False
    if page_tables:
        viommu = ictx.viommu_alloc(dev_id, s2)
        vmid = ictx.viommu_vmid(viommu)
        ictx.vdevice_alloc(viommu, dev_id, endpoint)
        veventq = ictx.veventq_alloc(viommu)[1]
        btm = offers_btm(host, kvm_vm, vmid, advertise_btm)
        cd_page = _cd_page(machine, vm, ictx, ioas)
    fmt = TableFormat.from_smmu(vsmmu_features(host.driver.caps, btm=btm), btm=btm)
    name = f"{vm.name}.virtio-iommu"
    backend = ViommuBackend(ictx, endpoints={endpoint: dev_id}, s2_hwpt=s2, viommu=viommu, gpa_to_pa=_gpa_to_pa(vm),
                            cd_page=cd_page, tracer=machine.tracer, name=name)
    msi = msi_resv(vm)
    device = VirtioIommu(GuestRam(vm), [Endpoint(endpoint, (msi,), fmt)], backend=backend,
                         phys_ranges=[(vm.ram_ipa, vm.ram.size)], page_tables=page_tables, table_format=fmt,
                         tracer=machine.tracer, name=name, **(device_kw or {}))
    index = vm.virtio.plug(device, modern=True)
    vv = ViommuVm(host, vm, kvm_vm, device, vm.virtio.transport(index), index, backend, dma, mmio, dev, dev_id, ioas,
                  s2, endpoint, psid, viommu, vmid, btm, veventq, cd_page)
    machine.add_plugin(vv)
    return vv


class EmulatedDma:
    """The translate callback of an emulated DMA test device behind the virtio-iommu (no host IOMMU: the
    device translates, as QEMU does for its emulated devices): the endpoint is the device's SID register.
    A fault is reported on the event queue by the device; the DMA test device then shows FAULT with
    FAULT_TYPE = the virtio fault reason."""

    @dataclass(frozen=True)
    class _Pa:
        pa: int

    @dataclass(frozen=True)
    class _Fault:
        type: int

    def __init__(self, viommu: VirtioIommu):
        self.viommu = viommu

    def __call__(self, sid: int, ssid: int | None, addr: int, *, write: bool = False, exec_: bool = False,
                 priv: bool = False) -> Any:
        out = self.viommu.translate(sid, addr, write=write, exec_=exec_, pasid=ssid)
        return self._Pa(out) if isinstance(out, int) else self._Fault(int(out.reason))


def add_emulated_viommu(vm: Any, *, page_tables: bool = False, endpoint: int = DEFAULT_ENDPOINT,
                        dmatest_ipa: int | None = DMATEST_IPA, table_format: TableFormat | None = None) -> VirtioIommu:
    """A virtio-iommu with emulated endpoints on the VM's next virtio-mmio transport (`smmu-harness run
    --virtio-iommu`): endpoint `endpoint` is a DMA test device at `dmatest_ipa` (None: no device) whose DMA
    the virtio-iommu itself translates; `page_tables` offers the extension (`--viommu-pgtable`)."""
    from devmodel.dmatest import DMATEST_SIZE, DmaTestDevice
    m = vm.machine
    msi = msi_resv(vm)
    dev = VirtioIommu(GuestRam(vm), [Endpoint(endpoint, (msi,))], phys_ranges=[(vm.ram_ipa, vm.ram.size)],
                      page_tables=page_tables, table_format=table_format, tracer=m.tracer,
                      name=f"{vm.name}.virtio-iommu")
    vm.virtio.plug(dev, modern=True)
    if dmatest_ipa is not None:
        dma = DmaTestDevice(vm.ipa, EmulatedDma(dev), sid=endpoint, tracer=m.tracer, name=f"{vm.name}.dmatest")
        vm.add_device(dmatest_ipa, DMATEST_SIZE, dma, "dmatest")
    return dev
