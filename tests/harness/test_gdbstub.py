"""The gdb stub with the real client: Debian's `gdb-multiarch` in batch mode against `smmu-harness run -S
-gdb tcp::0` (the CLI as a user runs it) with guest_fw/tests/gdb_sample.c for symbols: break on a symbol,
continue, read registers and variables, step, watchpoints, switch vCPU on a 2-vCPU guest, write a variable,
scheduler-locking and Ctrl-C, detach, kill, continue to exit. The same gdb script against
`qemu-system-aarch64 -M virt -cpu max -semihosting -smp 2 -kernel ELF -S -gdb tcp:127.0.0.1:PORT` (QEMU's own
gdbstub) prints the same as against the harness. And the CLI's -s / -S / -gdb refusals (125).

Skipped, saying why, when gdb-multiarch (Debian package gdb-multiarch) or, for the cross-check,
qemu-system-aarch64 (qemu-system-arm) is not installed."""
from __future__ import annotations

import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from clirun import cli
from guestbin import ROOT, guest_elf

GDB = shutil.which("gdb-multiarch")
QEMU = shutil.which("qemu-system-aarch64")
needs_gdb = pytest.mark.skipif(GDB is None, reason="gdb-multiarch not installed (Debian: apt-get install "
                                                   "gdb-multiarch)")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed (Debian: apt-get "
                                                     "install qemu-system-arm)")
LISTENING = re.compile(r"gdb stub listening on 127\.0\.0\.1:(\d+)")


class Target:
    """A guest under a gdb stub that waits for the debugger (-S): the harness's CLI or QEMU."""

    def __init__(self, cmd: list[str], port: int | None = None):
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.port = port if port is not None else self._announced_port()
        self.stdout = self.stderr = ""
        self.returncode: int | None = None

    def _announced_port(self, timeout: float = 60) -> int:
        ready = select.select([self.proc.stderr], [], [], timeout)[0]
        line = self.proc.stderr.readline() if ready else ""   # the stub's first line on stderr names the port
        m = LISTENING.search(line)
        if m is None:
            self.proc.kill()
            raise AssertionError(f"no port announced: {line!r} {self.proc.stderr.read()!r}")
        return int(m.group(1))

    def finish(self, timeout: float = 60) -> "Target":
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"the target did not end: {out!r} {err!r}")
        self.stdout, self.stderr, self.returncode = out, err, self.proc.returncode
        return self

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def harness(elf, *opts: str) -> Target:
    return Target([sys.executable, "-m", "harness", "run", str(elf), "--cpus", "2", *opts, "-S",
                   "-gdb", "tcp::0"])


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def qemu(elf) -> Target:
    port = free_port()
    t = Target([QEMU, "-M", "virt", "-cpu", "max", "-semihosting", "-smp", "2", "-nographic", "-no-reboot",
                "-monitor", "none", "-serial", "stdio", "-kernel", str(elf), "-S", "-gdb",
                f"tcp:127.0.0.1:{port}"], port)
    deadline = time.monotonic() + 20
    while True:                                      # QEMU names no port: wait until it accepts
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return t
        except OSError:
            if time.monotonic() > deadline or t.proc.poll() is not None:
                t.kill()
                raise AssertionError(f"QEMU's gdbstub is not listening on {port}")
            time.sleep(0.1)


def gdb_argv(port: int, elf, commands: list[str]) -> list[str]:
    argv = [GDB, "-q", "-nx", "-batch", "-ex", "set architecture aarch64", "-ex", "set pagination off",
            "-ex", "set confirm off", "-ex", f"target remote 127.0.0.1:{port}"]
    for c in commands:
        argv += ["-ex", c]
    return argv + [str(elf)]


def gdb(port: int, elf, commands: list[str], timeout: float = 120) -> str:
    """gdb's output (stdout and stderr in order) for `commands` run against 127.0.0.1:port."""
    r = subprocess.run(gdb_argv(port, elf, commands), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, text=True, timeout=timeout, cwd=ROOT)
    return r.stdout


def session(target: Target, commands: list[str], elf) -> tuple[str, Target]:
    try:
        out = gdb(target.port, elf, commands)
        return out, target.finish()
    finally:
        target.kill()


def values(out: str) -> dict[int, str]:
    """gdb's value history in the output: {1: '13', ...} from lines '$1 = 13'."""
    return {int(n): v for n, v in re.findall(r"^\$(\d+) = (.*)$", out, re.M)}


@pytest.fixture(scope="module")
def elf():
    return guest_elf("gdb_sample")


# -- the real client against the harness ------------------------------------------------------------------------

