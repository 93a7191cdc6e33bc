"""The host side a scenario needs: a small SMMUv3 driver and the VFIO/iommufd ordering rules.

STAND-IN. `harness/host/smmu_driver.py`, `iommufd.py`, `vfio.py` (issue 7) and `harness/vsmmu.py` are being
written in parallel; until they land, scenarios use this minimal stack, which keeps to the same rules:

* the driver reaches the SMMU model only through MMIO and host memory (stream table, command queue, event
  queue, stage-2 tables), as the Linux driver does (`arm_smmu_device_reset`, `arm_smmu_write_ste`,
  `arm_smmu_cmdq_issue_cmdlist`);
* every VMID comes from the SMMU VMID policy (`harness/host/vmid_policy.py`): `nested_vmid(vm)` for a
  nested domain (guest CD table + host stage 2), `s2_vmid(domain)` for a stage-2-only domain;
* a device must be attached to KVM (`KVM_DEV_VFIO_FILE_ADD`) before it is bound to iommufd
  (`VFIO_DEVICE_BIND_IOMMUFD`): a device bound first carries no KVM, so a policy that needs the VM's KVM VMID
  cannot give one (seed 003, REFERENCE.md "iommufd nested flow").

Not modelled here: 2-level stream tables, MSIs, the event-queue consumer, ATS, SubstreamIDs (one CD per
nested STE, S1CDMAX = 0), IOAS mappings other than "all of the VM's RAM" (the stage 2 of a VM maps its whole
RAM: IPA = guest physical, PA = where the machine put the VM's RAM).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from devmodel.bus import Bus
from devmodel.pagetable import PERM_R, PERM_W, PageAllocator, PageTableBuilder
from devmodel.smmuv3 import commands as C
from devmodel.smmuv3 import ste as S

__all__ = ["SmmuHostDriver", "AssignedDevice", "OrderingError", "HOST_MEM_PA", "HOST_MEM_SIZE"]

HOST_MEM_PA = 0x8000_0000          # host RAM for the SMMU's tables and queues (VM RAM starts at 4 GiB)
HOST_MEM_SIZE = 32 << 20

# Register offsets, IHI 0070 6.3 (checked against Linux arm-smmu-v3.h ARM_SMMU_*).
_CR0, _CR0ACK, _CR2 = 0x20, 0x24, 0x2C
_STRTAB_BASE, _STRTAB_BASE_CFG = 0x80, 0x88
_CMDQ_BASE, _CMDQ_PROD, _CMDQ_CONS = 0x90, 0x98, 0x9C
_EVTQ_BASE = 0xA0
_CR0_SMMUEN, _CR0_EVTQEN, _CR0_CMDQEN = 1 << 0, 1 << 2, 1 << 3
_CR2_RECINVSID, _CR2_PTM = 1 << 1, 1 << 2
_Q_LOG2 = 8
_ST_LOG2 = 8                       # linear stream table of 256 STEs

_S2_IAS = 40                       # host stage 2: 40-bit IPA, 4K granule, start level 1 (S2T0SZ = 24)
_S2PS_40 = 2


class OrderingError(Exception):
    """The VFIO/iommufd calls came in an order that cannot work (with the reason and the fix)."""


@dataclass(eq=False)
class AssignedDevice:
    """A device assigned to a VM through VFIO: its StreamID, the VM, and what is attached."""
    sid: int
    vm: Any                          # the machine VM whose RAM the device reaches
    kvm_vm: Any = None               # set by KVM_DEV_VFIO_FILE_ADD (None: not associated with KVM)
    bound: bool = False              # VFIO_DEVICE_BIND_IOMMUFD done
    kvm_at_bind: Any = None          # the KVM the device knew when it was bound (what the driver can use)
    vmid: int | None = None
    mode: str = "none"               # "s2" | "nested"
    cd_ipa: int | None = None
    events: list = field(default_factory=list)

    def __repr__(self) -> str:
        return f"device SID {self.sid:#x} of {getattr(self.vm, 'name', self.vm)}"


class SmmuHostDriver:
    """Programs one SMMUv3 on `bus` at `mmio` (a device object with read/write) the way Linux does."""

    def __init__(self, bus: Bus, smmu: Any, policy: Any, *, btm: bool):
        self.bus = bus
        self.smmu = smmu
        self.policy = policy
        self.btm = btm
        self.mem = bus.add_ram(HOST_MEM_PA, HOST_MEM_SIZE, "host.smmu-mem")
        self.alloc = PageAllocator(bus, HOST_MEM_PA, HOST_MEM_SIZE)
        self.strtab = self.alloc(64 << _ST_LOG2, 64 << _ST_LOG2)
        self.cmdq = self.alloc(16 << _Q_LOG2, 16 << _Q_LOG2)
        self.evtq = self.alloc(32 << _Q_LOG2, 32 << _Q_LOG2)
        self.prod = 0
        self.commands = 0                       # commands issued (the metric)
        self._s2: dict[int, PageTableBuilder] = {}
        self._reset()

    # -- device bring-up: arm_smmu_device_reset ---------------------------------------------------------
    def _reset(self) -> None:
        w32 = lambda off, v: self.smmu.write(off, v, 4)   # noqa: E731
        self.smmu.write(_STRTAB_BASE, self.strtab, 8)
        w32(_STRTAB_BASE_CFG, _ST_LOG2)                    # FMT=linear, LOG2SIZE
        self.smmu.write(_CMDQ_BASE, self.cmdq | _Q_LOG2, 8)
        self.smmu.write(_EVTQ_BASE, self.evtq | _Q_LOG2, 8)
        # CR2.PTM=0 takes part in broadcast TLB maintenance (the scenario says whether it may: BTM);
        # upstream Linux always writes PTM=1 today.
        w32(_CR2, _CR2_RECINVSID | (0 if self.btm else _CR2_PTM))
        w32(_CR0, _CR0_CMDQEN | _CR0_EVTQEN)
        w32(_CR0, _CR0_CMDQEN | _CR0_EVTQEN | _CR0_SMMUEN)
        if not self.smmu.read(_CR0ACK, 4) & _CR0_SMMUEN:
            raise RuntimeError("SMMU did not acknowledge SMMUEN")
        self.issue(("CFGI_STE_RANGE", {"span": 31}), ("TLBI_NSNH_ALL", {}))

    # -- command queue ---------------------------------------------------------------------------------
    def issue(self, *cmds: tuple[str, dict]) -> None:
        """Write the commands and a CMD_SYNC, publish them with one CMDQ_PROD write, check CONS caught up."""
        n = 1 << _Q_LOG2
        for name, kw in (*cmds, ("CMD_SYNC", {})):
            self.bus.write_bytes(self.cmdq + (self.prod & (n - 1)) * 16, C.encode(name, **kw))
            self.prod = (self.prod + 1) & ((n << 1) - 1)
            self.commands += 1
        self.smmu.write(_CMDQ_PROD, self.prod, 4)
        cons = self.smmu.read(_CMDQ_CONS, 4)
        if cons & ((n << 1) - 1) != self.prod:
            raise RuntimeError(f"SMMU command queue stalled (PROD {self.prod:#x}, CONS {cons:#x})")

    # -- stage 2 (IOAS of the VM: all of its RAM) ---------------------------------------------------------
    def s2_tables(self, vm: Any) -> PageTableBuilder:
        b = self._s2.get(id(vm))
        if b is None:
            b = PageTableBuilder(self.bus, self.alloc, stage=2, ias=_S2_IAS, start=1)
            b.map(vm.ram_ipa, vm.ram_pa, vm.ram.size, PERM_R | PERM_W)
            self._s2[id(vm)] = b
        return b

    def _s2_fields(self, vm: Any, vmid: int) -> dict:
        b = self.s2_tables(vm)
        return dict(s2vmid=vmid, s2t0sz=64 - _S2_IAS, s2sl0=b.sl0, s2tg=0, s2ps=_S2PS_40, s2aa64=1, s2r=1,
                    s2ir0=1, s2or0=1, s2sh0=3, s2ttb=b.ttb)

    def _write_ste(self, sid: int, ste: S.Ste) -> None:
        self.bus.write_bytes(self.strtab + 64 * sid, S.encode(ste))
        self.issue(("CFGI_STE", {"sid": sid, "leaf": 1}))

    # -- VFIO / iommufd ordering --------------------------------------------------------------------------
    def kvm_file_add(self, dev: AssignedDevice, kvm_vm: Any) -> None:
        """KVM_DEV_VFIO_FILE_ADD: the device now belongs to this VM's KVM."""
        dev.kvm_vm = kvm_vm

    def bind_iommufd(self, dev: AssignedDevice) -> None:
        """VFIO_DEVICE_BIND_IOMMUFD: the device's KVM is captured now (vfio_device->kvm at open time)."""
        dev.bound = True
        dev.kvm_at_bind = dev.kvm_vm

    # -- attach ------------------------------------------------------------------------------------------
    def attach_s2(self, dev: AssignedDevice, domain: Any = None, vmid: int | None = None) -> int:
        """Stage-2-only domain (a nest parent attached directly, or a plain VFIO assignment). `vmid`: the
        domain already got it from `policy.s2_vmid(domain)`."""
        if not dev.bound:
            raise OrderingError(f"SID {dev.sid:#x}: attach before VFIO_DEVICE_BIND_IOMMUFD")
        if vmid is None:
            vmid = self.policy.s2_vmid(domain if domain is not None else dev)
        self.issue(("TLBI_S12_VMALL", {"vmid": vmid}))         # nothing stale may survive for a new VMID
        self._write_ste(dev.sid, S.Ste(v=1, config=S.CONFIG_S2, **self._s2_fields(dev.vm, vmid)))
        dev.vmid, dev.mode = vmid, "s2"
        return vmid

    def attach_nested(self, dev: AssignedDevice, cd_ipa: int) -> int:
        """IOMMU_VIOMMU_ALLOC + nested IOMMU_HWPT_ALLOC(vSTE: S1ContextPtr = cd_ipa) + attach.

        The VMID is the policy's `nested_vmid` of the KVM VM the device knew at bind time; raises
        `PolicyError` (from the policy) when it cannot give one."""
        if not dev.bound:
            raise OrderingError(f"SID {dev.sid:#x}: attach before VFIO_DEVICE_BIND_IOMMUFD")
        owner = dev.kvm_at_bind if dev.kvm_at_bind is not None else dev
        vmid = self.policy.nested_vmid(owner)
        self.issue(("TLBI_S12_VMALL", {"vmid": vmid}))
        ste = S.Ste(v=1, config=S.CONFIG_NESTED, s1fmt=0, s1contextptr=cd_ipa, s1cdmax=0, s1dss=0,
                    s1cir=1, s1cor=1, s1csh=3, **self._s2_fields(dev.vm, vmid))
        self._write_ste(dev.sid, ste)
        dev.vmid, dev.mode, dev.cd_ipa = vmid, "nested", cd_ipa
        return vmid

    # -- invalidation forwarded from a vSMMU (IOMMU_HWPT_INVALIDATE) ----------------------------------------
    def invalidate_user(self, dev: AssignedDevice, asid: int, va: int) -> int:
        """A guest's TLBI_NH_VA with the VMID rewritten to the vIOMMU's; returns the commands issued."""
        before = self.commands
        self.issue(("TLBI_NH_VA", {"vmid": dev.vmid or 0, "asid": asid, "addr": va & ~0xFFF, "leaf": 1}))
        return self.commands - before
