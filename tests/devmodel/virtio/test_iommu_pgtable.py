"""The page-table-sharing extension (devmodel/virtio/iommu/pgtable.py; layout of the 2018 virtio-iommu
v0.9 RFC with F_ATTACH_TABLE = 8, docs/virtio-iommu.md): offered only when the VMM enables it, probe
properties from the VMM's TableFormat, ATTACH_TABLE validated as the SMMU validates a CD (pgt_arm) or an
STE's stage-1 fields (pst_arm, IHI 0070 5.2 / 5.4), INVALIDATE handed to the backend, and MAP/UNMAP kept
apart from table domains. Emulated endpoints translate through the guest's tables with the SMMU model's
walker."""
from __future__ import annotations

import struct

import pytest

from devmodel.pagetable import PERM_R, PERM_W, PageAllocator, PageTableBuilder
from devmodel.smmuv3 import cd as cdmod
from devmodel.smmuv3.regs import SmmuFeatures
from devmodel.virtio.iommu import Endpoint, IommuBackend, IommuStatus, PageTable, PasidTable, TableFormat
from devmodel.virtio.iommu.pgtable import (F_ATTACH_TABLE, INVAL_F_CONFIG, INVAL_F_LEAF, INVAL_S_DOMAIN,
                                           INVAL_S_PASID, INVAL_S_VA, PSTF_F_BTM)
from devmodel.virtio.iommu.spec import F_BYPASS_CONFIG, F_DOMAIN_RANGE, F_INPUT_RANGE, F_MAP_UNMAP, F_MMIO, F_PROBE

from .driver import RAM_BASE, RAM_SIZE
from .iommu_driver import (EP, EP2, S_FAULT, S_INVAL, S_NOENT, S_OK, S_RANGE, S_UNSUPP, IommuRig, attach,
                           attach_pgt_arm, attach_pst_arm, detach, invalidate, map_, parse_properties, unmap)

V1_2 = F_INPUT_RANGE | F_DOMAIN_RANGE | F_MAP_UNMAP | F_PROBE | F_MMIO | F_BYPASS_CONFIG
ASID = 0x42
IOVA = 0x7F00_0000_0000 & ~0xFFF
# TCR for a 48-bit TTB0 walk with 4 KiB pages, write-back cacheable, inner shareable; TTB1 disabled; 16-bit
# ASIDs; 48-bit IPS -- what Linux's SVA code derives from the CPU's TCR_EL1
TCR = 16 | 1 << 8 | 1 << 10 | 3 << 12 | 0 << 14 | 1 << 23 | 5 << 32 | 1 << 36


def tcr(**fields) -> int:
    from devmodel.virtio.iommu.pgtable import TCR_LAYOUT
    base = TCR_LAYOUT.unpack(TCR)
    base.update(fields)
    return TCR_LAYOUT.pack(base)


class Recorder(IommuBackend):
    def __init__(self):
        self.calls = []

    def attach_table(self, domain, endpoint, table):
        self.calls.append(("attach_table", domain, endpoint, table))
        return IommuStatus.OK

    def invalidate(self, domain, inv):
        self.calls.append(("invalidate", domain, inv))
        return IommuStatus.OK

    def detach(self, domain, endpoint):
        self.calls.append(("detach", domain, endpoint))

    def free_domain(self, domain):
        self.calls.append(("free", domain))


class TableRig(IommuRig):
    """A device with the extension enabled, a recording backend, and a region for the guest's tables."""

    def __init__(self, fmt: TableFormat | None = None, **kw):
        self.backend = Recorder()
        super().__init__(page_tables=True, table_format=fmt or TableFormat(), backend=self.backend, **kw)
        base = self.guest.alloc(0x20_0000)
        self.alloc = PageAllocator(self.guest.bus, base, 0x20_0000)
        self.pt = PageTableBuilder(self.guest.bus, self.alloc, granule=4096, stage=1, ias=48)
        self.data = self.guest.alloc(0x4000)

    def attach_pgt(self, domain=1, endpoint=EP, **kw) -> int | None:
        args = dict(asid=ASID, tcr=TCR, ttbr0=self.pt.ttb, mair=0xFF)
        args.update(kw)
        return self.status(attach_pgt_arm(domain, endpoint, **args))


@pytest.fixture
def t() -> TableRig:
    return TableRig().up()