@needs_gdb
def test_gdb_breaks_reads_steps_watches_switches_vcpu_and_sees_the_exit(elf):
    out, t = session(harness(elf), [
        "info threads",
        "break secondary_work", "continue",                  # CPU1 (thread 2) runs secondary_work(13)
        "p x", "p/x $pc", "p/x $x0", "p/x $sp", "p cpu1_result",
        "x/2i $pc", "stepi", "p/x $pc",                      # one instruction (not a branch) of thread 2
        "info threads",
        "delete", "watch counter", "thread 1", "continue",  # CPU0 writes counter = 1 in bump(1)
        "p counter", "continue", "p counter",                # bump(2): 3
        "delete", "continue"], elf)
    assert re.search(r"^\*? *1 +Thread 1\.1 \(vm0\.cpu0 \[running\]\)", out, re.M), out
    assert re.search(r"^\*? *2 +Thread 1\.2 \(vm0\.cpu1 \[off\]\)", out, re.M), out
    # the file as the compiler recorded it: relative or absolute (an object cached from another checkout)
    bp = int(re.search(r"Breakpoint 1 at (0x[0-9a-f]+): file (\S*/)?guest_fw/tests/gdb_sample\.c", out).group(1), 16)
    assert re.search(r"Thread 2 hit Breakpoint 1, secondary_work \(x=13\) at (\S*/)?guest_fw/tests/gdb_sample\.c",
                     out), out
    v = values(out)
    assert v[1] == "13" and int(v[2], 16) == bp and int(v[3], 16) == 13 and v[5] == "0", out
    assert int(v[4], 16) % 16 == 0 and int(v[4], 16) != 0, out          # AAPCS64: sp 16-byte aligned
    assert not re.search(r"=> 0x[0-9a-f]+ <secondary_work\+0>:\s+(b|bl|br|blr|ret|cbn?z|tbn?z)\b", out), out
    assert int(v[6], 16) == bp + 4, out
    # both vCPUs listed, thread 2 current, thread 1 somewhere in main waiting for CPU1
    assert re.search(r"^\* 2 +Thread 1\.2 \(vm0\.cpu1 \[running\]\) .*secondary_work", out, re.M), out
    assert re.search(r"^  1 +Thread 1\.1 \(vm0\.cpu0 \[running\]\) (0x[0-9a-f]+ in )?main \(\)", out, re.M), out
    assert "[Switching to thread 1 (Thread 1.1)]" in out and "Hardware watchpoint 2: counter" in out, out
    assert re.search(r"Thread 1 hit Hardware watchpoint 2: counter\s+Old value = 0\s+New value = 1\s", out), out
    assert re.search(r"Hardware watchpoint 2: counter\s+Old value = 1\s+New value = 3\s", out), out
    assert v[7] == "1" and v[8] == "3", out
    assert "[Inferior 1 (process 1) exited with code 06]" in out, out
    assert t.returncode == 6 and t.stdout == "counter 6 cpu1 40\n", (t.returncode, t.stdout, t.stderr)


@needs_gdb
def test_gdb_writes_a_variable_and_a_register_and_the_guest_sees_them(elf):
    out, t = session(harness(elf, "--cpus", "1"), [
        "break bump", "continue", "p n",
        "set var counter = 10",              # bump(1) adds to it: 11, then 13, 16
        "delete", "break secondary_work",    # never reached with one vCPU
        "tbreak gdb_sample.c:44", "continue",  # the printf after the loop
        "p counter", "set var cpu1_result = 7", "continue"], elf)
    v = values(out)
    assert v[1] == "1" and v[2] == "16", out
    assert "[Inferior 1 (process 1) exited with code 020]" in out, out       # gdb prints it in octal
    assert t.returncode == 16 and t.stdout == "counter 16 cpu1 7\n", (t.returncode, t.stdout, t.stderr)


