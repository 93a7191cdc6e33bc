"""iommufd-shaped API (harness/host/iommufd.py): the nested flow in both orders of KVM_DEV_VFIO_FILE_ADD vs bind,
DMA through guest stage 1 (tables and CD at IPAs in the VM's RAM) + host stage 2, invalidations reaching the
physical SMMU with the vIOMMU's VMID, IOAS unmap invalidation, vEVENTQ, errnos, and the vSTE masks checked
against the Linux values."""
from __future__ import annotations

import errno

import pytest

from devmodel.dmatest import STATUS_DONE, STATUS_FAULT
from devmodel.smmuv3 import commands as C
from devmodel.smmuv3 import ste as S
from devmodel.smmuv3.fault import EventType
from harness.host.iommufd import (IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_DATA_ARM_SMMUV3, NESTING_ALLOWED,
                                  IommufdError)
from smmu_env import IOVA, RAM_IPA, Board, nested_setup, vste

SID, VSID = 0x30, 0x8


def test_nesting_allowed_masks_match_linux():
    # Linux arm-smmu-v3.h: STRTAB_STE_0_NESTING_ALLOWED = V | CFG | S1FMT | S1CTXPTR_MASK[51:6] | S1CDMAX[63:59];
    # STRTAB_STE_1_NESTING_ALLOWED = S1DSS[1:0] | S1CIR[3:2] | S1COR[5:4] | S1CSH[7:6] | S1STALLD[27] | EATS[29:28]
    assert NESTING_ALLOWED == (0xF80F_FFFF_FFFF_FFFF, 0x3800_00FF)


@pytest.mark.parametrize("policy,kw", [("shared", {}), ("restricted", dict(smmu_reserved=16)),
                                       ("split", dict(split=True))])
def test_full_flow_kvm_first_pins_vm_vmid_and_translates(policy, kw):
    b = Board(policy=policy, vmid_bits=8, **kw)
    g = b.guest("g")
    g.run_once(b)
    g.ipa.write64(RAM_IPA + 0x10_0000 + 0x18, 0xC0FFEE)
    dev, dev_id, s2, viommu, nested, q, t = nested_setup(b, g, SID, VSID)
    vmid = b.ictx.viommu_vmid(viommu)
    assert vmid == g.kvm_vm.vmid and b.kvm.vmids.is_pinned_vmid(vmid)
    ste = b.driver.read_ste(dev.master)
    assert ste.config == S.CONFIG_NESTED and ste.s2vmid == vmid
    assert b.dma_read(SID, IOVA + 0x18) == (STATUS_DONE, 0xC0FFEE, 0)
    # the pin survives a KVM rollover: the VM runs with the same VMID, the SMMU context stays valid
    b.kvm.force_rollover()
    assert g.run_once(b) == vmid
    assert b.dma_read(SID, IOVA + 0x18)[:2] == (STATUS_DONE, 0xC0FFEE)


@pytest.mark.parametrize("policy,kw", [("shared", {}), ("restricted", dict(smmu_reserved=16)),
                                       ("split", dict(split=True)), ("unpinned", {})])
def test_bind_before_kvm_file_add_fails_cleanly(policy, kw):
    b = Board(policy=policy, vmid_bits=8, **kw)
    g = b.guest("g")
    g.run_once(b)
    with pytest.raises(IommufdError) as e:
        nested_setup(b, g, SID, VSID, kvm_first=False)
    assert e.value.errno == errno.ENODEV
    assert "KVM_DEV_VFIO_FILE_ADD" in e.value.strerror and "too late" in e.value.strerror
    assert g.kvm_vm.vmid_ctx.pinned == 0                        # the VM's VMID was never pinned
    # the device is still usable at stage 2 only (the VMM may fall back to an emulated vSMMU)
    dev = next(iter(b.ictx.devices.values()))
    assert b.driver.read_ste(dev.master).config == S.CONFIG_S2
    assert b.ictx.objects and not any(o.kind == "viommu" for o in b.ictx.objects.values())