# -- offering the extension ----------------------------------------------------------------------------------
def test_offered_only_when_the_vmm_enables_it():
    assert not IommuRig().drv.device_features() & F_ATTACH_TABLE
    assert TableRig().drv.device_features() & F_ATTACH_TABLE


def test_without_the_extension_types_6_and_7_are_unrecognized():
    plain = IommuRig().up()
    assert plain.request(attach_pgt_arm(1, EP, ASID, TCR, RAM_BASE)).len == 0          # not written
    assert plain.request(invalidate(1, INVAL_S_DOMAIN)).len == 0
    offered = TableRig().up(wanted=V1_2)                                             # offered, not negotiated
    assert offered.attach_pgt() == S_UNSUPP and offered.status(invalidate(1, INVAL_S_DOMAIN)) == S_UNSUPP


def test_probe_without_the_extension_is_the_plain_devices():
    plain, offered = IommuRig().up(), TableRig().up(wanted=V1_2)
    assert plain.probe(EP).data == offered.probe(EP).data


def test_probe_describes_the_host_table_format():
    fmt = TableFormat(granules=frozenset({4096, 65536}), output_bits=44, asid_bits=16, pasid_bits=8,
                      hw_access=True, hw_dirty=True, btm=True)
    t = TableRig(fmt).up()
    props = dict(parse_properties(t.probe(EP).data[:-4]))
    assert props[1][0] == 1                                                       # RESV_MEM MSI stays first
    assert struct.unpack("<4xQ", props[2])[0] == (1 << 12) | (1 << 21) | (1 << 30) | (1 << 16) | (1 << 29)
    assert struct.unpack("<4xQQ", props[3]) == (0, (1 << 48) - 1)
    assert props[4][0] == 44 and props[5][0] == 8
    assert struct.unpack("<HBxQ", props[6]) == (1, 16, 0b1011)                      # HW_ACCESS|HW_DIRTY|HPD
    assert struct.unpack("<H2xQ", props[7]) == (2, PSTF_F_BTM)


def test_table_format_from_the_host_smmu():
    f = SmmuFeatures(btm=True, httu=1, asid16=False, ssidsize=5, gran16k=False, stall_model=1)
    fmt = TableFormat.from_smmu(f, output_bits=40, btm=True)
    assert (fmt.granules, fmt.asid_bits, fmt.pasid_bits, fmt.hw_access, fmt.hw_dirty, fmt.btm, fmt.output_bits) \
        == (frozenset({4096, 65536}), 8, 5, True, False, True, 40)
    assert not TableFormat.from_smmu(SmmuFeatures(btm=False), btm=True).btm      # no BTM without IDR0.BTM
    with pytest.raises(ValueError):
        TableFormat(output_bits=41)


# -- ATTACH_TABLE, Arm LPAE page table --------------------------------------------------------------------
def test_attach_pgt_arm_builds_the_cd_and_translates_through_the_guest_tables(t):
    t.pt.map(IOVA, t.data, 0x2000, PERM_R | PERM_W)
    assert t.attach_pgt() == S_OK
    call = t.backend.calls[-1]
    assert call[:3] == ("attach_table", 1, EP) and isinstance(call[3], PageTable)
    cd = cdmod.decode(call[3].cd_bytes())
    assert (cd.v, cd.aa64, cd.asid, cd.ttb0, cd.t0sz, cd.tg0, cd.epd1, cd.ips, cd.mair, cd.aset) == \
        (1, 1, ASID, t.pt.ttb, 16, 0, 1, 5, 0xFF, 1)                            # ASET=1: no BTM offered
    assert cdmod.validate(cd, TableFormat().features) is None
    assert t.dev.translate(EP, IOVA + 0x1234, write=True) == t.data + 0x1234
    t.pt.unmap(IOVA + 0x1000, 0x1000)                                              # the guest edits its table
    assert t.dev.translate(EP, IOVA + 0x1234).reason == 2
    assert t.faults()[-1] == (2, 0x101, EP, IOVA + 0x1234)
    ev = t.events("virtio_iommu_attach_table")[-1]
    assert (ev["domain"], ev["endpoint"], ev["format"], ev["status"]) == (1, EP, 1, "OK")


def test_btm_offer_makes_the_cd_share_the_asid_set():
    t = TableRig(TableFormat(btm=True)).up()
    assert t.attach_pgt() == S_OK
    assert t.backend.calls[-1][3].cd.aset == 0


