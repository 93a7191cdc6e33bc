"""The host's SMMUv3 driver: programs the SMMU model only through its MMIO window and in-memory structures on the
host `Bus`, in the order Linux `drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c` does.

* probe: IDR0/1/3/5 -> `SmmuCaps` (`arm_smmu_device_hw_probe`). BTM is used only when IDR0.BTM=1 *and* the board
  says the interconnect delivers DVM (`dvm_capable`: open item 1 of the pinned-VMID RFC, named in
  `vmid_policy.py`; firmware/IORT in reality): then CR2.PTM=0, else CR2.PTM=1 (upstream always writes PTM=1
  today, `arm_smmu_device_reset`).
* reset: CR0=0 with the CR0/CR0ACK handshake, GBPA.ABORT (disable_bypass) with the GBPA.Update handshake,
  stream table (linear, or 2-level with SPLIT=8 and level-2 tables allocated when a StreamID is first probed,
  `arm_smmu_init_l2_strtab`), every STE abort; CMDQ, CFGI_ALL + TLBI_NSNH_ALL (+ TLBI_EL2_ALL with Hyp) + sync;
  EVTQ; PRIQ when IDR0.PRI; MSIs to the board's doorbell (or the wired line); SMMUEN last.
* commands: `submit(cmds, sync=True)` writes entries at PROD, publishes PROD, and waits for CMD_SYNC: either
  polls CMDQ_CONS, or (IDR0.MSI) uses Linux's trick of an MSI of 0 written over the CMD_SYNC's own queue slot
  (`arm_smmu_cmdq_build_sync_cmd`, `__arm_smmu_cmdq_poll_until_msi`). A command error (GERROR.CMDQ_ERR) is
  handled like `arm_smmu_cmdq_skip_err`: the faulting entry is replaced by a CMD_SYNC, GERRORN acknowledges,
  and the error is recorded in `cmdq_errors` (never raised into the caller: a guest command cannot crash us).
* events: `drain_events()` consumes the EVTQ up to PROD, acknowledges overflow (EVTQ_CONS.OVACKFLG copied from
  EVTQ_PROD.OVFLG, `queue_sync_cons_ovf`) and routes each record (`arm_smmu_handle_event`): a stall record
  (Stall=1) of a master with I/O page faults enabled becomes an `iopf.IopfFault` (grpid = STAG, LAST_PAGE, the
  access from RnW/InD/PnU, the PASID from SSV/SSID) reported to the iopf queue; other records go to the
  master's `vmaster` (set by iommufd for nested domains) when it wants them, else to `host_events` (the
  host's log; a stall of a master without iopf stays there, for its owner to resume).
* page requests: `drain_priq()` (`arm_smmu_priq_thread`) consumes the PRI queue the same way and reports each
  request as an `IopfFault` (grpid = PRG index, LAST_PAGE = Last); the iopf queue groups them by PRG index
  until Last. Upstream's `arm_smmu_handle_ppr` only logs and denies; this follows the iopf shape of the
  arm-smmu-v3 PRI series J-P. Brucker posted with SVA (2020). Overflow (PRIQ_PROD.OVFLG) is acknowledged and
  counted, as `queue_sync_cons_ovf`.
* page responses: `page_response(master, fault, code)` (`arm_smmu_page_response`): CMD_RESUME with the STAG
  (Resp RETRY for IOMMU_PAGE_RESP_SUCCESS, ABORT otherwise) for a stall, CMD_PRI_RESP (PRI_RESP_SUCC /
  PRI_RESP_DENY / PRI_RESP_FAIL) with the PRG index and PASID for a page request. No CMD_SYNC follows (Linux:
  "it doesn't do anything for RESUME or PRI_RESP").
* domains: `IdentityDomain` (bypass STE), `BlockedDomain` (abort STE), `S1Domain` (host CD + stage-1 tables,
  private ASID), `SvaDomain` (an S1Domain whose CD points at a host process's tables, `harness/host/sva.py`,
  with the SVA iopf handler), `S2Domain` (host stage-2 tables built with `devmodel.pagetable.PageTableBuilder`;
  `nest_parent` for iommufd), `NestedDomain` (guest vSTE words over a nest parent, VMID from a vIOMMU; an
  iommufd fault object may be its `iopf_handler`). Tables live in `HostMemory`, a host RAM region with a page
  allocator.
* attach: STEs are written with the safe update sequence of `arm_smmu_write_entry`: qwords the current
  configuration does not use are written first; if at most one used qword still differs it is written in one
  64-bit store (hitless); otherwise qword 0 is zeroed (V=0), the rest written, then qword 0 - each step followed
  by CFGI_STE + CMD_SYNC. When an STE's VMID changes, TLBI_S12_VMALL of the old VMID + CMD_SYNC follows.
* ATS (`arm_smmu_attach_prepare` / `arm_smmu_attach_commit`): a domain that asks for ATS (S1Domain `ats`, a
  nested domain whose vSTE had EATS=0b01) gets STE.EATS=0b01 when IDR0.ATS=1. Switching ATS off disables it at
  the function (`pci_disable_ats`) before the new STE is written; switching it on writes the STE first, then
  invalidates the whole ATC (ATC_INV Size=52 + CMD_SYNC) and enables ATS at the function
  (`arm_smmu_enable_ats`); a new domain with ATS kept on invalidates the ATC; turning it off invalidates it
  after the STE. Unmaps invalidate the IOTLB first, then the ATCs of the domain's ATS masters (TLBI + CMD_SYNC,
  then ATC_INV + CMD_SYNC: `arm_smmu_atc_inv_domain` "ensure that we've completed prior invalidation of the
  main TLBs"); the range is the smallest naturally aligned power of two of pages covering it
  (`arm_smmu_atc_inv_to_cmd`), and a nest parent's unmap invalidates the nested masters' whole ATCs.
* VMIDs come from a `harness.host.vmid_policy` policy (`s2_vmid` at the first attach of a stage-2 domain,
  released when the domain is freed after TLBI_S12_VMALL); the driver installs the policy's `on_move`
  callback (`restricted/move`): rewrite the STEs with the new VMID, CFGI_STE, CMD_SYNC, TLBI_S12_VMALL(old).

Stage-1 domains set CD.S / CD.HA / CD.HD and STE.EATS when asked (`alloc_s1(stall=, httu=, ats=)`) and the
SMMU supports them. A nested domain without an iopf handler on an SMMU with IDR0.STALL_MODEL=0b00 gets
STE.S1STALLD=1 (the model's choice: a guest with no way to be told about stalls cannot hold transactions in
the physical SMMU; its CD.S=1 is then ILLEGAL, C_BAD_CD). Counters in `stats`: `iopf_faults`,
`page_responses` (`resumes`, `pri_resps`), `atc_invs`, `priq_overflows`.

Not modelled: 2-level CD tables for host stage-1 domains (one CD, S1CDMax=0: an SVA domain serves the
master without a PASID), E2H/EL2 stream worlds for host domains, ECMDQ, the ATS STU.
"""
from __future__ import annotations

import errno as _errno
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from devmodel.bus import Bus, Ram
from devmodel.pagetable import PERM_R, PERM_W, PageTableBuilder
from devmodel.smmuv3 import cd as cdmod
from devmodel.smmuv3 import commands as cmds
from devmodel.smmuv3 import events as evmod
from devmodel.smmuv3 import ste as stemod
from devmodel.smmuv3.ats import ATC_INV_SIZE_ALL, PRIQ_ENTRY_SIZE, decode_pri
from devmodel.smmuv3.fault import TRANSLATION_FAULTS
from devmodel.smmuv3.regs import OAS_BITS, SmmuFeatures, build_regs, oas_encoding
from devmodel.trace import NULL_TRACER, Tracer, define

from .iopf import (IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE, IOMMU_FAULT_PAGE_REQUEST_PASID_VALID, IOMMU_FAULT_PERM_EXEC,
                   IOMMU_FAULT_PERM_PRIV, IOMMU_FAULT_PERM_READ, IOMMU_FAULT_PERM_WRITE, IOMMU_PAGE_RESP_FAILURE,
                   IOMMU_PAGE_RESP_INVALID, IOMMU_PAGE_RESP_SUCCESS, IopfFault, IopfQueue)
from .vmid_policy import PolicyError, PrivatePolicy, SmmuVmidIda, VmidPolicy

__all__ = ["SmmuDriver", "SmmuDriverError", "SmmuCaps", "HostMemory", "MsiDoorbell", "Master", "Domain",
           "IdentityDomain", "BlockedDomain", "S1Domain", "SvaDomain", "S2Domain", "NestedDomain", "CmdqError",
           "HOST_MEM_BASE", "HOST_MEM_SIZE", "DOORBELL_BASE", "GITS_TRANSLATER", "MSI_IOVA_BASE", "MSI_IOVA_LENGTH",
           "ste_words", "atc_inv_cmd",
           "CMDQ_RESUME_0_RESP_TERM", "CMDQ_RESUME_0_RESP_RETRY", "CMDQ_RESUME_0_RESP_ABORT", "PRI_RESP_DENY",
           "PRI_RESP_FAIL", "PRI_RESP_SUCC"]

