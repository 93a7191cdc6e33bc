"""kvm-unit-tests' own exception and debug tests (arm/selftest.c vectors-kernel/vectors-user, arm/debug.c bp/wp/ss)
on the harness's vCPUs, booted as QEMU's -kernel boots a .flat (harness/image.py, harness/devicetree.py) with
empty virtio-mmio transports where chr-testdev is probed. The images are not part of this repository yet: set
KVM_UNIT_TESTS_ARM to a directory of arm64 .flat files built from kvm-unit-tests (its README: `./configure
--arch=arm64 --cross-prefix=aarch64-linux-gnu- && make`); the test is skipped, saying so, without it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from devmodel.virtio.mmio import VirtioMmio
from harness.devicetree import VIRT_MEM, VIRT_MMIO, VIRT_MMIO_SIZE, NUM_VIRTIO_TRANSPORTS, BoardSpec, board_dtb
from harness.image import plan_boot
from harness.machine import Machine

KUT = os.environ.get("KVM_UNIT_TESTS_ARM")
pytestmark = pytest.mark.skipif(not KUT, reason="KVM_UNIT_TESTS_ARM (a directory of kvm-unit-tests arm64 .flat "
                                                "images) is not set")
RAM = 256 << 20


class EmptyTransports:
    """The 32 virtio-mmio transports of QEMU virt, all empty (DeviceID 0), in one MMIO window."""

    def __init__(self):
        self.slots = [VirtioMmio() for _ in range(NUM_VIRTIO_TRANSPORTS)]

    def read(self, offset: int, size: int) -> int:
        return self.slots[offset // VIRT_MMIO_SIZE].read(offset % VIRT_MMIO_SIZE, size)

    def write(self, offset: int, value: int, size: int) -> None:
        self.slots[offset // VIRT_MMIO_SIZE].write(offset % VIRT_MMIO_SIZE, value, size)


def boot(flat: str, args: str):
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(ram_size=RAM)
    vm.add_device(VIRT_MMIO, NUM_VIRTIO_TRANSPORTS * VIRT_MMIO_SIZE, EmptyTransports(), "virtio-mmio")
    plan = plan_boot(Path(KUT) / flat, ram_base=VIRT_MEM, ram_size=RAM,
                     dtb=board_dtb(BoardSpec(ram=((VIRT_MEM, RAM),), bootargs=args)))
    for s in plan.segments:
        vm.load_code(s.addr, s.data + bytes(s.memsz - len(s.data)))
    vm.entry = plan.entry
    return m, vm


@pytest.mark.parametrize("flat,args,passes", [
    ("selftest.flat", "vectors-kernel", 3), ("selftest.flat", "vectors-user", 2),
    ("debug.flat", "bp", 6), ("debug.flat", "wp", 8), ("debug.flat", "ss", 1)])
def test_kvm_unit_tests_pass(flat, args, passes):
    m, vm = boot(flat, args)
    out = m.run(timeout=120)
    text = vm.output.decode()
    assert out.exit_code == 0 and "EXIT: STATUS=1" in text, text      # exit(0): (0 << 1) | 1
    assert text.count("PASS:") == passes and "FAIL" not in text, text
