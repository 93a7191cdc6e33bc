"""The VMM's vSMMU (harness/vsmmu.py, harness/vmm.py) with the host driver and iommufd: the guest vSMMU flow end
to end with a real guest program, the C driver's structures checked with devmodel's
decoders, the cost of a guest invalidation, batching, and the set-up order of KVM_DEV_VFIO_FILE_ADD."""
from __future__ import annotations

import errno

import pytest

from devmodel.smmuv3 import cd as CD
from devmodel.smmuv3 import commands as C
from devmodel.smmuv3 import ste as S
from devmodel.trace import ListSink
from harness.build import RUNTIME_DIR, TESTS_DIR, build_guest
from harness.host.iommufd import IommufdError
from harness.machine import Machine
from harness.vmm import AssignedMmio, setup_nested_vm
from harness.vsmmu import vsmmu_features

from vsmmu_env import TRACE, PyGuest, two_vm_board

IOVA = 0x1000_0000
GUEST_SOURCES = (RUNTIME_DIR / "vsmmu.c", RUNTIME_DIR / "pgtable.c", TESTS_DIR / "vsmmu_nested.c")


def data_symbols(path) -> dict[str, int]:
    """Addresses of data objects (the runtime's symbolizer keeps functions only)."""
    from elftools.elf.elffile import ELFFile
    with open(path, "rb") as f:
        tab = ELFFile(f).get_section_by_name(".symtab")
        return {s.name: s["st_value"] for s in tab.iter_symbols() if s["st_info"]["type"] == "STT_OBJECT"}


@pytest.fixture(scope="module")
def nested_run():
    elf = build_guest(list(GUEST_SOURCES), name="vsmmu_nested")
    sink = ListSink()
    m = Machine(tcg_buffer_size=8 << 20, console=lambda vm, data, stream: None)
    m.tracer.add_sink(sink)
    m.tracer.enable(TRACE + ",smmuv3_read_mmio,smmuv3_write_mmio")
    vm = m.add_vm("vm0", ram_size=64 << 20)
    nv = setup_nested_vm(m, vm, policy="shared")
    vm.load(str(elf))
    image = data_symbols(elf)
    outcome = m.run(timeout=30)
    return m, sink, nv, image, outcome


def test_guest_program_passes(nested_run):
    m, sink, nv, image, outcome = nested_run
    out = nv.vm.output.decode()
    assert outcome.exit_code == 0, out
    assert "SUMMARY: 17 tests, 0 unexpected failures" in out, out
    assert nv.vsmmu.internal_errors == []


def test_tlbi_nh_va_reaches_physical_smmu_with_vm_vmid(nested_run):
    m, sink, nv, image, outcome = nested_run
    kvm_vmid = nv.vm.vcpus[0].vmid              # what KVM loaded the guest's vCPU with
    assert nv.vmid == kvm_vmid and nv.host.kvm.vmids.is_pinned_vmid(kvm_vmid)     # shared policy: pinned
    guest = [r for r in sink.of("vsmmu_cmd") if r["opcode"] == "TLBI_NH_VA"]
    assert [r["action"] for r in guest] == ["forwarded"]
    host = [r for r in sink.of("hostsmmu_cmd") if r["opcode"] == "TLBI_NH_VA"]
    assert len(host) == 1
    assert (host[0]["vmid"], host[0]["asid"], host[0]["addr"]) == (kvm_vmid, 5, IOVA)  # guest sent VMID 0
    # ... and the physical SMMU executed it (its own CMDQ consumer, not the driver's view)
    phys = [r for r in sink.of("smmuv3_cmdq_opcode") if r["dev"] == "smmu0" and r["opcode"] == "TLBI_NH_VA"]
    assert [(r["vmid"], r["asid"], r["addr"]) for r in phys] == [(kvm_vmid, 5, IOVA)]
    # every guest TLBI_NH_* reached the host with the VM's VMID, TLBI_NSNH_ALL as TLBI_NH_ALL of it
    tlbis = [r for r in sink.of("hostsmmu_cmd") if r["opcode"].startswith("TLBI_NH")]
    assert {r["opcode"] for r in tlbis} == {"TLBI_NH_ALL", "TLBI_NH_VA", "TLBI_NH_ASID"}
    assert {r["vmid"] for r in tlbis} == {kvm_vmid}


