"""Guests written for QEMU virt behave identically under `smmu-harness run` and `qemu-system-aarch64 -M virt
-cpu max -semihosting -kernel X [-append ...] [-smp N -m M]`: same console output, same exit status, same
files left behind. They read the device tree from x0 as a raw image (fdt_probe), use the semihosting heap,
command line and files (sh_boot, as an ELF and as a raw image; QEMU runs in the directory that is the
harness's --semihosting-root), call semihosting with the MMU on while remapping its buffers (sh_mmu), and
from EL0 (sh_el0, -semihosting-config userspace=on).

Skipped, saying why, when QEMU is not installed (Debian package qemu-system-arm)."""
import shutil
import subprocess

import pytest

from clirun import cli
from guestbin import ROOT
from harness.build import build_test_guest

QEMU = shutil.which("qemu-system-aarch64")
pytestmark = [pytest.mark.qemu,
              pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed "
                                                      "(Debian: apt-get install qemu-system-arm)")]


def qemu(image, *opts, el=1, cwd=None, semihosting=("-semihosting",)):
    machine = "virt,virtualization=on" if el == 2 else "virt"
    cmd = [QEMU, "-M", machine, "-cpu", "max", *semihosting, "-nographic", "-no-reboot", "-monitor", "none",
           "-serial", "stdio", "-kernel", str(image), *opts]
    # PL011 on stdout, semihosting console on stderr: one pipe keeps their order, as the harness's stdout does
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, cwd=cwd or ROOT)


class Run:
    def __init__(self, code, out, err):
        self.returncode, self.stdout, self.stderr = code, out, err


@pytest.fixture
def harness(capsys):
    """`smmu-harness run -kernel IMAGE OPTS` in this process."""
    return lambda image, *opts: Run(*cli(capsys, "run", "-kernel", image, *opts))


def same(q, h):
    assert h.stderr == "", h.stderr
    assert q.stdout.replace("\r\n", "\n") == h.stdout
    assert q.returncode == h.returncode


@pytest.mark.parametrize("opts,el,status", [
    (("-smp", "2", "-m", "256", "-append", "console=ttyAMA0 earlycon quiet"), 1, 2),
    ((), 2, 1),                                                   # EL2: PSCI over SMC, GIC virtualization
    (("-smp", "4", "-m", "1G"), 1, 4),
])
def test_fdt_probe_reads_the_same_tree(opts, el, status, harness):
    image = build_test_guest("fdt_probe", binary=True).path
    q, h = qemu(image, *opts, el=el), harness(image, *opts, "--el", str(el))
    same(q, h)
    assert h.returncode == status and "memory@40000000:" in h.stdout and f"cpus: {status}\n" in h.stdout


def _root(tmp_path, name):
    root = tmp_path / name
    root.mkdir()
    (root / "in.txt").write_text("input file\n")
    return root


def _files(root):
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


@pytest.mark.parametrize("binary", [False, True], ids=["elf", "raw"])
def test_heap_cmdline_and_files_like_qemu(tmp_path, binary, harness):
    image = build_test_guest("sh_boot", binary=binary).path
    qroot, hroot = _root(tmp_path, "qemu"), _root(tmp_path, "harness")
    q = qemu(image, "-m", "256", "-append", "one two  three", cwd=qroot)
    h = harness(image, "-m", "256", "-append", "one two  three", "--semihosting-root", hroot)
    same(q, h)
    assert h.returncode == 4 and "FAILED" not in h.stdout                      # 4 words, every check passed
    assert ("boot_args: x0 device tree\n" in h.stdout) == binary
    assert _files(qroot) == _files(hroot) == {"kept.txt": b"Semihosting file\n"}


@pytest.mark.parametrize("el", [1, 2])
def test_semihosting_with_the_mmu_on_and_remapped_buffers(el, harness):
    image = build_test_guest("sh_mmu").path
    q, h = qemu(image, "-append", "xy", el=el), harness(image, "--append", "xy", "--el", str(el))
    same(q, h)
    assert h.returncode == 0 and h.stdout.count("this is page A\n") == 3 and "B: this is page B\n" in h.stdout


def test_semihosting_from_el0_with_userspace_on(harness):
    image = build_test_guest("sh_el0").path
    q = qemu(image, semihosting=("-semihosting-config", "enable=on,target=native,userspace=on"))
    same(q, harness(image, "--semihosting-userspace"))
    assert q.returncode == 0 and q.stdout == "semihosting at EL0\n"
    assert qemu(image).returncode == 3                    # without it: undefined instruction (EL1 vector)


def test_code_loaded_by_semihosting_and_a_write_at_the_top_of_the_va_space_like_qemu(tmp_path, harness):
    """sh_code_load.S (SYS_READ over code that ran: the new code runs, status 12) and sh_va_top.S (SYS_ELAPSED
    into the last 8 bytes of the VA space: status 0): the same status under QEMU and the harness."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "code.bin").write_bytes(bytes.fromhex("40008052c0035fd6"))      # mov w0, #2; ret
    load = build_test_guest("sh_code_load").path
    q, h = qemu(load, cwd=root), harness(load, "--semihosting-root", root)
    same(q, h)
    assert h.returncode == 12
    top = build_test_guest("sh_va_top").path
    q, h = qemu(top), harness(top)
    same(q, h)
    assert h.returncode == 0
