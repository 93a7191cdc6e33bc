"""Hostile guests at the vSMMU level: two VMs with nested SMMUs on one host; vm0 writes
STEs, CDs, commands and page tables no driver should, vm1 (the victim) has live translations. Each test checks
that the access is refused and reported to the guest (C_BAD_STE / F_CD_FETCH / F_WALK_EABT events in its EVTQ,
or CMDQ_CONS.ERR = CERROR_ILL), that no DMA of vm0's device left vm0's RAM, that the victim's translations
and memory are intact, and that the host never raised (vSMMU `internal_errors`)."""
from __future__ import annotations

import errno
import random

import pytest

from devmodel.smmuv3 import commands as C
from devmodel.smmuv3 import ste as S
from devmodel.smmuv3.fault import EventType
from vsmmu_env import PyGuest, confined, two_vm_board

IOVA = 0x1000_0000
SENTINEL = 0x5EC2E7_5EC2E7


@pytest.fixture
def board():
    m, sink, (nv0, g0), (nv1, g1) = two_vm_board()
    for g in (g0, g1):
        g.init()
    # the victim: a live stage-1 translation IOVA -> its page, cached in the physical IOTLB with its VMID
    vpage = g1.page()
    g1.write64(vpage, SENTINEL)
    g1.setup_s1(nv1.vsid, 7, {IOVA: vpage})
    assert g1.dma_read(IOVA)[:2] == (1, SENTINEL)
    return m, sink, nv0, g0, nv1, g1, vpage


def victim_ok(sink, nv1, g1, vpage) -> None:
    """The victim's entry is still cached (an IOTLB hit, no walk) and its memory is untouched."""
    n = len(sink.records)
    assert g1.dma_read(IOVA)[:2] == (1, SENTINEL)
    assert g1.read64(vpage) == SENTINEL
    hits = [r for r in sink.records[n:] if r.event == "smmu_iotlb_lookup_hit" and r["sid"] == nv1.psid]
    misses = [r for r in sink.records[n:] if r.event == "smmu_iotlb_lookup_miss" and r["sid"] == nv1.psid]
    assert hits and not misses


def clean(sink, nv0, nv1) -> None:
    assert nv0.vsmmu.internal_errors == [] and nv1.vsmmu.internal_errors == []
    assert confined(sink, nv0.psid, nv0.vm) == []
    assert confined(sink, nv1.psid, nv1.vm) == []


# -- STEs ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [
    {"strw": 0b10},            # EL2 StreamWorld: would make the device's entries hypervisor ones
    {"nscfg": 0b10},           # Secure/Non-secure override
    {"privcfg": 0b11},         # force privileged
    {"shcfg": 0b01, "mtcfg": 1, "memattr": 0xF},
    {"s2fwb": 1},
    {"mev": 1},
    {"dcp": 1},
])
def test_ste_fields_outside_the_allowed_set_are_refused(board, extra):
    m, sink, nv0, g0, nv1, g1, vpage = board
    mine = g0.page()
    b = g0.s1()
    b.map(IOVA, mine, 4096)
    cd = g0.write_cd(b, 3)
    assert g0.install(nv0.vsid, g0.s1_ste(cd, **extra)) == 0        # CFGI_STE itself is a legal command
    what, vsid, err, reason = nv0.vsmmu.refusals[-1]
    assert (what, vsid, err) == ("ste", nv0.vsid, errno.EIO)
    assert any(k.upper() in reason for k in extra), reason            # the host names the field
    ev = g0.events()
    assert [(e.type, e.sid) for e in ev] == [(EventType.C_BAD_STE, nv0.vsid)]
    # the device is blocked (abort STE on the host, no translation), not half-configured
    assert nv0.host.driver.read_ste(nv0.dev.master).config == S.CONFIG_ABORT
    assert g0.dma_read(IOVA)[0] == 2
    victim_ok(sink, nv1, g1, vpage)
    clean(sink, nv0, nv1)


def test_qemu_style_masking_strips_the_fields_instead(board):
    m, sink, nv0, g0, nv1, g1, vpage = board
    nv0.vsmmu.mask_ste = True
    mine = g0.page()
    g0.write64(mine, 0xAB)
    b = g0.s1()
    b.map(IOVA, mine, 4096)
    cd = g0.write_cd(b, 3)
    assert g0.install(nv0.vsid, g0.s1_ste(cd, strw=0b10, nscfg=0b10, privcfg=0b11)) == 0
    host = nv0.host.driver.read_ste(nv0.dev.master)
    assert host.config == S.CONFIG_NESTED and (host.strw, host.nscfg, host.privcfg) == (0, 0, 0)
    assert g0.dma_read(IOVA)[:2] == (1, 0xAB)
    assert g0.events() == []
    victim_ok(sink, nv1, g1, vpage)
    clean(sink, nv0, nv1)