@pytest.mark.parametrize("kvm_first", [True, False])
def test_private_policy_needs_no_kvm_either_order(kvm_first):
    b = Board(policy="private")
    g = b.guest("g")
    g.ipa.write64(RAM_IPA + 0x10_0000, 0x5A5A)
    nested_setup(b, g, SID, VSID, kvm_first=kvm_first)
    assert b.dma_read(SID, IOVA) == (STATUS_DONE, 0x5A5A, 0)


def test_guest_invalidations_reach_smmu_with_vmid_rewritten():
    b = Board(policy="shared", vmid_bits=16)
    g = b.guest("g")
    g.run_once(b)
    dev, dev_id, s2, viommu, nested, q, t = nested_setup(b, g, SID, VSID, asid=5)
    vmid = b.ictx.viommu_vmid(viommu)
    g.ipa.write64(RAM_IPA + 0x10_0000, 0x1)
    g.ipa.write64(RAM_IPA + 0x20_0000, 0x2)
    assert b.dma_read(SID, IOVA)[1] == 0x1                      # cached in the IOTLB
    t.unmap(IOVA, 0x1000)
    t.map(IOVA, RAM_IPA + 0x20_0000, 0x1000)                    # the guest remaps without telling anyone
    assert b.dma_read(SID, IOVA)[1] == 0x1                      # stale, as on hardware
    guest_cmd = C.encode("TLBI_NH_VA", vmid=0, asid=5, addr=IOVA, leaf=1)     # guest thinks VMID is 0
    assert b.ictx.hwpt_invalidate(viommu, [guest_cmd]) == 1
    hw = [r for r in b.events("smmuv3_cmdq_opcode") if r["opcode"] == "TLBI_NH_VA"]
    assert hw, "the TLBI must reach the physical command queue"
    sent = [r for r in b.events("hostsmmu_cmd") if r["opcode"] == "TLBI_NH_VA"][-1]
    assert (sent["vmid"], sent["asid"], sent["addr"]) == (vmid, 5, IOVA)
    assert b.dma_read(SID, IOVA)[1] == 0x2
    # TLBI_NSNH_ALL -> TLBI_NH_ALL of the vIOMMU's VMID; CFGI_CD/CFGI_CD_ALL: vSID -> SID
    n = b.ictx.hwpt_invalidate(viommu, [C.encode("TLBI_NSNH_ALL"), C.encode("CFGI_CD", sid=VSID, ssid=0, leaf=1),
                                        C.encode("CFGI_CD_ALL", sid=VSID)])
    assert n == 3
    nh_all = [r for r in b.events("hostsmmu_cmd") if r["opcode"] == "TLBI_NH_ALL"]
    assert nh_all[-1]["vmid"] == vmid
    assert not [r for r in b.events("hostsmmu_cmd") if r["opcode"] == "TLBI_NSNH_ALL"][1:]   # only the reset one
    cfgi = b.events("smmuv3_cmdq_cfgi_cd")[-2:]
    assert [(r["sid"], r["all"]) for r in cfgi] == [(SID, 0), (SID, 1)]


def test_ioas_unmap_invalidates_every_vmid_of_the_parent():
    b = Board(policy="shared", vmid_bits=16)
    g = b.guest("g")
    g.run_once(b)
    dev, dev_id, s2, viommu, nested, q, t = nested_setup(b, g, SID, VSID)
    assert b.dma_read(SID, IOVA)[0] == STATUS_DONE
    vmid = b.ictx.viommu_vmid(viommu)
    parent_vmid = b.ictx.hwpt_domain(s2).vmid
    # unmap guest RAM from the host stage 2 (e.g. the VMM drops the region): must not stay reachable
    ioas_id = next(i for i, o in b.ictx.objects.items() if o.kind == "ioas")
    before = len(b.events("hostsmmu_cmd"))
    assert b.ictx.ioas_unmap(ioas_id, RAM_IPA, g.size) == g.size
    sent = {(r["opcode"], r["vmid"]) for r in b.events("hostsmmu_cmd")[before:]}
    for v in (parent_vmid, vmid):                               # every VMID tagging the parent's tables
        assert ("TLBI_S12_VMALL", v) in sent or {("TLBI_S2_IPA", v), ("TLBI_NH_ALL", v)} <= sent
    assert parent_vmid != vmid
    st, _, ft = b.dma_read(SID, IOVA)
    assert st == STATUS_FAULT
    # the guest's own stage-1 tables are gone from stage 2 (CLASS=TT): reported to it as an external abort
    ev = [v.event for v in q.read()]
    assert [(e.name, e.sid, e.s2) for e in ev] == [("F_WALK_EABT", VSID, 0)]


