"""Hostile guests at the iommufd level: a guest may hurt only itself. Each test asserts
the access is refused and reported (an errno, an event on the guest's vEVENTQ, or the host's log), that no
other VM's memory and no host memory changed, and that the host never raises anything but IommufdError."""
from __future__ import annotations

import errno
import random

import pytest

from devmodel.dmatest import STATUS_DONE, STATUS_FAULT
from devmodel.smmuv3 import cd as CD
from devmodel.smmuv3 import commands as C
from devmodel.smmuv3 import ste as S
from devmodel.smmuv3.fault import EventType
from harness.host.iommufd import IOMMU_HWPT_DATA_ARM_SMMUV3, IommufdError
from smmu_env import IOVA, RAM_IPA, Board, nested_setup, vste

SID_A, SID_B, VSID_A, VSID_B = 0x40, 0x41, 0x1, 0x1       # both guests call their device vSID 1


@pytest.fixture
def two():
    """Guests A and B, each with a nested-assigned device; returns (board, A, B, A setup, B setup)."""
    b = Board(policy="shared", vmid_bits=16)
    ga, gb = b.guest("A"), b.guest("B")
    ga.run_once(b, 0)
    gb.run_once(b, 1)
    for g, tag in ((ga, 0xA), (gb, 0xB)):
        g.ipa.write64(RAM_IPA + 0x10_0000, tag)
    sa = nested_setup(b, ga, SID_A, VSID_A, asid=9)
    sb = nested_setup(b, gb, SID_B, VSID_B, asid=9)         # same ASID on purpose
    return b, ga, gb, sa, sb


def snapshot(b, *guests):
    return bytes(b.mem.ram.buf), [bytes(g.ram.buf) for g in guests]


@pytest.mark.parametrize("field,value", [("strw", 0b10), ("mev", 1), ("shcfg", 1), ("s1pie", 1),
                                         ("privcfg", 2), ("nscfg", 1), ("s2hwu", 3), ("dcp", 1)])
def test_vste_fields_outside_allowed_set_are_eio(two, field, value):
    b, ga, gb, sa, sb = two
    dev, dev_id, s2, viommu, nested, q, t = sa
    before = b.driver.read_ste(dev.master)
    s0, s1 = vste(RAM_IPA, **{field: value})
    with pytest.raises(IommufdError) as e:
        b.ictx.hwpt_alloc(dev_id, viommu, data_type=IOMMU_HWPT_DATA_ARM_SMMUV3, data=(s0, s1))
    assert e.value.errno == errno.EIO and field.upper() in e.value.strerror
    assert b.driver.read_ste(dev.master) == before                     # nothing reached the SMMU
    assert b.dma_read(SID_A, IOVA)[:2] == (STATUS_DONE, 0xA)


@pytest.mark.parametrize("words,why", [
    (vste(RAM_IPA, config=S.CONFIG_S2), "Config"), (vste(RAM_IPA, config=S.CONFIG_NESTED), "Config"),
    (vste(RAM_IPA, eats=0b10), "EATS"), ((vste(RAM_IPA)[0] | 1 << 55, 0), "RES0"),
    ((vste(RAM_IPA)[0], 1 << 63), "IMPL1")])
def test_vste_bad_config_eats_res0_are_eio(two, words, why):
    b, ga, gb, sa, sb = two
    with pytest.raises(IommufdError) as e:
        b.ictx.hwpt_alloc(sa[1], sa[3], data_type=IOMMU_HWPT_DATA_ARM_SMMUV3, data=words)
    assert e.value.errno == errno.EIO
    assert why in e.value.strerror or why.upper() in e.value.strerror


