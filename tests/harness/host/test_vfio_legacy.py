"""The nested-stage RFC's VFIO names (harness/host/vfio.py, which names the series) over the iommufd code:
set_pasid_table, cache_invalidate, bind_guest_msi, fault reporting."""
from __future__ import annotations

import errno

import pytest

from devmodel.dmatest import STATUS_DONE, STATUS_FAULT
from devmodel.smmuv3 import ste as S
from harness.host.iommufd import IommufdError
from harness.host.smmu_driver import DOORBELL_BASE, GITS_TRANSLATER
from harness.host.vfio import (IOMMU_CACHE_INV_TYPE_DEV_IOTLB, IOMMU_CACHE_INV_TYPE_IOTLB,
                               IOMMU_CACHE_INV_TYPE_PASID, IOMMU_INV_ADDR_FLAGS_ARCHID, IOMMU_INV_ADDR_FLAGS_LEAF,
                               IOMMU_INV_GRANU_ADDR, IOMMU_INV_GRANU_DOMAIN, IOMMU_PASID_CONFIG_ABORT,
                               CacheInvalidateInfo, PasidTableConfig, VfioNested)
from smmu_env import RAM_IPA, Board

SID = 0x50
IOVA = 0x9000_0000


@pytest.fixture
def setup():
    b = Board(policy="shared", vmid_bits=16)
    g = b.guest("g")
    g.run_once(b)
    dev = b.ictx.open_device(SID)
    v = VfioNested(b.ictx, dev, vm_kvm=g.kvm_vm, vsid=0x3)
    v.map_dma(RAM_IPA, g.pa, g.size)
    b.dmadev(SID)
    t = g.s1_tables()
    t.map(IOVA, RAM_IPA + 0x40_0000, 0x2000)
    g.ipa.write64(RAM_IPA + 0x40_0000, 0x1111)
    g.ipa.write64(RAM_IPA + 0x50_0000, 0x2222)
    cd = g.write_cd(t, asid=4)
    return b, g, v, t, cd


def test_set_pasid_table_translates_nested_and_pins_vmid(setup):
    b, g, v, t, cd = setup
    assert b.dma_read(SID, RAM_IPA + 0x40_0000)[:2] == (STATUS_DONE, 0x1111)      # stage 2 only at first
    v.set_pasid_table(PasidTableConfig(base_ptr=cd))
    ste = b.driver.read_ste(v.dev.master)
    assert ste.config == S.CONFIG_NESTED and ste.s2vmid == g.kvm_vm.vmid
    assert b.kvm.vmids.is_pinned_vmid(ste.s2vmid)
    assert b.dma_read(SID, IOVA)[:2] == (STATUS_DONE, 0x1111)
    v.set_pasid_table(PasidTableConfig(base_ptr=cd, config=IOMMU_PASID_CONFIG_ABORT))
    assert b.dma_read(SID, IOVA)[0] == STATUS_FAULT
    v.detach_pasid_table()
    assert b.driver.read_ste(v.dev.master).config == S.CONFIG_S2


def test_cache_invalidate_addr_and_pasid_cache(setup):
    b, g, v, t, cd = setup
    v.set_pasid_table(PasidTableConfig(base_ptr=cd))
    assert b.dma_read(SID, IOVA)[1] == 0x1111
    t.unmap(IOVA, 0x1000)
    t.map(IOVA, RAM_IPA + 0x50_0000, 0x1000)
    assert b.dma_read(SID, IOVA)[1] == 0x1111                    # stale until invalidated
    n = v.cache_invalidate(CacheInvalidateInfo(IOMMU_CACHE_INV_TYPE_IOTLB, IOMMU_INV_GRANU_ADDR, archid=4,
                                               flags=IOMMU_INV_ADDR_FLAGS_ARCHID | IOMMU_INV_ADDR_FLAGS_LEAF,
                                               addr=IOVA, nb_granules=2))
    assert n == 2
    va = [r for r in b.events("hostsmmu_cmd") if r["opcode"] == "TLBI_NH_VA"]
    assert [(r["vmid"], r["asid"], r["addr"]) for r in va] == [(g.kvm_vm.vmid, 4, IOVA),
                                                                (g.kvm_vm.vmid, 4, IOVA + 0x1000)]
    assert b.dma_read(SID, IOVA)[1] == 0x2222
    v.cache_invalidate(CacheInvalidateInfo(IOMMU_CACHE_INV_TYPE_PASID | IOMMU_CACHE_INV_TYPE_IOTLB,
                                           IOMMU_INV_GRANU_DOMAIN))
    assert b.events("smmuv3_cmdq_cfgi_cd")[-1]["sid"] == SID    # vSID 3 -> physical SID
    assert [r["vmid"] for r in b.events("hostsmmu_cmd") if r["opcode"] == "TLBI_NH_ALL"][-1] == g.kvm_vm.vmid
    with pytest.raises(IommufdError) as e:
        v.cache_invalidate(CacheInvalidateInfo(IOMMU_CACHE_INV_TYPE_DEV_IOTLB, IOMMU_INV_GRANU_DOMAIN))
    assert e.value.errno == errno.EOPNOTSUPP                     # the SMMU has no ATS


def test_bind_guest_msi_reaches_the_host_doorbell(setup):
    b, g, v, t, cd = setup
    giova, gpa = 0x8_0000_0000, 0x0800_0000                       # guest vITS doorbell IPA (outside its RAM)
    t.map(giova, gpa, 0x1000)
    v.set_pasid_table(PasidTableConfig(base_ptr=cd))
    st, ft = b.dma_write(SID, giova + 0x40, 0x2A)
    assert st == STATUS_FAULT                                     # not bound yet: stage 2 refuses
    v.bind_guest_msi(giova, gpa)
    n = len(b.doorbell.writes)
    assert b.dma_write(SID, giova + 0x40, 0x2A)[0] == STATUS_DONE
    assert b.doorbell.writes[n:] == [(GITS_TRANSLATER, 0x2A)]
    assert DOORBELL_BASE + GITS_TRANSLATER == b.smmu.translate(SID, None, giova + 0x40, write=True).pa
    v.unbind_guest_msi(giova)
    assert b.dma_write(SID, giova + 0x40, 0x2A)[0] == STATUS_FAULT


def test_fault_reporting_region_and_eventfd(setup):
    b, g, v, t, cd = setup
    v.set_pasid_table(PasidTableConfig(base_ptr=cd))
    kicks = []
    v.fault_eventfd = kicks.append
    assert b.dma_read(SID, IOVA + 0x10_0000)[0] == STATUS_FAULT  # no guest stage-1 mapping
    recs = v.read_faults()
    assert [(r.reason, r.sid, r.addr, r.read) for r in recs] == [("F_TRANSLATION", 0x3, IOVA + 0x10_0000, True)]
    assert kicks == [1] and v.fault_region == recs
    assert v.read_faults() == [] and kicks == [1]