def test_ioas_unmap_small_range_uses_s2_ipa_and_nh_all():
    b = Board(policy="private")
    g = b.guest("g")
    ic = b.ictx
    dev = ic.open_device(SID)
    dev_id = ic.bind(dev)
    ioas = ic.ioas_alloc()
    ic.ioas_map(ioas, 0x8000, g.pa, iova=RAM_IPA)
    ic.ioas_map(ioas, 0x10_0000, g.pa + 0x10_0000, iova=RAM_IPA + 0x10_0000)
    s2 = ic.hwpt_alloc(dev_id, ioas, flags=IOMMU_HWPT_ALLOC_NEST_PARENT)
    ic.device_attach(dev_id, s2)
    v = ic.viommu_alloc(dev_id, s2)
    vmid, pvmid = ic.viommu_vmid(v), ic.hwpt_domain(s2).vmid
    before = len(b.events("hostsmmu_cmd"))
    ic.ioas_unmap(ioas, RAM_IPA, 0x8000)
    sent = [(r["opcode"], r["vmid"], r["addr"]) for r in b.events("hostsmmu_cmd")[before:]]
    assert sent == [("TLBI_S2_IPA", pvmid, RAM_IPA), ("TLBI_NH_ALL", pvmid, 0),
                    ("TLBI_S2_IPA", vmid, RAM_IPA), ("TLBI_NH_ALL", vmid, 0)]


def test_vevent_carries_vsid_and_lost_events_header():
    b = Board(policy="private")
    g = b.guest("g")
    nested_setup(b, g, SID, VSID, depth=2)
    q = next(o for o in b.ictx.objects.values() if o.kind == "veventq")
    for i in range(4):                                          # guest S1 has no mapping there
        assert b.dma_read(SID, 0x1000 * (i + 1))[0] == STATUS_FAULT
    got = q.read()
    assert [v.lost for v in got] == [False, False, True]
    ev = got[0].event
    assert ev.sid == VSID and ev.type == EventType.F_TRANSLATION and ev.s2 == 0 and ev.input_addr == 0x1000
    assert [v.sequence for v in got] == [0, 1, 4] and q.lost == 2
    assert b.driver.guest_events == 4 and b.driver.host_events == []


def test_get_hw_info_reads_the_id_registers():
    b = Board()
    dev = b.ictx.open_device(SID)
    info = b.ictx.get_hw_info(b.ictx.bind(dev))
    assert info.idr == tuple(b.smmu.read(4 * i, 4) for i in range(6))
    assert info.iidr == b.smmu.read(0x18, 4) and info.aidr == b.smmu.read(0x1C, 4)