@pytest.mark.parametrize("config", [S.CONFIG_S2, S.CONFIG_NESTED])
def test_guest_stage2_ste_pointing_at_host_tables_is_refused(board, config):
    """A guest STE with its own stage 2 whose S2TTB is the victim's host stage-2 root and S2VMID the victim's."""
    m, sink, nv0, g0, nv1, g1, vpage = board
    victim_s2 = nv1.host.driver.read_ste(nv1.dev.master)
    ste = S.Ste(v=1, config=config, s1contextptr=g0.write_cd(g0.s1(), 3), s2vmid=nv1.vmid, s2t0sz=16,
                s2sl0=2, s2tg=0, s2ps=5, s2aa64=1, s2ttb=victim_s2.s2ttb)
    assert g0.install(nv0.vsid, ste) == 0
    assert [(e.type, e.sid) for e in g0.events()] == [(EventType.C_BAD_STE, nv0.vsid)]
    assert nv0.vsmmu.refusals[-1][:2] == ("ste", nv0.vsid)
    host = nv0.host.driver.read_ste(nv0.dev.master)
    assert host.config == S.CONFIG_ABORT and host.s2ttb != victim_s2.s2ttb
    victim_ok(sink, nv1, g1, vpage)
    clean(sink, nv0, nv1)


def test_words_2_to_7_never_reach_the_host(board):
    """A stage-1 STE carrying stage-2 fields in words 2-3: the uAPI takes words 0-1 only, so the host STE's
    stage 2 is the VM's own (IOAS) with the vIOMMU's VMID."""
    m, sink, nv0, g0, nv1, g1, vpage = board
    mine = g0.page()
    g0.write64(mine, 0xCD)
    b = g0.s1()
    b.map(IOVA, mine, 4096)
    raw = bytearray(S.encode(g0.s1_ste(g0.write_cd(b, 3))))
    victim_s2 = nv1.host.driver.read_ste(nv1.dev.master)
    raw[16:32] = S.encode(victim_s2)[16:32]                            # the victim's S2VMID/S2TTB words
    assert g0.install(nv0.vsid, bytes(raw)) == 0
    host = nv0.host.driver.read_ste(nv0.dev.master)
    assert (host.config, host.s2vmid) == (S.CONFIG_NESTED, nv0.vmid)
    assert host.s2ttb != victim_s2.s2ttb
    assert g0.dma_read(IOVA)[:2] == (1, 0xCD)
    victim_ok(sink, nv1, g1, vpage)
    clean(sink, nv0, nv1)


# -- context and table pointers ------------------------------------------------------------------------------------
def _outside(nv0, nv1) -> list[int]:
    host = nv0.host
    return [
        nv0.vm.ram_ipa + nv0.vm.ram.size + 0x1000,       # just past the guest's RAM
        nv1.vm.ram_pa,                                    # the victim's RAM, by host PA
        host.mem.base,                                    # the host driver's tables, by host PA
        0x0905_0000,                                      # the vSMMU's own MMIO page (not RAM)
    ]


@pytest.mark.parametrize("which", range(4))
def test_s1_context_pointer_outside_guest_ram(board, which):
    m, sink, nv0, g0, nv1, g1, vpage = board
    bad = _outside(nv0, nv1)[which]
    assert g0.install(nv0.vsid, g0.s1_ste(bad)) == 0                  # an IPA: the host cannot know yet
    assert g0.dma_read(IOVA)[0] == 2                                   # the CD fetch fails at stage 2
    ev = g0.events()
    assert [(e.type, e.sid) for e in ev] == [(EventType.F_CD_FETCH, nv0.vsid)]
    assert ev[0].fetch_addr == bad
    victim_ok(sink, nv1, g1, vpage)
    clean(sink, nv0, nv1)


@pytest.mark.parametrize("which", range(4))
def test_s1_table_pointer_outside_guest_ram(board, which):
    m, sink, nv0, g0, nv1, g1, vpage = board
    bad = _outside(nv0, nv1)[which] & ~0xFFF
    b = g0.s1()
    cd = g0.write_cd(None, 3, t0sz=b.tsz, ttb0=bad)
    assert g0.install(nv0.vsid, g0.s1_ste(cd)) == 0
    assert g0.dma_write(IOVA, 0xBAD)[0] == 2
    ev = g0.events()
    assert [(e.type, e.sid) for e in ev] == [(EventType.F_WALK_EABT, nv0.vsid)]
    victim_ok(sink, nv1, g1, vpage)
    clean(sink, nv0, nv1)


