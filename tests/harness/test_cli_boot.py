"""The boot options of `smmu-harness run` (-kernel, -smp, -m, --append, --dtb) and `smmu-harness dtb`: the tree
it writes is the one `run` gives with the same options, dtc reads it without a warning, a terminal gets no
binary, errors are one line with status 125 naming the file."""
import os
import pty
import shutil
import subprocess
import sys
import threading
import tty

import pytest

from devmodel.fdt import Fdt
from clirun import cli
from guestbin import ROOT
from harness.build import build_test_guest
from harness.machine import Machine

DTC = shutil.which("dtc")


@pytest.fixture(scope="module")
def probe():
    return build_test_guest("fdt_probe", binary=True).path


def test_qemu_spellings_of_cpus_memory_and_command_line(probe, capsys):
    code, out, err = cli(capsys, "run", "-kernel", probe, "-smp", "cpus=3", "-m", "512M", "-append", "root=/dev/vda")
    assert code == 3, err
    assert "memory@40000000: device_type=\"memory\" reg=<0 40000000 0 20000000>\n" in out
    assert 'bootargs="root=/dev/vda"' in out
    code, out, _ = cli(capsys, "run", probe, "--cpus", "2", "-m", "1G")
    assert code == 2 and "reg=<0 40000000 0 40000000>" in out


def test_dtb_writes_the_tree_run_gives(tmp_path, capsys):
    out = tmp_path / "board.dtb"
    assert cli(capsys, "dtb", "-o", out, "-smp", "2", "-m", "256", "--el", "2", "--append", "console=ttyAMA0") == \
        (0, "", "")
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(ncpus=2, ram_size=256 << 20, start_el=2)
    assert out.read_bytes() == vm.device_tree(bootargs="console=ttyAMA0")
    t = Fdt.from_bytes(out.read_bytes())
    assert t.find("/chosen").string("bootargs") == "console=ttyAMA0" and t.find("/psci").string("method") == "smc"


@pytest.mark.skipif(DTC is None, reason="dtc not installed (Debian: apt-get install device-tree-compiler)")
def test_dtc_reads_the_dtb_output_without_warnings(tmp_path):
    p = subprocess.run([sys.executable, "-m", "harness", "dtb", "-smp", "3"], cwd=ROOT, capture_output=True,
                       timeout=60)
    assert p.returncode == 0 and p.stdout[:4] == b"\xd0\x0d\xfe\xed"          # a pipe gets the blob
    d = subprocess.run([DTC, "-I", "dtb", "-O", "dts", "-o", os.devnull, "-"], input=p.stdout,
                       capture_output=True, timeout=60)
    assert d.returncode == 0 and d.stderr == b"", d.stderr


def _on_a_terminal(*args):
    """Run the CLI with its stdout on a pseudo-terminal; returns (process, what the terminal received)."""
    master, slave = pty.openpty()
    tty.setraw(master)                          # bytes as written (no newline translation)
    got = bytearray()

    def drain():
        while True:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:                     # EIO: the other side is closed
                return
            if not chunk:
                return
            got.extend(chunk)
    reader = threading.Thread(target=drain)
    reader.start()
    try:
        p = subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, stdout=slave,
                           stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(slave)
        reader.join(10)
        os.close(master)
    return p, bytes(got)


def test_dtb_refuses_a_terminal_unless_asked():
    p, got = _on_a_terminal("dtb")
    assert p.returncode == 125 and got == b"" and b"refusing to write a binary tree to a terminal" in p.stderr
    p, got = _on_a_terminal("dtb", "-o", "-")
    assert p.returncode == 0 and len(got) >= 1 << 20                    # the terminal asked for it


@pytest.mark.parametrize("args,message", [
    (["dtb", "-smp", "124"], "1 to 123"),
    (["dtb", "--dtb", "/nonexistent/x.dtb"], "/nonexistent/x.dtb: no such file"),
    (["dtb", "-o", "/nonexistent/dir/x.dtb"], "/nonexistent/dir/x.dtb: No such file or directory"),
    (["dtb", "-m", "3K"], "whole number of MiB"),
])
def test_dtb_errors_are_one_line_125(args, message, capsys):
    code, out, err = cli(capsys, *args)
    assert code == 125 and message in err and err.count("\n") == 1 and out == "", err
    assert "Traceback" not in err


def test_run_with_bad_dtb_names_the_file(tmp_path, probe, capsys):
    bad = tmp_path / "bad.dtb"
    bad.write_bytes(b"not a device tree")
    code, _, err = cli(capsys, "run", probe, "--dtb", bad)
    assert code == 125 and err.startswith(f"smmu-harness: {bad}: ") and err.count("\n") == 1


def test_build_binary_is_the_elf_flattened(tmp_path, capsys):
    from harness.build import TESTS_DIR
    from harness.elfload import load_elf

    out = tmp_path / "probe.bin"
    code, printed, _ = cli(capsys, "build", TESTS_DIR / "fdt_probe.c", "--binary", "-o", out)
    assert code == 0 and printed.strip() == str(out)
    elf = load_elf(build_test_guest("fdt_probe").path)
    segs = [s for s in elf.segments if s.data]
    low = min(s.paddr for s in segs)
    data = out.read_bytes()
    assert low == 0x4008_0000 and len(data) == max(s.paddr + len(s.data) for s in segs) - low
    for s in segs:                                       # objcopy -O binary: file bytes at paddr - low
        assert data[s.paddr - low:s.paddr - low + len(s.data)] == s.data