HOST_MEM_BASE = 0x8000_0000           # default host RAM for SMMU tables/queues (below the VMs' 1 GiB slots)
HOST_MEM_SIZE = 32 << 20
DOORBELL_BASE = 0x0808_0000           # QEMU virt GIC ITS frame; the doorbell is GITS_TRANSLATER
GITS_TRANSLATER = 0x1_0040
#: the driver's IOMMU_RESV_SW_MSI region (Linux arm-smmu-v3.h MSI_IOVA_BASE / MSI_IOVA_LENGTH, reported by
#: `arm_smmu_get_resv_regions`): where a DMA domain maps MSI doorbells (iommu_dma_prepare_msi)
MSI_IOVA_BASE, MSI_IOVA_LENGTH = 0x0800_0000, 0x10_0000
S2_MEMATTR_DEVICE_NGNRE = 0b0001       # stage-2 MemAttr 0b0001 (DDI 0487): Device-nGnRE (io-pgtable IOMMU_MMIO)
STRTAB_SPLIT = 8                      # Linux STRTAB_SPLIT
CMDQ_BATCH_ENTRIES = 64               # Linux CMDQ_BATCH_ENTRIES (BITS_PER_LONG)
INV_RANGE_MAX_PAGES = 1 << 10         # above this an unmap invalidates the whole ASID/VMID instead
POLL_LIMIT = 1000                     # register polls before a handshake is declared timed out
VEC_EVTQ, VEC_GERROR, VEC_PRIQ = 1, 2, 3
CMDQ_RESUME_0_RESP_TERM, CMDQ_RESUME_0_RESP_RETRY, CMDQ_RESUME_0_RESP_ABORT = 0, 1, 2      # arm-smmu-v3.h
PRI_RESP_DENY, PRI_RESP_FAIL, PRI_RESP_SUCC = 0, 1, 2                                      # enum pri_resp
PRI_REQS = 32                         # Outstanding Page Request Allocation given to a PRI function

define("hostsmmu_probe", ("dev", "btm", "ptm", "st_fmt", "sid_bits", "vmid_bits", "msi"), "driver probe result")
define("hostsmmu_cmd", ("dev", "opcode", "sid", "vmid", "asid", "addr"), "command queued by the host driver")
define("hostsmmu_sync", ("dev", "mode", "prod", "ok"), "CMD_SYNC completion (mode poll|msi)")
define("hostsmmu_cmdq_error", ("dev", "cons", "cerror", "opcode"), "CMDQ error skipped (arm_smmu_cmdq_skip_err)")
define("hostsmmu_ste", ("dev", "sid", "config", "vmid", "how"), "STE written: how = hitless | break | init")
define("hostsmmu_vmid", ("dev", "what", "owner", "vmid", "old"), "VMID taken/released/moved")
define("hostsmmu_event", ("dev", "type", "sid", "routed"), "event drained: routed = host | guest")
define("hostsmmu_evtq_overflow", ("dev", "prod", "cons"), "EVTQ overflowed: events were lost")
define("hostsmmu_priq_overflow", ("dev", "prod", "cons"), "PRIQ overflowed: page requests were lost")
define("hostsmmu_page_response", ("dev", "sid", "how", "grpid", "code"),
       "page response sent (how: resume | pri_resp; code as sent in the command)")
define("hostsmmu_ats", ("dev", "sid", "what"), "ATS at the function: enable | disable | atc_inv_all")

# offsets and fields do not depend on features (the PRI queue registers exist with IDR0.PRI)
_REGS = {r.name: r for r in build_regs(SmmuFeatures(ats=True, pri=True))}
_TRANSLATION_EVENTS = frozenset(int(t) for t in TRANSLATION_FAULTS)
_Q_OVF = 1 << 31                                            # *_PROD.OVFLG / *_CONS.OVACKFLG (bit 31)
_M64 = (1 << 64) - 1


def _fmask(reg: str, fld: str) -> int:
    return _REGS[reg].field(fld).mask


def ste_words(raw: bytes) -> list[int]:
    """An STE (or any record) as little-endian 64-bit words."""
    return [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]


def atc_inv_cmd(sid: int, ssid: int | None, iova: int, size: int) -> bytes:
    """CMD_ATC_INV for [iova, iova + size) (`arm_smmu_atc_inv_to_cmd`): an ATS Invalidate Request covers a
    naturally aligned power of two of 4KB pages, so the smallest such span holding the range is used (the
    highest bit where the first and last page numbers differ); size 0 invalidates everything (Size=52)."""
    ssv = int(ssid is not None)
    if not size:
        return cmds.encode("ATC_INV", sid=sid, ssv=ssv, ssid=ssid or 0, size=ATC_INV_SIZE_ALL)
    first, last = iova >> 12, (iova + size - 1) >> 12
    log2_span = (first ^ last).bit_length()
    first &= ~((1 << log2_span) - 1)
    return cmds.encode("ATC_INV", sid=sid, ssv=ssv, ssid=ssid or 0, addr=first << 12, size=log2_span)


class SmmuDriverError(OSError):
    """A driver operation failed; `errno` is what the kernel would return (ENODEV, EBUSY, ENOSPC, ...)."""

    def __init__(self, err: int, msg: str):
        super().__init__(err, msg)


# ---- host memory ------------------------------------------------------------------------------------------------

class HostMemory:
    """Host RAM for SMMU structures (stream table, queues, CDs, stage-2 tables), with a page allocator.

    `alloc(size, align)` returns zeroed memory; freed blocks are kept per size and reused. Callable with the
    `PageTableBuilder` allocator signature. `owns(pa, size)` tells iommufd which PAs userspace may not map."""

    def __init__(self, bus: Bus, base: int = HOST_MEM_BASE, size: int = HOST_MEM_SIZE, name: str = "host.smmu"):
        self.bus, self.base, self.size = bus, base, size
        self.ram: Ram = bus.add_ram(base, size, name)
        self._next = base
        self._free: dict[int, list[int]] = {}
        self.in_use = 0

    def alloc(self, size: int, align: int | None = None) -> int:
        align = max(align or size, 8)
        pool = self._free.get(size)
        if pool:
            for i, pa in enumerate(pool):
                if pa % align == 0:
                    del pool[i]
                    self.bus.write_bytes(pa, bytes(size))
                    self.in_use += size
                    return pa
        pa = (self._next + align - 1) & ~(align - 1)
        if pa + size > self.base + self.size:
            raise SmmuDriverError(_errno.ENOMEM, f"host SMMU memory [{self.base:#x}, +{self.size:#x}) cannot fit "
                                  f"{size:#x} bytes")
        self._next = pa + size
        self.bus.write_bytes(pa, bytes(size))
        self.in_use += size
        return pa

    __call__ = alloc

    def free(self, pa: int, size: int) -> None:
        self._free.setdefault(size, []).append(pa)
        self.in_use -= size

    def owns(self, pa: int, size: int = 1) -> bool:
        return pa < self.base + self.size and self.base < pa + size


class MsiDoorbell:
    """An MSI doorbell on the host bus (GIC ITS `GITS_TRANSLATER`-like): a 32-bit write of an event id calls the
    handler registered for it; other writes (e.g. device MSIs) are only logged in `writes`."""

    SIZE = 0x2_0000

    def __init__(self) -> None:
        self.handlers: dict[int, Callable[[], None]] = {}
        self.writes: list[tuple[int, int]] = []       # (offset, data)

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, value: int, size: int) -> None:
        self.writes.append((offset, value))
        if offset == GITS_TRANSLATER and size == 4:
            h = self.handlers.get(value)
            if h is not None:
                h()


# ---- probe result ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SmmuCaps:
    """What `arm_smmu_device_hw_probe` learns from IDR0/1/3/5 (+ the board's DVM flag)."""
    s1p: bool
    s2p: bool
    btm: bool                 # IDR0.BTM
    dvm_capable: bool         # board: the interconnect delivers DVM to this SMMU
    hyp: bool
    msi: bool
    sev: bool
    ats: bool
    cd2l: bool
    st_2lvl: bool
    vmid_bits: int
    asid_bits: int
    sid_bits: int
    ssid_bits: int
    cmdq_log2: int
    evtq_log2: int
    stall_model: int
    ttendian: int
    ril: bool
    oas: int
    granules: frozenset[int]
    idr: tuple[int, ...]      # IDR0..IDR5
    iidr: int
    aidr: int
    httu: int = 0             # IDR0.HTTU: 1 ARM_SMMU_FEAT_HA, 2 ARM_SMMU_FEAT_HA | ARM_SMMU_FEAT_HD
    pri: bool = False         # IDR0.PRI
    priq_log2: int = 0        # IDR1.PRIQS

    @property
    def stalls(self) -> bool:
        """ARM_SMMU_FEAT_STALLS: the SMMU can stall faulting transactions (STALL_MODEL 0b00 or 0b10)."""
        return self.stall_model in (0, 2)

    @property
    def use_btm(self) -> bool:
        return self.btm and self.dvm_capable

    @property
    def nesting(self) -> bool:
        return self.s1p and self.s2p


@dataclass
class CmdqError:
    cons: int                 # queue index of the faulting command
    cerror: int               # CMDQ_CONS.ERR
    opcode: int
    raw: bytes


# ---- domains and masters ---------------------------------------------------------------------------------------

