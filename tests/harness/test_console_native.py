"""The native console path (harness/console.py, harness/native/console.c) against the Python one: the same
bytes in the same order for the PL011 and semihosting interleaved on several vCPUs (and as QEMU prints them),
for runs that end by a fault, a budget or a timeout mid-output, for hostile pointers, with tracing on; the
flags that decide what C may do; and that the native path is really taken (so the comparisons compare two
paths)."""
from __future__ import annotations

import io
import shutil
import struct
import subprocess

import pytest
from unicorn.arm64_const import UC_ARM64_REG_X5

from clirun import cli
from devmodel.pl011 import INT_TX, PL011
from devmodel.tlbi import encoding, sys_word
from devmodel.trace import Tracer
from guestbin import guest_elf
from harness import console
from harness.build import GUEST_FW, build_guest
from harness.exits import Kind
from harness.log import Log
from harness.machine import Machine
from harness.native import console as cn
from harness.trap import NATIVE_RECORDS, TlbiTrap
from trap_paths import PATHS, native_expected
from trap_paths import use_path as _use_trap_path

BASE = 0x4008_0000
HLT = 0xD45E0000
QEMU = shutil.which("qemu-system-aarch64")


def words(*w: int) -> bytes:
    return struct.pack(f"<{len(w)}I", *w)


def mov(rd: int, v: int) -> tuple[int, ...]:        # movz/movk xd, 4 x 16 bits
    return tuple((0xD2800000 if i == 0 else 0xF2800000) | (i << 21) | (((v >> (16 * i)) & 0xFFFF) << 5) | rd
                 for i in range(4))


OFF = mov(0, 0x8400_0008) + (0xD4000002,)           # PSCI SYSTEM_OFF by HVC #0


def use_path(monkeypatch, path: str) -> None:
    """trap_paths.use_path, and on the native path console.c too: a console.c that does not build fails the
    comparisons instead of comparing the Python path with itself."""
    _use_trap_path(monkeypatch, path)
    if path == "native" and cn.library() is None:
        if native_expected():
            pytest.fail(f"native console not built here: {cn.status()}")
        pytest.skip(f"native console unavailable: {cn.status()}")


@pytest.fixture
def native_path(monkeypatch):
    use_path(monkeypatch, "native")


def both(monkeypatch, capsys, *args) -> dict[str, tuple[int, str, str]]:
    """`smmu-harness ARGS` on each path."""
    out = {}
    for path in PATHS:
        use_path(monkeypatch, path)
        out[path] = cli(capsys, *args)
    return out


def mix_elf(fault: bool = False):
    return build_guest([GUEST_FW / "tests" / "console_mix.c"], name="console_mix_fault" if fault else "console_mix",
                       cflags=("-DEND_FAULT",) if fault else ()).path


@pytest.mark.parametrize("cpus,el", [(1, 1), (3, 1), (2, 2)])
def test_interleaved_console_is_the_same_on_both_paths(cpus, el, monkeypatch, capsys):
    r = both(monkeypatch, capsys, "run", "--cpus", cpus, "--el", el, mix_elf())
    assert r["native"] == r["python"]
    code, out, err = r["native"]
    assert code == 0 and err == "" and out.endswith("done\n")
    assert out.count("ab-=bc-=\n") == 2 * (cpus + 1) and out.count(" smp writec 1\n") == cpus - 1
    assert out.count(" tt 1\n") == cpus + 1
    assert "across\n" in out and ("ABCDEFGHIJKLMNOPQRSTUVWXYZ" * 190) in out