def test_errnos():
    b = Board(policy="private")
    g = b.guest("g")
    ic = b.ictx
    dev = ic.open_device(SID)
    dev_id = ic.bind(dev)
    ioas = ic.ioas_alloc()

    def err(fn, *a, **kw):
        with pytest.raises(IommufdError) as e:
            fn(*a, **kw)
        return e.value.errno

    assert err(ic.bind, dev) == errno.EBUSY
    assert err(ic.ioas_map, ioas, 0x1000, b.mem.base, iova=0) == errno.EFAULT         # host SMMU memory
    assert err(ic.ioas_map, ioas, 0x1000, 0x0905_0000, iova=0) == errno.EFAULT        # MMIO
    assert err(ic.ioas_map, ioas, 0x800, g.pa, iova=0) == errno.EINVAL
    ic.ioas_map(ioas, g.size, g.pa, iova=RAM_IPA)
    assert err(ic.ioas_map, ioas, 0x1000, g.pa, iova=RAM_IPA + 0x1000) == errno.EEXIST
    assert err(ic.ioas_unmap, ioas, 0, 0x1000) == errno.ENOENT
    assert err(ic.ioas_unmap, ioas, RAM_IPA, 0x1000) == errno.ENOENT                  # would split
    s1 = ic.hwpt_alloc(dev_id, ioas)
    assert err(ic.viommu_alloc, dev_id, s1) == errno.EINVAL                            # not a nest parent
    s2 = ic.hwpt_alloc(dev_id, ioas, flags=IOMMU_HWPT_ALLOC_NEST_PARENT)
    assert err(ic.hwpt_alloc, dev_id, ioas, flags=0x80) == errno.EOPNOTSUPP
    assert err(ic.viommu_alloc, dev_id, s2, type=7) == errno.EOPNOTSUPP
    v = ic.viommu_alloc(dev_id, s2)
    assert err(ic.hwpt_alloc, dev_id, v, data_type=1, data=(1, 0)) == errno.EINVAL
    assert err(ic.hwpt_alloc, dev_id, s2, data_type=IOMMU_HWPT_DATA_ARM_SMMUV3, data=(1, 0)) == errno.EOPNOTSUPP
    n = ic.hwpt_alloc(dev_id, v, data_type=IOMMU_HWPT_DATA_ARM_SMMUV3, data=vste(RAM_IPA))
    assert err(ic.device_attach, dev_id, n) == errno.ENOENT                            # no vDEVICE yet
    ic.vdevice_alloc(v, dev_id, VSID)
    assert err(ic.vdevice_alloc, v, dev_id, VSID + 1) == errno.EEXIST
    ic.device_attach(dev_id, n)
    assert err(ic.hwpt_invalidate, n, [C.encode("TLBI_NSNH_ALL")]) == errno.EOPNOTSUPP
    assert err(ic.hwpt_invalidate, v, [C.encode("TLBI_NSNH_ALL")], data_type=0) == errno.EINVAL
    assert err(ic.veventq_alloc, v, depth=0) == errno.EINVAL
    ic.veventq_alloc(v)
    assert err(ic.veventq_alloc, v) == errno.EEXIST
    assert err(ic.destroy, v) == errno.EBUSY
    assert err(ic.destroy, s2) == errno.EBUSY
    assert err(ic.destroy, 999) == errno.ENOENT
    assert err(ic.viommu_alloc, 999, s2) == errno.ENOENT


def test_pin_limit_is_enospc():
    # 8-bit VMIDs, 240 indices kept for the SMMU, 2 CPUs: max_pinned = 256 - 240 - 2 - 2 = 12
    b = Board(policy="restricted", vmid_bits=8, smmu_reserved=240)
    assert b.kvm.vmids.max_pinned == 12
    ic = b.ictx
    g = b.guest("g")
    got = []
    for i in range(13):
        vm = b.kvm.create_vm(f"vm{i}")
        dev = ic.open_device(0x100 + i)
        ic.kvm_dev_vfio_file_add(vm, dev)
        dev_id = ic.bind(dev)
        ioas = ic.ioas_alloc()
        ic.ioas_map(ioas, 0x1000, g.pa, iova=RAM_IPA)
        s2 = ic.hwpt_alloc(dev_id, ioas, flags=IOMMU_HWPT_ALLOC_NEST_PARENT)
        try:
            got.append(ic.viommu_alloc(dev_id, s2))
        except IommufdError as e:
            assert i == 12 and e.errno == errno.ENOSPC and "pin limit" in e.strerror
    assert len(got) == 12 and len(b.kvm.vmids.pinned_vmids()) == 12


def test_destroy_viommu_releases_pinned_vmid():
    b = Board(policy="shared", vmid_bits=16)
    g = b.guest("g")
    g.run_once(b)
    dev, dev_id, s2, viommu, nested, q, t = nested_setup(b, g, SID, VSID)
    vmid = b.ictx.viommu_vmid(viommu)
    ic = b.ictx
    ic.device_attach(dev_id, s2)
    for kind in ("hwpt_nested", "vdevice", "veventq"):
        ic.destroy(next(i for i, o in ic.objects.items() if o.kind == kind))
    ic.destroy(viommu)
    assert [r["vmid"] for r in b.events("hostsmmu_cmd") if r["opcode"] == "TLBI_S12_VMALL"][-1] == vmid
    assert not b.kvm.vmids.is_pinned_vmid(vmid)
    assert b.dma_read(SID, RAM_IPA)[0] == STATUS_DONE           # stage 2 only again


