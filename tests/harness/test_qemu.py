"""The same guest binaries under qemu-system-aarch64 -M virt -semihosting: same console output, same status.

Skipped, saying why, when QEMU is not installed (Debian package qemu-system-arm)."""
import shutil
import subprocess

import pytest

from guestbin import guest_elf, run_cli

QEMU = shutil.which("qemu-system-aarch64")

pytestmark = [pytest.mark.qemu,
              pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed "
                                                      "(Debian: apt-get install qemu-system-arm)")]


def qemu(elf, cpus=1, el=1):
    machine = "virt,virtualization=on" if el == 2 else "virt"
    cmd = [QEMU, "-M", machine, "-cpu", "max", "-smp", str(cpus), "-m", "128M", "-semihosting", "-nographic",
           "-no-reboot", "-monitor", "none", "-serial", "stdio", "-kernel", str(elf)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("guest,cpus,el,status", [
    ("hello", 1, 1, 0), ("report_fail", 1, 1, 1), ("exit7", 1, 1, 7), ("smp", 2, 1, 0), ("mmu", 1, 1, 0),
    ("hello", 1, 2, 0), ("mmu", 1, 2, 0), ("smp", 2, 2, 0),
    ("undef_catch", 1, 1, 0), ("undef_catch", 1, 2, 0),          # the guest's own exception handlers
])
def test_same_binary_same_result_under_qemu(guest, cpus, el, status):
    elf = guest_elf(guest)
    q = qemu(elf, cpus, el)
    h = run_cli("run", elf, "--cpus", str(cpus), "--el", str(el))
    assert q.returncode == h.returncode == status, (q.stdout, q.stderr)
    # QEMU prints the PL011 on stdout and semihosting console output on stderr; smmu-harness both on stdout
    assert (q.stdout + q.stderr).replace("\r\n", "\n") == h.stdout


def test_unhandled_undefined_instruction_status_matches():
    q = qemu(guest_elf("undef"))
    assert q.returncode == 132 and "unhandled exception: Synchronous" in q.stdout
    assert run_cli("run", guest_elf("undef")).returncode == 132