def test_read_only_page_refuses_writes(t):
    t.pt.map(IOVA, t.data, 0x1000, PERM_R)
    assert t.attach_pgt() == S_OK
    assert t.dev.translate(EP, IOVA) == t.data
    assert t.dev.translate(EP, IOVA, write=True).reason == 2


OUTSIDE_RAM = 0x2000_0000


@pytest.mark.parametrize("change, fmt, status", [
    (dict(tcr=tcr(tg0=3)), None, S_INVAL),                          # TG0 0b11 reserved
    (dict(tcr=tcr(t0sz=12)), None, S_INVAL),                        # T0SZ below 16 (48-bit VA)
    (dict(tcr=tcr(t0sz=40)), None, S_INVAL),                        # T0SZ above 39
    (dict(tcr=tcr(ips=7)), None, S_INVAL),                          # IPS 0b111 reserved
    (dict(tcr=TCR | 1 << 6), None, S_INVAL),                        # RES0 bit
    (dict(tcr=TCR | 1 << 51), None, S_INVAL),                       # TBID0: not in the 2018 format
    (dict(tcr=tcr(**{"as": 0}), asid=0x142), None, S_INVAL),        # 8-bit CPU ASIDs cannot match 0x142
    (dict(ttbr0="asid"), None, S_INVAL),                            # ASID in TTBR0[63:48]
    (dict(ttbr0="misaligned"), None, S_INVAL),
    (dict(ttbr0=1 << 44), TableFormat(output_bits=40), S_INVAL),   # beyond the output size
    (dict(ttbr0=OUTSIDE_RAM), None, S_FAULT),                       # not guest memory
    (dict(reserved=b"\1" + bytes(27)), None, S_INVAL),
    (dict(tcr=tcr(tg0=2)), TableFormat(granules=frozenset({4096})), S_UNSUPP),     # 16K: host lacks it
    (dict(tcr=tcr(ha=1)), None, S_UNSUPP),                          # no HTTU
    (dict(tcr=tcr(ha=1, hd=1)), TableFormat(hw_access=True), S_UNSUPP),
    (dict(tcr=tcr(hpd0=1)), TableFormat(hpd=False), S_UNSUPP),
    (dict(), TableFormat(asid_bits=8), S_UNSUPP),                   # TCR.AS=1 but 8-bit ASIDs
    (dict(fmt=9), None, S_UNSUPP),                                  # unknown format
])
def test_attach_pgt_arm_validation(change, fmt, status):
    t = TableRig(fmt).up()
    if change.get("ttbr0") == "asid":
        change["ttbr0"] = t.pt.ttb | 5 << 48
    elif change.get("ttbr0") == "misaligned":
        change["ttbr0"] = t.pt.ttb + 0x20
    assert t.attach_pgt(**change) == status
    assert t.dev.domains == {} and not t.backend.calls
    assert t.events("virtio_iommu_attach_table")[-1]["why"]


def test_ha_and_hd_accepted_when_the_host_has_them():
    t = TableRig(TableFormat(hw_access=True, hw_dirty=True)).up()
    assert t.attach_pgt(tcr=tcr(ha=1, hd=1)) == S_OK
    cd = t.backend.calls[-1][3].cd
    assert (cd.ha, cd.hd) == (1, 1)


# -- ATTACH_TABLE, SMMUv3 PASID (CD) table ----------------------------------------------------------------
def _cd_table(t: TableRig, entries: int) -> int:
    table = t.alloc(64 * entries, 64)
    for ssid in range(entries):
        raw = cdmod.CD_LAYOUT.pack(T0SZ=16, TG0=0, EPD1=1, V=1, IPS=5, AA64=1, R=1, A=1, ASID=ASID + ssid,
                                   TTB0=t.pt.ttb)
        t.guest.bus.write_bytes(table + 64 * ssid, cdmod.CD_LAYOUT.to_bytes(raw))
    return table


