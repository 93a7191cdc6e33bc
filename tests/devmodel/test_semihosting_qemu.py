"""The semihosting model against the real thing: guest_fw/tests/semihosting.c run by
`qemu-system-aarch64 -M virt -cpu max -semihosting` (cwd = a scratch directory, console input on a pipe,
`-append`) and by the harness's CPU with a `Semihosting` configured from the same inputs (root = another
scratch directory, the same input, `qemu_cmdline`, `heapinfo_for_layout` of the loaded ELF, QEMU's pid for
SYS_TMPNAM). Every result the guest prints on the PL011 must be identical, so must the console streams, the
files left behind and the exit status (134 for the unsupported operation: QEMU abort()s).

Skipped, saying why, when QEMU is not installed (Debian package qemu-system-arm)."""
from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import pytest

from devmodel.semihosting import Semihosting, UNSUPPORTED_STATUS, heapinfo_for_layout, qemu_cmdline

QEMU = shutil.which("qemu-system-aarch64")
pytestmark = [pytest.mark.qemu,
              pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed "
                                                      "(Debian: apt-get install qemu-system-arm)")]

RAM_BASE = 0x4000_0000
INPUT = b"abcdefgh"


def _root(tmp: Path, name: str) -> Path:
    root = tmp / name
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "in.txt").write_text("inside\n")
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _under_qemu(elf: Path, root: Path, ram_mib: int, append: str):
    serial = root.parent / f"serial-{root.name}.txt"
    p = subprocess.Popen([QEMU, "-M", "virt", "-cpu", "max", "-m", f"{ram_mib}M", "-semihosting", "-nographic",
                          "-no-reboot", "-monitor", "none", "-serial", f"file:{serial}", "-kernel", str(elf),
                          "-append", append], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    out, err = p.communicate(INPUT, timeout=60)
    status = 128 - p.returncode if p.returncode < 0 else p.returncode     # killed by SIGABRT: as a shell says
    return p.pid, serial.read_bytes(), out, err, status


def _under_harness(elf: Path, root: Path, ram_mib: int, append: str, pid: int):
    from harness.elfload import load_elf
    from harness.machine import Machine

    serial = bytearray()
    streams: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
    pending = bytearray(INPUT)

    def stdin(n: int) -> bytes:
        data = bytes(pending[:n])
        del pending[:n]
        return data

    ticks = itertools.count(1000, 1000)          # the machine's own count is 0 in an uncounted run
    m = Machine(console=lambda vm, data, stream: serial.extend(data))
    vm = m.add_vm(ram_size=ram_mib << 20)
    image = vm.load(load_elf(str(elf))).elf
    heap = heapinfo_for_layout(RAM_BASE, ram_mib << 20, [(s.paddr, s.memsz) for s in image.segments])
    vm.semihosting = Semihosting(lambda data, stream: streams[stream].extend(data), clock=lambda: next(ticks),
                                 log=m.log, tracer=m.tracer, root=root, allow_system=True, stdin=stdin,
                                 isatty=lambda stream: False, cmdline=qemu_cmdline(str(elf), append), heap=heap,
                                 tmpnam_pid=pid)
    try:
        outcome = m.run(timeout=60)
    finally:
        vm.semihosting.close()
    return bytes(serial), bytes(streams[1]), bytes(streams[2]), outcome.exit_code


@pytest.mark.parametrize("ram_mib,append,status", [(128, "one  two unsupported", UNSUPPORTED_STATUS),
                                                   (256, "one  two", 0)])
def test_same_results_as_qemu(tmp_path, ram_mib, append, status):
    from harness.build import build_test_guest

    elf = build_test_guest("semihosting").path
    qroot, hroot = _root(tmp_path, "qemu"), _root(tmp_path, "harness")
    pid, q_serial, q_out, q_err, q_status = _under_qemu(elf, qroot, ram_mib, append)
    h_serial, h_out, h_err, h_status = _under_harness(elf, hroot, ram_mib, append, pid)

    assert h_serial.decode() == q_serial.decode()
    assert b"heapinfo: 0 heap " in h_serial and b"tt: read 4 -> 0 'abcd'" in h_serial   # the probe ran
    assert q_status == h_status == status
    # QEMU: `:tt` stdout on its stdout; SYS_WRITE0/WRITEC and `:tt` stderr on its stderr (then, for an
    # unsupported operation, its abort message). The model: `:tt` stderr on stream 2, the rest on stream 1.
    q_err = q_err.split(b"qemu: Unsupported SemiHosting SWI", 1)[0]
    assert b"tt-err: oops\n" in q_err and h_err == b"tt-err: oops\n"
    assert h_out == q_out + q_err.replace(b"tt-err: oops\n", b"")
    assert _tree(qroot) == _tree(hroot) == {"sub/in.txt": b"inside\n"}