def test_s1_leaf_pointing_at_another_vms_memory(board):
    """Stage 1 maps IOVA to the victim's host PA (as an IPA): stage 2 has no such IPA; the write faults."""
    m, sink, nv0, g0, nv1, g1, vpage = board
    victim_pa = nv1.vm.ram_pa + (vpage - nv1.vm.ram_ipa)
    b = g0.s1()
    b.map(IOVA, victim_pa, 4096)
    assert g0.install(nv0.vsid, g0.s1_ste(g0.write_cd(b, 3))) == 0
    st, ftype = g0.dma_write(IOVA, 0xBAD)
    assert (st, ftype) == (2, EventType.F_TRANSLATION)
    victim_ok(sink, nv1, g1, vpage)
    clean(sink, nv0, nv1)


# -- commands ------------------------------------------------------------------------------------------------------
def test_tlbi_naming_another_vms_vmid_is_rewritten(board):
    m, sink, nv0, g0, nv1, g1, vpage = board
    g0.setup_s1(nv0.vsid, 3, {IOVA: g0.page()})
    n = len(sink.records)
    for name, kw in (("TLBI_NH_ALL", {}), ("TLBI_NH_ASID", {"asid": 7}),
                     ("TLBI_NH_VA", {"asid": 7, "addr": IOVA, "leaf": 1}), ("TLBI_NH_VAA", {"addr": IOVA})):
        assert g0.run(name, vmid=nv1.vmid, **kw) == 0                  # accepted ...
    assert g0.run("TLBI_NSNH_ALL") == 0
    host = [r for r in sink.records[n:] if r.event == "hostsmmu_cmd" and r["opcode"].startswith("TLBI")]
    assert len(host) == 5 and {r["vmid"] for r in host} == {nv0.vmid}  # ... with vm0's VMID
    assert {r["opcode"] for r in host} == {"TLBI_NH_ALL", "TLBI_NH_ASID", "TLBI_NH_VA", "TLBI_NH_VAA"}
    victim_ok(sink, nv1, g1, vpage)                                    # so nothing of vm1's went
    clean(sink, nv0, nv1)


@pytest.mark.parametrize("name,kw", [
    ("TLBI_S12_VMALL", {}), ("TLBI_S2_IPA", {"addr": 0x4000_0000, "leaf": 1}), ("TLBI_EL2_ALL", {}),
    ("TLBI_EL2_VA", {"addr": IOVA}), ("ATC_INV", {"sid": 0x10}), ("PRI_RESP", {"sid": 0x10}),
    ("RESUME", {"sid": 0x10}),
])
def test_commands_the_vsmmu_does_not_offer_are_illegal(board, name, kw):
    m, sink, nv0, g0, nv1, g1, vpage = board
    if "vmid" in C.LAYOUTS[name].by_name:
        kw = {**kw, "vmid": nv1.vmid}
    n = len(sink.records)
    assert g0.run(name, **kw) == C.CERROR_ILL
    assert not [r for r in sink.records[n:] if r.event == "hostsmmu_cmd"]      # nothing reached the host
    victim_ok(sink, nv1, g1, vpage)
    clean(sink, nv0, nv1)


@pytest.mark.parametrize("name", ["CFGI_CD", "CFGI_CD_ALL"])
def test_vsid_not_owned_is_refused(board, name):
    m, sink, nv0, g0, nv1, g1, vpage = board
    for vsid in (nv1.psid, nv0.psid, 0x11, 0xFFFF):                    # physical SIDs are not vSIDs either
        n = len(sink.records)
        assert g0.run(name, sid=vsid) == C.CERROR_ILL
        assert nv0.vsmmu.refusals[-1][:3] == ("command", vsid, errno.EIO)
        assert not [r for r in sink.records[n:] if r.event == "hostsmmu_cmd" and r["opcode"] == name]
    # its own vSID is fine, and reaches the host as the physical SID
    n = len(sink.records)
    assert g0.run(name, sid=nv0.vsid) == 0
    assert [r["sid"] for r in sink.records[n:] if r.event == "hostsmmu_cmd" and r["opcode"] == name] == [nv0.psid]
    victim_ok(sink, nv1, g1, vpage)
    clean(sink, nv0, nv1)


def test_cfgi_ste_for_a_vsid_without_a_device_changes_nothing(board):
    m, sink, nv0, g0, nv1, g1, vpage = board
    victim_ste = nv1.host.driver.read_ste(nv1.dev.master)
    n = len(sink.records)
    assert g0.install(nv1.psid, g0.s1_ste(g0.write_cd(g0.s1(), 3))) == 0
    assert nv0.vsmmu.vmm["cfgi_ste_unbacked"] >= 1
    assert not [r for r in sink.records[n:] if r.event in ("hostsmmu_cmd", "iommufd_call")]
    assert nv1.host.driver.read_ste(nv1.dev.master) == victim_ste
    victim_ok(sink, nv1, g1, vpage)


