"""MSIs in nested VMs (harness/its.py, harness/host/msi.py, iommufd's SW_MSI window, harness/vmm.py): the DMA
test device's completion MSI goes through the guest's stage 1 and the host's stage 2 to the physical doorbell,
which routes it by the requester's StreamID to the owning VM's ITS as the guest's vSID; the vSMMU's own MSIs
reach the ITS untranslated. And what a hostile guest cannot do with them."""
from __future__ import annotations

import pytest

from harness.host.smmu_driver import DOORBELL_BASE, GITS_TRANSLATER
from harness.its import SMMU_MSI_DEVID, VIRT_GITS, VIRT_GITS_TRANSLATER
from harness.machine import Machine
from harness.vmm import setup_nested_vm

from its_env import PyIts
from vsmmu_env import TRACE, PyGuest
from devmodel.trace import ListSink

MSI_ADDR, MSI_DATA, MSI_CTRL, MSI_STATUS = 0x60, 0x68, 0x6C, 0x74
DB_IOVA = 0x7000_0000                       # where each guest maps its ITS doorbell in its stage 1
BUF_IOVA, EV, LPI = 0x10_0000, 5, 8192
HOST_DB = DOORBELL_BASE + GITS_TRANSLATER


def board(n=2):
    m = Machine(tcg_buffer_size=8 << 20)
    sink = ListSink()
    m.tracer.add_sink(sink)
    m.tracer.enable(TRACE + ",msi_write,its_translate,gicv3_its_lpi,gicv3_its_translation_error,"
                    "smmuv3_trigger_irq")
    out, host = [], None
    for i in range(n):
        vm = m.add_vm(f"vm{i}", ram_size=32 << 20, gic_version=3)
        nv = setup_nested_vm(m, vm, host=host)
        its = nv.its
        assert its is vm.gic.its
        host = nv.host
        v = vm.vcpus[0]
        host.kvm.slice_start(v)
        host.kvm.slice_end(v)
        g = PyGuest(nv)
        g.init()
        gits = PyIts(its, vm.ipa, vm.ram_ipa + (16 << 20)).init()
        out.append((nv, g, gits))
    return m, sink, out


def guest_msi(nv, g, gits, *, map_doorbell=True, to=VIRT_GITS_TRANSLATER, ev=EV):
    """The guest's side: its stage 1 maps a buffer and (optionally) DB_IOVA -> `to`'s page; its ITS maps
    (vSID, EV) -> LPI; the device's MSI is DB_IOVA + the doorbell offset with data `ev`."""
    buf = g.page()
    maps = {BUF_IOVA: buf}
    if map_doorbell:
        maps[DB_IOVA] = to & ~0xFFF
    g.setup_s1(nv.vsid, asid=1, maps=maps)
    gits.map(dev=nv.vsid, ev=EV, intid=LPI)
    m = nv.mmio
    m.write(MSI_ADDR, DB_IOVA | (to & 0xFFF), 8)
    m.write(MSI_DATA, ev, 4)
    m.write(MSI_CTRL, 1, 4)


def test_the_vmm_maps_the_physical_doorbell_at_the_vits_gpa_and_routes_the_stream_id():
    m, sink, [(nv0, _, _), (nv1, _, _)] = board()
    ictx = nv0.host.ictx
    assert nv0.msi_iova == nv1.msi_iova == VIRT_GITS_TRANSLATER
    assert ictx.sw_msi == (VIRT_GITS_TRANSLATER & ~0xFFF, 0x1000)
    assert ictx.msi_iovas == {HOST_DB & ~0xFFF: VIRT_GITS_TRANSLATER & ~0xFFF}
    routes = nv0.host.doorbell.routes
    assert {p: (r.its, r.devid, r.owner) for p, r in routes.items()} == {
        nv0.psid: (nv0.its, nv0.vsid, "vm0"), nv1.psid: (nv1.its, nv1.vsid, "vm1")}
    assert nv0.vsmmu.msi_requester == SMMU_MSI_DEVID
    calls = [(r["op"], r["detail"]) for r in sink.of("iommufd_call") if r["op"] in ("set_sw_msi", "prepare_msi")]
    assert calls[:2] == [("set_sw_msi", "0x8090000+0x1000"),
                         ("prepare_msi", f"doorbell {HOST_DB:#x} at iova {VIRT_GITS_TRANSLATER:#x}")]