# -- the software-managed MSI window (IOMMU_OPTION_SW_MSI_START/SIZE, iommu_dma_prepare_msi) ------------------
def test_sw_msi_window_defaults_to_the_drivers_reserved_region_and_refuses_ioas_maps():
    from harness.host.smmu_driver import MSI_IOVA_BASE, MSI_IOVA_LENGTH
    env = _msi_env()
    ictx, ioas = env["ictx"], env["ioas"]
    assert ictx.sw_msi == (MSI_IOVA_BASE, MSI_IOVA_LENGTH) == (0x0800_0000, 0x10_0000)
    with pytest.raises(IommufdError) as e:
        ictx.ioas_map(ioas, length=0x1000, pa=env["ram"], iova=MSI_IOVA_BASE + 0x8000)
    assert e.value.errno == errno.EADDRINUSE
    with pytest.raises(IommufdError) as e:
        ictx.set_sw_msi(0x0800_0800, 0x1000)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(IommufdError) as e:
        ictx.set_sw_msi(env["iova"], 0x1000)                      # over an existing IOAS mapping
    assert e.value.errno == errno.EADDRINUSE


def test_prepare_msi_maps_the_doorbell_page_in_the_stage2_parent_at_the_window():
    from harness.host.smmu_driver import DOORBELL_BASE, GITS_TRANSLATER
    env = _msi_env()
    ictx, dev_id, smmu = env["ictx"], env["dev_id"], env["smmu"]
    with pytest.raises(IommufdError) as e:
        ictx.prepare_msi(env["unattached"], DOORBELL_BASE + GITS_TRANSLATER)
    assert e.value.errno == errno.EINVAL
    ictx.set_sw_msi(0x0300_0000, 0x2000)
    iova = ictx.prepare_msi(dev_id, DOORBELL_BASE + GITS_TRANSLATER)
    assert iova == 0x0300_0040 and ictx.prepare_msi(dev_id, DOORBELL_BASE + GITS_TRANSLATER) == iova
    assert ictx.prepare_msi(dev_id, 0x0A00_0040) == 0x0300_1040      # a second doorbell page: the next page
    with pytest.raises(IommufdError) as e:
        ictx.prepare_msi(dev_id, 0x0B00_0040)
    assert e.value.errno == errno.ENOSPC
    with pytest.raises(IommufdError) as e:
        ictx.set_sw_msi(0x0400_0000, 0x1000)                      # doorbells already mapped
    assert e.value.errno == errno.EBUSY
    res = smmu.translate(env["sid"], None, iova, write=True)
    assert res.pa == DOORBELL_BASE + GITS_TRANSLATER
    assert smmu.translate(env["sid"], None, iova, write=False).type.name == "F_PERMISSION"   # write-only


def _msi_env():
    from devmodel.bus import Bus
    from devmodel.smmuv3.device import SMMUv3
    from harness.host.iommufd import Iommufd
    from harness.host.smmu_driver import HostMemory, SmmuDriver
    bus = Bus()
    ram = 0x4000_0000
    bus.add_ram(ram, 0x10_0000)
    smmu = SMMUv3(bus)
    bus.add_device(0x0905_0000, 0x2_0000, smmu)
    drv = SmmuDriver(bus, 0x0905_0000, HostMemory(bus))
    ictx = Iommufd(drv)
    dev = ictx.open_device(0x20)
    dev_id = ictx.bind(dev)
    other = ictx.bind(ictx.open_device(0x21))
    ioas = ictx.ioas_alloc()
    iova = ictx.ioas_map(ioas, length=0x1000, pa=ram, iova=0x1000_0000)
    s2 = ictx.hwpt_alloc(dev_id, ioas, flags=IOMMU_HWPT_ALLOC_NEST_PARENT)
    ictx.device_attach(dev_id, s2)
    return dict(smmu=smmu, ictx=ictx, dev_id=dev_id, unattached=other, ioas=ioas, iova=iova, ram=ram,
                sid=0x20)
