"""The bare-metal path of recoverable faults, ATS and HTTU: a guest that is the host OS drives the SMMUv3 model
directly (guest_fw/tests/smmu_iopf_bare.c with guest_fw/lib/vsmmu.c), as the host driver tests' boards do, and
sees the architectural behaviour: stalls with their STAG and CMD_RESUME / CMD_STALL_TERM, page requests with
their PRG index and CMD_PRI_RESP, CMD_ATC_INV, and HTTU's Access flag and dirty state in its own tables."""
from __future__ import annotations

import pytest

pytest.importorskip("unicorn")

from devmodel.dmatest import DMATEST_BASE, DMATEST_SIZE, DmaTestDevice  # noqa: E402
from devmodel.smmuv3.device import MMIO_SIZE, SMMUv3  # noqa: E402
from devmodel.smmuv3.regs import SmmuFeatures  # noqa: E402
from devmodel.trace import ListSink  # noqa: E402
from harness.build import RUNTIME_DIR, TESTS_DIR, build_guest  # noqa: E402
from harness.machine import Machine  # noqa: E402

SMMU_BASE = 0x0905_0000
FEATURES = SmmuFeatures(stall_model=0, ats=True, pri=True, priqs=6, httu=2)


@pytest.fixture(scope="module")
def bare_run():
    elf = build_guest([RUNTIME_DIR / "vsmmu.c", RUNTIME_DIR / "pgtable.c", TESTS_DIR / "smmu_iopf_bare.c"],
                      name="smmu_iopf_bare")
    m = Machine(tcg_buffer_size=8 << 20, console=lambda vm, data, stream: None)
    sink = ListSink()
    m.tracer.add_sink(sink)
    m.tracer.enable("smmuv3_stall*,smmuv3_pri_*,smmuv3_atc_inv,smmu_httu_update,dmatest_wait,dmatest_wake")
    vm = m.add_vm("bare", ram_size=64 << 20)
    smmu = SMMUv3(vm.ipa, FEATURES, tracer=m.tracer, name="smmu-bare")       # the guest's own, physical SMMU
    vm.add_device(SMMU_BASE, MMIO_SIZE, smmu, "smmu")
    dma = DmaTestDevice(vm.ipa, smmu.translate, sid=0x7, tracer=m.tracer, name="bare.dmatest")
    vm.add_device(DMATEST_BASE, DMATEST_SIZE, dma, "dmatest")
    vm.load(str(elf))
    outcome = m.run(timeout=30)
    return vm, smmu, sink, outcome


def test_bare_metal_guest_passes(bare_run):
    vm, smmu, sink, outcome = bare_run
    out = vm.output.decode()
    assert outcome.exit_code == 0, out
    assert "SUMMARY: 29 tests, 0 unexpected failures" in out, out


def test_the_model_saw_what_the_guest_checked(bare_run):
    vm, smmu, sink, outcome = bare_run
    ends = [(r["action"], r["why"]) for r in sink.of("smmuv3_stall_end")]
    assert ends == [("retry", "resume"), ("abort", "resume"), ("abort", "stall_term")]
    assert smmu.stats["resume_ignored"] == 1
    assert [r["code"] for r in sink.of("smmuv3_pri_resp")] == ["SUCCESS", "INVALID_REQUEST"]
    assert [r["outcome"] for r in sink.of("smmuv3_pri_request")] == ["queued", "queued"]
    assert sink.of("smmuv3_atc_inv") and sink.of("smmu_httu_update")
