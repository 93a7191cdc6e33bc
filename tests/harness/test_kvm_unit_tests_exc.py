"""kvm-unit-tests' own exception and debug tests (arm/selftest.c vectors-kernel/vectors-user, arm/debug.c bp/wp/ss)
on the harness's vCPUs, booted as QEMU's -kernel boots a .flat (VM.load) on the board's 32 virtio-mmio
transports, all empty here (no chr-testdev: the guest's "EXIT: STATUS=" line gives the status). The images are
the shipped ones (tests/fixtures/kvm-unit-tests-1da1819e), or those of the directory KVM_UNIT_TESTS_ARM names."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.machine import Machine

KUT = Path(os.environ.get("KVM_UNIT_TESTS_ARM")
           or Path(__file__).resolve().parents[1] / "fixtures" / "kvm-unit-tests-1da1819e" / "arm")
RAM = 256 << 20


def boot(flat: str, args: str):
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(ram_size=RAM)
    vm.load(str(KUT / flat), append=args)
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
