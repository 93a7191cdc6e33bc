"""The acceptance guest of MSIs: guest_fw/tests/its_nested.c in a nested GICv3 VM programs its GICv3 + ITS and
its vSMMU, and takes a DMA-completion MSI (through its stage 1 and the host's stage 2) and the vSMMU's
event-queue MSI as LPIs in its IRQ vector; the trace shows the path and two runs give the same trace."""
from __future__ import annotations

import functools

import pytest

from devmodel.trace import ListSink
from harness.build import RUNTIME_DIR, TESTS_DIR, build_guest
from harness.its import SMMU_MSI_DEVID, VIRT_GITS_TRANSLATER
from harness.machine import Machine
from harness.vmm import setup_nested_vm

SOURCES = [RUNTIME_DIR / n for n in ("vsmmu.c", "pgtable.c", "its.c", "gic.c")] + [TESTS_DIR / "its_nested.c"]
TRACE = ("msi_write,its_translate,gicv3_its_lpi,gicv3_its_translation_error,gicv3_its_cmd_*,smmuv3_trigger_irq,"
         "gicv3_icc_iar1_read,gicv3_icc_eoir_write,vsmmu_event,hostsmmu_event,cpu_irq_taken")
DB_IOVA, LPI_EVTQ, LPI_DMA = 0x2000_0000, 8192, 8193


@functools.cache
def run():
    elf = build_guest(SOURCES, name="its_nested")
    sink = ListSink()
    m = Machine(tcg_buffer_size=8 << 20, console=lambda vm, data, stream: None)
    m.tracer.add_sink(sink)
    m.tracer.enable(TRACE)
    vm = m.add_vm("vm0", ram_size=64 << 20, gic_version=3)
    nv = setup_nested_vm(m, vm, policy="shared")
    vm.load(str(elf))
    outcome = m.run(timeout=60)
    return nv, sink, outcome


def test_guest_takes_both_msis_as_lpis_in_its_vector_table():
    nv, sink, outcome = run()
    out = nv.vm.output.decode()
    assert outcome.exit_code == 0, out
    assert "SUMMARY: 14 tests, 0 unexpected failures" in out, out
    assert nv.its is nv.vm.gic.its and nv.msi_iova == VIRT_GITS_TRANSLATER


def test_the_trace_shows_both_msi_paths():
    nv, sink, outcome = run()
    [w] = sink.of("msi_write")
    assert (w["requester"], w["iova"], w["outcome"]) == (nv.psid, DB_IOVA | 0x40, "sent")
    assert [(r["requester"], r["vm"], r["devid"], r["outcome"]) for r in sink.of("its_translate")] == [
        (nv.psid, "vm0", nv.vsid, "lpi")]
    assert [(r["devid"], r["intid"]) for r in sink.of("gicv3_its_lpi")] == [(nv.vsid, LPI_DMA),
                                                                           (SMMU_MSI_DEVID, LPI_EVTQ)]
    msis = [(r["irq"], r["addr"]) for r in sink.of("smmuv3_trigger_irq") if r["dev"] == "vm0.vsmmu" and r["msi"]]
    assert ("eventq", VIRT_GITS_TRANSLATER) in msis
    acks = [r["value"] & 0xFFFFFF for r in sink.of("gicv3_icc_iar1_read")]
    eois = [r["value"] & 0xFFFFFF for r in sink.of("gicv3_icc_eoir_write")]
    assert acks == eois == [LPI_DMA, LPI_EVTQ]


def test_irqs_taken_at_the_vector_for_the_guests_el():
    nv, sink, outcome = run()
    taken = [(r["kind"], r["intid"], r["el"], r["vector"] & 0x7FF) for r in sink.of("cpu_irq_taken")]
    assert taken == [("IRQ", LPI_DMA, 1, 0x280), ("IRQ", LPI_EVTQ, 1, 0x280)]   # EL1 with SP_EL1: VBAR + 0x280


def test_two_runs_give_the_same_trace():
    first = [(r.event, r.fields) for r in run()[1].records]
    run.cache_clear()
    second = [(r.event, r.fields) for r in run()[1].records]
    assert first == second and len(first) > 20

