"""Host SMMUv3 driver (harness/host/smmu_driver.py): bring-up from reset through MMIO only, DMA through bypass,
stage-1, stage-2 and nested domains (both stream-table formats, both CMD_SYNC completion modes), unmap
invalidation, the safe STE update sequence and VMID changes, command errors, event draining and overflow,
the `restricted/move` live VMID move."""
from __future__ import annotations

import errno

import pytest

from devmodel.dmatest import STATUS_DONE, STATUS_FAULT
from devmodel.smmuv3 import commands as C
from devmodel.smmuv3 import ste as S
from devmodel.smmuv3.fault import EventType
from devmodel.smmuv3.regs import SmmuFeatures
from harness.host.smmu_driver import SmmuDriverError
from smmu_env import RAM_IPA, Board, vste

SID = 0x21


def cmds_of(board, name):
    return [r for r in board.events("hostsmmu_cmd") if r["opcode"] == name]


def _board_with_device(**kw):
    """A board, its driver, a guest's RAM to DMA into, and the DMA test device probed at SID."""
    b = Board(**kw)
    g = b.guest("g")
    m = b.driver.probe_device(SID)
    b.dmadev(SID)
    return b, b.driver, g, m


@pytest.mark.parametrize("btm,dvm,ptm,active", [(False, False, 0, False), (True, False, 1, False),
                                                (True, True, 0, True)])
def test_bringup_from_reset(btm, dvm, ptm, active):
    b = Board(SmmuFeatures(btm=btm), dvm_capable=dvm)
    smmu, drv = b.smmu, b.driver
    cr0ack = smmu.read(0x24, 4)
    assert cr0ack & 0b1101 == 0b1101                          # SMMUEN | EVTQEN | CMDQEN
    assert smmu.read(0x44, 4) >> 20 & 1                        # GBPA.ABORT (disable_bypass)
    assert (smmu.read(0x2C, 4) >> 2) & 1 == ptm == drv.ptm     # CR2.PTM from IDR0.BTM and the board flag
    assert smmu.btm_active is active
    assert drv.caps.vmid_bits == 16 and drv.caps.st_2lvl and drv.caps.btm is btm
    assert smmu.read(0x88, 4) >> 16 & 3 == 1                   # 2-level stream table
    assert smmu.read(0x54, 4) & 0b101 == 0b101                 # IRQ_CTRLACK: EVTQ + GERROR enabled
    # the reset invalidations went through the queue and completed
    assert smmu.stats["cmd_CFGI_STE_RANGE"] == 1 and smmu.stats["cmd_TLBI_NSNH_ALL"] == 1
    assert smmu.read(0x98, 4) == smmu.read(0x9C, 4)            # CMDQ_PROD == CMDQ_CONS


def test_unattached_sid_aborts_without_event():
    b = Board()
    b.driver.probe_device(SID)
    b.dmadev(SID)
    st, _, ftype = b.dma_read(SID, 0x1000)
    assert st == STATUS_FAULT and ftype == EventType.F_TRANS_FORBIDDEN
    assert b.driver.drain_events() == [] and b.smmu.events == []


@pytest.mark.parametrize("strtab,sync", [("linear", "poll"), ("2lvl", "msi"), ("2lvl", "poll"),
                                         ("linear", "msi")])
def test_dma_bypass_s1_s2(strtab, sync):
    b = Board(strtab=strtab, sync=sync)
    drv = b.driver
    g = b.guest("g")                                    # just RAM to DMA into
    m = drv.probe_device(SID)
    b.dmadev(SID)
    # bypass: IOVA == PA
    drv.attach(m, drv.alloc_identity())
    assert b.dma_write(SID, g.pa + 0x100, 0x1111) == (STATUS_DONE, 0)
    assert g.ram.buf[0x100:0x108] == (0x1111).to_bytes(8, "little")
    # stage 1 (host-owned CD + tables)
    s1 = drv.alloc_s1("s1")
    drv.map(s1, 0x20_0000, g.pa + 0x1000, 0x2000)
    drv.attach(m, s1)
    assert drv.read_ste(m).config == S.CONFIG_S1
    assert b.dma_write(SID, 0x20_1008, 0x2222) == (STATUS_DONE, 0)
    assert g.ram.buf[0x2008:0x2010] == (0x2222).to_bytes(8, "little")
    # stage 2 (host tables, VMID from the policy)
    s2 = drv.alloc_s2("s2")
    drv.map(s2, RAM_IPA, g.pa, g.size)
    drv.attach(m, s2)
    ste = drv.read_ste(m)
    assert ste.config == S.CONFIG_S2 and ste.s2vmid == s2.vmid != 0
    assert b.dma_read(SID, RAM_IPA + 0x2008) == (STATUS_DONE, 0x2222, 0)
    # every sync completed in the chosen mode
    syncs = b.events("hostsmmu_sync")
    assert syncs and all(r["ok"] == 1 and r["mode"] == sync for r in syncs)
    if strtab == "2lvl":
        assert b.smmu.stats["config_miss"] and b.events("smmuv3_find_ste_2lvl")