@needs_gdb
def test_gdb_scheduler_locking_holds_cpu1_and_ctrl_c_interrupts(elf):
    """`set scheduler-locking on`: only thread 1 (CPU0) runs; it waits for CPU1 forever, CPU1 being held once
    CPU_ON starts it. gdb's Ctrl-C (SIGINT to gdb, which sends 0x03) stops the machine; unlocked, it ends."""
    t = harness(elf)
    g = subprocess.Popen(gdb_argv(t.port, elf, [
        "set scheduler-locking on", "continue",
        "p/x $pc", "info threads", "set scheduler-locking off", "continue"]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, cwd=ROOT)
    try:
        time.sleep(4)                                        # attached, continuing, CPU0 spinning
        assert g.poll() is None, g.communicate()[0]
        g.send_signal(signal.SIGINT)
        out = g.communicate(timeout=60)[0]
        t.finish()
    finally:
        g.kill()
        t.kill()
    assert "received signal SIGINT" in out, out
    assert re.search(r"^\* 1 +Thread 1\.1 \(vm0\.cpu0 \[running\]\) (0x[0-9a-f]+ in )?main \(\) at "
                     r"(\S*/)?guest_fw/tests/gdb_sample\.c:3[89]", out, re.M), out
    # powered on by CPU_ON, held at its entry point: it has not run an instruction
    assert re.search(r"^  2 +Thread 1\.2 \(vm0\.cpu1 \[running\]\) secondary_entry \(\)", out, re.M), out
    assert "[Inferior 1 (process 1) exited with code 06]" in out, out
    assert t.returncode == 6 and t.stdout == "counter 6 cpu1 40\n", (t.returncode, t.stdout, t.stderr)


@needs_gdb
def test_gdb_detach_lets_the_guest_run_to_its_end(elf):
    out, t = session(harness(elf), ["break bump", "continue", "detach"], elf)
    assert "hit Breakpoint 1, bump (n=n@entry=1)" in out and "[Inferior 1 (process 1) detached]" in out, out
    assert t.returncode == 6 and t.stdout == "counter 6 cpu1 40\n", (t.returncode, t.stdout, t.stderr)


@needs_gdb
def test_gdb_kill_ends_the_run_with_137(elf):
    out, t = session(harness(elf), ["break bump", "continue", "kill"], elf)
    assert "Breakpoint 1, bump" in out and "[Inferior 1 (process 1) killed]" in out, out
    assert t.returncode == 137 and t.stdout == "", (t.returncode, t.stdout, t.stderr)


# -- the same script against QEMU's gdbstub ---------------------------------------------------------------------

# Deterministic under both: CPU0 only waits in main's loop while CPU1 works, so nothing of CPU0 is printed
# until the watchpoint stops it where it writes. `info registers` is left out for cpsr's type (QEMU's
# aarch64-core.xml declares it a plain integer, this one with gdb's own cpsr_flags) and because QEMU's -cpu max
# describes the V registers through SVE's Z registers.
CROSS_SCRIPT = [
    "break secondary_work", "continue", "bt",
    "p x", "p/x $pc", "p/x $sp", "p/x $x0", "p/x $x30", "p/x $cpsr", "p/x $fpcr", "p/x $v0.q.u",
    "x/4i $pc", "x/2gx $sp", "stepi", "p/x $pc", "step", "p/x $pc", "finish",
    "delete", "watch counter", "continue", "p counter", "p/x $pc", "continue", "p counter",
    "rwatch cpu1_result", "delete 2", "continue", "p/x $pc",
    "delete", "continue"]


@needs_gdb
@needs_qemu
@pytest.mark.qemu
def test_gdb_sees_the_same_under_qemus_gdbstub(elf):
    ours, t = session(harness(elf), CROSS_SCRIPT, elf)
    theirs, q = session(qemu(elf), CROSS_SCRIPT, elf)
    assert "exited with code 06" in theirs and q.returncode == 6, theirs
    assert "hit Hardware read watchpoint 3: cpu1_result" in theirs and "Thread 2 hit Breakpoint 1" in theirs, theirs
    assert ours.splitlines() == theirs.splitlines()
    assert t.returncode == q.returncode and t.stdout == q.stdout.replace("\r\n", "\n")


# -- the CLI ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("opts,why", [
    (("-S",), "-S waits for a debugger: give -s or -gdb tcp::PORT too"),
    (("-gdb", "tcp:0.0.0.0:1234"), "127.0.0.1"),
    (("-gdb", "tcp:192.168.1.2:1234"), "127.0.0.1"),
    (("-gdb", "tcp::1234,server,nowait"), "chardev options"),
    (("-gdb", "unix:/tmp/gdb.sock"), "only tcp::PORT"),
    (("-gdb", "tcp::99999"), "is not a TCP port"),
    (("-s", "-gdb", "tcp::4321"), "name two ports"),
])
def test_cli_refuses_what_it_cannot_serve_on_loopback(opts, why, elf, capsys):
    code, out, err = cli(capsys, "run", elf, *opts)
    assert code == 125 and why in err and len(err.splitlines()) == 1 and out == "", (code, err)


def test_cli_gdb_none_runs_without_a_stub(elf, capsys):
    code, out, err = cli(capsys, "run", elf, "-gdb", "none", "--cpus", "2")
    assert code == 6 and out == "counter 6 cpu1 40\n" and err == "", (code, out, err)