@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-system-aarch64 not installed (Debian: qemu-system-arm)")
def test_interleaved_console_is_what_qemu_prints(monkeypatch, capsys, native_path):
    """QEMU's PL011 (-serial stdio) and semihosting console (stderr) to one file: the harness's one stream."""
    elf = mix_elf()
    q = subprocess.run([QEMU, "-M", "virt", "-cpu", "max", "-smp", "3", "-semihosting", "-nographic", "-no-reboot",
                        "-monitor", "none", "-serial", "stdio", "-kernel", str(elf)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=60)
    code, out, err = cli(capsys, "run", "--cpus", 3, elf)
    assert q.returncode == code == 0 and q.stdout.decode().replace("\r\n", "\n") == out


def test_a_fault_after_output_prints_everything_before_the_death_line(monkeypatch, capsys):
    r = both(monkeypatch, capsys, "run", "--cpus", 2, mix_elf(fault=True))
    assert r["native"] == r["python"]
    code, out, err = r["native"]
    assert code != 0 and out.endswith("done\n!") and "0x8012000" in err.lower(), (code, err)


def test_a_budget_ending_mid_output_keeps_the_output_so_far(monkeypatch, capsys):
    full = len(both(monkeypatch, capsys, "run", mix_elf())["native"][1])
    cuts = set()
    for budget in (80_000, 90_000, 100_000, 110_000):     # the runtime's start takes ~70,000
        r = both(monkeypatch, capsys, "run", "--max-insns", budget, mix_elf())
        assert r["native"] == r["python"], budget
        cuts.add(len(r["native"][1]))
    assert len(cuts) >= 3 and max(cuts) < full and min(cuts) > 0, (cuts, full)


def _machine(code: bytes, got: list | None = None, **kw) -> tuple[Machine, object]:
    m = Machine(console=(lambda vm, d, s: got.append((d, s))) if got is not None else (lambda vm, d, s: None), **kw)
    vm = m.add_vm()
    vm.load_code(BASE, code)
    return m, vm


def test_a_timeout_delivers_every_byte_printed(native_path):
    got: list = []
    loop = words(*mov(1, BASE + 0x100), *mov(0, 3), HLT, 0x17FFFFFB)    # x1 = &'x'; loop: SYS_WRITEC; b loop
    m, vm = _machine(loop + bytes(0x100 - len(loop)) + b"x", got)
    outcome = m.run(timeout=0.3)
    data = b"".join(d for d, _ in got)
    assert outcome.kind == Kind.TIMEOUT, outcome
    assert len(data) > 1000 and data == bytes(vm.output) == b"x" * len(data)
    nc = vm.vcpus[0].native_console
    assert nc.c.n == 0 and nc.c.native_calls == len(data)


class _Seen(Exception):
    pass


def _first_line(path: str, monkeypatch, code: bytes) -> tuple[bytes, int]:
    """What the console got up to the first newline, and X5 when it got it."""
    use_path(monkeypatch, path)
    seen = []

    def console_cb(vm, data, stream):
        seen.append(bytes(data))
        if b"\n" in data:
            seen.append(vm.vcpus[0].uc.reg_read(UC_ARM64_REG_X5))
            raise _Seen()
    m, vm = _machine(code + bytes(0x100 - len(code)) + b"hi\n\0", None)
    m.console = console_cb
    with pytest.raises(_Seen):
        m.run(timeout=20)
    return b"".join(seen[:-1]), seen[-1]


@pytest.mark.parametrize("how", ["writec", "write0", "pl011"])
def test_a_line_is_printed_when_it_ends_even_if_the_guest_then_spins(how, monkeypatch):
    """A complete line reaches the console at the call or store that ends it (the Python path's writer flushes
    at newlines), not when the slice ends: after it the guest sets X5 and spins forever (only the timeout
    would end the slice), and the console sees X5 still 0."""
    text = BASE + 0x100
    if how == "writec":
        code = [w for i in range(3) for w in (*mov(0, 3), *mov(1, text + i), HLT)]
    elif how == "write0":
        code = [*mov(0, 4), *mov(1, text), HLT]
    else:                                        # UARTCR = UARTEN | TXE, then ldrb/str of each byte to UARTDR
        code = [*mov(2, 0x0900_0000), *mov(3, 0x101), 0xB9003043, *mov(1, text)]
        code += [w for i in range(3) for w in (0x39400023 | (i << 10), 0xB9000043)]
    code += [0xD2800025, 0x14000000]             # mov x5, #1; b .
    runs = {p: _first_line(p, monkeypatch, words(*code)) for p in PATHS}
    assert runs["native"] == runs["python"] == (b"hi\n", 0)


def _hostile(path: str, monkeypatch, code: bytes) -> tuple[bytes, str, list]:
    use_path(monkeypatch, path)
    log = Log("guest_errors,unimp", stream=io.StringIO())
    m, vm = _machine(code, log=log)
    assert m.run(timeout=10).kind == Kind.EXIT
    x0 = [int.from_bytes(vm.ram.buf[0x200 + 8 * i:0x208 + 8 * i], "little") for i in range(4)]
    return bytes(vm.output), log.stream.getvalue(), x0


def test_hostile_pointers_answer_as_the_python_path(monkeypatch):
    """SYS_WRITE0 of a string that runs to the end of RAM without a NUL, of one in the PL011's page; SYS_WRITEC
    of the byte past RAM and of a VA above the PA range: the same output, guest-error lines and X0."""
    end = 0x4000_0000 + (128 << 20)
    code = [*mov(1, end - 4), *mov(3, 0x4142_4344), 0xB9000023]           # str w3, [x1]: "DCBA" ends RAM
    for i, (op, x1) in enumerate(((4, end - 3), (4, 0x0900_0FF8), (3, end), (3, 1 << 60))):
        code += [*mov(0, op), *mov(1, x1), HLT, *mov(2, 0x4000_0200 + 8 * i), 0xF9000040]   # str x0, [x2]
    runs = {p: _hostile(p, monkeypatch, words(*code, *OFF)) for p in PATHS}
    assert runs["native"] == runs["python"]
    out, logs, x0 = runs["native"]
    assert x0 == [0xDEADBEEF] * 4 and out == b""          # the PL011 answers an 8-byte read with 0 (RAZ)
    assert logs.count("SYS_WRITE0") == 1 and logs.count("SYS_WRITEC") == 2 and logs.count("pl011") == 1, logs


def test_semihosting_streams_are_the_same_on_both_paths(monkeypatch, capsys):
    """guest_fw/tests/semihosting.c: `:tt` for stdout and for stderr, SYS_WRITE0, SYS_WRITEC, their results."""
    r = both(monkeypatch, capsys, "run", guest_elf("semihosting"))
    assert r["native"] == r["python"]
    assert "tt-out: hello\n" in r["native"][1] and "tt-err: oops\n" in r["native"][2]


def test_hostile_guest_is_the_same_on_both_paths(monkeypatch, capsys, tmp_path):
    (tmp_path / "root").mkdir()
    r = both(monkeypatch, capsys, "run", guest_elf("sh_hostile"), "--semihosting-root", tmp_path / "root")
    assert r["native"] == r["python"] and r["native"][0] == 0 and "writec unmapped: deadbeef" in r["native"][1]


@pytest.mark.parametrize("events", ["*", "pl011*", "semihosting*", "tlbi*,dvm*"])
def test_traces_are_the_same_on_both_paths(events, monkeypatch, capsys, tmp_path):
    out = {}
    for path in PATHS:
        use_path(monkeypatch, path)
        f = tmp_path / f"{path}.jsonl"
        code, stdout, _ = cli(capsys, "run", "--cpus", 2, "--trace", f, "--trace-events", events, mix_elf())
        assert code == 0
        out[path] = (stdout, f.read_bytes())
    assert out["native"] == out["python"]
    if events != "tlbi*,dvm*":
        assert len(out["native"][1]) > 1000


class _Merged:
    """One stream of console bytes and trace records, in the order the harness produced them."""

    def __init__(self) -> None:
        self.items: list = []

    def write(self, rec) -> None:
        self.items.append(("trace", rec.event, rec.fields.get("pc")))

    def close(self) -> None:
        pass


def _tlbi_run(path: str, monkeypatch, n: int, native_hook: bool | None = None) -> list:
    use_path(monkeypatch, path)
    merged = _Merged()
    m = Machine(tracer=Tracer(events="tlbi_trap", sinks=[merged]),
                console=lambda vm, d, s: merged.items.extend(("out", b) for b in d))
    trap = TlbiTrap(m.interconnect, m.tracer, native_hook=native_hook)
    m.add_plugin(trap)
    vm = m.add_vm()
    writec = (*mov(1, BASE + 0x8000), *mov(0, 3), HLT)
    vm.load_code(BASE, words(*writec, *[sys_word(*encoding("VMALLE1IS"))] * n, *writec, *OFF) + bytes(0x8000))
    vm.ram.buf[0x88000] = ord("x")
    assert m.run(timeout=30).exit_code == 0
    return merged.items


def test_console_bytes_stay_before_later_tlbis_when_the_trap_buffer_fills(monkeypatch):
    """A byte printed before more TLBIs than the native trap's buffer holds: printed before their trace lines
    (the trap's full-buffer callback does the deferred work in order), and the byte after them, after."""
    n = NATIVE_RECORDS + 100
    runs = {p: _tlbi_run(p, monkeypatch, n) for p in PATHS}
    assert runs["native"] == runs["python"]
    items = runs["native"]
    assert items[0] == ("out", ord("x")) and items[-1] == ("out", ord("x")) and len(items) == n + 2


def test_int_log_is_the_same_on_both_paths(monkeypatch, capsys):
    """`-d int` logs every semihosting call: C leaves them to Python, in order with the console."""
    r = both(monkeypatch, capsys, "run", "-d", "int", "--cpus", 2, mix_elf())
    assert r["native"] == r["python"] and r["native"][2].count("semihosting SYS_WRITEC") > 50


def test_console_bytes_keep_their_order_with_the_python_tlbi_trap(monkeypatch):
    """The native console with the TLBI trap on its Python hooks (which trace at once): output stays in C only
    where nothing else can print, so the order is the Python path's."""
    native = _tlbi_run("native", monkeypatch, 200, native_hook=False)
    assert native == _tlbi_run("python", monkeypatch, 200)
    assert native[0] == ("out", ord("x")) and len(native) == 202


def test_pl011_interrupt_guests_are_the_same_on_both_paths(monkeypatch, capsys):
    """TXRIS/RXRIS raised, masked and cleared by a guest (the Python path for each access that changes them)."""
    for guest in ("irq_uart", "irq_uart_rx"):
        r = both(monkeypatch, capsys, "run", guest_elf(guest))
        assert r["native"] == r["python"], guest


def _model_state(path: str, monkeypatch) -> tuple:
    use_path(monkeypatch, path)
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(ncpus=2)
    vm.load(mix_elf())
    assert m.run(timeout=30).exit_code == 0
    nc = vm.vcpus[0].native_console
    return (bytes(vm.output), vm.pl011.transmitted, dict(vm.pl011.regs.values), vm.pl011.int_level), nc


def test_native_path_is_taken_and_leaves_the_models_as_python_does(monkeypatch, native_path):
    native, nc = _model_state("native", monkeypatch)
    python, none = _model_state("python", monkeypatch)
    assert native == python and none is None and native[1] > 100
    assert nc.c.native_calls > 150 and nc.c.n == 0           # the PL011's UARTFR/UARTDR and semihosting in C
    assert cn.status().startswith("disabled")                # SMMU_HARNESS_NATIVE=0 (the python path)


def test_uart_flags_follow_the_model():
    uart = PL011(lambda b: None, tracer=Tracer())
    assert uart_state(uart) == (0, 0x90)                      # reset: UARTEN clear, no TXRIS; FR = TXFE | RXFE
    uart.write(0x30, 0x301, 4)
    uart.write(0, ord("a"), 1)                                # sets TXRIS
    assert uart.int_level & INT_TX and uart_state(uart) == (cn.CN_UART_TX, 0x90)
    uart.write(0x44, INT_TX, 4)                               # UARTICR clears TXRIS: the next byte changes RIS
    assert uart_state(uart)[0] == 0
    uart.write(0, ord("b"), 1)
    uart.tracer.enable("pl011_putchar")
    assert uart_state(uart)[0] == 0
    uart.tracer = Tracer()
    uart.write(0x30, 0x001, 4)                                # TXE clear: a guest error per byte
    assert uart_state(uart)[0] == 0
    uart.write(0x30, 0x301, 4)
    uart.read(0, 4)                                           # a UARTDR read: the guest listens
    assert uart_state(uart) == (cn.CN_UART_TX, 0)


def uart_state(uart: PL011) -> tuple[int, int]:
    flags, fr = console.uart_flags(uart)
    return flags & cn.CN_UART_TX, fr if flags & cn.CN_UART_FR else 0


def _ram_end_run(path: str, monkeypatch) -> tuple[bytes, str, list, int]:
    end = 0x4000_0000 + (128 << 20)
    code = [*mov(1, end - 8), *mov(3, 0x5A00_0000_0000_0000), 0xF9000023]    # str x3, [x1]: 'Z' ends RAM
    for i, x1 in enumerate((end - 1, end)):                                      # SYS_WRITEC of the last byte, past it
        code += [*mov(0, 3), *mov(1, x1), HLT, *mov(2, 0x4000_0200 + 8 * i), 0xF9000040]
    out, logs, x0 = _hostile(path, monkeypatch, words(*code, *OFF))
    nc = getattr(_LAST.get("vcpu"), "native_console", None)
    return out, logs, x0[:2], 0 if nc is None else nc.c.native_calls


_LAST: dict = {}


def _keep_last_vcpu(monkeypatch) -> None:
    """Each new VM's first vCPU goes to `_LAST["vcpu"]` (its native console's counters are read afterwards)."""
    real = Machine.add_vm

    def add_vm(self, *a, **k):
        vm = real(self, *a, **k)
        _LAST["vcpu"] = vm.vcpus[0]
        return vm

    monkeypatch.setattr(Machine, "add_vm", add_vm)


def test_the_last_byte_of_ram_is_native_and_the_next_is_python(monkeypatch, native_path):
    """console.c's bounds (cn_ram_offset): SYS_WRITEC of RAM's last byte is done in C, the byte after it (one
    past the host buffer) is left to Python, which reports it unmapped; both paths print and log the same."""
    _keep_last_vcpu(monkeypatch)
    native = _ram_end_run("native", monkeypatch)
    python = _ram_end_run("python", monkeypatch)
    assert native[:3] == python[:3] == (b"Z", native[1], [0xDEADBEEF] * 2)
    assert native[1].count("SYS_WRITEC") == 1 and native[3] == 1          # only the in-RAM byte went through C


def _tt_write_run(path: str, monkeypatch) -> tuple[bytes, str, list, int]:
    """SYS_OPEN(":tt", "w"), then SYS_WRITE of 3 bytes (all in RAM), of a buffer that crosses RAM's end, and
    of a parameter block that does; X0 of each at 0x4000_0200."""
    end, data = 0x4000_0000 + (128 << 20), BASE + 0x400
    code = [*mov(0, 1), *mov(1, data + 0x10), HLT]                                  # x0 = handle
    for block in (data + 0x28, data + 0x40, end - 16):
        code += [*mov(2, block), 0xF9000040]                                       # str x0, [x2]: its handle
    code += [*mov(2, end - 8), *mov(3, data), 0xF9000043]                          # end - 16: {h, data, <past>}
    for i, block in enumerate((data + 0x28, data + 0x40, end - 16)):
        code += [*mov(0, 5), *mov(1, block), HLT, *mov(2, 0x4000_0200 + 8 * i), 0xF9000040]
    blob = words(*code, *OFF).ljust(0x400, b"\0") + b":tt\0".ljust(16, b"\0")
    blob += struct.pack("<3Q", data, 4, 3) + struct.pack("<3Q", 0, data, 3) + struct.pack("<3Q", 0, end - 2, 4)
    out, logs, x0 = _hostile(path, monkeypatch, blob)
    nc = getattr(_LAST.get("vcpu"), "native_console", None)
    return out, logs, x0[:3], 0 if nc is None else nc.c.native_calls


def test_tt_writes_at_the_end_of_ram_answer_as_the_python_path(monkeypatch, native_path):
    """console.c's SYS_WRITE (cn_tt_write): a block and a buffer in RAM are done in C (X0 = 0); a buffer or a
    parameter block running past RAM's end is left to Python, which answers it (bytes not written, a guest-error
    line): both paths give the same output, X0 and log."""
    _keep_last_vcpu(monkeypatch)
    native = _tt_write_run("native", monkeypatch)
    python = _tt_write_run("python", monkeypatch)
    assert native[:3] == python[:3] and native[0] == b":tt" and native[2][:2] == [0, 4], (native, python)
    assert native[3] == 1, native                                             # only the first one in C


def test_exceptions_handed_to_python_do_no_import_per_call(monkeypatch, native_path):
    """console.c hands every exception it does not answer (here 200 PSCI_VERSION HVCs) to `_callback`: that
    path resolves nothing per call (an import costs ~0.5 us, the whole hand-over a few)."""
    import builtins

    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(ncpus=1)
    vm.load_code(BASE, words(*mov(0, 0x8400_0000), *mov(1, 200),
                             *mov(0, 0x8400_0000), 0xD4000002, 0xF1000421, 0x54FFFF21,   # hvc; subs x1; b.ne
                             *OFF))
    real, imports = builtins.__import__, []

    def counting(name, *args, **kw):
        imports.append(name)
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", counting)
    out = m.run(max_insns=100_000)
    monkeypatch.setattr(builtins, "__import__", real)
    assert out.exit_code == 0 and vm.vcpus[0].native_console is not None
    assert imports.count("vcpu") == 0


def test_handles_are_looked_at_again_only_after_a_semihosting_call(monkeypatch, native_path):
    """The `:tt` handle masks change only in a semihosting call (HLT #0xF000, EXCP_UDEF): the 200 HVCs
    console.c hands to Python do not recompute them (~0.5 us each), slice starts do."""
    m = Machine(console=lambda vm, d, s: None)
    vm = m.add_vm(ncpus=1)
    vm.load_code(BASE, words(*mov(1, 200), *mov(0, 0x8400_0000), 0xD4000002, 0xF1000421, 0x54FFFF21, *OFF))
    sh, calls = vm.semihosting, []
    real = sh.console_handles
    monkeypatch.setattr(sh, "console_handles", lambda: calls.append(1) or real())
    out = m.run(max_insns=100_000)
    assert out.exit_code == 0 and vm.vcpus[0].native_console is not None
    assert 0 < len(calls) <= vm.vcpus[0].slices + 1
