"""guest_fw/tests/viommu_dma.c: a guest's virtio-iommu driver (guest_fw/lib/viommu.c) against the model on
`smmu-harness run --virtio-iommu` (MAP/UNMAP, PROBE, DMA through the mapping, the fault on the event queue,
status codes), and the same image under qemu-system-aarch64 -M virt -cpu max -semihosting, where QEMU 7.2 has
no virtio-iommu on virtio-mmio (only virtio-iommu-pci): the guest says so and exits 0."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from guestbin import run_cli

pytest.importorskip("unicorn")

QEMU = shutil.which("qemu-system-aarch64")


@pytest.fixture(scope="module")
def elf():
    from harness.build import RUNTIME_DIR, TESTS_DIR, build_guest
    return build_guest([TESTS_DIR / "viommu_dma.c", RUNTIME_DIR / "viommu.c"], name="viommu_dma").path


def _checks(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith(("ok: ", "FAIL: "))]


@pytest.mark.parametrize("pgtable", [False, True])
def test_guest_driver_on_the_harness(elf, pgtable):
    p = run_cli("run", elf, "--virtio-iommu", *(["--viommu-pgtable"] if pgtable else []))
    checks = _checks(p.stdout)
    assert p.returncode == 0 and checks and all(c.startswith("ok: ") for c in checks), p.stdout + p.stderr
    assert ("ok: page-table format properties" in checks) == pgtable
    assert "viommu: transport 30," in p.stdout            # chr-testdev has 31, the virtio-iommu the next one


def test_without_a_virtio_iommu_the_guest_says_so(elf):
    p = run_cli("run", elf)
    assert p.returncode == 0 and "viommu: no virtio-iommu on virtio-mmio" in p.stdout


def test_viommu_pgtable_needs_virtio_iommu(elf):
    p = run_cli("run", elf, "--viommu-pgtable")
    assert p.returncode == 125 and p.stderr.count("\n") == 1 and "--viommu-pgtable needs --virtio-iommu" in p.stderr


@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed (Debian: apt-get install qemu-system-arm)")
def test_same_image_under_qemu_finds_no_virtio_iommu_on_virtio_mmio(elf):
    q = subprocess.run([QEMU, "-M", "virt", "-cpu", "max", "-m", "128M", "-semihosting", "-nographic", "-no-reboot",
                        "-monitor", "none", "-serial", "stdio", "-kernel", str(elf)], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert q.returncode == 0 and "viommu: no virtio-iommu on virtio-mmio" in q.stdout + q.stderr
    r = subprocess.run([QEMU, "-M", "virt", "-cpu", "max", "-device", "virtio-iommu-device", "-nographic",
                        "-kernel", str(elf)], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode != 0 and "VIRTIO-IOMMU is not attached to any PCI bus" in r.stderr


def test_what_the_guest_driver_sends_is_what_the_spec_says(elf, tmp_path):
    """The requests of guest_fw/lib/viommu.c as the device decoded them (its layouts: virtio 1.2 5.13.6),
    from the trace: fields and statuses in the order the guest sent them."""
    import json
    trace = tmp_path / "t.jsonl"
    p = run_cli("run", elf, "--virtio-iommu", "--trace", trace, "--trace-events",
                "virtio_iommu_attach,virtio_iommu_map,virtio_iommu_unmap,virtio_iommu_report_fault")
    assert p.returncode == 0, p.stdout + p.stderr
    ev = [json.loads(ln) for ln in trace.read_text().splitlines()]
    got = [(e["event"], e.get("domain"), e.get("endpoint"), e.get("virt_start"), e.get("virt_end"),
            e.get("status")) for e in ev if e["event"] != "virtio_iommu_report_fault"]
    iova = 0x1000_0000
    assert got == [("virtio_iommu_attach", 1, 0x10, None, None, "OK"),
                   ("virtio_iommu_attach", 1, 0x11, None, None, "NOENT"),
                   ("virtio_iommu_map", 1, None, iova, iova + 0x1fff, "OK"),
                   ("virtio_iommu_map", 1, None, iova + 0x1000, iova + 0x1fff, "INVAL"),
                   ("virtio_iommu_unmap", 1, None, iova, iova + 0xfff, "RANGE"),
                   ("virtio_iommu_unmap", 1, None, iova, iova + 0x1fff, "OK")]
    maps = [e for e in ev if e["event"] == "virtio_iommu_map"]
    assert maps[0]["flags"] == 1 and 0x4000_0000 <= maps[0]["phys_start"] < 0x4800_0000
    (fault,) = [e for e in ev if e["event"] == "virtio_iommu_report_fault"]
    assert fault["reason"] == 2 and fault["endpoint"] == 0x10


def test_the_same_guest_on_an_assigned_device_through_the_host_iommu(elf, capsys):
    """viommu_dma.c against `setup_viommu_vm` (the DMA test device assigned through VFIO/iommufd, MAP/UNMAP
    shadowed into the host IOMMU): every check passes but the fault report, which cannot come: iommufd reports
    no unrecoverable fault of a kernel-managed paging HWPT to user space (docs/virtio-iommu.md), so neither
    QEMU's virtio-iommu over VFIO nor this VMM can put one on the event queue."""
    from harness.machine import Machine
    from harness.viommu import setup_viommu_vm
    from harness.vmm import setup_host
    m = Machine()
    vm = m.add_vm("vm0")
    vv = setup_viommu_vm(m, vm, setup_host(m, policy="shared", btm=True))
    vm.load(str(elf))
    out = m.run(timeout=60)
    text = capsys.readouterr().out
    checks = _checks(text)
    assert [c for c in checks if c.startswith("FAIL")] == ["FAIL: the fault on the event queue"]
    assert out.exit_code == 1 and len(checks) == 13
    cost = vv.cost()
    assert f"viommu: {cost['kicks']} request kicks, 1 failed" in text     # the guest's count is the VMM's
    assert cost["vm_exits"] > cost["kicks"] and cost["host_calls"] >= 5   # ATTACH 3 calls, MAP, UNMAP


@pytest.mark.skipif(shutil.which("dtc") is None, reason="dtc not installed (Debian: apt-get install device-tree-compiler)")
def test_dtb_describes_the_virtio_iommu_of_run(tmp_path):
    """`dtb --virtio-iommu` is the tree `run --virtio-iommu` gives: the virtio-iommu on transport 30 (after
    chr-testdev's 31) with `#iommu-cells = <1>`, the DMA test device behind it as endpoint 0x10; dtc is happy."""
    p = run_cli("dtb", "--virtio-iommu", "-o", tmp_path / "v.dtb")
    assert p.returncode == 0, p.stderr
    d = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", str(tmp_path / "v.dtb")], capture_output=True, text=True)
    assert d.returncode == 0 and d.stderr == "", d.stderr
    node = d.stdout.split("virtio_mmio@a003c00 {", 1)[1].split("};", 1)[0]
    assert "#iommu-cells = <0x01>;" in node and "interrupts = <0x00 0x2e 0x01>;" in node     # SPI 16 + 30
    phandle = node.split("phandle = <", 1)[1].split(">", 1)[0]
    assert f"iommus = <{phandle} 0x10>;" in d.stdout.split("dmatest@9100000 {", 1)[1]
    assert d.stdout.count("#iommu-cells") == 1