def test_dma_nested_domain_driver_level():
    """A guest-owned CD and stage-1 tables at IPAs in the guest's RAM, over a host stage 2."""
    b, drv, g, m = _board_with_device()
    parent = drv.alloc_s2("parent", nest_parent=True)
    drv.map(parent, RAM_IPA, g.pa, g.size)
    t = g.s1_tables()
    t.map(0x7000_0000, RAM_IPA + 0x3000, 0x1000)
    g.ipa.write64(RAM_IPA + 0x3010, 0xFEED)
    cd_ipa = g.write_cd(t, asid=3)
    s0, s1 = vste(cd_ipa)
    nested = drv.alloc_nested(parent, s0, s1, vmid=0x42)
    drv.attach(m, nested)
    ste = drv.read_ste(m)
    assert ste.config == S.CONFIG_NESTED and ste.s2vmid == 0x42 and ste.s1contextptr == cd_ipa and ste.mev
    assert b.dma_read(SID, 0x7000_0010) == (STATUS_DONE, 0xFEED, 0)


def test_unmap_invalidates_cached_translation_s1_and_s2():
    b, drv, g, m = _board_with_device()
    s2 = drv.alloc_s2("s2")
    drv.map(s2, RAM_IPA, g.pa, 0x10_0000)
    drv.attach(m, s2)
    assert b.dma_read(SID, RAM_IPA + 0x5000)[0] == STATUS_DONE
    assert b.smmu.translate(SID, None, RAM_IPA + 0x5000).cached           # in the IOTLB now
    drv.unmap(s2, RAM_IPA + 0x5000, 0x1000)
    ipa_cmds = cmds_of(b, "TLBI_S2_IPA")
    assert ipa_cmds[-1]["vmid"] == s2.vmid and ipa_cmds[-1]["addr"] == RAM_IPA + 0x5000
    st, _, ft = b.dma_read(SID, RAM_IPA + 0x5000)
    assert st == STATUS_FAULT and ft == EventType.F_TRANSLATION
    assert b.dma_read(SID, RAM_IPA + 0x6000)[0] == STATUS_DONE           # neighbours untouched
    # stage 1: TLBI_NH_VA with the domain's ASID
    s1 = drv.alloc_s1("s1")
    drv.map(s1, 0x4_0000, g.pa, 0x4_0000)
    drv.attach(m, s1)
    assert b.dma_read(SID, 0x4_1000)[0] == STATUS_DONE
    drv.unmap(s1, 0x4_0000, 0x4_0000)                                     # 64 pages: one range command
    va = cmds_of(b, "TLBI_NH_VA")
    assert len(va) == 1 and va[0]["asid"] == s1.asid
    assert b.dma_read(SID, 0x4_1000)[0] == STATUS_FAULT


def test_ste_update_sequence_and_old_vmid_tlbi():
    b, drv, g, m = _board_with_device()
    a, c = drv.alloc_s2("a"), drv.alloc_s2("c")
    for d in (a, c):
        drv.map(d, RAM_IPA, g.pa, 0x10_0000)
    drv.attach(m, a)                    # abort -> S2: qwords 2,3 unused by abort, then qword 0: hitless
    drv.attach(m, c)                    # S2 -> S2 of another domain: VMID (qword 2) and S2TTB (3): break
    s1 = drv.alloc_s1("s1")
    drv.attach(m, s1)                   # S2 -> S1: qwords 0 and 2/3 in use: break-before-make
    hows = [(r["config"], r["how"]) for r in b.events("hostsmmu_ste") if r["sid"] == SID]
    assert hows == [(S.CONFIG_S2, "hitless"), (S.CONFIG_S2, "break"), (S.CONFIG_S1, "break")]
    old = [r["vmid"] for r in cmds_of(b, "TLBI_S12_VMALL")]
    assert old == [a.vmid, c.vmid]      # after each VMID change, the old VMID's entries go
    assert drv.stats["ste_breaks"] == 2
    # hitless: unused qwords + qword 0 (2 CFGI_STE); each break: V=0, the rest, qword 0 (3 each)
    assert len([r for r in cmds_of(b, "CFGI_STE") if r["sid"] == SID]) == 2 + 3 + 3


def test_free_domain_busy_then_releases_vmid():
    b = Board()
    drv = b.driver
    m = drv.probe_device(SID)
    s2 = drv.alloc_s2("s2")
    drv.attach(m, s2)
    vmid = s2.vmid
    with pytest.raises(SmmuDriverError) as e:
        drv.free_domain(s2)
    assert e.value.errno == errno.EBUSY
    drv.detach(m)
    drv.free_domain(s2)
    assert cmds_of(b, "TLBI_S12_VMALL")[-1]["vmid"] == vmid
    assert drv.vmid_policy.grants == [] and drv.alloc_s2("again") is not None