def test_dma_translates_through_nested_s1_s2(nested_run):
    m, sink, nv, image, outcome = nested_run
    vm = nv.vm
    buf_a, buf_b = image["buf_a"], image["buf_b"]
    pa = lambda ipa: vm.ram_pa + ipa - vm.ram_ipa      # noqa: E731 - the host's stage 2 (IOAS map)
    ok = [r for r in sink.of("smmuv3_translate_success") if r["sid"] == nv.psid and r["iova"] == IOVA]
    # buf_a (S1: IOVA -> buf_a IPA, S2: IPA -> PA); after the remap still buf_a (the stale IOTLB entry);
    # after TLBI_NH_VA buf_b; after CFGI_CD (new tables) buf_a again
    assert [r["translated"] for r in ok] == [pa(buf_a), pa(buf_a), pa(buf_b), pa(buf_a)]
    assert pa(buf_a) != buf_a                                      # really two stages: PA != IPA
    assert nv.host.driver.read_ste(nv.dev.master).config == S.CONFIG_NESTED
    # the guest's faults came back to its EVTQ with its vSID
    ev = [(r["type"], r["vsid"], r["written"]) for r in sink.of("vsmmu_event")]
    assert ev == [("F_PERMISSION", nv.vsid, 1), ("F_TRANSLATION", nv.vsid, 1)]


def test_c_driver_structures_decode_with_devmodel(nested_run):
    """What guest_fw/lib/vsmmu.c wrote, read back with devmodel's layouts (an independent check of its bits)."""
    m, sink, nv, image, outcome = nested_run
    vs, ipa = nv.vsmmu, nv.vm.ipa
    base = vs.regs.get_field("STRTAB_BASE", "ADDR")
    ste = S.decode(ipa.read_bytes(base + nv.vsid * 64, 64))
    assert (ste.v, ste.config, ste.s1fmt, ste.s1cdmax) == (1, S.CONFIG_S1, 0, 0)
    assert (ste.s1cir, ste.s1cor, ste.s1csh) == (1, 1, 3)
    assert ste.s1contextptr == image["cd_table"]
    assert S.validate(ste, vs.features, nv.vsid) is None
    cd = CD.decode(ipa.read_bytes(ste.s1contextptr, 64))
    assert (cd.v, cd.aa64, cd.asid, cd.t0sz, cd.tg0, cd.epd1, cd.ips, cd.r, cd.a, cd.aset) == \
        (1, 1, 6, 25, 0, 1, 5, 1, 1, 1)
    assert CD.validate(cd, vs.features, nv.vsid) is None
    assert nv.vm.in_ram(cd.ttb0, 4096)
    # the command queue holds the last commands as the C driver encoded them
    cq = vs.cmdq.state()
    last = [C.decode(ipa.read_bytes(vs.cmdq.slot(cq, (cq.cons - i) & ((2 << cq.log2size) - 1)), 16))
            for i in range(1, 5)]
    assert [c.name for c in last] == ["CMD_SYNC", "TLBI_NH_ASID", "CMD_SYNC", "CFGI_CD"]
    assert (last[1].asid, last[1].vmid) == (5, 0)
    assert (last[3].sid, last[3].ssid, last[3].leaf) == (nv.vsid, 0, 1)
    assert last[0].cs == C.CS_IRQ and nv.vm.in_ram(last[0].msiaddr, 4)


def test_cost_of_a_guest_invalidation(nested_run):
    m, sink, nv, image, outcome = nested_run
    c = nv.vsmmu.cost()
    # NSNH_ALL (at init), NH_VA, NH_ASID, CFGI_CD, NH_ASID
    assert c["guest_invalidations"] == 5
    # one HWPT_INVALIDATE per command (QEMU), which the host turns into the command + its own CMD_SYNC
    assert (c["host_calls_per_inv"], c["host_cmds_per_inv"]) == (1.0, 2.0)
    per = [r for r in sink.of("vsmmu_cmd") if r["action"] == "forwarded"]
    assert len(per) == 5 and all(r["host_cmds"] == 2 for r in per)
    # the traps the guest's TLBI_NH_VA + CMD_SYNC cost: every vSMMU access between the DMA read that saw the
    # stale page and the one after the invalidation. One store (CMDQ_PROD); CONS is not read since the
    # C driver only reads it when its cached copy says the queue is full.
    recs = sink.records
    dma = [i for i, r in enumerate(recs) if r.event == "dmatest_cmd" and r["iova"] == IOVA and r["cmd"] == 1]
    tlbi = next(i for i, r in enumerate(recs) if r.event == "vsmmu_cmd" and r["opcode"] == "TLBI_NH_VA")
    lo = max(i for i in dma if i < tlbi)
    hi = min(i for i in dma if i > tlbi)
    window = [r for r in recs[lo:hi] if r.event in ("smmuv3_read_mmio", "smmuv3_write_mmio")
              and r["dev"] == nv.vsmmu.name]
    assert [(r.event, r["addr"]) for r in window] == [("smmuv3_write_mmio", 0x98)]
    # totals: the PROD reset at init, the init batch, CFGI_STE, and one kick per invalidation + sync after it
    assert c["cmdq_kicks"] == 7