class Domain:
    kind = "?"
    ats = False                  # the domain wants ATS for its masters (STE.EATS=0b01)

    def __init__(self, name: str = "") -> None:
        self.name = name or f"{self.kind}-{id(self):x}"
        self.masters: list[Master] = []
        self.freed = False
        #: `domain->iopf_handler`: `(IopfGroup) -> errno` for recoverable faults, or None (they are refused)
        self.iopf_handler: Callable[[Any], int] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class IdentityDomain(Domain):
    """IOMMU_DOMAIN_IDENTITY: STE.Config = bypass."""
    kind = "identity"


class BlockedDomain(Domain):
    """IOMMU_DOMAIN_BLOCKED: STE.Config = abort (no event)."""
    kind = "blocked"


class S1Domain(Domain):
    """A host stage-1 paging domain: one CD in host memory (S1CDMax=0), stage-1 tables, a private ASID."""
    kind = "s1"

    def __init__(self, name: str, builder: PageTableBuilder, cd_pa: int, asid: int, *, stall: bool = False,
                 ats: bool = False):
        super().__init__(name)
        self.builder, self.cd_pa, self.asid = builder, cd_pa, asid
        self.stall, self.ats = stall, ats           # CD.S (and STE.S1STALLD=0); STE.EATS=0b01


class SvaDomain(S1Domain):
    """IOMMU_DOMAIN_SVA: the CD shares a host process's page tables (`mm`, a `sva.HostMm`); recoverable faults
    go to the SVA handler, which populates the process's memory (`harness/host/sva.py`)."""
    kind = "sva"

    def __init__(self, name: str, mm: Any, cd_pa: int, asid: int, *, stall: bool = False, ats: bool = False):
        super().__init__(name, mm.pgd, cd_pa, asid, stall=stall, ats=ats)
        self.mm = mm


class S2Domain(Domain):
    """A host stage-2 paging domain (IPA -> PA tables in host memory). `vmid` is set at the first attach
    (`arm_smmu_domain_finalise_s2`). With `nest_parent` it can carry vIOMMUs; their VMIDs tag the same tables."""
    kind = "s2"

    def __init__(self, name: str, builder: PageTableBuilder, nest_parent: bool):
        super().__init__(name)
        self.builder, self.nest_parent = builder, nest_parent
        self.vmid: int | None = None
        self.extra_vmids: dict[int, Any] = {}      # VMIDs of vIOMMUs over this parent -> owner
        self.nested: list[NestedDomain] = []       # nested domains over this parent (their ATCs follow it)

    def vmids(self) -> list[int]:
        out = [] if self.vmid is None else [self.vmid]
        return out + [v for v in self.extra_vmids if v not in out]


class NestedDomain(Domain):
    """A guest-owned stage 1 (vSTE words 0-1, validated by iommufd) over a nest parent, tagged with `vmid`."""
    kind = "nested"

    def __init__(self, name: str, parent: S2Domain, ste0: int, ste1: int, vmid: int, owner: Any = None, *,
                 ats: bool = False):
        super().__init__(name)
        self.parent, self.ste0, self.ste1, self.vmid, self.owner = parent, ste0, ste1, vmid, owner
        self.ats = ats                              # the vSTE asked for EATS=0b01 (`enable_ats`)

    @property
    def config(self) -> int:
        if not self.ste0 & 1:
            return stemod.CONFIG_ABORT
        return stemod.STE_LAYOUT.get(self.ste0, "CONFIG")


class Master:
    """One StreamID behind the SMMU (`struct arm_smmu_master`). `vmaster` is set by iommufd for nested
    attachments: an object with `report_event(ev) -> bool`. `pcie`: the function's ATS/PRI controls
    (`harness.host.pcie.PcieFunction`) or None; `can_stall`: firmware says the device may stall
    (`dma-can-stall`, Linux `master->stall_enabled`); `iopf`: I/O page faults enabled (`enable_iopf`)."""

    def __init__(self, sid: int, name: str = "", *, pcie: Any = None, can_stall: bool = False):
        self.sid = sid
        self.name = name or f"sid{sid:#x}"
        self.domain: Domain | None = None
        self.ste_addr = 0
        self.vmaster: Any = None
        self.pcie = pcie
        self.can_stall = can_stall
        self.iopf = False
        self.ats_enabled = False
        self.pri_enabled = False
        self.pasid_domains: dict[int, Domain] = {}

    def __repr__(self) -> str:
        return f"<Master {self.name} sid={self.sid:#x} domain={self.domain!r}>"


# ---- the driver --------------------------------------------------------------------------------------------------

