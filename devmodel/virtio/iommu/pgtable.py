"""Page-table sharing for virtio-iommu: the guest manages Arm stage-1 tables, the host their context.

Not in any released virtio specification (1.2 and later only have MAP/UNMAP). This module implements ONE RFC
layout: the "virtio-iommu v0.9-devel" UAPI of Jean-Philippe Brucker (Arm, 2018; carried into Vivek Gautam's
2021 "iommu/virtio: Nested stage support with Arm" series for the ATTACH_TABLE structures), with one change
forced by virtio 1.2: its feature bit 5 is F_MMIO there, so F_ATTACH_TABLE is bit 8, the number of Brucker's
2021 prototype (which also kept T_ATTACH_TABLE 6, T_INVALIDATE 7 and probe types 2..7). docs/virtio-iommu.md
has the one table of these numbers next to the other proposals', and why this one.

* ATTACH_TABLE (6) attaches an endpoint to a domain whose translation is the guest's own tables:
  - format PGTF_ARM_LPAE (`attach_pgt_arm`): one stage-1 context -- ASID, TCR (TCR_EL1 layout, DDI 0487),
    TTBR0, TTBR1, MAIR. It is validated as the SMMU validates the CD the VMM builds from it (IHI 0070 5.4,
    `devmodel.smmuv3.cd.validate`): illegal values -> INVAL, what the host SMMU lacks -> UNSUPP.
  - format PSTF_ARM_SV3 (`attach_pst_arm`): the guest's own CD table -- S1Fmt, S1DSS, S1ContextPtr,
    S1CDMax, validated as the stage-1 fields of an STE (IHI 0070 5.2, `devmodel.smmuv3.ste.validate`).
    This is what an iommufd nested HWPT for arm-smmu-v3 takes (`struct iommu_hwpt_arm_smmuv3`).
* INVALIDATE (7): domain, PASID or VA scope (with ASID, range, granule, page count), leaf-only and
  configuration (CD) invalidation, for the VMM to turn into SMMU commands.
* Probe properties PAGE_SIZE_MASK (2), INPUT_RANGE (3), OUTPUT_SIZE (4), PASID_SIZE (5), PAGE_TABLE_FMT (6,
  `pgtf_arm`: ASID bits, HW access/dirty, HPD) and PASID_TABLE_FMT (7, `pstf_arm`: stall, BTM) describe the
  host SMMU as the VMM gives it (`TableFormat`).

Choices where the RFC is silent (each documented in docs/virtio-iommu.md): the BTM flag of `pstf_arm`
describes the endpoint's SMMU whichever format the guest attaches; the CD built from `attach_pgt_arm` has
ASET = 0 (shared ASID set: broadcast TLBIs apply) only when BTM is offered; TCR bits the 2018 layout does not
name are INVAL; an INVALIDATE's ASID must be the domain's (PGTF domains) or fit the ASID bits (PSTF domains).

Not modelled: the 2018 `pgtf_arm` HW_FLOAT flag (never offered), 52-bit PAs in TTBRs, TCR.DS, PRI/stall
responses (the 2021 series' PAGE_RESP).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

from ...fields import Field, Layout
from ...smmuv3 import cd as cdmod
from ...smmuv3 import ste as stemod
from ...smmuv3.regs import OAS_BITS, SmmuFeatures
from ..constants import bit
from .layouts import byte_layout, property_bytes, property_layout, record
from .spec import IommuStatus, Reject

__all__ = ["F_ATTACH_TABLE", "PROBE_T_PAGE_SIZE_MASK", "PROBE_T_INPUT_RANGE", "PROBE_T_OUTPUT_SIZE",
           "PROBE_T_PASID_SIZE", "PROBE_T_PAGE_TABLE_FMT", "PROBE_T_PASID_TABLE_FMT", "PGTF_ARM_LPAE",
           "PSTF_ARM_SV3", "PGTF_F_HW_ACCESS", "PGTF_F_HW_DIRTY", "PGTF_F_HW_FLOAT", "PGTF_F_HPD",
           "PSTF_F_STALL", "PSTF_F_STALL_FORCE", "PSTF_F_BTM", "S1FMT_LINEAR", "S1FMT_4KL2", "S1FMT_64KL2",
           "S1DSS_TERMINATE", "S1DSS_BYPASS", "S1DSS_SSID0", "INVAL_S_DOMAIN", "INVAL_S_PASID", "INVAL_S_VA",
           "INVAL_F_CONFIG", "INVAL_F_LEAF", "TCR_LAYOUT", "ATTACH_TABLE_LAYOUT", "PGT_ARM_LAYOUT",
           "PST_ARM_LAYOUT", "INVALIDATE_LAYOUT", "PAGE_SIZE_MASK_LAYOUT", "INPUT_RANGE_LAYOUT",
           "OUTPUT_SIZE_LAYOUT", "PASID_SIZE_LAYOUT", "PGTF_ARM_LAYOUT", "PSTF_ARM_LAYOUT", "AttachTableReq",
           "PgtArmReq", "PstArmReq", "InvalidateReq", "TableFormat", "PageTable", "PasidTable", "Invalidation",
           "page_table", "pasid_table", "invalidation", "leaf_shifts"]

F_ATTACH_TABLE = bit(8)

PROBE_T_PAGE_SIZE_MASK = 2
PROBE_T_INPUT_RANGE = 3
PROBE_T_OUTPUT_SIZE = 4
PROBE_T_PASID_SIZE = 5
PROBE_T_PAGE_TABLE_FMT = 6
PROBE_T_PASID_TABLE_FMT = 7

PGTF_ARM_LPAE = 1               # format of attach_pgt_arm / pgtf_arm
PSTF_ARM_SV3 = 2                # format of attach_pst_arm / pstf_arm
PGTF_F_HW_ACCESS, PGTF_F_HW_DIRTY, PGTF_F_HW_FLOAT, PGTF_F_HPD = bit(0), bit(1), bit(2), bit(3)
PSTF_F_STALL, PSTF_F_STALL_FORCE, PSTF_F_BTM = bit(0), bit(1), bit(2)
S1FMT_LINEAR, S1FMT_4KL2, S1FMT_64KL2 = 0, 1, 2                 # STE.S1Fmt encodings
S1DSS_TERMINATE, S1DSS_BYPASS, S1DSS_SSID0 = 0, 1, 2           # STE.S1DSS encodings
INVAL_S_DOMAIN, INVAL_S_PASID, INVAL_S_VA = bit(0), bit(1), bit(2)
INVAL_F_CONFIG, INVAL_F_LEAF = bit(0), bit(1)

# TCR_EL1 fields (DDI 0487, register TCR_EL1) that the 2018 layout names; any other bit set is INVAL
TCR_LAYOUT = Layout("TCR_EL1", 64, (
    Field("T0SZ", 0, 6), Field("EPD0", 7, 1), Field("IRGN0", 8, 2), Field("ORGN0", 10, 2), Field("SH0", 12, 2),
    Field("TG0", 14, 2), Field("T1SZ", 16, 6), Field("A1", 22, 1), Field("EPD1", 23, 1), Field("IRGN1", 24, 2),
    Field("ORGN1", 26, 2), Field("SH1", 28, 2), Field("TG1", 30, 2), Field("IPS", 32, 3), Field("AS", 36, 1),
    Field("TBI0", 37, 1), Field("TBI1", 38, 1), Field("HA", 39, 1), Field("HD", 40, 1), Field("HPD0", 41, 1),
    Field("HPD1", 42, 1), Field("HWU0", 43, 4), Field("HWU1", 47, 4), Field("NFD0", 53, 1), Field("NFD1", 54, 1),
))

_HEAD = (("TYPE", 0, 1), ("HEAD_RESERVED", 1, 3), ("DOMAIN", 4, 4), ("ENDPOINT", 8, 4), ("FORMAT", 12, 2))
# device-readable parts (each request is 80 bytes with its tail at offset 76, the INVALIDATE 64 with it at 60)
ATTACH_TABLE_LAYOUT = byte_layout("virtio_iommu_req_attach_table", 76, _HEAD + (("RESERVED", 14, 62),))
PGT_ARM_LAYOUT = byte_layout("virtio_iommu_req_attach_pgt_arm", 76, _HEAD + (
    ("ASID", 14, 2), ("TCR", 16, 8), ("TTBR0", 24, 8), ("TTBR1", 32, 8), ("MAIR", 40, 8), ("RESERVED", 48, 28)))
PST_ARM_LAYOUT = byte_layout("virtio_iommu_req_attach_pst_arm", 76, _HEAD + (
    ("S1FMT", 14, 1), ("S1DSS", 15, 1), ("S1CONTEXTPTR", 16, 8), ("S1CDMAX", 24, 4), ("RESERVED", 28, 48)))
INVALIDATE_LAYOUT = byte_layout("virtio_iommu_req_invalidate", 60, (
    ("TYPE", 0, 1), ("HEAD_RESERVED", 1, 3), ("SCOPE", 4, 2), ("FLAGS", 6, 2), ("DOMAIN", 8, 4), ("PASID", 12, 4),
    ("ID", 16, 8), ("VIRT_START", 24, 8), ("NR_PAGES", 32, 8), ("GRANULE", 40, 1), ("RESERVED", 41, 19)))

PAGE_SIZE_MASK_LAYOUT = property_layout("virtio_iommu_probe_page_size_mask", 16, (("RESERVED", 4, 4),
                                                                                  ("MASK", 8, 8)))
INPUT_RANGE_LAYOUT = property_layout("virtio_iommu_probe_input_range", 24, (("RESERVED", 4, 4), ("START", 8, 8),
                                                                            ("END", 16, 8)))
OUTPUT_SIZE_LAYOUT = property_layout("virtio_iommu_probe_output_size", 8, (("BITS", 4, 1), ("RESERVED", 5, 3)))
PASID_SIZE_LAYOUT = property_layout("virtio_iommu_probe_pasid_size", 8, (("BITS", 4, 1), ("RESERVED", 5, 3)))
PGTF_ARM_LAYOUT = property_layout("virtio_iommu_probe_pgtf_arm", 16, (
    ("FORMAT", 4, 2), ("ASID_BITS", 6, 1), ("RESERVED", 7, 1), ("FLAGS", 8, 8)))
PSTF_ARM_LAYOUT = property_layout("virtio_iommu_probe_pstf_arm", 16, (
    ("FORMAT", 4, 2), ("RESERVED", 6, 2), ("FLAGS", 8, 8)))

AttachTableReq = record("AttachTableReq", ATTACH_TABLE_LAYOUT)
PgtArmReq = record("PgtArmReq", PGT_ARM_LAYOUT)
PstArmReq = record("PstArmReq", PST_ARM_LAYOUT)
InvalidateReq = record("InvalidateReq", INVALIDATE_LAYOUT)

# leaf sizes (log2) of each translation granule: pages and blocks (DDI 0487 D8.3), what Linux's io-pgtable
# passes as INVALIDATE granules
_LEAF_SHIFTS = {4096: (12, 21, 30), 16384: (14, 25), 65536: (16, 29)}
PhysCheck = Callable[[int, int], bool]          # (address, size) -> inside the VM's guest-physical memory


def leaf_shifts(granules) -> frozenset[int]:
    return frozenset(s for g in granules for s in _LEAF_SHIFTS[g])


@dataclass(frozen=True)
class TableFormat:
    """The Arm stage-1 table format the host SMMU accepts for an endpoint, as the VMM describes it: granules,
    VA (input) and IPA (output) sizes, ASID and PASID (SubstreamID) bits, HW access flag / dirty state
    (IDR0.HTTU), hierarchical permission disable (IDR3.HAD), stall model, 2-level CD tables, and whether the
    guest may rely on broadcast TLB maintenance (BTM: the VMM's policy decides, e.g. only with a pinned VMID)."""
    granules: frozenset[int] = frozenset({4096, 16384, 65536})
    input_bits: int = 48
    output_bits: int = 48
    asid_bits: int = 16
    pasid_bits: int = 20
    hw_access: bool = False
    hw_dirty: bool = False
    hpd: bool = True
    btm: bool = False
    stall: bool = False
    stall_force: bool = False
    cd2l: bool = True

    def __post_init__(self) -> None:
        checks = ((self.granules and set(self.granules) <= set(_LEAF_SHIFTS), f"granules {set(self.granules)}"),
                  (self.input_bits in (48, 52), f"input_bits {self.input_bits} (48 or 52)"),
                  (self.output_bits in OAS_BITS.values(), f"output_bits {self.output_bits}"),
                  (self.asid_bits in (8, 16), f"asid_bits {self.asid_bits}"),
                  (0 <= self.pasid_bits <= 20, f"pasid_bits {self.pasid_bits}"),
                  (self.hw_access or not self.hw_dirty, "hw_dirty without hw_access"),
                  (self.stall or not self.stall_force, "stall_force without stall"))
        for ok, what in checks:
            if not ok:
                raise ValueError(f"TableFormat: {what}")

    @classmethod
    def from_smmu(cls, f: SmmuFeatures, *, output_bits: int | None = None, btm: bool = False,
                  hpd: bool = True) -> TableFormat:
        """The format of a host SMMU with features `f`; `output_bits` is the VM's IPA size (default the OAS);
        `btm` is the VMM's offer (it is only made when the SMMU has IDR0.BTM)."""
        return cls(granules=f.granules, input_bits=52 if f.vax else 48, output_bits=output_bits or f.oas,
                   asid_bits=16 if f.asid16 else 8, pasid_bits=f.ssidsize, hw_access=f.httu >= 1,
                   hw_dirty=f.httu >= 2, hpd=hpd, btm=btm and f.btm, stall=f.stall_model != 1,
                   stall_force=f.stall_model == 2, cd2l=f.cd2l)

    @cached_property
    def features(self) -> SmmuFeatures:
        """The SMMU features the CD/STE validators of devmodel.smmuv3 check against."""
        return SmmuFeatures(gran4k=4096 in self.granules, gran16k=16384 in self.granules,
                            gran64k=65536 in self.granules, oas=self.output_bits, asid16=self.asid_bits == 16,
                            httu=2 if self.hw_dirty else int(self.hw_access), vax=int(self.input_bits == 52),
                            ssidsize=self.pasid_bits, cd2l=self.cd2l,
                            stall_model=2 if self.stall_force else (0 if self.stall else 1))

    @property
    def page_size_mask(self) -> int:
        return sum(1 << s for s in leaf_shifts(self.granules))

    def properties(self) -> bytes:
        """The extension's probe properties for an endpoint with this format (5.13.6.7 encoding)."""
        pgtf = ((PGTF_F_HW_ACCESS if self.hw_access else 0) | (PGTF_F_HW_DIRTY if self.hw_dirty else 0)
                | (PGTF_F_HPD if self.hpd else 0))
        pstf = ((PSTF_F_STALL if self.stall else 0) | (PSTF_F_STALL_FORCE if self.stall_force else 0)
                | (PSTF_F_BTM if self.btm else 0))
        return b"".join((
            property_bytes(PROBE_T_PAGE_SIZE_MASK, PAGE_SIZE_MASK_LAYOUT, mask=self.page_size_mask),
            property_bytes(PROBE_T_INPUT_RANGE, INPUT_RANGE_LAYOUT, start=0, end=(1 << self.input_bits) - 1),
            property_bytes(PROBE_T_OUTPUT_SIZE, OUTPUT_SIZE_LAYOUT, bits=self.output_bits),
            property_bytes(PROBE_T_PASID_SIZE, PASID_SIZE_LAYOUT, bits=self.pasid_bits),
            property_bytes(PROBE_T_PAGE_TABLE_FMT, PGTF_ARM_LAYOUT, format=PGTF_ARM_LPAE, asid_bits=self.asid_bits,
                           flags=pgtf),
            property_bytes(PROBE_T_PASID_TABLE_FMT, PSTF_ARM_LAYOUT, format=PSTF_ARM_SV3, flags=pstf)))


@dataclass(frozen=True)
class PageTable:
    """A validated `attach_pgt_arm`: the guest's stage-1 parameters and the CD built from them (IHI 0070 5.4:
    V, AA64, R, A; ASET = not BTM), which the VMM installs as the one CD of the endpoint's nested domain."""
    asid: int
    tcr: int
    ttbr0: int
    ttbr1: int
    mair: int
    cd: cdmod.Cd
    leaf_shifts: frozenset[int]
    format: int = field(default=PGTF_ARM_LPAE, init=False)

    def cd_bytes(self) -> bytes:
        return cdmod.encode(self.cd)


@dataclass(frozen=True)
class PasidTable:
    """A validated `attach_pst_arm`: the guest's CD table (at a guest-physical address) and the STE whose
    stage-1 fields point at it (Config = stage 1 only: the VMM adds its stage 2, as iommufd's nested HWPT
    takes `struct iommu_hwpt_arm_smmuv3 {ste[2]}`)."""
    s1fmt: int
    s1dss: int
    s1contextptr: int
    s1cdmax: int
    ste: stemod.Ste
    asid_bits: int
    leaf_shifts: frozenset[int]
    format: int = field(default=PSTF_ARM_SV3, init=False)


@dataclass(frozen=True, slots=True)
class Invalidation:
    """A validated INVALIDATE: `scope` INVAL_S_DOMAIN (everything of the domain), INVAL_S_PASID (one PASID /
    ASID) or INVAL_S_VA (nr_pages << granule bytes from virt_start); `leaf` only leaf entries; `config` the
    CDs (PASID-table domains)."""
    scope: int
    leaf: bool
    config: bool
    pasid: int
    asid: int
    virt_start: int
    nr_pages: int
    granule: int

    @property
    def size(self) -> int:
        return self.nr_pages << self.granule


def _tcr_halves(t: dict[str, int], fmt: TableFormat) -> None:
    """Granules of the enabled halves: reserved encodings are INVAL, ones the host lacks UNSUPP."""
    for n, tg, gran in ((0, t["tg0"], cdmod.tg0_granule(t["tg0"])), (1, t["tg1"], cdmod.tg1_granule(t["tg1"]))):
        if t[f"epd{n}"]:
            continue
        if gran is None:
            raise Reject(IommuStatus.INVAL, f"TCR.TG{n}={tg:#04b} is reserved")
        if gran not in fmt.granules:
            raise Reject(IommuStatus.UNSUPP, f"TCR.TG{n}: the host SMMU has no {gran >> 10}KB granule")


def _tcr_features(t: dict[str, int], asid: int, fmt: TableFormat) -> None:
    if t["ha"] and not fmt.hw_access or t["hd"] and not fmt.hw_dirty:
        raise Reject(IommuStatus.UNSUPP, "TCR.HA/HD: the host SMMU does not update access/dirty state")
    if (t["hpd0"] or t["hpd1"]) and not fmt.hpd:
        raise Reject(IommuStatus.UNSUPP, "TCR.HPD0/1: the host SMMU has no hierarchical permission disable")
    if t["as"] and fmt.asid_bits < 16:
        raise Reject(IommuStatus.UNSUPP, "TCR.AS=1 (16-bit ASIDs) but the host SMMU has 8-bit ASIDs")
    if not t["as"] and asid > 0xFF:
        raise Reject(IommuStatus.INVAL, f"ASID {asid:#x} with TCR.AS=0: the CPU's 8-bit ASID cannot match it")
    if t["ips"] not in OAS_BITS:
        raise Reject(IommuStatus.INVAL, f"TCR.IPS={t['ips']:#05b} is reserved")


def _ttb(n: int, ttbr: int, disabled: bool, fmt: TableFormat, phys_ok: PhysCheck) -> int:
    """TTBRn's table address (BADDR; CnP, bit 0, ignored), 0 for a disabled half."""
    if disabled:
        return 0
    if ttbr >> 48:
        raise Reject(IommuStatus.INVAL, f"TTBR{n}={ttbr:#x}: bits [63:48] set (the ASID is a field of its own)")
    base = ttbr & ~1
    if base & 0x3F:
        raise Reject(IommuStatus.INVAL, f"TTBR{n}={ttbr:#x}: table not 64-byte aligned (DDI 0487 D8.2: BADDR "
                     "bits below the table size are RES0)")
    if base >> fmt.output_bits:
        raise Reject(IommuStatus.INVAL, f"TTBR{n}={ttbr:#x} is outside the {fmt.output_bits}-bit output size")
    if not phys_ok(base, 64):
        raise Reject(IommuStatus.FAULT, f"TTBR{n}={ttbr:#x} is not guest-physical memory")
    return base


def page_table(req, fmt: TableFormat, phys_ok: PhysCheck) -> PageTable:
    """Validate an `attach_pgt_arm` against the endpoint's format; the PageTable or Reject."""
    if req.reserved:
        raise Reject(IommuStatus.INVAL, "attach_pgt_arm reserved bytes are not zero")
    bad = TCR_LAYOUT.undefined_bits(req.tcr)
    if bad:
        raise Reject(IommuStatus.INVAL, f"TCR bits {bad:#x} are not part of the Arm LPAE page table format")
    t = TCR_LAYOUT.unpack(req.tcr)
    _tcr_halves(t, fmt)
    _tcr_features(t, req.asid, fmt)
    ttb0 = _ttb(0, req.ttbr0, bool(t["epd0"]), fmt, phys_ok)
    ttb1 = _ttb(1, req.ttbr1, bool(t["epd1"]), fmt, phys_ok)
    cd = cdmod.decode(cdmod.CD_LAYOUT.pack(
        T0SZ=t["t0sz"], TG0=t["tg0"], IR0=t["irgn0"], OR0=t["orgn0"], SH0=t["sh0"], EPD0=t["epd0"],
        T1SZ=t["t1sz"], TG1=t["tg1"], IR1=t["irgn1"], OR1=t["orgn1"], SH1=t["sh1"], EPD1=t["epd1"], V=1,
        IPS=t["ips"], TBI=t["tbi0"] | t["tbi1"] << 1, AA64=1, HD=t["hd"], HA=t["ha"], S=int(fmt.stall_force),
        R=1, A=1, ASET=int(not fmt.btm), ASID=req.asid, HAD0=t["hpd0"], HAD1=t["hpd1"], TTB0=ttb0, TTB1=ttb1,
        MAIR=req.mair))
    fault = cdmod.validate(cd, fmt.features)
    if fault is not None:
        raise Reject(IommuStatus.INVAL, f"as a CD: {fault.reason}")
    granules = {cdmod.tg0_granule(t["tg0"])} if not t["epd0"] else set()
    granules |= {cdmod.tg1_granule(t["tg1"])} if not t["epd1"] else set()
    return PageTable(req.asid, req.tcr, req.ttbr0, req.ttbr1, req.mair, cd, leaf_shifts(granules))


def pasid_table(req, fmt: TableFormat, phys_ok: PhysCheck) -> PasidTable:
    """Validate an `attach_pst_arm` against the endpoint's format; the PasidTable or Reject."""
    if req.reserved:
        raise Reject(IommuStatus.INVAL, "attach_pst_arm reserved bytes are not zero")
    if req.s1fmt > S1FMT_64KL2 or req.s1dss > S1DSS_SSID0:
        raise Reject(IommuStatus.INVAL, f"S1Fmt={req.s1fmt} / S1DSS={req.s1dss}: reserved encoding")
    if req.s1cdmax > fmt.pasid_bits:
        raise Reject(IommuStatus.RANGE, f"S1CDMax={req.s1cdmax} exceeds the {fmt.pasid_bits} PASID bits")
    if req.s1cdmax and req.s1fmt != S1FMT_LINEAR and not fmt.cd2l:
        raise Reject(IommuStatus.UNSUPP, "2-level CD table but the host SMMU has no IDR0.CD2L")
    ptr = req.s1contextptr
    if ptr & 0x3F or ptr >> fmt.output_bits:
        raise Reject(IommuStatus.INVAL, f"S1ContextPtr={ptr:#x} misaligned or outside the output size")
    if not phys_ok(ptr, cdmod.CD_SIZE):
        raise Reject(IommuStatus.FAULT, f"S1ContextPtr={ptr:#x} is not guest-physical memory")
    ste = stemod.decode(stemod.STE_LAYOUT.pack(V=1, CONFIG=stemod.CONFIG_S1, S1FMT=req.s1fmt, S1CONTEXTPTR=ptr,
                                               S1CDMAX=req.s1cdmax, S1DSS=req.s1dss))
    fault = stemod.validate(ste, fmt.features)
    if fault is not None:
        raise Reject(IommuStatus.INVAL, f"as an STE: {fault.reason}")
    return PasidTable(req.s1fmt, req.s1dss, ptr, req.s1cdmax, ste, fmt.asid_bits, leaf_shifts(fmt.granules))


def _inval_scope(req, table: PageTable | PasidTable) -> tuple[bool, bool]:
    """Scope and flags rules; returns (leaf, config)."""
    if req.reserved:
        raise Reject(IommuStatus.INVAL, "INVALIDATE reserved bytes are not zero")
    if req.scope not in (INVAL_S_DOMAIN, INVAL_S_PASID, INVAL_S_VA) or req.flags & ~(INVAL_F_CONFIG | INVAL_F_LEAF):
        raise Reject(IommuStatus.INVAL, f"scope {req.scope:#x} / flags {req.flags:#x}: one scope, known flags")
    leaf, config = bool(req.flags & INVAL_F_LEAF), bool(req.flags & INVAL_F_CONFIG)
    if leaf and req.scope != INVAL_S_VA:
        raise Reject(IommuStatus.INVAL, "F_LEAF without S_VA")
    if config and (req.scope == INVAL_S_VA or not isinstance(table, PasidTable)):
        raise Reject(IommuStatus.INVAL, "F_CONFIG needs a PASID-table domain and the DOMAIN or PASID scope")
    return leaf, config


def _inval_ids(req, table: PageTable | PasidTable) -> None:
    if isinstance(table, PageTable):
        if req.pasid:
            raise Reject(IommuStatus.INVAL, f"PASID {req.pasid} on a domain with one page table (PASID 0)")
        if req.id != table.asid:
            raise Reject(IommuStatus.INVAL, f"ASID {req.id:#x} is not the domain's ({table.asid:#x})")
        return
    if req.pasid >> table.s1cdmax:
        raise Reject(IommuStatus.RANGE, f"PASID {req.pasid} >= 2^S1CDMax ({1 << table.s1cdmax})")
    if req.id >> table.asid_bits:
        raise Reject(IommuStatus.RANGE, f"ASID {req.id:#x} exceeds {table.asid_bits} bits")


def _inval_range(req, table: PageTable | PasidTable) -> None:
    if req.granule not in table.leaf_shifts:
        raise Reject(IommuStatus.INVAL, f"granule 2^{req.granule} is not a page or block size of the tables")
    if not req.nr_pages:
        raise Reject(IommuStatus.INVAL, "nr_pages is 0")
    if req.virt_start & ((1 << req.granule) - 1) or req.virt_start + (req.nr_pages << req.granule) > 1 << 64:
        raise Reject(IommuStatus.RANGE, f"range {req.virt_start:#x} + {req.nr_pages} << {req.granule} is "
                     "misaligned or wraps")


def invalidation(req, table: PageTable | PasidTable) -> Invalidation:
    """Validate an INVALIDATE of a domain with `table` attached; the Invalidation or Reject."""
    leaf, config = _inval_scope(req, table)
    if req.scope != INVAL_S_DOMAIN:
        _inval_ids(req, table)
    if req.scope == INVAL_S_VA:
        _inval_range(req, table)
        return Invalidation(req.scope, leaf, config, req.pasid, req.id, req.virt_start, req.nr_pages, req.granule)
    if req.scope == INVAL_S_PASID:
        return Invalidation(req.scope, leaf, config, req.pasid, req.id, 0, 0, 0)
    return Invalidation(req.scope, leaf, config, 0, 0, 0, 0, 0)
