"""Semihosting wired into the machine and the CLI (harness/semihost.py, Machine.semihosting_call): confined
host files under --semihosting-root against a hostile guest, console input that never blocks the machine
(late input, the end of input), unsupported operations (status 134), EL0 calls, the virtual clock."""
import os
import struct
import subprocess
import sys
import time

import pytest

from clirun import cli
from guestbin import ROOT, guest_elf
from harness.exits import EXIT_FATAL, Kind
from harness.machine import ConsoleInput, Machine

BASE = 0x4008_0000


def words(*w):
    return struct.pack(f"<{len(w)}I", *w)


def tree(path):
    return {str(p.relative_to(path)): (p.is_symlink(), p.read_bytes() if p.is_file() and not p.is_symlink()
                                       else None) for p in sorted(path.rglob("*"))}


@pytest.fixture
def jail(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "in.txt").write_text("in\n")
    (tmp_path / "secret.txt").write_text("secret\n")
    (root / "link").symlink_to("../secret.txt")
    return tmp_path, root


def test_hostile_guest_gets_errnos_and_touches_nothing_outside(jail, capsys):
    outside, root = jail
    before = tree(outside)
    code, out, err = cli(capsys, "run", guest_elf("sh_hostile"), "--semihosting-root", root)
    assert code == 0 and out.endswith("done\n") and err == "", err
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    for name in ("open ../secret.txt mode 0", "open ../secret.txt mode 4", "open sub/../../secret.txt mode 0",
                 "open link mode 0", "open link mode 6", "open ../created.txt mode 4"):
        assert lines[name] == "-1 errno 13", name                 # EACCES
    assert lines["open /etc/passwd mode 0"] == "-1 errno 2"        # the root's own /etc/passwd: ENOENT
    assert lines["open sub mode 0"] == "-1 errno 21"               # EISDIR
    assert lines["remove ../secret.txt"] == lines["rename ../secret.txt"] == "-1 errno 13"
    assert lines["rename into .."] == "-1 errno 13" and lines["system"] == "-1 errno 13"
    for name in ("open block unmapped", "open name unmapped", "heapinfo unmapped", "heapinfo block unmapped",
                 "cmdline unmapped buffer", "elapsed unmapped", "tmpnam unmapped"):
        assert lines[name] == "-1 errno 14", name                 # EFAULT
    assert lines["write0 unmapped"] == lines["writec unmapped"] == "deadbeef"
    assert lines["name without NUL at len"] == "-1 errno 22"
    assert lines["write huge"] == "not written 4000000000000000 errno 14 flen 0"
    assert lines["open name huge length"] == "-1 errno 36"        # ENAMETOOLONG
    for name in ("close 0", "close 99", "close -1", "seek 42", "flen 42", "istty 42", "close 1 << 32 | 1"):
        assert lines[name] == "-1 errno 9", name                  # EBADF
    assert lines["write 42"] == "not written 1 errno 9" and lines["read 42"] == "not read 1 errno 9"
    after = tree(outside)
    assert after["secret.txt"] == (False, b"secret\n") and "created.txt" not in after
    assert {k: v for k, v in after.items() if k != "root/link"} == {k: v for k, v in before.items()
                                                                  if k != "root/link"}
    assert "root/link" not in after                                # it removed its own link, not the target


def test_no_root_means_no_host_files(tmp_path, capsys, monkeypatch):
    (tmp_path / "in.txt").write_text("x")
    monkeypatch.chdir(tmp_path)                          # where QEMU would look for the guest's files
    _, out, _ = cli(capsys, "run", guest_elf("sh_boot"))
    assert "open out.txt w: -1\n" in out and "open out.txt again: -1 errno 2\n" in out
    assert sorted(os.listdir(tmp_path)) == ["in.txt"]


def test_bad_root_is_one_line_125(tmp_path, capsys):
    code, _, err = cli(capsys, "run", guest_elf("hello"), "--semihosting-root", tmp_path / "nope")
    assert code == 125 and err.count("\n") == 1 and "semihosting root" in err and "Traceback" not in err