class SmmuDriver:
    """See the module docstring. `bus`: host physical bus; `base`: the SMMU's MMIO base on it."""

    def __init__(self, bus: Bus, base: int, mem: HostMemory, *, dvm_capable: bool = False,
                 vmid_policy: VmidPolicy | None = None, strtab: str = "auto", linear_sid_bits: int = 8,
                 cmdq_log2: int = 8, evtq_log2: int = 7, priq_log2: int = 6, sync: str = "auto",
                 doorbell: MsiDoorbell | None = None,
                 doorbell_pa: int = DOORBELL_BASE, disable_bypass: bool = True, tracer: Tracer = NULL_TRACER,
                 name: str = "smmu0"):
        if strtab not in ("auto", "linear", "2lvl"):
            raise ValueError(f"strtab must be auto, linear or 2lvl, not {strtab!r}")
        if sync not in ("auto", "poll", "msi"):
            raise ValueError(f"sync must be auto, poll or msi, not {sync!r}")
        self.bus, self.base, self.mem = bus, base, mem
        self.tracer, self.name = tracer, name
        self.dvm_capable = dvm_capable
        self.doorbell, self.doorbell_pa = doorbell, doorbell_pa
        self.disable_bypass = disable_bypass
        self.caps = self.probe()
        c = self.caps
        self.vmid_policy = vmid_policy if vmid_policy is not None else PrivatePolicy(None, c.vmid_bits)
        if self.vmid_policy.bits > c.vmid_bits:
            raise SmmuDriverError(_errno.EINVAL, f"VMID policy uses {self.vmid_policy.bits}-bit VMIDs but the SMMU "
                                  f"has {c.vmid_bits} (IDR0.VMID16={int(c.vmid_bits == 16)})")
        if self.vmid_policy.on_move is None:
            self.vmid_policy.on_move = self._on_vmid_move
        self.asids = SmmuVmidIda(c.asid_bits)          # the same lowest-free ida shape for ASIDs
        self.st_2lvl = c.st_2lvl if strtab == "auto" else strtab == "2lvl"
        if self.st_2lvl and not c.st_2lvl:
            raise SmmuDriverError(_errno.EOPNOTSUPP, "2-level stream table asked for but IDR0.ST_LEVEL=0")
        self.sid_bits = c.sid_bits if self.st_2lvl else min(c.sid_bits, linear_sid_bits)
        self.cmdq_log2 = min(cmdq_log2, c.cmdq_log2)
        self.evtq_log2 = min(evtq_log2, c.evtq_log2)
        self.priq_log2 = min(priq_log2, c.priq_log2)
        self.sync_mode = ("msi" if c.msi else "poll") if sync == "auto" else sync
        if self.sync_mode == "msi" and not c.msi:
            raise SmmuDriverError(_errno.EOPNOTSUPP, "MSI-polled CMD_SYNC asked for but IDR0.MSI=0")
        self.masters: dict[int, Master] = {}
        self.host_events: list[evmod.Event] = []       # events the host logged itself (not for a guest)
        self.guest_events = 0
        self.events_lost = 0                           # EVTQ overflows seen
        self.cmdq_errors: list[CmdqError] = []
        self.gerrors: list[int] = []                   # other GERROR bits seen
        self.gerror_irqs = 0
        self.stats: dict[str, int] = {"cmds": 0, "syncs": 0, "ste_writes": 0, "ste_breaks": 0,
                                      "tlbi_old_vmid": 0, "irqs": 0, "iopf_faults": 0, "page_responses": 0,
                                      "resumes": 0, "pri_resps": 0, "atc_invs": 0, "priq_overflows": 0,
                                      "ats_enables": 0, "ats_disables": 0}
        #: the iopf queue and workqueue (`iopf.IopfQueue`; a machine plugin on boards: work runs between slices)
        self.iopf = IopfQueue(self.page_response, tracer=tracer, name=f"{name}.iopf")
        self.page_requests: list[Any] = []             # PRI queue entries drained (ats.PageRequest)
        self._cmdq_prod = 0
        self._evtq_cons = 0
        self._priq_cons = 0
        self._priq_base = 0
        self._l2: dict[int, int] = {}                   # 2-level: L1 index -> L2 table PA
        self._in_irq = False
        self._draining: set[str] = set()                # queues whose IRQ thread is running
        self.reset()

    # -- MMIO ------------------------------------------------------------------------------------------------
    def _r(self, reg: str) -> int:
        r = _REGS[reg]
        return self.bus.read(self.base + r.offset, r.size)

    def _w(self, reg: str, value: int) -> None:
        r = _REGS[reg]
        self.bus.write(self.base + r.offset, value & ((1 << (8 * r.size)) - 1), r.size)

    def _get(self, reg: str, fld: str, value: int | None = None) -> int:
        return _REGS[reg].field(fld).get(self._r(reg) if value is None else value)

    def _poll(self, what: str, cond: Callable[[], bool]) -> None:
        for _ in range(POLL_LIMIT):
            if cond():
                return
        raise SmmuDriverError(_errno.ETIMEDOUT, f"{self.name}: {what} did not complete")

    # -- probe -------------------------------------------------------------------------------------------------
    def probe(self) -> SmmuCaps:
        """Read the ID registers (`arm_smmu_device_hw_probe`)."""
        idr = tuple(self._r(f"IDR{i}") for i in range(6))
        g = lambda reg, f: _REGS[reg].field(f).get(idr[int(reg[-1])])   # noqa: E731
        oas_enc = g("IDR5", "OAS")
        caps = SmmuCaps(
            s1p=bool(g("IDR0", "S1P")), s2p=bool(g("IDR0", "S2P")), btm=bool(g("IDR0", "BTM")),
            dvm_capable=self.dvm_capable, hyp=bool(g("IDR0", "HYP")), msi=bool(g("IDR0", "MSI")),
            sev=bool(g("IDR0", "SEV")), ats=bool(g("IDR0", "ATS")), cd2l=bool(g("IDR0", "CD2L")),
            st_2lvl=g("IDR0", "ST_LEVEL") == 1, vmid_bits=16 if g("IDR0", "VMID16") else 8,
            asid_bits=16 if g("IDR0", "ASID16") else 8, sid_bits=g("IDR1", "SIDSIZE"),
            ssid_bits=g("IDR1", "SSIDSIZE"), cmdq_log2=g("IDR1", "CMDQS"), evtq_log2=g("IDR1", "EVENTQS"),
            stall_model=g("IDR0", "STALL_MODEL"), ttendian=g("IDR0", "TTENDIAN"), ril=bool(g("IDR3", "RIL")),
            oas=OAS_BITS.get(oas_enc, 48),
            granules=frozenset(gr for gr, f in ((4096, "GRAN4K"), (16384, "GRAN16K"), (65536, "GRAN64K"))
                               if g("IDR5", f)),
            idr=idr, iidr=self._r("IIDR"), aidr=self._r("AIDR"), httu=g("IDR0", "HTTU"), pri=bool(g("IDR0", "PRI")),
            priq_log2=g("IDR1", "PRIQS"))
        if not (caps.s1p or caps.s2p):
            raise SmmuDriverError(_errno.ENXIO, f"{self.name}: no translation stage supported")
        if 4096 not in caps.granules:
            raise SmmuDriverError(_errno.ENXIO, f"{self.name}: the driver needs the 4KB granule")
        return caps

    # -- reset ---------------------------------------------------------------------------------------------------
    def _write_cr0(self, value: int) -> None:
        self._w("CR0", value)
        self._poll(f"CR0 <- {value:#x} (CR0ACK handshake)", lambda: self._r("CR0ACK") == value)

    def _update_gbpa(self, set_bits: int, clr_bits: int) -> None:
        upd = _fmask("GBPA", "UPDATE")
        self._poll("GBPA.Update clear", lambda: not self._r("GBPA") & upd)
        val = (self._r("GBPA") & ~clr_bits) | set_bits
        self._w("GBPA", val | upd)
        self._poll("GBPA.Update handshake", lambda: not self._r("GBPA") & upd)

    def _init_queue(self, q: str, entry_size: int, log2: int) -> int:
        """`arm_smmu_init_one_queue` + the reset's queue writes: 2^log2 entries allocated (aligned to their size,
        at least 32 bytes: Q_BASE.ADDR is bits [51:5]), Q_BASE, Q_PROD = Q_CONS = 0; the queue's address."""
        base = self.mem.alloc(entry_size << log2, max(entry_size << log2, 32))
        self._w(f"{q}_BASE", _REGS[f"{q}_BASE"].field("ADDR").put(0, base) | log2)
        self._w(f"{q}_PROD", 0)
        self._w(f"{q}_CONS", 0)
        return base

    def reset(self) -> None:
        """`arm_smmu_device_reset`: from any state to enabled with every STE abort (or bypass)."""
        c = self.caps
        if self._r("CR0ACK") & _fmask("CR0", "SMMUEN"):
            self._update_gbpa(_fmask("GBPA", "ABORT"), 0)     # Linux: abort while the tables change
        self._write_cr0(0)
        if self.disable_bypass:
            self._update_gbpa(_fmask("GBPA", "ABORT"), 0)
        else:
            self._update_gbpa(0, _fmask("GBPA", "ABORT"))
        cr2 = _fmask("CR2", "RECINVSID")
        if c.btm and not c.use_btm:
            cr2 |= _fmask("CR2", "PTM")                      # private TLB maintenance: ignore broadcasts
        self._w("CR2", cr2)
        self._init_strtab()
        # command queue
        self._cmdq_base = self._init_queue("CMDQ", cmds.CMD_SIZE, self.cmdq_log2)
        self._cmdq_prod = 0
        cr0 = _fmask("CR0", "CMDQEN")
        self._write_cr0(cr0)
        inv = [cmds.encode("CFGI_STE_RANGE", span=cmds.CFGI_ALL_SPAN), cmds.encode("TLBI_NSNH_ALL")]
        if c.hyp:
            inv.append(cmds.encode("TLBI_EL2_ALL"))
        self.submit(inv)
        # event queue
        self._evtq_base = self._init_queue("EVTQ", evmod.EVENT_SIZE, self.evtq_log2)
        self._evtq_cons = 0
        cr0 |= _fmask("CR0", "EVTQEN")
        self._write_cr0(cr0)
        if c.pri:                                           # page request queue
            self._priq_base = self._init_queue("PRIQ", PRIQ_ENTRY_SIZE, self.priq_log2)
            self._priq_cons = 0
            cr0 |= _fmask("CR0", "PRIQEN")
            self._write_cr0(cr0)
        self._setup_irqs()
        cr0 |= _fmask("CR0", "SMMUEN")
        self._write_cr0(cr0)
        if self._on("hostsmmu_probe"):
            self.tracer.emit("hostsmmu_probe", dev=self.name, btm=int(c.btm), ptm=self._get("CR2", "PTM"),
                             st_fmt="2lvl" if self.st_2lvl else "linear", sid_bits=self.sid_bits,
                             vmid_bits=c.vmid_bits, msi=self.sync_mode == "msi")

    def _setup_irqs(self) -> None:
        """MSIs to the board's doorbell when IDR0.MSI and a doorbell exist, else the wired lines
        (`wired_irq`); enable EVTQ and GERROR interrupts with the IRQ_CTRL/IRQ_CTRLACK handshake."""
        self._w("IRQ_CTRL", 0)
        self._poll("IRQ_CTRL <- 0", lambda: self._r("IRQ_CTRLACK") == 0)
        vectors = [("EVTQ", VEC_EVTQ, "eventq"), ("GERROR", VEC_GERROR, "gerror")]
        if self.caps.pri:
            vectors.append(("PRIQ", VEC_PRIQ, "priq"))
        if self.caps.msi and self.doorbell is not None:
            msi_addr = self.doorbell_pa + GITS_TRANSLATER
            for prefix, vec, line in vectors:
                self.doorbell.handlers[vec] = lambda line=line: self.handle_irq(line)
                self._w(f"{prefix}_IRQ_CFG0", _REGS[f"{prefix}_IRQ_CFG0"].field("ADDR").put(0, msi_addr))
                self._w(f"{prefix}_IRQ_CFG1", vec)
        irqen = _fmask("IRQ_CTRL", "EVTQ_IRQEN") | _fmask("IRQ_CTRL", "GERROR_IRQEN")
        if self.caps.pri:
            irqen |= _fmask("IRQ_CTRL", "PRIQ_IRQEN")
        self._w("IRQ_CTRL", irqen)
        self._poll("IRQ_CTRLACK handshake", lambda: self._r("IRQ_CTRLACK") == irqen)

    # -- stream table --------------------------------------------------------------------------------------------
    def _init_strtab(self) -> None:
        self._l2.clear()
        if self.st_2lvl:
            n_l1 = 1 << max(self.sid_bits - STRTAB_SPLIT, 0)
            size = max(n_l1 * 8, 64)
            self._strtab = self.mem.alloc(size, size)
            cfg = (1 << 16) | (STRTAB_SPLIT << 6) | self.sid_bits          # FMT=2-level, SPLIT, LOG2SIZE
        else:
            size = (1 << self.sid_bits) * stemod.STE_SIZE
            self._strtab = self.mem.alloc(size, size)
            self._init_stes(self._strtab, 1 << self.sid_bits)
            cfg = self.sid_bits
        self._w("STRTAB_BASE", _REGS["STRTAB_BASE"].field("ADDR").put(0, self._strtab))
        self._w("STRTAB_BASE_CFG", cfg)

    def _default_ste(self) -> bytes:
        cfg = stemod.CONFIG_ABORT if self.disable_bypass else stemod.CONFIG_BYPASS
        return stemod.encode(stemod.Ste(v=1, config=cfg, shcfg=0 if self.disable_bypass else 1))

    def _init_stes(self, base: int, n: int) -> None:
        raw = self._default_ste() * n
        self.bus.write_bytes(base, raw)

    def _ste_addr(self, sid: int) -> int:
        if not self.st_2lvl:
            return self._strtab + sid * stemod.STE_SIZE
        l1 = sid >> STRTAB_SPLIT
        l2 = self._l2.get(l1)
        if l2 is None:                                  # arm_smmu_init_l2_strtab
            n = 1 << STRTAB_SPLIT
            l2 = self.mem.alloc(n * stemod.STE_SIZE, n * stemod.STE_SIZE)
            self._init_stes(l2, n)
            desc = stemod.L1STD_LAYOUT.pack(span=STRTAB_SPLIT + 1, l2ptr=l2)
            self.bus.write64(self._strtab + l1 * 8, desc)
            self._l2[l1] = l2
        return l2 + (sid & ((1 << STRTAB_SPLIT) - 1)) * stemod.STE_SIZE

    # -- command queue ---------------------------------------------------------------------------------------------
    def _on(self, name: str) -> bool:
        return name in self.tracer.enabled

    def _qmask(self) -> int:
        return (2 << self.cmdq_log2) - 1

    def _cons(self) -> int:
        return self._get("CMDQ_CONS", "RD") & self._qmask()

    def _slot(self, p: int) -> int:
        return self._cmdq_base + (p & ((1 << self.cmdq_log2) - 1)) * cmds.CMD_SIZE

    def _space(self) -> int:
        n = 1 << self.cmdq_log2
        used = (self._cmdq_prod - self._cons()) & self._qmask()
        return n - used

    def submit(self, commands: Iterable[bytes], sync: bool = True) -> bool:
        """Queue `commands` (16-byte entries), publish them, and with `sync` wait for a CMD_SYNC.
        Returns True when the sync completed (False only if the queue stopped, e.g. an abort)."""
        todo = list(commands)
        for raw in todo:
            if self._on("hostsmmu_cmd"):
                c = cmds.decode(raw)
                self.tracer.emit("hostsmmu_cmd", dev=self.name, opcode=c.name, sid=c.sid, vmid=c.vmid,
                                 asid=c.asid, addr=c.addr)
        self.stats["cmds"] += len(todo)
        i = 0
        while i < len(todo):
            space = self._space()
            if space <= (1 if sync else 0):
                self._kick_wait()
                continue
            n = min(space - (1 if sync else 0), len(todo) - i)
            for raw in todo[i:i + n]:
                self.bus.write_bytes(self._slot(self._cmdq_prod), raw)
                self._cmdq_prod = (self._cmdq_prod + 1) & self._qmask()
            i += n
            if i < len(todo):
                self._kick_wait()
        if not sync:
            self._w("CMDQ_PROD", self._cmdq_prod)
            self._check_gerror()
            return True
        return self._sync()

    def _kick_wait(self) -> None:
        self._w("CMDQ_PROD", self._cmdq_prod)
        self._check_gerror()
        self._poll("CMDQ drain", lambda: self._space() > 1 or self._check_gerror())

    def _sync(self) -> bool:
        """Append a CMD_SYNC and wait for it (`arm_smmu_cmdq_poll_until_sync`)."""
        p = self._cmdq_prod
        slot = self._slot(p)
        if self.sync_mode == "msi":
            raw = cmds.encode("CMD_SYNC", cs=cmds.CS_IRQ, msh=3, msiattr=0xF, msiaddr=slot, msidata=0)
        else:
            raw = cmds.encode("CMD_SYNC", cs=cmds.CS_NONE)
        self.bus.write_bytes(slot, raw)
        self._cmdq_prod = (p + 1) & self._qmask()
        self._w("CMDQ_PROD", self._cmdq_prod)
        self.stats["syncs"] += 1
        target = self._cmdq_prod

        def done() -> bool:
            self._check_gerror()
            if self.sync_mode == "msi":
                return self.bus.read32(slot) == 0
            return self._cons() == target

        try:
            self._poll(f"CMD_SYNC at {p:#x}", done)
            ok = True
        except SmmuDriverError:
            ok = False
        if self._on("hostsmmu_sync"):
            self.tracer.emit("hostsmmu_sync", dev=self.name, mode=self.sync_mode, prod=p, ok=int(ok))
        return ok

    def _check_gerror(self) -> bool:
        """Handle active global errors (`arm_smmu_gerror_handler`); False so it can sit in poll conditions."""
        if self._in_irq:
            return False
        active = self._r("GERROR") ^ self._r("GERRORN")
        if not active:
            return False
        self._in_irq = True
        try:
            if active & _fmask("GERROR", "CMDQ_ERR"):
                self._skip_cmdq_error()
            other = active & ~_fmask("GERROR", "CMDQ_ERR")
            if other:
                self.gerrors.append(other)
            self._w("GERRORN", self._r("GERROR"))          # acknowledge: CMDQ consumption resumes
        finally:
            self._in_irq = False
        return False

    def _skip_cmdq_error(self) -> None:
        """`arm_smmu_cmdq_skip_err`: replace the faulting command with a CMD_SYNC and log it."""
        cons = self._r("CMDQ_CONS")
        cerror = _REGS["CMDQ_CONS"].field("ERR").get(cons)
        idx = cons & self._qmask()
        slot = self._slot(idx)
        raw = self.bus.read_bytes(slot, cmds.CMD_SIZE)
        self.cmdq_errors.append(CmdqError(idx, cerror, raw[0], raw))
        if self._on("hostsmmu_cmdq_error"):
            self.tracer.emit("hostsmmu_cmdq_error", dev=self.name, cons=idx, cerror=cerror,
                             opcode=cmds.decode(raw).name)
        self.bus.write_bytes(slot, cmds.encode("CMD_SYNC", cs=cmds.CS_NONE))

    # -- interrupts and events ---------------------------------------------------------------------------------------
    def handle_irq(self, line: str) -> None:
        """An MSI (doorbell) or wired interrupt: 'eventq' drains the EVTQ, 'priq' the PRI queue, 'gerror'
        handles global errors."""
        self.stats["irqs"] += 1
        if line == "eventq":
            self.drain_events()
        elif line == "priq":
            self.drain_priq()
        elif line == "gerror":
            # Deferred like a threaded handler: the MSI arrives while the SMMU is still inside the command
            # that failed, and acknowledging there would not restart consumption. Every CMD_SYNC poll and the
            # next submit() run `_check_gerror`.
            self.gerror_irqs += 1

    wired_irq = handle_irq      # what the board connects to `SMMUv3(irq=...)` when MSIs are not used

    def drain_events(self) -> list[evmod.Event]:
        """`arm_smmu_evtq_thread`: consume every record up to EVTQ_PROD, acknowledge overflow, route each."""
        return self._drain("EVTQ", self._route)

    def drain_priq(self) -> list[Any]:
        """`arm_smmu_priq_thread`: consume every page request up to PRIQ_PROD, acknowledge overflow, and report
        each to the iopf queue (`arm_smmu_handle_ppr`)."""
        if not self.caps.pri:
            return []
        return self._drain("PRIQ", self._handle_ppr)

    def _drain(self, q: str, handle: Callable[[Any], None]) -> list[Any]:
        """Consume queue `q` ("EVTQ" or "PRIQ") up to PROD and hand each record to `handle`; records that
        arrive while handling are taken in the same call. Not re-entered for the same queue (an interrupt that
        arrives while its own thread runs is served by that thread's next pass)."""
        if q in self._draining:
            return []
        self._draining.add(q)
        out: list[Any] = []
        log2 = self.evtq_log2 if q == "EVTQ" else self.priq_log2
        base = self._evtq_base if q == "EVTQ" else self._priq_base
        size, decode = (evmod.EVENT_SIZE, evmod.decode) if q == "EVTQ" else (PRIQ_ENTRY_SIZE, decode_pri)
        mask = (2 << log2) - 1
        try:
            for _ in range(8):                              # new records may arrive while handling
                cons_reg = self._evtq_cons if q == "EVTQ" else self._priq_cons
                prod_reg = self._r(f"{q}_PROD")
                prod, ovf = prod_reg & mask, (prod_reg ^ cons_reg) & _Q_OVF
                if ovf:
                    self._overflowed(q, prod, cons_reg & mask)
                cons = cons_reg & mask
                if cons == prod and not ovf:
                    break
                batch = []
                while cons != prod:
                    slot = base + (cons & ((1 << log2) - 1)) * size
                    batch.append(decode(self.bus.read_bytes(slot, size)))
                    cons = (cons + 1) & mask
                cons |= prod_reg & _Q_OVF                       # queue_sync_cons_ovf
                if q == "EVTQ":
                    self._evtq_cons = cons
                else:
                    self._priq_cons = cons
                self._w(f"{q}_CONS", cons)
                for rec in batch:
                    handle(rec)
                out += batch
        finally:
            self._draining.discard(q)
        return out

    def _overflowed(self, q: str, prod: int, cons: int) -> None:
        if q == "EVTQ":
            self.events_lost += 1
        else:
            self.stats["priq_overflows"] += 1
        name = f"hostsmmu_{q.lower()}_overflow"
        if self._on(name):
            self.tracer.emit(name, dev=self.name, prod=prod, cons=cons)

    def _route(self, ev: evmod.Event) -> None:
        """`arm_smmu_handle_event`: a stall of a master with iopf enabled -> the iopf queue; otherwise the
        vmaster (nested: the guest's vEVENTQ) or the host's log."""
        master = self.masters.get(ev.sid)
        routed = "host"
        fault = self._stall_fault(ev) if ev.stall and master is not None and master.iopf else None
        if fault is not None:
            routed = "iopf"
            self.stats["iopf_faults"] += 1
            self.iopf.report(master, fault)
        elif master is not None and master.vmaster is not None and master.vmaster.report_event(ev):
            routed = "guest"
            self.guest_events += 1
        else:
            self.host_events.append(ev)
        if self._on("hostsmmu_event"):
            self.tracer.emit("hostsmmu_event", dev=self.name, type=ev.name, sid=ev.sid, routed=routed)

    @staticmethod
    def _stall_fault(ev: evmod.Event) -> IopfFault | None:
        """The iopf fault of a stall record (translation-related events only, as `arm_smmu_handle_event`)."""
        if ev.type not in _TRANSLATION_EVENTS:
            return None
        perm = (IOMMU_FAULT_PERM_READ if ev.rnw else IOMMU_FAULT_PERM_WRITE) | \
            (IOMMU_FAULT_PERM_EXEC if ev.ind else 0) | (IOMMU_FAULT_PERM_PRIV if ev.pnu else 0)
        flags = IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE | (IOMMU_FAULT_PAGE_REQUEST_PASID_VALID if ev.ssv else 0)
        return IopfFault(flags, ev.stag, perm, ev.input_addr, ev.ssid if ev.ssv else 0, "stall", ev.sid)

    def _handle_ppr(self, req: Any) -> None:
        """One PRI queue entry -> an iopf fault (grpid = PRG index; the iopf queue groups up to Last)."""
        self.page_requests.append(req)
        master = self.masters.get(req.sid)
        perm = (IOMMU_FAULT_PERM_READ if req.read else 0) | (IOMMU_FAULT_PERM_WRITE if req.write else 0) | \
            (IOMMU_FAULT_PERM_EXEC if req.exec else 0) | (IOMMU_FAULT_PERM_PRIV if req.priv else 0)
        flags = (IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE if req.last else 0) | \
            (IOMMU_FAULT_PAGE_REQUEST_PASID_VALID if req.ssv else 0)
        fault = IopfFault(flags, req.prg_index, perm, req.addr, req.ssid if req.ssv else 0, "pri", req.sid)
        self.stats["iopf_faults"] += 1
        if master is None:                                  # no driver for it: deny (arm_smmu_handle_ppr)
            if req.last:
                self.page_response(Master(req.sid), fault, IOMMU_PAGE_RESP_INVALID)
            return
        self.iopf.report(master, fault)

    def page_response(self, master: Master, fault: IopfFault, code: int) -> None:
        """`arm_smmu_page_response`: CMD_RESUME for a stall, CMD_PRI_RESP for a page request group; no CMD_SYNC
        (the response is complete once the command is consumed)."""
        ok = code == IOMMU_PAGE_RESP_SUCCESS
        if fault.source == "stall":
            resp = CMDQ_RESUME_0_RESP_RETRY if ok else CMDQ_RESUME_0_RESP_ABORT
            raw = cmds.encode("RESUME", sid=master.sid, stag=fault.grpid, resp=resp)
            self.stats["resumes"] += 1
        else:
            resp = PRI_RESP_SUCC if ok else (PRI_RESP_FAIL if code == IOMMU_PAGE_RESP_FAILURE else PRI_RESP_DENY)
            raw = cmds.encode("PRI_RESP", sid=master.sid, ssv=int(fault.pasid_valid), ssid=fault.pasid,
                              grpid=fault.grpid & 0x1FF, resp=resp)
            self.stats["pri_resps"] += 1
        self.stats["page_responses"] += 1
        if self._on("hostsmmu_page_response"):
            self.tracer.emit("hostsmmu_page_response", dev=self.name, sid=master.sid,
                             how="resume" if fault.source == "stall" else "pri_resp", grpid=fault.grpid, code=resp)
        self.submit([raw], sync=False)

    # -- masters ------------------------------------------------------------------------------------------------------
    def probe_device(self, sid: int, name: str = "", *, pcie: Any = None, can_stall: bool = False) -> Master:
        """`arm_smmu_probe_device`: a StreamID the driver will manage (its STE starts as abort/bypass). `pcie`:
        the function's ATS/PRI controls (`harness.host.pcie`); `can_stall`: firmware's `dma-can-stall`."""
        if not 0 <= sid < (1 << self.sid_bits):
            raise SmmuDriverError(_errno.ERANGE, f"StreamID {sid:#x} outside the {self.sid_bits}-bit stream table")
        if sid in self.masters:
            raise SmmuDriverError(_errno.EBUSY, f"StreamID {sid:#x} already probed")
        m = Master(sid, name, pcie=pcie, can_stall=can_stall)
        m.ste_addr = self._ste_addr(sid)
        self.masters[sid] = m
        return m

    def enable_iopf(self, master: Master) -> None:
        """I/O page faults for `master` (`arm_smmu_master_enable_iopf` + `iopf_queue_add_device`; PRI enabled
        at a PCIe function that has it, `pci_enable_pri`): its stall records and page requests now go to the
        iopf queue. EOPNOTSUPP when it can do neither here."""
        stall = master.can_stall and self.caps.stalls
        pri = master.pcie is not None and master.pcie.pri_supported and self.caps.pri
        if not (stall or pri):
            raise SmmuDriverError(_errno.EOPNOTSUPP, f"{master.name}: neither stalls (dma-can-stall with "
                                  "IDR0.STALL_MODEL 0b00/0b10) nor PRI (a PCIe function with PRI, IDR0.PRI)")
        if pri and not master.pri_enabled:
            master.pcie.enable_pri(PRI_REQS)
            master.pri_enabled = True
        master.iopf = True

    def disable_iopf(self, master: Master) -> None:
        """Back to no recoverable faults: PRI off at the function, its partial faults forgotten."""
        if master.pri_enabled:
            master.pcie.disable_pri()
            master.pri_enabled = False
        self.iopf.discard_partial(master.sid)
        master.iopf = False

    def release_device(self, master: Master) -> None:
        if master.domain is not None:
            self.detach(master)
        self.masters.pop(master.sid, None)

    # -- domains ------------------------------------------------------------------------------------------------------
    def alloc_identity(self) -> IdentityDomain:
        return IdentityDomain()

    def alloc_blocked(self) -> BlockedDomain:
        return BlockedDomain()

    def alloc_s1(self, name: str = "", ias: int = 48, *, httu: bool = False, stall: bool = False,
                 ats: bool = False) -> S1Domain:
        """`arm_smmu_domain_finalise_s1`: ASID, CD (AA64, 4KB TG0, TTB0, EPD1, IPS=OAS, R, A), tables. Asked for:
        `httu` sets CD.HA/HD as far as IDR0.HTTU allows (Linux `arm_smmu_make_sva_cd`, FEAT_HA/HD), `stall`
        CD.S (a master that may stall, STE.S1STALLD then 0; forced with IDR0.STALL_MODEL=0b10), `ats` STE.EATS."""
        b = PageTableBuilder(self.bus, self.mem, granule=4096, stage=1, ias=ias, oas=min(self.caps.oas, 48))
        asid, cd_pa, stall = self._s1_cd(b, httu, stall)
        return S1Domain(name, b, cd_pa, asid, stall=stall, ats=ats and self.caps.ats)

    def _s1_cd(self, b: PageTableBuilder, httu: bool, stall: bool) -> tuple[int, int, bool]:
        """ASID and CD of a stage-1 domain over tables `b` (`arm_smmu_make_s1_cd`): (asid, cd_pa, CD.S)."""
        if not self.caps.s1p:
            raise SmmuDriverError(_errno.EOPNOTSUPP, "stage 1 not supported (IDR0.S1P=0)")
        try:
            asid = self.asids.alloc()
        except PolicyError as e:
            raise SmmuDriverError(_errno.ENOSPC, f"no free ASID: {e}") from None
        cd_pa = self.mem.alloc(cdmod.CD_SIZE, 64)
        c = self.caps
        stall = c.stall_model == 2 or (stall and c.stall_model == 0)
        cd = cdmod.Cd(v=1, aa64=1, t0sz=b.tsz, tg0=0, ir0=1, or0=1, sh0=3, epd1=1, tg1=2,
                      ips=oas_encoding(min(c.oas, 48)), asid=asid, r=1, a=1, ttb0=b.ttb,
                      mair=0x0404_FF, endi=int(c.ttendian == 3), s=int(stall),
                      ha=int(httu and c.httu >= 1), hd=int(httu and c.httu >= 2))
        self.bus.write_bytes(cd_pa, cdmod.encode(cd))
        return asid, cd_pa, stall

    def alloc_sva(self, mm: Any, name: str = "", *, stall: bool = False, ats: bool = False,
                  httu: bool = True) -> SvaDomain:
        """`iommu_sva_domain_alloc` / `arm_smmu_sva_domain_alloc`: a domain whose CD shares `mm`'s tables
        (`sva.HostMm`; `arm_smmu_make_sva_cd`: CD.S for a master that stalls, CD.HA/HD as IDR0.HTTU allows), its
        faults handled by the SVA iopf handler, and `mm`'s unmaps invalidating the IOTLB and the ATCs."""
        from .sva import sva_iopf_handler
        asid, cd_pa, stall = self._s1_cd(mm.pgd, httu, stall)
        d = SvaDomain(name, mm, cd_pa, asid, stall=stall, ats=ats and self.caps.ats)
        d.iopf_handler = sva_iopf_handler(self.iopf, mm)
        mm.notifiers.append(lambda va, size, d=d: self._sva_invalidate(d, va, size))
        return d

    def _sva_invalidate(self, d: SvaDomain, va: int, size: int) -> None:
        """`arm_smmu_mm_arch_invalidate_secondary_tlbs`: TLBI by ASID and VA (unless the SMMU follows the CPU's
        broadcasts), then the ATCs."""
        if d.freed:
            return
        if not self.caps.use_btm:
            self._tlbi_s1(d, va, size)
        self._atc_inv_domain(d, va, size)

    def alloc_s2(self, name: str = "", nest_parent: bool = False, ias: int | None = None) -> S2Domain:
        """A stage-2 paging domain (`arm_smmu_domain_alloc_paging_flags` with NEST_PARENT -> stage 2).
        The IPA size is min(OAS, 48) (4KB granule, start level from the builder)."""
        if not self.caps.s2p:
            raise SmmuDriverError(_errno.EOPNOTSUPP, "stage 2 not supported (IDR0.S2P=0)")
        if nest_parent and not self.caps.nesting:
            raise SmmuDriverError(_errno.EOPNOTSUPP, "nesting needs both stages (IDR0.S1P and S2P)")
        ias = ias or min(self.caps.oas, 48)
        b = PageTableBuilder(self.bus, self.mem, granule=4096, stage=2, ias=ias, oas=min(self.caps.oas, 48))
        return S2Domain(name, b, nest_parent)

    def alloc_nested(self, parent: S2Domain, ste0: int, ste1: int, vmid: int, owner: Any = None,
                     name: str = "", *, ats: bool = False) -> NestedDomain:
        """A nested domain from already-validated vSTE words (iommufd validates them); `ats`: the vSTE asked
        for EATS=0b01 (`arm_smmu_validate_vste`'s enable_ats)."""
        if not parent.nest_parent:
            raise SmmuDriverError(_errno.EINVAL, f"{parent!r} is not a nest parent")
        d = NestedDomain(name, parent, ste0, ste1, vmid, owner, ats=ats and self.caps.ats)
        parent.nested.append(d)
        return d

    def free_domain(self, d: Domain) -> None:
        """Free a domain with no masters: invalidate its TLB entries, then give back its ASID/VMID and memory."""
        if d.masters:
            raise SmmuDriverError(_errno.EBUSY, f"{d!r} still has {len(d.masters)} attached device(s)")
        if d.freed:
            return
        if isinstance(d, S1Domain):
            self.submit([cmds.encode("TLBI_NH_ASID", asid=d.asid, vmid=0)])
            self.asids.free(d.asid)
            if not isinstance(d, SvaDomain):               # an SVA domain's tables are the process's
                self._free_tables(d.builder)
            self.mem.free(d.cd_pa, cdmod.CD_SIZE)
        elif isinstance(d, NestedDomain):
            if d in d.parent.nested:
                d.parent.nested.remove(d)
        elif isinstance(d, S2Domain):
            if d.extra_vmids:
                raise SmmuDriverError(_errno.EBUSY, f"{d!r} is the parent of {len(d.extra_vmids)} vIOMMU(s)")
            if d.vmid is not None:
                self.submit([cmds.encode("TLBI_S12_VMALL", vmid=d.vmid)])
                self.vmid_policy.release(d, d.vmid)
                self._trace_vmid("release", d, d.vmid)
                d.vmid = None
            self._free_tables(d.builder)
        d.freed = True

    def _free_tables(self, b: PageTableBuilder) -> None:
        for t in b.tables:
            self.mem.free(t, b.root_size if t == b.ttb else b.granule)
        b.tables.clear()

    # -- mappings ---------------------------------------------------------------------------------------------------------
    def map(self, d: S1Domain | S2Domain, iova: int, pa: int, size: int, perm: int = PERM_R | PERM_W, *,
            mmio: bool = False) -> None:
        """Map [iova, iova+size) -> pa. Invalid -> valid needs no TLB maintenance. `mmio` (IOMMU_MMIO, an MSI
        doorbell): Device-nGnRE in a stage-2 domain (stage-1 attributes are not modelled)."""
        if mmio and isinstance(d, S2Domain):
            d.builder.map(iova, pa, size, perm, memattr=S2_MEMATTR_DEVICE_NGNRE)
        else:
            d.builder.map(iova, pa, size, perm)

    def resv_regions(self) -> list[tuple[int, int, str]]:
        """`arm_smmu_get_resv_regions`: (start, length, type) of the IOVA ranges a domain must keep for the
        host: the software-managed MSI window."""
        return [(MSI_IOVA_BASE, MSI_IOVA_LENGTH, "sw_msi")]

    def unmap(self, d: S1Domain | S2Domain, iova: int, size: int) -> None:
        """Unmap and invalidate: TLBI_NH_VA (ASID) for stage 1; TLBI_S2_IPA for every VMID tagging a stage-2
        domain, plus TLBI_NH_ALL of that VMID for a nest parent (combined entries are not required to go with
        TLBI_S2_IPA: `arm_smmu_tlb_inv_range_domain`); then CMD_SYNC."""
        d.builder.unmap(iova, size)
        pages = -(-size // 4096)
        out: list[bytes] = []
        if isinstance(d, S1Domain):
            self._tlbi_s1(d, iova, size)
        else:
            for vmid in d.vmids():
                if pages > INV_RANGE_MAX_PAGES:
                    out.append(cmds.encode("TLBI_S12_VMALL", vmid=vmid))
                    continue
                out += self._range_cmds("TLBI_S2_IPA", iova, pages, vmid=vmid)
                if d.nest_parent:
                    out.append(cmds.encode("TLBI_NH_ALL", vmid=vmid))
        if out:
            self.submit(out)
        self._atc_inv_domain(d, iova, size)

    def _tlbi_s1(self, d: S1Domain, iova: int, size: int) -> None:
        pages = -(-size // 4096)
        if pages > INV_RANGE_MAX_PAGES:
            self.submit([cmds.encode("TLBI_NH_ASID", asid=d.asid, vmid=0)])
        else:
            self.submit(self._range_cmds("TLBI_NH_VA", iova, pages, asid=d.asid, vmid=0))

    def _atc_inv_domain(self, d: Domain, iova: int, size: int) -> None:
        """`arm_smmu_atc_inv_domain`, after the IOTLB invalidation completed: ATC_INV of the range for every
        ATS master of a stage-1 domain; for a nest parent, every ATS master of the nested domains over it, whole
        ATC (the IPA -> VA relation is the guest's), then CMD_SYNC."""
        if isinstance(d, S2Domain):
            masters = [m for n in d.nested for m in n.masters if m.ats_enabled]
            out = [atc_inv_cmd(m.sid, None, 0, 0) for m in masters]
        else:
            out = [atc_inv_cmd(m.sid, None, iova, size) for m in d.masters if m.ats_enabled]
        if out:
            self.stats["atc_invs"] += len(out)
            self.submit(out)

    def _range_cmds(self, name: str, addr: int, pages: int, **kw: int) -> list[bytes]:
        """Leaf invalidations of `pages` 4KB pages from `addr`: range commands (NUM/SCALE) with IDR3.RIL
        (the loop of `__arm_smmu_tlb_inv_range`), else one command per page."""
        out = []
        if not self.caps.ril:
            for i in range(pages):
                out.append(cmds.encode(name, addr=addr + i * 4096, leaf=1, **kw))
            return out
        while pages:
            scale = (pages & -pages).bit_length() - 1          # trailing zeros
            num = (pages >> scale) & 0x1F                       # odd, so never 0
            out.append(cmds.encode(name, addr=addr, leaf=1, tg=1, scale=scale, num=num - 1, **kw))
            addr += (num << scale) * 4096
            pages -= num << scale
        return out

    # -- STEs ------------------------------------------------------------------------------------------------------------
    def _s2_fields(self, d: S2Domain, vmid: int) -> dict[str, int]:
        b = d.builder
        return dict(s2vmid=vmid, s2t0sz=b.tsz, s2sl0=b.sl0, s2ir0=1, s2or0=1, s2sh0=3, s2tg=0,
                    s2ps=oas_encoding(min(self.caps.oas, 48)), s2aa64=1, s2ptw=1, s2r=1,
                    s2s=int(self.caps.stall_model == 2), s2endi=int(self.caps.ttendian == 3), s2ttb=b.ttb)

    def build_ste(self, d: Domain) -> bytes:
        """The STE a domain needs (`arm_smmu_make_*_ste`)."""
        c = self.caps
        if isinstance(d, BlockedDomain):
            return stemod.encode(stemod.Ste(v=1, config=stemod.CONFIG_ABORT))
        if isinstance(d, IdentityDomain):
            return stemod.encode(stemod.Ste(v=1, config=stemod.CONFIG_BYPASS, shcfg=1))
        if isinstance(d, S1Domain):
            return stemod.encode(stemod.Ste(v=1, config=stemod.CONFIG_S1, s1contextptr=d.cd_pa, s1cdmax=0,
                                            s1cir=1, s1cor=1, s1csh=3, eats=int(d.ats),
                                            s1stalld=int(c.stall_model == 0 and not d.stall)))
        if isinstance(d, NestedDomain):
            return self._nested_ste(d)
        if isinstance(d, S2Domain):
            assert d.vmid is not None
            return stemod.encode(stemod.Ste(v=1, config=stemod.CONFIG_S2, shcfg=1, **self._s2_fields(d, d.vmid)))
        raise SmmuDriverError(_errno.EINVAL, f"no STE for {d!r}")

    def _nested_ste(self, d: NestedDomain) -> bytes:
        """`arm_smmu_make_nested_cd_table_ste` (EATS from the host's ATS decision, MEV set; S1STALLD set when
        nothing would handle a stall: the module docstring), or the stage-2-only STE for a bypass vSTE."""
        cfg = d.config
        if cfg == stemod.CONFIG_S1:
            base = stemod.encode(stemod.Ste(v=1, config=stemod.CONFIG_S2, shcfg=1, eats=int(d.ats),
                                            **self._s2_fields(d.parent, d.vmid)))
            w = ste_words(base)
            cfg_mask = stemod.STE_LAYOUT.by_name["config"].mask
            w[0] = 1 | (stemod.CONFIG_NESTED << 1) | (d.ste0 & ~cfg_mask & ~1 & _M64)
            w[1] |= d.ste1 | (stemod.STE_LAYOUT.by_name["mev"].mask >> 64)   # merge events (DoS)
            if self.caps.stall_model == 0 and d.iopf_handler is None:
                w[1] |= stemod.STE_LAYOUT.by_name["s1stalld"].mask >> 64
            return b"".join(x.to_bytes(8, "little") for x in w)
        if cfg == stemod.CONFIG_BYPASS:                     # stage 2 only, the vIOMMU's VMID
            return stemod.encode(stemod.Ste(v=1, config=stemod.CONFIG_S2, shcfg=1,
                                            **self._s2_fields(d.parent, d.vmid)))
        return stemod.encode(stemod.Ste(v=1, config=stemod.CONFIG_ABORT))

    @staticmethod
    def _used_words(w0: int) -> set[int]:
        """Qwords an STE's current configuration uses (a coarse `arm_smmu_get_ste_used`)."""
        if not w0 & 1:
            return {0}
        cfg = (w0 >> 1) & 7
        if cfg < stemod.CONFIG_BYPASS:
            return {0}
        if cfg in (stemod.CONFIG_BYPASS, stemod.CONFIG_S1):
            return {0, 1}
        return {0, 1, 2, 3}

    def _ste_sync(self, sid: int) -> None:
        self.submit([cmds.encode("CFGI_STE", sid=sid, leaf=1)])

    def install_ste(self, master: Master, new: bytes) -> str:
        """Write an STE with the safe sequence (module docstring). Returns 'hitless', 'break' or 'same'."""
        addr = master.ste_addr
        old_w = ste_words(self.bus.read_bytes(addr, stemod.STE_SIZE))
        new_w = ste_words(new)
        if old_w == new_w:
            return "same"
        used = self._used_words(old_w[0])
        unused_diff = [i for i in range(8) if i not in used and old_w[i] != new_w[i]]
        for i in unused_diff:
            self.bus.write64(addr + 8 * i, new_w[i])
        if unused_diff:
            self._ste_sync(master.sid)
        used_diff = [i for i in sorted(used) if old_w[i] != new_w[i]]
        how = "hitless"
        if len(used_diff) == 1:
            self.bus.write64(addr + 8 * used_diff[0], new_w[used_diff[0]])
            self._ste_sync(master.sid)
        elif used_diff:
            how = "break"
            self.stats["ste_breaks"] += 1
            self.bus.write64(addr, 0)
            self._ste_sync(master.sid)
            for i in range(1, 8):
                self.bus.write64(addr + 8 * i, new_w[i])
            self._ste_sync(master.sid)
            self.bus.write64(addr, new_w[0])
            self._ste_sync(master.sid)
        self.stats["ste_writes"] += 1
        old_vmid = self._ste_vmid(old_w)
        new_vmid = self._ste_vmid(new_w)
        if old_vmid is not None and old_vmid != new_vmid:
            self.submit([cmds.encode("TLBI_S12_VMALL", vmid=old_vmid)])     # entries of the old VMID
            self.stats["tlbi_old_vmid"] += 1
        if self._on("hostsmmu_ste"):
            self.tracer.emit("hostsmmu_ste", dev=self.name, sid=master.sid, config=(new_w[0] >> 1) & 7,
                             vmid=new_vmid if new_vmid is not None else -1, how=how)
        return how

    @staticmethod
    def _ste_vmid(w: list[int]) -> int | None:
        if not w[0] & 1 or not (w[0] >> 1) & 2 or not (w[0] >> 3) & 1:      # V and Config=0b11x
            return None
        return w[2] & 0xFFFF

    def read_ste(self, master: Master) -> stemod.Ste:
        return stemod.decode(self.bus.read_bytes(master.ste_addr, stemod.STE_SIZE))

    # -- attach/detach ------------------------------------------------------------------------------------------------
    def _finalise(self, d: Domain) -> None:
        if isinstance(d, S2Domain) and d.vmid is None:
            try:
                d.vmid = self.vmid_policy.s2_vmid(d)
            except PolicyError as e:
                raise SmmuDriverError(e.errno, f"no VMID for {d!r}: {e}") from None
            self._trace_vmid("s2", d, d.vmid)

    def attach(self, master: Master, d: Domain) -> None:
        """`arm_smmu_attach_dev`: give `master` the domain's STE (safe update sequence)."""
        if d.freed:
            raise SmmuDriverError(_errno.EINVAL, f"{d!r} was freed")
        if isinstance(d, NestedDomain) and d.parent.freed:
            raise SmmuDriverError(_errno.EINVAL, f"the parent of {d!r} was freed")
        self._finalise(d)
        ats = bool(d.ats) and self.caps.ats and (master.pcie is None or master.pcie.ats_supported)
        if master.ats_enabled and not ats and master.pcie is not None:
            master.pcie.disable_ats()                       # before the STE makes ATS requests UR
            self.stats["ats_disables"] += 1
            self._trace_ats(master, "disable")
        self.install_ste(master, self.build_ste(d))
        old = master.domain
        if old is not None and master in old.masters:
            old.masters.remove(master)
        master.domain = d
        d.masters.append(master)
        self._ats_commit(master, ats)

    def _ats_commit(self, master: Master, ats: bool) -> None:
        """`arm_smmu_attach_commit` after the STE: enable ATS (ATC invalidated first: `arm_smmu_enable_ats`),
        or flush the ATC of the old translation."""
        if ats or master.ats_enabled:
            self.stats["atc_invs"] += 1
            self._trace_ats(master, "atc_inv_all")
            self.submit([atc_inv_cmd(master.sid, None, 0, 0)])
        if ats and not master.ats_enabled and master.pcie is not None:
            master.pcie.enable_ats(12)                      # STU: log2 of the smallest granule (4KB)
            self.stats["ats_enables"] += 1
            self._trace_ats(master, "enable")
        master.ats_enabled = ats

    def _trace_ats(self, master: Master, what: str) -> None:
        if self._on("hostsmmu_ats"):
            self.tracer.emit("hostsmmu_ats", dev=self.name, sid=master.sid, what=what)

    def detach(self, master: Master) -> None:
        """Back to the blocked (abort) STE."""
        self.attach(master, BlockedDomain("detached"))

    def refresh(self, d: Domain) -> None:
        """Re-write the STEs of every master of `d` (after its VMID or vSTE changed)."""
        for m in list(d.masters):
            self.install_ste(m, self.build_ste(d))

    def _on_vmid_move(self, domain: Any, old: int, new: int) -> None:
        """The `restricted/move` policy's callback: a new KVM pin collides with this stage-2 domain's private
        VMID. Rewrite its STEs with `new` (install_ste issues CFGI_STE, CMD_SYNC, then TLBI_S12_VMALL(old))."""
        if not isinstance(domain, S2Domain) or domain.vmid != old:
            raise SmmuDriverError(_errno.EINVAL, f"VMID move for {domain!r}: it does not hold VMID {old:#x}")
        domain.vmid = new
        self.refresh(domain)
        if not domain.masters:
            self.submit([cmds.encode("TLBI_S12_VMALL", vmid=old)])
        self._trace_vmid("move", domain, new, old)

    def _trace_vmid(self, what: str, owner: Any, vmid: int, old: int = -1) -> None:
        if self._on("hostsmmu_vmid"):
            self.tracer.emit("hostsmmu_vmid", dev=self.name, what=what, owner=repr(owner), vmid=vmid, old=old)

    # -- convenience ----------------------------------------------------------------------------------------------------
    def hw_info(self) -> tuple[tuple[int, ...], int, int]:
        """IDR0..5, IIDR, AIDR read again through MMIO (`arm_smmu_hw_info`)."""
        return tuple(self._r(f"IDR{i}") for i in range(6)), self._r("IIDR"), self._r("AIDR")

    @property
    def ptm(self) -> int:
        return self._get("CR2", "PTM")

    def tlbi_vmid(self, vmid: int) -> None:
        self.submit([cmds.encode("TLBI_S12_VMALL", vmid=vmid)])