def test_attach_pst_arm_translates_through_the_guest_cd_table(t):
    table = _cd_table(t, 4)
    t.pt.map(IOVA, t.data, 0x1000)
    assert t.status(attach_pst_arm(1, EP, table, s1cdmax=2, s1dss=1)) == S_OK
    pst = t.backend.calls[-1][3]
    assert isinstance(pst, PasidTable)
    assert (pst.ste.v, pst.ste.config, pst.ste.s1contextptr, pst.ste.s1cdmax, pst.ste.s1dss) == (1, 0b101, table, 2,
                                                                                                 1)
    assert t.dev.translate(EP, IOVA + 8, pasid=3) == t.data + 8
    assert t.dev.translate(EP, 0x1234) == 0x1234                   # no PASID: S1DSS=1 bypasses stage 1
    assert t.dev.translate(EP, IOVA, pasid=4).reason == 0          # SubstreamID beyond S1CDMax: UNKNOWN


@pytest.mark.parametrize("kw, fmt, status", [
    (dict(s1fmt=3), None, S_INVAL),
    (dict(s1dss=3), None, S_INVAL),
    (dict(s1cdmax=9), TableFormat(pasid_bits=8), S_RANGE),          # more PASIDs than PASID_SIZE said
    (dict(s1cdmax=8, s1fmt=1), TableFormat(cd2l=False), S_UNSUPP),
    (dict(ptr=8), None, S_INVAL),                                   # S1ContextPtr[5:0] must be 0
    (dict(ptr=OUTSIDE_RAM), None, S_FAULT),
    (dict(reserved=bytes(47) + b"\1"), None, S_INVAL),
])
def test_attach_pst_arm_validation(kw, fmt, status):
    t = TableRig(fmt).up()
    table = _cd_table(t, 1)
    ptr = kw.pop("ptr", 0)
    assert t.status(attach_pst_arm(1, EP, table + ptr if ptr < 64 else ptr, **kw)) == status
    assert t.dev.domains == {}


# -- table domains and MAP/UNMAP domains stay apart -------------------------------------------------------
def test_table_domain_refuses_map_and_unmap(t):
    assert t.attach_pgt() == S_OK
    assert t.status(map_(1, 0, 0xFFF, RAM_BASE)) == S_INVAL
    assert t.status(unmap(1, 0, 0xFFF)) == S_INVAL
    assert t.status(attach(1, EP2)) == S_INVAL                      # a plain ATTACH to a table domain


def test_map_domain_refuses_a_table(t):
    assert t.status(attach(2, EP2)) == S_OK
    assert t.attach_pgt(domain=2) == S_INVAL
    assert t.status(invalidate(2, INVAL_S_DOMAIN)) == S_INVAL
    assert t.dev.domains[2].table is None


def test_shared_table_domain_and_moves(t):
    assert t.attach_pgt(endpoint=EP) == S_OK and t.attach_pgt(endpoint=EP2) == S_OK
    assert t.dev.domains[1].endpoints == {EP, EP2}
    assert t.attach_pgt(endpoint=EP2) == S_OK                           # attached there with that table
    assert t.attach_pgt(endpoint=EP2, asid=ASID + 1) == S_UNSUPP        # a domain's table cannot change
    assert t.status(attach(3, EP2)) == S_OK                             # moves to a MAP domain
    assert t.dev.attached == {EP: 1, EP2: 3}
    assert t.attach_pgt(domain=1, endpoint=EP2, asid=ASID + 1) == S_UNSUPP   # another table in domain 1
    assert t.status(detach(1, EP)) == S_OK
    assert ("detach", 1, EP) in t.backend.calls and ("free", 1) in t.backend.calls


# -- INVALIDATE ---------------------------------------------------------------------------------------------
def test_invalidate_scopes_reach_the_backend(t):
    assert t.attach_pgt() == S_OK
    assert t.status(invalidate(1, INVAL_S_VA, INVAL_F_LEAF, asid=ASID, virt_start=IOVA, nr_pages=4, granule=12)) \
        == S_OK
    inv = t.backend.calls[-1][2]
    assert (inv.scope, inv.leaf, inv.asid, inv.virt_start, inv.nr_pages, inv.granule, inv.size) == \
        (INVAL_S_VA, True, ASID, IOVA, 4, 12, 0x4000)
    assert t.status(invalidate(1, INVAL_S_VA, asid=ASID, virt_start=IOVA, nr_pages=1, granule=21)) == S_OK
    assert t.status(invalidate(1, INVAL_S_PASID, asid=ASID)) == S_OK
    assert t.status(invalidate(1, INVAL_S_DOMAIN, asid=0x999, pasid=77)) == S_OK      # DOMAIN ignores the ids
    assert [c[2].scope for c in t.backend.calls if c[0] == "invalidate"] == [4, 4, 2, 1]
    ev = t.events("virtio_iommu_invalidate")[0]
    assert (ev["scope"], ev["flags"], ev["id"], ev["nr_pages"], ev["granule"], ev["status"]) == \
        (INVAL_S_VA, INVAL_F_LEAF, ASID, 4, 12, "OK")