def _input_run(*extra, feed=(), timeout=60):
    p = subprocess.Popen([sys.executable, "-m", "harness", "run", str(guest_elf("sh_input")), *extra], cwd=ROOT,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    *early, (delay, last) = feed
    for d, data in early:
        time.sleep(d)
        p.stdin.write(data)
        p.stdin.flush()
    time.sleep(delay)
    out, err = p.communicate(last, timeout=timeout)      # the last piece, then the end of input
    return p.returncode, out.decode(), err.decode()


def test_console_input_arriving_late_is_read():
    rc, out, err = _input_run(feed=((0.3, b"h"), (0.5, b"i\nres"), (0.3, b"t")))
    assert rc == 0, err
    assert out.startswith("readc: 'hi'\nread: not read ")     # SYS_READ of :tt returns what there is


def test_readc_after_the_end_of_input_ends_the_run_124():
    rc, out, err = _input_run("--append", "again", feed=((0, b"hi\nrest"),))
    assert out == "readc: 'hi'\nread: not read 12 'rest'\nreadc again\n"
    assert rc == 124 and "SYS_READC" in err and "waits for console input after its end" in err


def test_no_input_waits_until_the_timeout():
    p = subprocess.Popen([sys.executable, "-m", "harness", "run", str(guest_elf("sh_input")), "--timeout", "1"],
                         cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t = time.monotonic()
    p.wait(timeout=60)                           # stdin stays open (and empty) until the run is over
    err = p.stderr.read()
    for f in (p.stdin, p.stdout, p.stderr):
        f.close()
    assert p.returncode == 124 and b"time budget of 1 s exhausted" in err and time.monotonic() - t < 30


def test_console_input_api():
    r, w = os.pipe()
    inp = ConsoleInput(r)
    assert inp.read(4) is None and not inp.wait(0.01)
    os.write(w, b"abc")
    assert inp.wait(1) and inp.read(2) == b"ab" and inp.read(8) == b"c"
    os.close(w)
    assert inp.read(1) == b"" and inp.ended and inp.wait(None)
    os.close(r)
    fixed = ConsoleInput.from_bytes(b"xy")
    assert fixed.read(1) == b"x" and fixed.read(5) == b"y" and fixed.read(1) == b"" and fixed.ended


def test_readc_waits_while_another_vcpu_runs():
    # cpu0: PSCI CPU_ON(cpu1 -> spin), SYS_READC, exit with the character read; cpu1 spins meanwhile. The input
    # arrives after a few slices: cpu0 re-issues its HLT each round until then, cpu1 keeps running.
    code = words(0xD2800060, 0xF2B88000, 0xD2800021, 0x10000162,    # x0 = CPU_ON, x1 = 1, adr x2, spin
                 0xD2800003, 0xD4000002,                            # x3 = 0; hvc #0
                 0xD28000E0, 0xD2800001, 0xD45E0000,                # mov x0, #7; mov x1, #0; hlt #0xf000
                 0xAA0003E2, 0xD2800300, 0x100000A1, 0xF9000422,    # x2 = x0; x0 = SYS_EXIT; block[1] = x2
                 0xD45E0000, 0x14000000, 0xD503201F) + struct.pack("<QQ", 0x20026, 0)   # hlt; spin: b .
    r, w = os.pipe()
    m = Machine(console=lambda vm, d, s: None, console_input=ConsoleInput(r), quantum=1000)
    vm = m.add_vm(ncpus=2)
    vm.load_code(BASE, code)
    ran = []

    class Feeder:
        def slice_end(self, vcpu):
            ran.append(vcpu.index)
            if ran.count(1) == 3:
                os.write(w, b"Z")
    m.add_plugin(Feeder())
    o = m.run(timeout=60)
    os.close(w)
    os.close(r)
    assert (o.kind, o.exit_code) == (Kind.EXIT, ord("Z"))
    assert ran.count(1) >= 3 and ran.count(0) >= 3                  # both ran while cpu0 waited


def test_unsupported_operation_is_a_death_line_134(tmp_path, capsys):
    p = tmp_path / "bad.bin"
    p.write_bytes(words(0xD2800840, 0xD45E0000, 0x14000000))    # mov x0, #0x42; hlt #0xf000; b .
    code, _, err = cli(capsys, "run", p)
    assert code == EXIT_FATAL == 134 and err.count("\n") == 1
    assert "semihosting: Unsupported SemiHosting SWI 0x42 at pc 0x40080004 <??>: d45e0000 hlt #0xf000" in err


def test_semihosting_from_el0_only_with_userspace(capsys):
    assert cli(capsys, "run", guest_elf("sh_el0"), "--semihosting-userspace")[:2] == (0, "semihosting at EL0\n")
    code, out, _ = cli(capsys, "run", guest_elf("sh_el0"))
    assert code in (3, 132) and "semihosting at EL0" not in out              # an undefined instruction


def test_clock_is_the_machine_virtual_time():
    # SYS_ELAPSED twice around a 1000-iteration loop, in counted slices of 100 instructions
    code = words(0xD2800600, 0x100001A1, 0xD45E0000,               # mov x0, #0x30; adr x1, t0; hlt
                 0xD2807D02, 0xF1000442, 0x54FFFFE1,               # mov x2, #1000; 1: subs x2, x2, #1; b.ne 1b
                 0xD2800600, 0x10000121, 0xD45E0000,               # mov x0, #0x30; adr x1, t1; hlt
                 0xD2800300, 0x10000101, 0xD45E0000,               # mov x0, #0x18; adr x1, block; hlt
                 0x14000000, 0xD503201F) + struct.pack("<QQQQ", 0, 0, 0x20026, 0)   # b .; t0, t1, block
    m = Machine(console=lambda vm, d, s: None, quantum=100)
    vm = m.add_vm()
    vm.load_code(BASE, code)
    assert m.run(max_insns=1_000_000).exit_code == 0
    t0, t1 = struct.unpack("<QQ", vm.ipa.read_bytes(BASE + 0x38, 16))
    # 2002 instructions at one tick (16 ns) each (harness/clock.py): whole slices of 100, give or take the
    # in-slice sample estimates
    ns_per_tick = 1_000_000_000 // m.clock.hz
    assert t1 > t0 and (t1 - t0) % ns_per_tick == 0 and 2000 <= (t1 - t0) // ns_per_tick <= 2300
    assert vm.semihosting.clock() == m.virtual_ns() == m.clock.now() * ns_per_tick


def _mov(rd, v):                                                   # movz/movk xd, 4 x 16 bits
    return [(0xD2800000 if i == 0 else 0xF2800000) | (i << 21) | (((v >> (16 * i)) & 0xFFFF) << 5) | rd
            for i in range(4)]


def test_writes_into_a_device_are_dropped_as_qemu_does():
    """SYS_READ (4 bytes of `:semihosting-features`) and SYS_ELAPSED with their buffer on the PL011's UARTDR:
    QEMU's semihosting writes guest memory with address_space_write_rom, which skips MMIO, so the device sees
    nothing (no byte transmitted) and both calls succeed (0); a guest must not reach a device's side effects
    through a semihosting buffer."""
    uartdr, res = 0x0900_0000, BASE + 0x300
    code = [*_mov(0, 1), *_mov(1, BASE + 0x200), 0xD45E0000,       # SYS_OPEN(":semihosting-features", "r")
            *_mov(2, BASE + 0x220), 0xF9000040,                    # str x0, [x2]: the handle into the block
            *_mov(0, 6), *_mov(1, BASE + 0x220), 0xD45E0000,       # SYS_READ {h, UARTDR, 4}
            *_mov(2, res), 0xF9000040,
            *_mov(0, 0x30), *_mov(1, uartdr), 0xD45E0000,          # SYS_ELAPSED at UARTDR
            *_mov(2, res + 8), 0xF9000040,
            *_mov(0, 0x8400_0008), 0xD4000002]                     # PSCI SYSTEM_OFF
    blob = words(*code).ljust(0x200, b"\0") + struct.pack("<3Q", BASE + 0x240, 0, 21)
    blob = blob.ljust(0x220, b"\0") + struct.pack("<3Q", 0, uartdr, 4)
    blob = blob.ljust(0x240, b"\0") + b":semihosting-features\0"
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm()
    vm.load_code(BASE, blob.ljust(0x310, b"\xff"))
    assert m.run(timeout=10).kind == Kind.EXIT
    assert struct.unpack("<2Q", vm.ipa.read_bytes(res, 16)) == (0, 0)
    assert bytes(vm.output) == b"" and vm.pl011.transmitted == 0


def test_code_a_semihosting_read_puts_over_code_that_ran_is_the_code_run_next(tmp_path, capsys):
    """guest_fw/tests/sh_code_load.S: SYS_READ over a function that already ran, then IC IALLU and a call: the
    new code runs (QEMU invalidates the translated code of the pages semihosting writes): status 12, as QEMU's."""
    (tmp_path / "code.bin").write_bytes(words(0x52800040, 0xD65F03C0))     # mov w0, #2; ret
    code, _, err = cli(capsys, "run", guest_elf("sh_code_load"), "--semihosting-root", tmp_path)
    assert (code, err) == (12, "")


def test_a_write_ending_at_the_top_of_the_va_space_succeeds(capsys):
    """guest_fw/tests/sh_va_top.S: SYS_ELAPSED into the last 8 bytes of the 64-bit VA space (TTBR1_EL1): X0 = 0
    and the guest exits 0, as under QEMU, with no harness error."""
    assert cli(capsys, "run", guest_elf("sh_va_top")) == (0, "", "")


def test_a_semihosting_string_without_end_ends_with_the_timeout(monkeypatch):
    """SYS_WRITE0 of 64 MiB of RAM without a NUL, streamed in 4 KiB pieces here (`_STRING_HOLD`), under a
    10 ms --timeout: the call stops at the deadline (Machine._overdue) instead of running to the end of RAM, and
    the run ends 124 with the output so far kept. QEMU has no bound here: a string whose NUL never comes (the VA
    space wraps, pages alias) would hang the process, which no --timeout could stop inside the call."""
    import devmodel.semihosting as dsh
    monkeypatch.setattr(dsh, "_STRING_HOLD", 4096)
    out = bytearray()
    m = Machine(console=lambda vm, data, stream: out.extend(data))
    vm = m.add_vm(ram_size=64 << 20)
    start = vm.ram_ipa + 0x1000
    vm.ram.buf[0x1000:] = b"A" * (len(vm.ram.buf) - 0x1000)
    vm.load_code(vm.ram_ipa, words(*_mov(0, 4), *_mov(1, start), 0xD45E0000, *_mov(0, 0x8400_0008), 0xD4000002))
    t = time.monotonic()
    o = m.run(timeout=0.01)
    assert o.kind == Kind.TIMEOUT and o.exit_code == 124 and time.monotonic() - t < 5
    assert 0 < len(out) < (64 << 20) - 0x2000 and set(out) == {ord("A")}
    assert vm.vcpus[0].pc == vm.ram_ipa + 32                      # on the HLT