def test_a_dma_completion_msi_goes_through_both_stages_and_becomes_the_guests_lpi():
    m, sink, [(nv0, g0, its0), (nv1, g1, its1)] = board()
    guest_msi(nv0, g0, its0)
    assert g0.dma_write(BUF_IOVA, 0x1234)[0] == 1                   # DONE
    assert nv0.mmio.read(MSI_STATUS, 4) == 1                        # SENT
    assert its0.pending() == [LPI] and its1.pending() == []
    assert its0.ack() == LPI
    its0.eoi(LPI)
    [w] = sink.of("msi_write")
    assert (w["requester"], w["iova"], w["pa"], w["data"]) == (nv0.psid, DB_IOVA | 0x40, HOST_DB, EV)
    assert [(r["requester"], r["vm"], r["devid"], r["outcome"]) for r in sink.of("its_translate")] == [
        (nv0.psid, "vm0", nv0.vsid, "lpi")]
    assert [(r["devid"], r["eventid"], r["intid"]) for r in sink.of("gicv3_its_lpi")] == [(nv0.vsid, EV, LPI)]


def test_both_vms_use_the_same_vsid_and_event_and_each_gets_only_its_own_lpi():
    m, sink, [(nv0, g0, its0), (nv1, g1, its1)] = board()
    assert nv0.vsid == nv1.vsid
    guest_msi(nv0, g0, its0)
    guest_msi(nv1, g1, its1)
    g1.dma_write(BUF_IOVA, 1)
    assert its1.pending() == [LPI] and its0.pending() == []
    g0.dma_write(BUF_IOVA, 1)
    assert its0.pending() == [LPI]
    assert [(r["requester"], r["vm"]) for r in sink.of("its_translate")] == [(nv1.psid, "vm1"), (nv0.psid, "vm0")]


def test_without_a_stage1_mapping_of_the_doorbell_the_msi_faults_into_the_guests_event_queue():
    m, sink, [(nv0, g0, its0), _] = board()
    guest_msi(nv0, g0, its0, map_doorbell=False)
    g0.dma_write(BUF_IOVA, 1)
    assert nv0.mmio.read(MSI_STATUS, 4) == 2                        # FAULT
    assert its0.pending() == [] and sink.of("its_translate") == []
    nv0.vsmmu.poll_events()
    evs = [(e.name, e.sid, e.input_addr, e.rnw) for e in g0.events()]
    assert evs == [("F_TRANSLATION", nv0.vsid, DB_IOVA | 0x40, 0)]


@pytest.mark.parametrize("target", ["its_control_frame", "guest_ram", "outside"])
def test_a_doorbell_iova_mapped_elsewhere_reaches_no_interrupt(target):
    m, sink, [(nv0, g0, its0), (nv1, g1, its1)] = board()
    to = {"its_control_frame": VIRT_GITS, "guest_ram": nv0.vm.ram_ipa + (20 << 20),
          "outside": 0x2000_0000}[target]
    guest_msi(nv0, g0, its0, to=to)
    before = dict(its0.its.stats), dict(its1.its.stats)
    g0.dma_write(BUF_IOVA, 1)
    assert its0.pending() == [] and its1.pending() == []
    assert (dict(its0.its.stats), dict(its1.its.stats)) == before and sink.of("its_translate") == []
    if target == "guest_ram":
        assert nv0.mmio.read(MSI_STATUS, 4) == 1 and nv0.vm.ipa.read(to, 4) == EV      # a plain write, own RAM
    else:                                   # stage 2 maps nothing there: a host-side fault, the MSI is lost
        assert nv0.mmio.read(MSI_STATUS, 4) == 2
        assert [(r["type"], r["sid"], r["routed"]) for r in sink.of("hostsmmu_event")] == [
            ("F_TRANSLATION", nv0.psid, "host")]


def test_the_guest_cannot_name_another_device_id_and_out_of_range_events_are_dropped():
    m, sink, [(nv0, g0, its0), (nv1, g1, its1)] = board()
    guest_msi(nv0, g0, its0, ev=EV)
    its0.map(dev=nv0.vsid + 1, ev=EV, intid=LPI + 1)               # a device it does not have
    its0.map(dev=SMMU_MSI_DEVID, ev=EV, intid=LPI + 2)
    for data in (0xFFFF, 31, EV + 1):                              # beyond the ITT, unmapped event x2
        nv0.mmio.write(MSI_DATA, data, 4)
        g0.dma_write(BUF_IOVA, 1)
    assert its0.pending() == [] and its1.pending() == []
    assert [(r["devid"], r["eventid"], r["reason"]) for r in sink.of("gicv3_its_translation_error")] == [
        (nv0.vsid, 0xFFFF, "id_oor"), (nv0.vsid, 31, "unmapped_interrupt"), (nv0.vsid, EV + 1, "unmapped_interrupt")]
    assert [r["outcome"] for r in sink.of("its_translate")] == ["dropped"] * 3