def test_garbage_never_raises_and_stays_confined(board):
    """Random commands, random STEs and random register values from vm0: the host never raises, vm0's DMA
    never leaves its RAM, vm1 keeps working."""
    m, sink, nv0, g0, nv1, g1, vpage = board
    rnd = random.Random(7)
    for round_ in range(40):
        for _ in range(rnd.randrange(1, 6)):
            raw = rnd.getrandbits(128)
            if rnd.random() < 0.5:                                     # a known opcode with random fields
                raw = (raw & ~0xFF) | rnd.choice(list(C.OPCODES.values()))
            g0.queue(raw.to_bytes(16, "little"))
        if rnd.random() < 0.4:
            ste = rnd.getrandbits(512)
            if rnd.random() < 0.6:                                     # valid, stage 1, anything else random
                ste = (ste & ~0xF) | 1 | (S.CONFIG_S1 << 1)
            g0.write_ste_raw(nv0.vsid, ste.to_bytes(64, "little"))
            g0.cmd("CFGI_STE", sid=nv0.vsid)
        g0.kick()
        for _ in range(8):                                             # recover like a driver would
            if not (g0.r("GERROR") ^ g0.r("GERRORN")) & 1:
                break
            cons = g0.r("CMDQ_CONS")
            g0.ipa.write_bytes(g0.cmdq + (cons & 31) * 16, C.encode("CMD_SYNC"))
            g0.w("GERRORN", g0.r("GERROR"))
        g0.dma_write(IOVA + rnd.randrange(0, 1 << 20) * 8, round_)
        g0.dma_read(rnd.getrandbits(48) & ~7)
        if round_ % 10 == 9:                                           # register abuse
            for reg in ("STRTAB_BASE_CFG", "CR2", "GBPA", "CMDQ_CONS"):
                g0.w(reg, rnd.getrandbits(32))
            g0.w("CR0", 0)
            g0.w("STRTAB_BASE", rnd.getrandbits(52) & ~0x3F, 8)
            g0.w("CR0", rnd.getrandbits(4) | 1)
            g0.dma_read(IOVA)
            g0.init()                                                  # the guest driver starts over
        g0.events()
    vmm = nv0.vsmmu.vmm                                                # the host was really exercised
    assert vmm["guest_cmds"] > 50 and vmm["host_calls"] > 5 and vmm["refused_command"] > 0
    assert vmm["refused_ste"] > 0 and vmm["ste_abort"] > 0
    victim_ok(sink, nv1, g1, vpage)
    clean(sink, nv0, nv1)
    assert not [r for r in sink.of("hostsmmu_cmd") if r["vmid"] not in (0, nv0.vmid) and
                r["opcode"].startswith("TLBI_NH")]


@pytest.mark.parametrize("target", ["cmdq_prod", "cr0", "dma_cmd", "unmapped"])
def test_cmd_sync_msi_aimed_at_mmio(board, target):
    """CMD_SYNC's MSI (and the EVTQ's) aimed at the vSMMU's own registers, the assigned device's CMD
    register, or nothing: bounded, no exception, confined."""
    m, sink, nv0, g0, nv1, g1, vpage = board
    g0.setup_s1(nv0.vsid, 3, {IOVA: g0.page()})
    addr = {"cmdq_prod": 0x0905_0098, "cr0": 0x0905_0020, "dma_cmd": 0x0910_001C,
            "unmapped": 0x7000_0000}[target]
    for _ in range(3):
        g0.cmd("CMD_SYNC", cs=C.CS_IRQ, msiaddr=addr, msidata=g0.prod + 1)
        g0.cmd("TLBI_NH_ASID", asid=3)
    g0.kick()
    g0.vs.write(0xB0, addr, 8)                                         # EVTQ_IRQ_CFG0 -> the same place
    g0.vs.write(0xB8, 1, 4)
    g0.vs.write(0x50, 0b101, 4)                                        # IRQ_CTRL: GERROR + EVTQ interrupts
    g0.dma_read(0x7FFF_0000)                                           # a fault -> an event -> its MSI
    g0.events()
    calls = nv0.vsmmu.vmm["host_calls"]
    if target == "cr0":                                                # the guest disabled its own CMDQ
        assert not g0.r("CR0ACK") & 0b1000 and calls == 0
    elif target == "cmdq_prod":                                        # it moved its own PROD: some ran
        assert 1 <= calls <= 3
    else:                                                              # the queue ran to the end
        assert calls == 3 and g0.r("CMDQ_CONS") & 0xFFFFF == g0.prod
    victim_ok(sink, nv1, g1, vpage)
    clean(sink, nv0, nv1)