@pytest.mark.parametrize("sync", ["poll", "msi"])
def test_command_error_is_skipped_and_recorded(sync):
    b = Board(sync=sync)
    drv = b.driver
    bad = bytes([0x7F]) + bytes(15)                          # unknown opcode: CERROR_ILL
    assert drv.submit([C.encode("CFGI_STE", sid=1), bad, C.encode("TLBI_NH_ALL", vmid=3)]) is True
    assert len(drv.cmdq_errors) == 1
    err = drv.cmdq_errors[0]
    assert err.cerror == C.CERROR_ILL and err.opcode == 0x7F
    assert b.smmu.stats["cmd_TLBI_NH_ALL"] == 1              # the queue went on after the skip
    assert b.smmu.gerror_active() == 0
    assert drv.submit([C.encode("CFGI_STE", sid=2)]) is True and len(drv.cmdq_errors) == 1


def test_events_routed_to_host_log_by_msi():
    b, drv, g, m = _board_with_device()
    s2 = drv.alloc_s2("s2")
    drv.map(s2, RAM_IPA, g.pa, 0x1000)
    drv.attach(m, s2)
    assert b.dma_read(SID, RAM_IPA + 0x8000)[0] == STATUS_FAULT
    assert drv.stats["irqs"] >= 1 and b.doorbell.writes             # MSI to the doorbell, drained at once
    assert [(e.name, e.sid, e.s2) for e in drv.host_events] == [("F_TRANSLATION", SID, 1)]
    assert b.events("hostsmmu_event")[-1]["routed"] == "host"


def test_evtq_overflow_is_acknowledged_and_recovers():
    b = Board(SmmuFeatures(msi=False), msi_doorbell=False, connect_irq=False, evtq_log2=2)
    drv = b.driver
    m = drv.probe_device(SID)
    b.dmadev(SID)
    drv.attach(m, drv.alloc_s2("empty"))
    for i in range(7):                                       # 4-entry queue: 3 events lost
        assert b.dma_read(SID, 0x1000 * (i + 1))[0] == STATUS_FAULT
    assert b.wired.count("eventq") == 4                      # the wired line fired for each written record
    got = drv.drain_events()
    assert len(got) == 4 and drv.events_lost == 1
    assert [e.input_addr for e in got] == [0x1000, 0x2000, 0x3000, 0x4000]
    assert b.events("hostsmmu_evtq_overflow")
    assert (b.smmu.read(0x100AC, 4) >> 31) == (b.smmu.read(0x100A8, 4) >> 31)   # OVACKFLG == OVFLG
    assert b.dma_read(SID, 0x9000)[0] == STATUS_FAULT        # after the ack new events are recorded again
    again = drv.drain_events()
    assert [e.input_addr for e in again] == [0x9000] and drv.events_lost == 1


def test_restricted_move_rewrites_live_ste():
    """`restricted/move`: a new pin equal to a live private VMID moves the stage-2 domain's STE to a new VMID
    (CFGI_STE + sync, then TLBI_S12_VMALL of the old one) before the pin is handed out."""
    b = Board(policy="restricted", vmid_bits=8, policy_kw=dict(mode="move"))
    drv = b.driver
    g = b.guest("g")
    m = drv.probe_device(SID)
    b.dmadev(SID)
    s2 = drv.alloc_s2("private")
    drv.map(s2, RAM_IPA, g.pa, 0x10_0000)
    drv.attach(m, s2)
    old = s2.vmid
    assert g.run_once(b) == old                               # the VM's KVM VMID equals the private one
    assert b.dma_read(SID, RAM_IPA)[0] == STATUS_DONE
    pinned = drv.vmid_policy.nested_vmid(g.kvm_vm)
    assert pinned == old and s2.vmid != old
    assert drv.read_ste(m).s2vmid == s2.vmid
    assert b.events("hostsmmu_ste")[-1]["how"] == "hitless"     # only qword 2 (S2VMID) changed
    assert [r["vmid"] for r in cmds_of(b, "TLBI_S12_VMALL")][-1] == old
    assert b.events("hostsmmu_vmid")[-1]["what"] == "move"
    assert b.dma_read(SID, RAM_IPA)[0] == STATUS_DONE and drv.vmid_policy.aliases() == []


def test_probe_refuses_sid_outside_table_and_policy_wider_than_smmu():
    b = Board(strtab="linear")
    with pytest.raises(SmmuDriverError) as e:
        b.driver.probe_device(1 << 8)
    assert e.value.errno == errno.ERANGE
    with pytest.raises(SmmuDriverError) as e:
        Board(SmmuFeatures(vmid16=False), policy="private", vmid_bits=16)
    assert e.value.errno == errno.EINVAL and "VMID16" in e.value.strerror