@pytest.mark.parametrize("where", ["host-tables", "other-vm"])
def test_cd_pointer_outside_guest_ram_faults_and_reports(two, where):
    """S1ContextPtr at an IPA that is a host PA: of the driver's own memory, or of VM B's RAM, where a CD that
    would map everything has been planted. The CD fetch goes through A's stage 2, which has no such IPA."""
    b, ga, gb, sa, sb = two
    dev, dev_id, s2, viommu, nested, q, t = sa
    target = b.mem.base + b.mem.size - 0x10_000 if where == "host-tables" else gb.pa + 0x30_0000
    # plant a CD + identity-ish table at that *PA* (what a confused SMMU would use)
    evil = gb.s1_tables()
    evil.map(IOVA, gb.pa, 0x1000)
    b.bus.write_bytes(target, CD.encode(CD.Cd(v=1, aa64=1, t0sz=16, tg0=0, epd1=1, tg1=2, ips=5, asid=9, r=1,
                                               a=1, ttb0=evil.ttb)))
    planted = bytes(b.bus.read_bytes(target, 0x1000))
    _, (b_before,) = snapshot(b, gb)
    n = b.ictx.hwpt_alloc(dev_id, viommu, data_type=IOMMU_HWPT_DATA_ARM_SMMUV3, data=vste(target))
    b.ictx.device_attach(dev_id, n)                              # accepted, as upstream: stage 2 protects
    st, _, ftype = b.dma_read(SID_A, IOVA)
    assert st == STATUS_FAULT
    assert b.dma_write(SID_A, IOVA, 0xBAD)[0] == STATUS_FAULT
    evs = [v.event for v in q.read()]
    assert evs and all(e.type == EventType.F_CD_FETCH and e.sid == VSID_A for e in evs)
    assert evs[0].fetch_addr == target & ~0xFFF                  # the guest's IPA, nothing about the host
    assert bytes(gb.ram.buf) == b_before and b.bus.read_bytes(target, 0x1000) == planted
    # the SMMU was given the IPA and translated it through A's stage 2; it never fetched the planted CD
    assert {r["addr"] for r in b.events("smmuv3_get_cd")[-2:]} == {target}
    assert not [r for r in b.events("smmuv3_translate_success") if r["sid"] == SID_A and r["iova"] == IOVA
                and r["translated"] == gb.pa]
    assert b.dma_read(SID_B, IOVA)[:2] == (STATUS_DONE, 0xB)     # B unaffected
    assert b.driver.cmdq_errors == []


def test_s1_output_outside_guest_ram_is_a_host_stage2_fault(two):
    """A guest stage-1 leaf pointing at another VM's PA: stage 2 has no such IPA: the DMA faults (S2, CLASS=IN,
    logged by the host, as upstream) and B's memory is untouched."""
    b, ga, gb, sa, sb = two
    dev, dev_id, s2, viommu, nested, q, t = sa
    t.map(IOVA + 0x10_0000, gb.pa, 0x1000)                       # the guest's own tables, hostile content
    _, (b_before,) = snapshot(b, gb)
    assert b.dma_write(SID_A, IOVA + 0x10_0000, 0xBAD) == (STATUS_FAULT, EventType.F_TRANSLATION)
    assert bytes(gb.ram.buf) == b_before
    assert q.read() == []
    assert [(e.name, e.sid, e.s2) for e in b.driver.host_events][-1] == ("F_TRANSLATION", SID_A, 1)


def test_s1_table_outside_guest_ram_is_reported_as_walk_abort(two):
    b, ga, gb, sa, sb = two
    dev, dev_id, s2, viommu, nested, q, t = sa
    ref = t.walk(IOVA)                                            # level-3 PTE; point its table one level up
    root = t.ttb
    l0 = ga.ipa.read64(root + 8 * ((IOVA >> 39) & 0x1FF))
    ga.ipa.write64(root + 8 * ((IOVA >> 39) & 0x1FF), (l0 & ~((1 << 48) - 1 ^ 0xFFF)) | gb.pa)
    b.ictx.hwpt_invalidate(viommu, [C.encode("TLBI_NH_ALL")])
    st, _, ft = b.dma_read(SID_A, IOVA)
    assert st == STATUS_FAULT and ref.level == 3
    evs = [v.event for v in q.read()]
    assert [(e.name, e.sid, e.fetch_addr & ~0xFFF) for e in evs] == [("F_WALK_EABT", VSID_A, gb.pa)]


def test_commands_naming_another_vms_vmid_are_rewritten(two):
    b, ga, gb, sa, sb = two
    va, vb = b.ictx.viommu_vmid(sa[3]), b.ictx.viommu_vmid(sb[3])
    assert va != vb
    assert b.dma_read(SID_A, IOVA)[1] == 0xA and b.dma_read(SID_B, IOVA)[1] == 0xB     # both cached now
    evil = [C.encode("TLBI_NH_ALL", vmid=vb), C.encode("TLBI_NH_ASID", vmid=vb, asid=9),
            C.encode("TLBI_NH_VA", vmid=vb, asid=9, addr=IOVA, leaf=1), C.encode("TLBI_NH_VAA", vmid=vb, addr=IOVA)]
    assert b.ictx.hwpt_invalidate(sa[3], evil) == 4
    sent = [r for r in b.events("hostsmmu_cmd") if r["opcode"].startswith("TLBI_NH")][-4:]
    assert [r["vmid"] for r in sent] == [va] * 4                  # rewritten: it only hit itself
    assert b.smmu.translate(SID_B, None, IOVA).cached             # B's entry survived
    assert not b.smmu.translate(SID_A, None, IOVA).cached         # A's own entry is gone
    # stage-2 and global commands are not a guest's to give
    for name, kw in (("TLBI_S12_VMALL", dict(vmid=vb)), ("TLBI_S2_IPA", dict(vmid=vb, addr=RAM_IPA)),
                     ("CFGI_STE", dict(sid=SID_B)), ("CFGI_STE_RANGE", dict(span=31)), ("TLBI_EL2_ALL", {}),
                     ("CMD_SYNC", {}), ("PREFETCH_CONFIG", dict(sid=VSID_A))):
        with pytest.raises(IommufdError) as e:
            b.ictx.hwpt_invalidate(sa[3], [C.encode("TLBI_NH_ALL"), C.encode(name, **kw)])
        assert e.value.errno == errno.EIO and e.value.entry_num == 1 and name in e.value.strerror
    assert b.smmu.translate(SID_B, None, IOVA).cached


