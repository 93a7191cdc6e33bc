"""SMMUv3 register table (IHI 0070, chapter 6) and `SmmuFeatures`, the config object behind the ID registers.

Every register of the Non-secure programming interface the model implements is one `Reg` declaration below
(offset, size, reset, fields with their access). `device.SMMUv3` builds its `RegisterFile` from
`build_regs(features)` and only adds named hooks (`_on_cr0_write`, ...). Field positions were checked against
Linux `drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h` and QEMU `include/hw/arm/smmuv3-common.h`; the tests
repeat the Linux mask values independently.

Reset values the spec leaves UNKNOWN or IMPLEMENTATION DEFINED, and what the model picks:

* CR2.PTM resets to **1** when IDR0.BTM=1 (Arm recommends PTM=1 at reset; Linux writes 1 anyway). Software that
  wants broadcast TLB maintenance (the BTM scenarios) must clear it while SMMUEN=0. With BTM=0 PTM is RES0.
* CR2.E2H and CR2.RECINVSID reset to 0 (C_BAD_STREAMID is not recorded until software sets RECINVSID).
* GBPA resets to ABORT=`features.gbpa_abort` (default 0: bypass while disabled), SHCFG=0b01 (use incoming),
  other attribute fields 0.
* Queue/table base registers, PROD/CONS and IRQ_CFG registers reset to 0.

Access rules that depend on state (IHI 0070 6.3): CR1, CR2, STRTAB_BASE and STRTAB_BASE_CFG are RO while
SMMUEN (CR0ACK) is 1; CMDQ_BASE and CMDQ_CONS while CMDQEN is 1; EVTQ_BASE and EVTQ_PROD while EVTQEN is 1;
PRIQ_BASE and PRIQ_PROD while PRIQEN is 1; GERROR_IRQ_CFGn / EVTQ_IRQ_CFGn / PRIQ_IRQ_CFGn while the
corresponding IRQ_CTRLACK enable is 1. They are data (`WRITE_LOCKS`), applied by the device before the
register file sees the write. The PRI queue registers exist with IDR0.PRI=1 only (else RAZ/WI).

Not modelled: the Secure and Realm programming interfaces, ECMDQ, the PIDR/CIDR ID block, memory attribute
fields (stored and readable; writes that change them are reported as unimplemented).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..regs import Access, Reg, RegField

__all__ = ["SmmuFeatures", "build_regs", "WRITE_LOCKS", "OAS_BITS", "oas_encoding", "PAGE1",
           "EVTQ_PAGE0_ALIASES", "GERROR_BITS"]

RO, RW, RES0 = Access.RO, Access.RW, Access.RES0

PAGE1 = 0x10000
#: IDR5.OAS / CD.IPS / STE.S2PS encoding -> bits
OAS_BITS = {0: 32, 1: 36, 2: 40, 3: 42, 4: 44, 5: 48, 6: 52}


def oas_encoding(bits: int) -> int:
    for enc, b in OAS_BITS.items():
        if b == bits:
            return enc
    raise ValueError(f"OAS of {bits} bits has no IDR5.OAS encoding (one of {sorted(OAS_BITS.values())})")


@dataclass(frozen=True)
class SmmuFeatures:
    """What the implementation supports; the ID registers are computed from it (IHI 0070 6.3.1-6.3.6)."""
    s1p: bool = True              # IDR0.S1P
    s2p: bool = True              # IDR0.S2P
    aarch32: bool = False         # IDR0.TTF: False = AArch64 tables only (0b10), True = 0b11 (not walked)
    cohacc: bool = True
    btm: bool = False             # IDR0.BTM: broadcast TLB maintenance
    httu: int = 0                 # IDR0.HTTU: 0 none, 1 access flag, 2 access + dirty
    hyp: bool = True              # IDR0.Hyp: EL2 StreamWorlds, TLBI_EL2_*
    ats: bool = False
    asid16: bool = True
    msi: bool = True
    sev: bool = True
    pri: bool = False             # IDR0.PRI: PRI queue (needs ATS)
    vmid16: bool = True
    cd2l: bool = True             # 2-level CD tables
    ttendian: int = 2             # 0 mixed, 2 little-endian only, 3 big-endian only
    stall_model: int = 1          # 0 stall+terminate, 1 terminate only, 2 stall forced
    stall_max: int = 32           # IDR5.STALL_MAX: outstanding stalls (reported when stalls are supported)
    st_level_2: bool = True       # IDR0.ST_LEVEL=0b01: 2-level stream tables
    sidsize: int = 16
    ssidsize: int = 20
    cmdqs: int = 19               # max log2 entries
    eventqs: int = 19
    priqs: int = 0
    ril: bool = True              # IDR3.RIL: range invalidation
    fwb: bool = False
    oas: int = 48                 # bits (IDR5.OAS)
    gran4k: bool = True
    gran16k: bool = True
    gran64k: bool = True
    vax: int = 0                  # IDR5.VAX: 1 = 52-bit VAs
    iidr: int = 0x0000_043B       # arbitrary ProductID 0, Arm implementer code 0x43B
    aidr: int = 0x02              # SMMUv3.2
    gbpa_abort: bool = False      # GBPA.ABORT reset value
    evtq_page0_alias: bool = True  # EVTQ_PROD/CONS also reachable at 0xA8/0xAC (page 0)

    def __post_init__(self) -> None:
        oas_encoding(self.oas)
        for name, hi in (("sidsize", 32), ("ssidsize", 20), ("cmdqs", 19), ("eventqs", 19), ("priqs", 19)):
            v = getattr(self, name)
            if not 0 <= v <= hi:
                raise ValueError(f"SmmuFeatures.{name}={v} outside 0..{hi}")
        if not (self.gran4k or self.gran16k or self.gran64k):
            raise ValueError("SmmuFeatures: at least one granule must be supported")
        if self.pri and not self.ats:
            raise ValueError("SmmuFeatures: PRI needs ATS (IHI 0070 6.3.1 IDR0.PRI)")
        if not 1 <= self.stall_max <= 0xFFFF:
            raise ValueError(f"SmmuFeatures.stall_max={self.stall_max} outside 1..65535")
        if self.httu not in (0, 1, 2) or self.stall_model not in (0, 1, 2):
            raise ValueError("SmmuFeatures: IDR0.HTTU and IDR0.STALL_MODEL take 0, 1 or 2")

    @property
    def granules(self) -> frozenset[int]:
        return frozenset(g for g, on in ((4096, self.gran4k), (16384, self.gran16k), (65536, self.gran64k))
                         if on)

    # -- ID register values ----------------------------------------------------------------------------
    def idr0(self) -> int:
        return _pack(IDR0, S2P=self.s2p, S1P=self.s1p, TTF=3 if self.aarch32 else 2, COHACC=self.cohacc,
                     BTM=self.btm, HTTU=self.httu, HYP=self.hyp, ATS=self.ats, ASID16=self.asid16,
                     MSI=self.msi, SEV=self.sev, PRI=self.pri, VMID16=self.vmid16, CD2L=self.cd2l,
                     TTENDIAN=self.ttendian, STALL_MODEL=self.stall_model, ST_LEVEL=int(self.st_level_2))

    def idr1(self) -> int:
        return _pack(IDR1, SIDSIZE=self.sidsize, SSIDSIZE=self.ssidsize, PRIQS=self.priqs,
                     EVENTQS=self.eventqs, CMDQS=self.cmdqs)

    def idr3(self) -> int:
        return _pack(IDR3, RIL=self.ril, FWB=self.fwb)

    def idr5(self) -> int:
        return _pack(IDR5, OAS=oas_encoding(self.oas), GRAN4K=self.gran4k, GRAN16K=self.gran16k,
                     GRAN64K=self.gran64k, VAX=self.vax, STALL_MAX=self.stall_max if self.stall_model != 1 else 0)


def _f(name: str, lsb: int, width: int = 1, access: Access = RW, shift: int = 0, implemented: bool = True,
       doc: str = "") -> RegField:
    return RegField(name, lsb, width, shift, doc, access, implemented)


def _pack(fields: tuple[RegField, ...], **values: int | bool) -> int:
    by = {f.name: f for f in fields}
    raw = 0
    for k, v in values.items():
        raw = by[k].put(raw, int(v))
    return raw


IDR0 = (_f("S2P", 0, access=RO), _f("S1P", 1, access=RO), _f("TTF", 2, 2, RO), _f("COHACC", 4, access=RO),
        _f("BTM", 5, access=RO), _f("HTTU", 6, 2, RO), _f("DORMHINT", 8, access=RO), _f("HYP", 9, access=RO),
        _f("ATS", 10, access=RO), _f("NS1ATS", 11, access=RO), _f("ASID16", 12, access=RO),
        _f("MSI", 13, access=RO), _f("SEV", 14, access=RO), _f("ATOS", 15, access=RO), _f("PRI", 16, access=RO),
        _f("VMW", 17, access=RO), _f("VMID16", 18, access=RO), _f("CD2L", 19, access=RO),
        _f("VATOS", 20, access=RO), _f("TTENDIAN", 21, 2, RO), _f("ATSRECERR", 23, access=RO),
        _f("STALL_MODEL", 24, 2, RO), _f("TERM_MODEL", 26, access=RO), _f("ST_LEVEL", 27, 2, RO),
        _f("RME_IMPL", 30, access=RO))
IDR1 = (_f("SIDSIZE", 0, 6, RO), _f("SSIDSIZE", 6, 5, RO), _f("PRIQS", 11, 5, RO), _f("EVENTQS", 16, 5, RO),
        _f("CMDQS", 21, 5, RO), _f("ATTR_PERMS_OVR", 26, access=RO), _f("ATTR_TYPES_OVR", 27, access=RO),
        _f("REL", 28, access=RO), _f("QUEUES_PRESET", 29, access=RO), _f("TABLES_PRESET", 30, access=RO),
        _f("ECMDQ", 31, access=RO))
IDR3 = (_f("HAD", 2, access=RO), _f("PBHA", 3, access=RO), _f("XNX", 4, access=RO), _f("PPS", 5, access=RO),
        _f("MPAM", 7, access=RO), _f("FWB", 8, access=RO), _f("STT", 9, access=RO), _f("RIL", 10, access=RO),
        _f("BBML", 11, 2, RO), _f("E0PD", 13, access=RO), _f("PTWNNC", 14, access=RO), _f("DPT", 15, access=RO))
IDR5 = (_f("OAS", 0, 3, RO), _f("GRAN4K", 4, access=RO), _f("GRAN16K", 5, access=RO),
        _f("GRAN64K", 6, access=RO), _f("VAX", 10, 2, RO), _f("STALL_MAX", 16, 16, RO))

GERROR_BITS = ("CMDQ_ERR", "EVTQ_ABT_ERR", "PRIQ_ABT_ERR", "MSI_CMDQ_ABT_ERR", "MSI_EVTQ_ABT_ERR",
               "MSI_PRIQ_ABT_ERR", "MSI_GERROR_ABT_ERR", "SFM_ERR")
_GERROR_LSB = {"CMDQ_ERR": 0, "EVTQ_ABT_ERR": 2, "PRIQ_ABT_ERR": 3, "MSI_CMDQ_ABT_ERR": 4,
               "MSI_EVTQ_ABT_ERR": 5, "MSI_PRIQ_ABT_ERR": 6, "MSI_GERROR_ABT_ERR": 7, "SFM_ERR": 8}


def _gerror_fields(access: Access) -> tuple[RegField, ...]:
    return tuple(_f(n, _GERROR_LSB[n], access=access) for n in GERROR_BITS)


def _irq_cfg(prefix: str, base: int, msi: bool) -> tuple[Reg, ...]:
    acc = RW if msi else RES0
    return (
        Reg(f"{prefix}_IRQ_CFG0", base, 8, 0, (_f("ADDR", 2, 50, acc, shift=2),), doc="MSI address [51:2]"),
        Reg(f"{prefix}_IRQ_CFG1", base + 8, 4, 0, (_f("DATA", 0, 32, acc),), doc="MSI payload"),
        Reg(f"{prefix}_IRQ_CFG2", base + 12, 4, 0, (_f("MEMATTR", 0, 4, acc, implemented=False),
                                                     _f("SH", 4, 2, acc, implemented=False))),
    )


def _cr0_fields(access: Access, f: SmmuFeatures) -> tuple[RegField, ...]:
    return (_f("SMMUEN", 0, access=access), _f("PRIQEN", 1, access=access if f.pri else RES0),
            _f("EVTQEN", 2, access=access), _f("CMDQEN", 3, access=access),
            _f("ATSCHK", 4, access=access if f.ats else RES0), _f("VMW", 6, 3, RES0))


def build_regs(f: SmmuFeatures) -> tuple[Reg, ...]:
    """The register table of one SMMU with features `f` (page 0, plus page 1 at +0x10000)."""
    irq_fields = lambda acc: (_f("GERROR_IRQEN", 0, access=acc),  # noqa: E731
                              _f("PRIQ_IRQEN", 1, access=acc if f.pri else RES0),
                              _f("EVTQ_IRQEN", 2, access=acc))
    gbpa_attr = dict(implemented=False)
    return (
        Reg("IDR0", 0x00, 4, f.idr0(), IDR0),
        Reg("IDR1", 0x04, 4, f.idr1(), IDR1),
        Reg("IDR2", 0x08, 4, 0, (_f("BA_VATOS", 0, 10, RO),)),
        Reg("IDR3", 0x0C, 4, f.idr3(), IDR3),
        Reg("IDR4", 0x10, 4, 0, access=RO, doc="IMPLEMENTATION DEFINED"),
        Reg("IDR5", 0x14, 4, f.idr5(), IDR5),
        Reg("IIDR", 0x18, 4, f.iidr, (_f("IMPLEMENTER", 0, 12, RO), _f("REVISION", 12, 4, RO),
                                       _f("VARIANT", 16, 4, RO), _f("PRODUCTID", 20, 12, RO))),
        Reg("AIDR", 0x1C, 4, f.aidr, (_f("ARCHMINORREV", 0, 4, RO), _f("ARCHMAJORREV", 4, 4, RO))),
        Reg("CR0", 0x20, 4, 0, _cr0_fields(RW, f)),
        Reg("CR0ACK", 0x24, 4, 0, _cr0_fields(RO, f)),
        Reg("CR1", 0x28, 4, 0, (_f("QUEUE_IC", 0, 2, implemented=False), _f("QUEUE_OC", 2, 2, implemented=False),
                                 _f("QUEUE_SH", 4, 2, implemented=False), _f("TABLE_IC", 6, 2, implemented=False),
                                 _f("TABLE_OC", 8, 2, implemented=False),
                                 _f("TABLE_SH", 10, 2, implemented=False))),
        Reg("CR2", 0x2C, 4, (1 << 2) if f.btm else 0,
            (_f("E2H", 0, access=RW if f.hyp else RES0), _f("RECINVSID", 1),
             _f("PTM", 2, access=RW if f.btm else RES0))),
        Reg("STATUSR", 0x40, 4, 0, (_f("DORMANT", 0, access=RO),)),
        Reg("GBPA", 0x44, 4, (1 << 12) | ((1 << 20) if f.gbpa_abort else 0),
            (_f("MEMATTR", 0, 4, **gbpa_attr), _f("MTCFG", 4, **gbpa_attr), _f("ALLOCCFG", 8, 4, **gbpa_attr),
             _f("SHCFG", 12, 2, **gbpa_attr), _f("PRIVCFG", 16, 2, **gbpa_attr),
             _f("INSTCFG", 18, 2, **gbpa_attr), _f("ABORT", 20), _f("UPDATE", 31))),
        Reg("IRQ_CTRL", 0x50, 4, 0, irq_fields(RW)),
        Reg("IRQ_CTRLACK", 0x54, 4, 0, irq_fields(RO)),
        Reg("GERROR", 0x60, 4, 0, _gerror_fields(RO)),
        Reg("GERRORN", 0x64, 4, 0, _gerror_fields(RW)),
        *_irq_cfg("GERROR", 0x68, f.msi),
        Reg("STRTAB_BASE", 0x80, 8, 0, (_f("ADDR", 6, 46, shift=6), _f("RA", 62, implemented=False))),
        Reg("STRTAB_BASE_CFG", 0x88, 4, 0, (_f("LOG2SIZE", 0, 6), _f("SPLIT", 6, 5),
                                             _f("FMT", 16, 2, access=RW if f.st_level_2 else RES0))),
        Reg("CMDQ_BASE", 0x90, 8, 0, (_f("LOG2SIZE", 0, 5), _f("ADDR", 5, 47, shift=5),
                                      _f("RA", 62, implemented=False))),
        Reg("CMDQ_PROD", 0x98, 4, 0, (_f("WR", 0, 20),)),
        Reg("CMDQ_CONS", 0x9C, 4, 0, (_f("RD", 0, 20), _f("ERR", 24, 7))),
        Reg("EVTQ_BASE", 0xA0, 8, 0, (_f("LOG2SIZE", 0, 5), _f("ADDR", 5, 47, shift=5),
                                      _f("WA", 62, implemented=False))),
        *_irq_cfg("EVTQ", 0xB0, f.msi),
        Reg("EVTQ_PROD", PAGE1 + 0xA8, 4, 0, (_f("WR", 0, 20), _f("OVFLG", 31))),
        Reg("EVTQ_CONS", PAGE1 + 0xAC, 4, 0, (_f("RD", 0, 20), _f("OVACKFLG", 31))),
        *(_priq_regs(f) if f.pri else ()),
    )


def _priq_regs(f: SmmuFeatures) -> tuple[Reg, ...]:
    """The PRI queue (IHI 0070 6.3.24-6.3.29; Linux ARM_SMMU_PRIQ_*): base, PROD/CONS on page 1, MSI config."""
    return (
        Reg("PRIQ_BASE", 0xC0, 8, 0, (_f("LOG2SIZE", 0, 5), _f("ADDR", 5, 47, shift=5),
                                      _f("WA", 62, implemented=False))),
        *_irq_cfg("PRIQ", 0xD0, f.msi),
        Reg("PRIQ_PROD", PAGE1 + 0xC8, 4, 0, (_f("WR", 0, 20), _f("OVFLG", 31))),
        Reg("PRIQ_CONS", PAGE1 + 0xCC, 4, 0, (_f("RD", 0, 20), _f("OVACKFLG", 31))),
    )


#: register -> (register, field) that makes it read-only while set (IHI 0070 6.3 "Accessing ...").
WRITE_LOCKS: dict[str, tuple[str, str]] = {
    "CR1": ("CR0ACK", "SMMUEN"),
    "CR2": ("CR0ACK", "SMMUEN"),
    "STRTAB_BASE": ("CR0ACK", "SMMUEN"),
    "STRTAB_BASE_CFG": ("CR0ACK", "SMMUEN"),
    "CMDQ_BASE": ("CR0ACK", "CMDQEN"),
    "CMDQ_CONS": ("CR0ACK", "CMDQEN"),
    "EVTQ_BASE": ("CR0ACK", "EVTQEN"),
    "EVTQ_PROD": ("CR0ACK", "EVTQEN"),
    "GERROR_IRQ_CFG0": ("IRQ_CTRLACK", "GERROR_IRQEN"),
    "GERROR_IRQ_CFG1": ("IRQ_CTRLACK", "GERROR_IRQEN"),
    "GERROR_IRQ_CFG2": ("IRQ_CTRLACK", "GERROR_IRQEN"),
    "EVTQ_IRQ_CFG0": ("IRQ_CTRLACK", "EVTQ_IRQEN"),
    "EVTQ_IRQ_CFG1": ("IRQ_CTRLACK", "EVTQ_IRQEN"),
    "EVTQ_IRQ_CFG2": ("IRQ_CTRLACK", "EVTQ_IRQEN"),
    "PRIQ_BASE": ("CR0ACK", "PRIQEN"),
    "PRIQ_PROD": ("CR0ACK", "PRIQEN"),
    "PRIQ_IRQ_CFG0": ("IRQ_CTRLACK", "PRIQ_IRQEN"),
    "PRIQ_IRQ_CFG1": ("IRQ_CTRLACK", "PRIQ_IRQEN"),
    "PRIQ_IRQ_CFG2": ("IRQ_CTRLACK", "PRIQ_IRQEN"),
}

#: optional page-0 aliases of the page-1 event and PRI queue pointers (Linux ARM_SMMU_OPT_PAGE0_REGS_ONLY)
EVTQ_PAGE0_ALIASES = {0xA8: PAGE1 + 0xA8, 0xAC: PAGE1 + 0xAC, 0xC8: PAGE1 + 0xC8, 0xCC: PAGE1 + 0xCC}
