"""The device's layouts (devmodel/virtio/iommu/layouts.py, pgtable.py) against the C declarations of the
spec (virtio v1.2 5.13.4, 5.13.6) and of the 2018 page-table RFC, packed independently with `struct`; the
TCR layout against the Arm ARM's TCR_EL1 bit positions (DDI 0487) as Linux names them."""
from __future__ import annotations

import struct

import pytest

from devmodel.virtio.iommu import layouts as L
from devmodel.virtio.iommu import pgtable as P

from . import iommu_driver as D


def test_request_sizes_are_the_spec_structs_without_their_tail():
    # sizeof(struct virtio_iommu_req_*): attach 24, detach 24, map 40, unmap 32, probe 72 + properties + 4
    assert [lay.nbytes + L.TAIL_SIZE for lay in (L.ATTACH_LAYOUT, L.DETACH_LAYOUT, L.MAP_LAYOUT, L.UNMAP_LAYOUT)] \
        == [24, 24, 40, 32]
    assert L.PROBE_LAYOUT.nbytes == 72 and L.FAULT_LAYOUT.nbytes == 24 and L.CONFIG_SIZE == 40
    assert P.PGT_ARM_LAYOUT.nbytes + 4 == P.PST_ARM_LAYOUT.nbytes + 4 == P.ATTACH_TABLE_LAYOUT.nbytes + 4 == 80
    assert P.INVALIDATE_LAYOUT.nbytes + 4 == 64


@pytest.mark.parametrize("raw, record, layout, want", [
    (D.attach(0x11, 0x22, 1, b"\x01\x02\x03\x04")[:20], L.AttachReq, L.ATTACH_LAYOUT,
     dict(type=1, domain=0x11, endpoint=0x22, flags=1, reserved=0x04030201)),
    (D.detach(0x11, 0x22)[:20], L.DetachReq, L.DETACH_LAYOUT, dict(type=2, domain=0x11, endpoint=0x22)),
    (D.map_(7, 0x1000, 0x1FFF, 0xA000, 5), L.MapReq, L.MAP_LAYOUT,
     dict(type=3, domain=7, virt_start=0x1000, virt_end=0x1FFF, phys_start=0xA000, flags=5)),
    (D.unmap(7, 0x1000, 0x1FFF), L.UnmapReq, L.UNMAP_LAYOUT, dict(type=4, domain=7, virt_start=0x1000,
                                                                 virt_end=0x1FFF)),
    (D.probe(0x33), L.ProbeReq, L.PROBE_LAYOUT, dict(type=5, endpoint=0x33)),
    (D.attach_pgt_arm(3, 8, 0x42, 0x1234_5678_9A, 0x4010_0000, 0x4020_0000, 0xFF44), P.PgtArmReq, P.PGT_ARM_LAYOUT,
     dict(type=6, domain=3, endpoint=8, format=1, asid=0x42, tcr=0x1234_5678_9A, ttbr0=0x4010_0000,
          ttbr1=0x4020_0000, mair=0xFF44)),
    (D.attach_pst_arm(3, 8, 0x4030_0040, 5, 1, 2), P.PstArmReq, P.PST_ARM_LAYOUT,
     dict(type=6, domain=3, endpoint=8, format=2, s1fmt=1, s1dss=2, s1contextptr=0x4030_0040, s1cdmax=5)),
    (D.invalidate(3, 4, 2, 9, 0x42, 0x7000, 3, 12), P.InvalidateReq, P.INVALIDATE_LAYOUT,
     dict(type=7, scope=4, flags=2, domain=3, pasid=9, id=0x42, virt_start=0x7000, nr_pages=3, granule=12)),
])
def test_struct_packed_requests_decode_field_by_field(raw, record, layout, want):
    rec = L.decode(record, layout, raw[:layout.nbytes])
    for k, v in want.items():
        assert getattr(rec, k) == v, k