def _one_vm(**kw):
    m = Machine(tcg_buffer_size=8 << 20)
    sink = ListSink()
    m.tracer.add_sink(sink)
    m.tracer.enable(TRACE)
    vm = m.add_vm("vm0", ram_size=32 << 20)
    nv = setup_nested_vm(m, vm, **kw)
    return m, sink, nv, PyGuest(nv)


def test_exits_and_host_commands_per_invalidation_python_guest():
    """The same figures with a driver that issues N invalidations per CMD_SYNC, per-command and batched."""
    for batch, n, want_calls, want_cmds in ((False, 8, 8, 16), (True, 8, 1, 9)):
        m, sink, nv, g = _one_vm(batch=batch)
        g.init()
        g.setup_s1(nv.vsid, 3, {IOVA: g.page()})
        before = nv.vsmmu.snapshot()
        for i in range(n):
            g.cmd("TLBI_NH_VA", asid=3, addr=IOVA + i * 4096, leaf=1)
        assert g.sync() == 0
        c = nv.vsmmu.cost(before)
        assert (c["guest_invalidations"], c["host_calls"], c["host_cmds"]) == (n, want_calls, want_cmds), batch
        assert (c["vm_exits"], c["work_exits"]) == (1, 1)          # one CMDQ_PROD store for the whole batch
        assert c["host_cmds_per_inv"] == want_cmds / n
        assert nv.vsmmu.internal_errors == []


def test_batch_refusal_stops_at_the_refused_entry():
    m, sink, nv, g = _one_vm(batch=True)
    g.init()
    g.setup_s1(nv.vsid, 3, {IOVA: g.page()})
    start = g.prod
    g.cmd("TLBI_NH_ASID", asid=3)
    g.cmd("CFGI_CD", sid=0x77, ssid=0, leaf=1)         # a vSID this VM does not have
    g.cmd("TLBI_NH_ALL")
    g.seq += 1
    g.cmd("CMD_SYNC", cs=C.CS_IRQ, msiaddr=g.sync_word, msidata=g.seq)
    g.kick()
    cons = g.r("CMDQ_CONS")
    assert (cons >> 24) & 0x7F == C.CERROR_ILL
    assert cons & 0xFFFFF == (start + 1) & ((2 << 5) - 1)          # CONS points at the refused CFGI_CD
    assert [r["opcode"] for r in sink.of("hostsmmu_cmd") if r["opcode"] == "TLBI_NH_ASID"] == ["TLBI_NH_ASID"]
    # the guest skips it (Linux arm_smmu_cmdq_skip_err) and the rest runs
    g.ipa.write_bytes(g.cmdq + (cons & 31) * 16, C.encode("CMD_SYNC"))
    g.w("GERRORN", g.r("GERROR"))
    assert g.ipa.read(g.sync_word, 4) == g.seq
    assert any(r["opcode"] == "TLBI_NH_ALL" and r["vmid"] == nv.vmid for r in sink.of("hostsmmu_cmd"))
    assert nv.vsmmu.refusals[0][:3] == ("command", 0x77, errno.EIO)


def test_disabled_vsmmu_follows_gbpa_and_smmuen():
    m, sink, nv, g = _one_vm()
    page = g.page()
    g.write64(page, 0x5A5A)
    # vSMMU disabled, GBPA.ABORT=0: the device bypasses the guest's stage 1 (IOVA = IPA), stage 2 still applies
    st, v, _ = g.dma_read(page)
    assert (st, v) == (1, 0x5A5A)
    g.init(enable=True)
    # enabled with an all-zero (invalid) STE: abort, and no DMA reaches memory
    st, v, _ = g.dma_read(page)
    assert st == 2
    assert nv.vsmmu.devices[nv.vsid].how == "abort"
    # a bypass STE from the guest = stage 2 only on the host
    assert g.install(nv.vsid, S.Ste(v=1, config=S.CONFIG_BYPASS)) == 0
    assert g.dma_read(page)[:2] == (1, 0x5A5A)
    assert nv.host.driver.read_ste(nv.dev.master).config == S.CONFIG_S2


def test_assigned_device_sid_is_fixed():
    m, sink, nv, g = _one_vm()
    assert isinstance(nv.mmio, AssignedMmio)
    assert nv.mmio.read(0x08, 4) == nv.vsid
    nv.mmio.write(0x08, 0x21, 4)                       # a guest cannot present another StreamID
    assert nv.dma.regs["SID"] == nv.psid and nv.mmio.sid_writes_ignored == 1


@pytest.mark.parametrize("policy", ["shared", "restricted"])
def test_kvm_file_add_after_bind_fails_cleanly(policy):
    kw = {"policy_kw": {"mode": "reserve"}, "kvm_kw": {"smmu_reserved": 16}} if policy == "restricted" else {}
    m = Machine(tcg_buffer_size=8 << 20)
    vm = m.add_vm("vm0", ram_size=16 << 20)
    with pytest.raises(IommufdError) as ei:
        setup_nested_vm(m, vm, policy=policy, kvm_before_bind=False, **kw)
    assert ei.value.errno == errno.ENODEV