def test_a_stream_id_without_a_route_is_dropped_at_the_host_doorbell():
    m, sink, [(nv0, g0, its0), (nv1, g1, its1)] = board()
    guest_msi(nv1, g1, its1)
    nv1.host.doorbell.unroute(nv1.psid)                            # e.g. the VMM tore the route down
    g1.dma_write(BUF_IOVA, 1)
    assert its0.pending() == [] and its1.pending() == []
    assert [(r["requester"], r["outcome"]) for r in sink.of("its_translate")] == [(nv1.psid, "unrouted")]
    assert nv1.host.doorbell.stats["unrouted"] == 1
    # nor can a device MSI reach the host SMMU driver's own doorbell handlers
    assert not nv1.host.doorbell.writes


def test_a_guest_cpu_write_to_its_translater_only_reaches_its_own_its():
    m, sink, [(nv0, g0, its0), (nv1, g1, its1)] = board()
    its0.map(dev=0, ev=EV, intid=LPI)
    its1.map(dev=0, ev=EV, intid=LPI)
    nv0.vm.ipa.write(VIRT_GITS_TRANSLATER, EV, 4)                  # DeviceID 0 (QEMU: a CPU's requester ID)
    assert its0.pending() == [LPI] and its1.pending() == []


def test_the_vsmmus_event_queue_msi_reaches_the_its_untranslated_with_the_smmus_device_id():
    m, sink, [(nv0, g0, its0), _] = board()
    its0.map(dev=SMMU_MSI_DEVID, ev=1, intid=LPI + 3)
    vs = nv0.vsmmu
    vs.write(0xB0, VIRT_GITS_TRANSLATER, 8)                        # EVENTQ_IRQ_CFG0: the vITS doorbell GPA
    vs.write(0xB8, 1, 4)                                           # EVENTQ_IRQ_CFG1: EventID 1
    vs.write(0x50, 0b100, 4)                                       # IRQ_CTRL.EVENTQ_IRQEN
    guest_msi(nv0, g0, its0, map_doorbell=False)                   # the device's MSI faults: an event
    g0.dma_write(BUF_IOVA, 1)
    vs.poll_events()
    assert its0.pending() == [LPI + 3]
    [irq] = [r for r in sink.of("smmuv3_trigger_irq") if r["dev"] == "vm0.vsmmu" and r["irq"] == "eventq"]
    assert (irq["irq"], irq["msi"], irq["addr"], irq["data"]) == ("eventq", 1, VIRT_GITS_TRANSLATER, 1)
    assert [(r["devid"], r["eventid"]) for r in sink.of("gicv3_its_lpi")] == [(SMMU_MSI_DEVID, 1)]


def test_the_guests_tree_names_the_its_for_the_vsmmu_and_the_device():
    from devmodel.fdt import parse
    m, sink, [(nv0, _, _)] = board(1)
    t = parse(nv0.vm.device_tree())
    its = t.find("/intc@8000000/its@8080000").u32s("phandle")[0]
    assert t.find("/smmuv3@9050000").u32s("msi-parent") == (its, SMMU_MSI_DEVID)
    assert t.find("/dmatest@9100000").u32s("msi-parent") == (its, nv0.vsid)


def test_the_vsmmus_cmd_sync_and_gerror_msis_reach_the_its_too():
    from devmodel.smmuv3 import commands as C
    m, sink, [(nv0, g0, its0)] = board(1)
    its0.map(dev=SMMU_MSI_DEVID, ev=2, intid=LPI + 4)
    its0.map(dev=SMMU_MSI_DEVID, ev=3, intid=LPI + 5)
    g0.cmd("CMD_SYNC", cs=C.CS_IRQ, msiaddr=VIRT_GITS_TRANSLATER, msidata=2)   # CMD_SYNC's completion MSI
    g0.kick()
    assert its0.pending() == [LPI + 4]
    vs = nv0.vsmmu
    vs.write(0x68, VIRT_GITS_TRANSLATER, 8)                        # GERROR_IRQ_CFG0
    vs.write(0x70, 3, 4)                                           # GERROR_IRQ_CFG1
    vs.write(0x50, 0b001, 4)                                       # IRQ_CTRL.GERROR_IRQEN
    g0.queue(bytes([0x7F]) + bytes(15))                            # an unknown opcode: CERROR_ILL, GERROR
    g0.kick()
    assert sorted(its0.pending()) == [LPI + 4, LPI + 5]
    assert [(r["devid"], r["eventid"]) for r in sink.of("gicv3_its_lpi")] == [(SMMU_MSI_DEVID, 2), (SMMU_MSI_DEVID, 3)]