def test_config_offsets():
    off = {f.name: (f.offset, f.size) for f in L.CONFIG_FIELDS}
    assert off == {"page_size_mask": (0, 8), "input_start": (8, 8), "input_end": (16, 8), "domain_start": (24, 4),
                   "domain_end": (28, 4), "probe_size": (32, 4), "bypass": (36, 1)}
    assert [f.name for f in L.CONFIG_FIELDS if f.writable] == ["bypass"]


def test_resv_mem_property_and_fault_record_bytes():
    assert L.resv_mem_property(1, 0x800_0000, 0x80F_FFFF) == struct.pack("<HHB3xQQ", 1, 20, 1, 0x800_0000,
                                                                         0x80F_FFFF)
    rec = L.FAULT_LAYOUT.to_bytes(L.FAULT_LAYOUT.pack(reason=2, flags=0x103, endpoint=8, address=0xDEAD_B000))
    assert rec == struct.pack("<B3xIIIQ", 2, 0x103, 8, 0, 0xDEAD_B000)
    assert L.decode(L.FaultRecord, L.FAULT_LAYOUT, rec) == L.FaultRecord(reason=2, flags=0x103, endpoint=8,
                                                                          address=0xDEAD_B000)


def test_extension_probe_properties_bytes():
    fmt = P.TableFormat(granules=frozenset({4096}), output_bits=40, asid_bits=16, pasid_bits=5, hw_access=True,
                        hpd=True, btm=True)
    want = (struct.pack("<HH4xQ", 2, 12, (1 << 12) | (1 << 21) | (1 << 30))
            + struct.pack("<HH4xQQ", 3, 20, 0, (1 << 48) - 1)
            + struct.pack("<HHB3x", 4, 4, 40) + struct.pack("<HHB3x", 5, 4, 5)
            + struct.pack("<HHHBxQ", 6, 12, 1, 16, 0b1001) + struct.pack("<HHH2xQ", 7, 12, 2, 0b100))
    assert fmt.properties() == want
    assert all(len(p) % 8 == 0 for p in (want[:16], want[16:40], want[40:48]))   # 8-byte aligned lengths


@pytest.mark.parametrize("name, lsb, width", [
    ("T0SZ", 0, 6), ("EPD0", 7, 1), ("IRGN0", 8, 2), ("ORGN0", 10, 2), ("SH0", 12, 2), ("TG0", 14, 2),
    ("T1SZ", 16, 6), ("A1", 22, 1), ("EPD1", 23, 1), ("TG1", 30, 2), ("IPS", 32, 3), ("AS", 36, 1),
    ("TBI0", 37, 1), ("TBI1", 38, 1), ("HA", 39, 1), ("HD", 40, 1), ("HPD0", 41, 1), ("HPD1", 42, 1),
    ("NFD0", 53, 1), ("NFD1", 54, 1)])
def test_tcr_fields_at_the_arm_arm_positions(name, lsb, width):
    # Linux arch/arm64/include/asm/pgtable-hwdef.h: TCR_T0SZ_OFFSET 0, TCR_EPD0_SHIFT 7, TCR_IRGN0_SHIFT 8,
    # TCR_ORGN0_SHIFT 10, TCR_SH0_SHIFT 12, TCR_TG0_SHIFT 14, TCR_T1SZ_OFFSET 16, TCR_A1 BIT(22),
    # TCR_EPD1_SHIFT 23, TCR_TG1_SHIFT 30, TCR_IPS_SHIFT 32, TCR_ASID16 BIT(36), TCR_TBI0 BIT(37),
    # TCR_HA BIT(39), TCR_HD BIT(40), TCR_HPD0 BIT(41), TCR_HPD1 BIT(42), TCR_NFD0 BIT(53), TCR_NFD1 BIT(54)
    f = P.TCR_LAYOUT.by_name[name.lower()]
    assert (f.lsb, f.width) == (lsb, width)