def test_private_policy_works_in_either_order():
    for first in (True, False):
        m = Machine(tcg_buffer_size=8 << 20)
        vm = m.add_vm("vm0", ram_size=16 << 20)
        nv = setup_nested_vm(m, vm, policy="private", kvm_before_bind=first)
        assert nv.host.kvm.vmids.nr_pinned == 0           # an SMMU-private VMID: nothing of KVM's pinned
        assert nv.vsmmu.devices[nv.vsid].how == "gbpa-bypass" and not nv.vsmmu.features.btm


def test_guest_sees_btm_only_when_its_tlbis_reach_the_smmu_with_its_vmid():
    m, sink, nv, g = _one_vm(policy="shared", btm=True)
    assert nv.host.driver.caps.use_btm and nv.vsmmu.features.btm
    assert nv.vsmmu.regs.get_field("IDR0", "BTM") == 1
    m2 = Machine(tcg_buffer_size=8 << 20)
    nv2 = setup_nested_vm(m2, m2.add_vm("vm0", ram_size=16 << 20), policy="private", btm=True)
    assert not nv2.vsmmu.features.btm                  # private VMID: the guest's broadcasts would miss


@pytest.mark.parametrize("policy,advertise,btm,seen", [
    ("private", "host", True, 1),          # a naive VMM: BTM whenever the host uses it, whatever the VMID
    ("private", "pinned", True, 0),
    ("shared", "never", True, 0),
    ("shared", "host", False, 0),          # the host does not use BTM: nothing to advertise
])
def test_advertise_btm_option(policy, advertise, btm, seen):
    m = Machine(tcg_buffer_size=8 << 20)
    nv = setup_nested_vm(m, m.add_vm("vm0", ram_size=16 << 20), policy=policy, btm=btm, advertise_btm=advertise)
    assert nv.vsmmu.regs.get_field("IDR0", "BTM") == seen
    with pytest.raises(ValueError, match="advertise_btm"):
        setup_nested_vm(m, m.add_vm("vm1", ram_size=16 << 20), host=nv.host, advertise_btm="always")


def test_vsmmu_features_follow_the_host():
    m, sink, (nv0, g0), (nv1, g1) = two_vm_board()
    f = nv0.vsmmu.features
    assert (f.s1p, f.s2p, f.hyp, f.ats, f.pri) == (True, False, False, False, False)
    assert f.oas <= nv0.host.driver.caps.oas and f.ssidsize <= nv0.host.driver.caps.ssid_bits
    assert vsmmu_features(None).s2p is False
    assert nv0.vmid != nv1.vmid


@pytest.mark.parametrize("policy,hit", [("shared", True), ("private", False)])
def test_guest_cpu_tlbi_reaches_its_nested_entries_only_with_the_shared_vmid(policy, hit):
    """sva-btm: with BTM, a guest CPU's TLBI VAE1IS (carrying its KVM VMID) invalidates the device's nested
    entries only when the vIOMMU uses that VMID (the vSMMU advertises BTM exactly then). CD.ASET=0 (shared ASID)."""
    from devmodel.tlbi import decode
    from devmodel.tlbi_types import DecodeContext
    m, sink, nv, g = _one_vm(policy=policy, btm=True)
    assert nv.vsmmu.features.btm is hit
    vcpu = nv.vm.vcpus[0]
    nv.host.kvm.slice_start(vcpu)                        # the vCPU runs: KVM gives it its VMID
    old, new = g.page(), g.page()
    g.write64(old, 0x01D)
    g.write64(new, 0x2E3)
    g.init()
    b = g.s1()
    b.map(IOVA, old, 4096)
    assert g.install(nv.vsid, g.s1_ste(g.write_cd(b, 9, aset=0))) == 0
    assert g.dma_read(IOVA)[:2] == (1, 0x01D)
    b.unmap(IOVA, 4096)
    b.map(IOVA, new, 4096)                              # the guest remaps and invalidates with its CPU only
    op = decode(0, 8, 3, 1, (9 << 48) | (IOVA >> 12), DecodeContext(el=1, vmid=vcpu.vmid))   # TLBI VAE1IS
    m.interconnect.tlbi(op, vcpu)
    m.interconnect.sync(vcpu)
    nv.host.kvm.slice_end(vcpu)
    assert g.dma_read(IOVA)[:2] == (1, 0x2E3 if hit else 0x01D)
    assert nv.vsmmu.vmm["guest_invalidations"] == 0     # no command went through the vSMMU