def test_vsid_not_owned_is_eio_and_nothing_issued(two):
    b, ga, gb, sa, sb = two
    before = len(b.events("hostsmmu_cmd"))
    for name, kw in (("CFGI_CD", dict(sid=0x77, ssid=0)), ("CFGI_CD_ALL", dict(sid=SID_B)),
                     ("ATC_INV", dict(sid=SID_A))):           # a physical SID is not a vSID either
        with pytest.raises(IommufdError) as e:
            b.ictx.hwpt_invalidate(sa[3], [C.encode("CFGI_CD_ALL", sid=VSID_A), C.encode(name, **kw)])
        assert e.value.errno == errno.EIO and e.value.entry_num == 1 and "vSID" in e.value.strerror
    cfgi = [r for r in b.events("smmuv3_cmdq_cfgi_cd")]
    assert {r["sid"] for r in cfgi} == {SID_A}                    # only A's own device was touched
    assert len(b.events("hostsmmu_cmd")) - before == 3            # the 3 valid first entries, nothing else


def test_illegal_bits_in_forwarded_command_are_contained(two):
    """CFGI_CD with SSec=1 passes the conversion (as upstream) and is ILLEGAL on the Non-secure queue: the host
    driver skips it (CMD_SYNC in its slot), records it, and both guests keep working."""
    b, ga, gb, sa, sb = two
    raw = int.from_bytes(C.encode("CFGI_CD", sid=VSID_A, ssid=0), "little") | 1 << 10
    assert b.ictx.hwpt_invalidate(sa[3], [raw.to_bytes(16, "little")]) == 1
    assert [e.cerror for e in b.driver.cmdq_errors] == [C.CERROR_ILL]
    assert b.smmu.gerror_active() == 0
    assert b.ictx.hwpt_invalidate(sa[3], [C.encode("TLBI_NSNH_ALL")]) == 1
    assert b.dma_read(SID_A, IOVA)[1] == 0xA and b.dma_read(SID_B, IOVA)[1] == 0xB


def test_fuzzed_guest_input_only_raises_iommufd_errors(two):
    b, ga, gb, sa, sb = two
    rng = random.Random(7)
    _, (b_before,) = snapshot(b, gb)
    outcomes = {"ok": 0, "eio": 0}
    for i in range(200):
        words = (rng.getrandbits(64), rng.getrandbits(64))
        if i % 2:
            words = (words[0] & 0xF80F_FFFF_FFFF_FFFF, words[1] & 0x3800_00FF)       # often valid vSTEs
        try:
            n = b.ictx.hwpt_alloc(sa[1], sa[3], data_type=IOMMU_HWPT_DATA_ARM_SMMUV3, data=words)
            b.ictx.device_attach(sa[1], n)
            b.dma_read(SID_A, rng.getrandbits(48))
            outcomes["ok"] += 1
        except IommufdError as e:
            assert e.errno in (errno.EIO, errno.ENOENT)
            outcomes["eio"] += 1
        cmd = rng.getrandbits(128).to_bytes(16, "little")
        if i % 3 == 0:
            cmd = bytes([rng.choice([0x10, 0x11, 0x12, 0x13, 0x30, 0x05, 0x06, 0x40])]) + cmd[1:]
        try:
            b.ictx.hwpt_invalidate(sa[3], [cmd])
        except IommufdError as e:
            assert e.errno == errno.EIO
    q = sa[5]
    q.read()                                                      # whatever A caused is A's
    assert outcomes["ok"] > 10 and outcomes["eio"] > 10
    assert bytes(gb.ram.buf) == b_before
    assert b.smmu.gerror_active() == 0
    b.ictx.device_attach(sb[1], sb[4])
    assert b.dma_read(SID_B, IOVA)[:2] == (STATUS_DONE, 0xB)
    assert all(e.sid != SID_B for e in b.driver.host_events)