@pytest.mark.parametrize("args, status", [
    (dict(domain=9, scope=INVAL_S_DOMAIN), S_NOENT),
    (dict(scope=INVAL_S_PASID | INVAL_S_VA), S_INVAL),                      # one scope at a time
    (dict(scope=8), S_INVAL),
    (dict(scope=INVAL_S_DOMAIN, flags=4), S_INVAL),                         # unknown flag
    (dict(scope=INVAL_S_DOMAIN, flags=INVAL_F_LEAF), S_INVAL),              # LEAF needs a VA range
    (dict(scope=INVAL_S_PASID, flags=INVAL_F_CONFIG, asid=ASID), S_INVAL),  # no CD table to reload
    (dict(scope=INVAL_S_PASID, asid=ASID + 1), S_INVAL),                    # not the domain's ASID
    (dict(scope=INVAL_S_PASID, asid=ASID, pasid=1), S_INVAL),               # one table: PASID 0 only
    (dict(scope=INVAL_S_VA, asid=ASID, virt_start=IOVA, nr_pages=1, granule=13), S_INVAL),
    (dict(scope=INVAL_S_VA, asid=ASID, virt_start=IOVA, nr_pages=0, granule=12), S_INVAL),
    (dict(scope=INVAL_S_VA, asid=ASID, virt_start=IOVA + 8, nr_pages=1, granule=12), S_RANGE),
    (dict(scope=INVAL_S_VA, asid=ASID, virt_start=2**64 - 0x1000, nr_pages=2, granule=12), S_RANGE),
    (dict(scope=INVAL_S_DOMAIN, reserved=b"\1" + bytes(18)), S_INVAL),
])
def test_invalidate_validation(t, args, status):
    assert t.attach_pgt() == S_OK
    domain = args.pop("domain", 1)
    assert t.status(invalidate(domain, **args)) == status
    assert not [c for c in t.backend.calls if c[0] == "invalidate"]


def test_invalidate_of_a_pasid_table_domain(t):
    table = _cd_table(t, 4)
    assert t.status(attach_pst_arm(1, EP, table, s1cdmax=2)) == S_OK
    assert t.status(invalidate(1, INVAL_S_PASID, INVAL_F_CONFIG, pasid=3, asid=0x1234)) == S_OK   # CFGI_CD
    assert t.status(invalidate(1, INVAL_S_DOMAIN, INVAL_F_CONFIG)) == S_OK                         # CFGI_CD_ALL
    assert t.status(invalidate(1, INVAL_S_PASID, pasid=4)) == S_RANGE
    assert t.status(invalidate(1, INVAL_S_VA, pasid=1, virt_start=IOVA, nr_pages=1, granule=16)) == S_OK
    assert [(c[2].scope, c[2].config, c[2].pasid) for c in t.backend.calls if c[0] == "invalidate"] == \
        [(INVAL_S_PASID, True, 3), (INVAL_S_DOMAIN, True, 0), (INVAL_S_VA, False, 1)]


def test_refused_invalidate_and_attach_table_give_the_backends_status():
    class No(IommuBackend):
        def attach_table(self, domain, endpoint, table):
            return IommuStatus.UNSUPP

    t = TableRig().up()
    t.dev.backend = No()
    assert t.attach_pgt() == S_UNSUPP and t.dev.domains == {}


def test_endpoint_formats_differ():
    eps = [Endpoint(EP, table_format=TableFormat(granules=frozenset({65536}))), Endpoint(EP2)]
    t = TableRig(endpoints=eps).up()
    assert t.attach_pgt(endpoint=EP) == S_UNSUPP                    # its SMMU has 64K pages only
    assert t.attach_pgt(endpoint=EP2) == S_OK


def test_phys_ranges_default_to_the_guest_ram():
    t = TableRig().up()
    assert t.dev.phys_ok(RAM_BASE, RAM_SIZE) and not t.dev.phys_ok(RAM_BASE + RAM_SIZE - 8, 16)
