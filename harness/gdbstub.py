"""A gdb stub for the harness's vCPUs: the GDB Remote Serial Protocol (GDB manual, appendix "Remote Protocol")
served as QEMU's gdbstub serves it for `-s`, `-S` and `-gdb tcp::PORT` (gdbstub/gdbstub.c, gdbstub/system.c).

    smmu-harness run guest.elf -S -s          # then: gdb-multiarch guest.elf -ex 'target remote :1234'

* Listening: on 127.0.0.1 only, one debugger at a time (`-gdb tcp::PORT`; a host other than 127.0.0.1 or
  localhost is refused; port 0 picks a free port and names it on stderr). A debugger that connects while the
  guest runs stops it (QEMU's CHR_EVENT_OPENED); `-S` stops it before its first instruction and waits for one.
* Threads: each vCPU is a thread. gdb offering `multiprocess+` gets QEMU's ids `p<pid>.<tid>`: a VM is a
  process (pid = VM index + 1, the first attached at connection, `vAttach` the others), tid = vCPU index in it
  + 1; otherwise tid = machine-wide vCPU number + 1. `Hg` selects the thread of registers, memory and
  breakpoints (`Z` applies to every vCPU of that thread's VM, as QEMU inserts gdb breakpoints on every CPU),
  `Hc` the thread of `c`/`s`. After a stop both are the thread that stopped.
* Registers (`g`/`G`/`p`/`P`) and the target description (`qXfer:features:read`): harness/gdbregs.py. Memory
  (`m`/`M`/`X`) by guest virtual address through the thread's current stage-1 translation (harness/vmem.py),
  as QEMU's cpu_memory_rw_debug: RAM, or a device when the access is 1, 2, 4 or 8 bytes (the device sees the
  access); unmapped -> `E14`. A write is made only once every page of it translates; the vCPUs' Unicorn
  translations of code written this way are dropped (`Uc.mem_write`).
* Breakpoints `Z0`/`Z1` and watchpoints `Z2`/`Z3`/`Z4` (write/read/access) are the debug facility's
  (harness/debug.py): nothing is written into guest memory (QEMU uses TCG breakpoints). A breakpoint stops the
  vCPU before its instruction; a watchpoint before the access (as AArch64 hardware: gdb's aarch64 target has
  non-steppable watchpoints and steps over the access itself), reported `T05watch:ADDR;` (`rwatch`, `awatch`)
  with the first watched byte the access touches.
* Execution: `c`, `C`, `s`, `S`, `vCont` with per-thread actions (`vCont?` says `c;C;s;S`; signals are
  ignored, as in QEMU's system mode). A step runs one instruction of that thread while the others stay stopped
  (also for `vCont;s:T;c`); single step overrides breakpoints (QEMU accel/tcg/cpu-exec.c
  check_for_breakpoints_slow), not watchpoints. A continue of some threads only (`vCont;c:T`, gdb's
  scheduler-locking) holds the others stopped (`Scheduler.held`); if only held vCPUs could run, the machine
  waits for the debugger's Ctrl-C. Ctrl-C (0x03) is read between slices (every 10 ms of wall-clock time at
  most; a vCPU running alone stops every million instructions, `Scheduler.alone_slice_insns`) and stops the
  machine there
  (`T02`).
* Ends: `D` detaches (breakpoints removed, the guest runs on; another debugger may connect), `k`/`vKill` end
  the run (exit status 137). When the guest exits the debugger gets `W<status>` (the harness's exit status,
  124 for a budget or an idle machine); when it dies (an exception it does not handle: exit 132/134/139) the
  debugger first gets the fatal signal as a stop (`T04` SIGILL, `T06` SIGABRT, `T0b` SIGSEGV: registers and
  memory of the dead guest can be read, as QEMU's user mode does before a process dies), then `X<signal>` at
  the next resume. A debugger that disconnects without detaching leaves the machine as it was (QEMU): running,
  or stopped until another debugger connects; its breakpoints stay.

Determinism: the stub changes nothing a guest can see while it only continues. It polls between slices (a
counted slice is whole; an uncounted one, cut by `alone_slice_insns`, runs while time stands still), and a stop
that lands between slices resumes where it stopped (the rest of the round first), so a run under a debugger
that only continues, or is interrupted and continued, traces exactly as a run without it. A stop inside a
counted slice (a breakpoint, a watchpoint) charges the slice to its planned end, as every early slice end
does, and a step is a slice of one instruction: those move the guest's time.

Bad packets get `E22` (malformed), `E14` (no such register, unmapped memory) or an empty reply (unsupported),
never a traceback; a packet with a bad checksum gets `-`. The stub never changes a devmodel object's private
state: it uses `vcpu.debug`, the vCPU's registers and memory, and the scheduler's seams.
"""
from __future__ import annotations

import select
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from unicorn import UcError

from devmodel.bus import BusError

from . import gdbregs
from .exits import HarnessInputError, Kind, Outcome
from .gdbrsp import (MAX_PACKET, Ack, BadPacket, Interrupt, Nak, Packet, Reader, ThreadId, escape, frame,
                     parse_hex, parse_thread_id)

if TYPE_CHECKING:
    from .machine import Machine
    from .vcpu import Vcpu

__all__ = ["GdbStub", "StopEvent", "parse_gdb_device", "DEFAULT_PORT", "LOOPBACK", "SIGINT", "SIGILL",
           "SIGTRAP", "SIGABRT", "SIGSEGV"]

DEFAULT_PORT = 1234                  # -s = -gdb tcp::1234
LOOPBACK = "127.0.0.1"
# GDB's signal numbers (the protocol's, gdb/signals.def)
SIGINT, SIGILL, SIGTRAP, SIGABRT, SIGSEGV = 2, 4, 5, 6, 11
POLL_INTERVAL = 0.01                 # s of wall-clock time between looks at the connection while running
ALONE_SLICE_INSNS = 1_000_000        # a vCPU alone stops this often while a stub listens (~10 ms)
MAX_WATCH = 1 << 20                  # bytes one watchpoint may cover (each watched page costs hooks)
SEND_TIMEOUT = 30.0                  # s a reply may take to leave (a debugger that never reads)
_DEATH_SIGNALS = {Kind.UNDEF: SIGILL, Kind.ABORT: SIGSEGV, Kind.FATAL: SIGABRT}
_RESUME = object()                   # a handler's answer: the machine goes on


def parse_gdb_device(spec: str) -> int | None:
    """`-gdb DEV` as QEMU spells it, on loopback only: `tcp::PORT`, `tcp:PORT`, `tcp:127.0.0.1:PORT` or
    `tcp:localhost:PORT` -> PORT (0: any free port); `none` -> None. ValueError with a one-line reason for
    anything else (another host, chardev options, other backends)."""
    if spec == "none":
        return None
    dev, _, opts = spec.partition(",")
    if opts:
        raise ValueError(f"-gdb {spec}: chardev options ({opts}) are not supported: give tcp::PORT")
    if not dev.startswith("tcp:"):
        raise ValueError(f"-gdb {spec}: only tcp::PORT is supported (the stub listens on {LOOPBACK})")
    host, _, port = dev[4:].rpartition(":")
    host = host.strip("[]")
    if host not in ("", LOOPBACK, "localhost"):
        raise ValueError(f"-gdb {spec}: refusing to listen on {host}: the gdb stub listens on {LOOPBACK} only "
                         f"(give tcp::PORT)")
    if not port.isdigit() or int(port) > 0xFFFF:
        raise ValueError(f"-gdb {spec}: {port!r} is not a TCP port (0-65535)")
    return int(port)


@dataclass(frozen=True)
class StopEvent:
    """Why the machine stopped, for the stop reply."""
    vcpu: "Vcpu"
    signal: int
    watch: tuple[str, int] | None = None     # ("" / "r" / "a", address) for a watchpoint


class _Conn:
    """One debugger's connection: framing, acknowledgments, events not handled yet."""

    def __init__(self, sock: socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        self.sock = sock
        self.reader = Reader()
        self.events: deque = deque()
        self.noack = False
        self.last = b""                      # the last packet sent (resent on '-')
        self.closed = False
        # per-connection protocol state
        self.multiprocess = False
        self.query: list["Vcpu"] = []        # qsThreadInfo's threads still to list

    def _recv(self, block: bool) -> bool:
        """Read what is there (wait for something when `block`); False once the debugger has gone."""
        if self.closed:
            return False
        try:
            if not block and not select.select([self.sock], [], [], 0)[0]:
                return True
            data = self.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.close()
            return False
        self.events.extend(self.reader.feed(data))
        return True

    def poll_interrupt(self) -> bool | None:
        """While the machine runs: did a Ctrl-C (0x03) arrive? None when the debugger has gone. Packets are
        kept for when the machine has stopped."""
        if not self._recv(block=False):
            return None
        hit = False
        for ev in list(self.events):
            if isinstance(ev, (Interrupt, Ack, Nak)):
                self.events.remove(ev)
                hit = hit or isinstance(ev, Interrupt)
                if isinstance(ev, Nak):
                    self._resend()
        return hit

    def next_event(self):
        """The next event (waiting for one); None when the debugger has gone."""
        while not self.events:
            if not self._recv(block=True):
                return None
        return self.events.popleft()

    def next_packet(self) -> bytes | None:
        """The next packet's body (acknowledged; a bad one is refused and the next one waited for)."""
        while True:
            ev = self.next_event()
            if ev is None:
                return None
            if isinstance(ev, Packet):
                self._raw(b"+")
                return ev.body
            if isinstance(ev, BadPacket):
                if ev.why == "checksum":
                    self._raw(b"-")              # gdb sends it again
                else:
                    self._raw(b"+")
                    self.send(b"E22")
            elif isinstance(ev, Nak):
                self._resend()

    def send(self, body: bytes) -> None:
        self.last = frame(body)
        self._raw(self.last, ack=False)

    def _resend(self) -> None:
        if not self.noack and self.last:
            self._raw(self.last, ack=False)

    def _raw(self, data: bytes, ack: bool = True) -> None:
        if self.closed or (ack and self.noack):
            return
        try:
            self.sock.settimeout(SEND_TIMEOUT)
            self.sock.sendall(data)
            self.sock.settimeout(None)
        except OSError:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass


class _Bad(Exception):
    """A malformed packet: the reply is its message (E22 unless said otherwise)."""

    def __init__(self, reply: bytes = b"E22"):
        super().__init__(reply)
        self.reply = reply


class GdbStub:
    """Machine plugin serving one debugger at a time on 127.0.0.1:`port` (module docstring). `listen()` binds
    (HarnessInputError when it cannot); `wait=True` is `-S`."""

    def __init__(self, machine: "Machine", port: int = DEFAULT_PORT, *, wait: bool = False,
                 announce: Callable[[str], None] | None = None):
        self.machine = machine
        self.requested_port = port
        self.wait = wait
        self.announce = announce
        self.listener: socket.socket | None = None
        self.conn: _Conn | None = None
        self.stop: StopEvent | None = None        # why the machine is stopping (set in hooks)
        self.resumed = False                      # a resume command awaits its stop reply
        self.serving = False
        self.dead: StopEvent | None = None        # the guest died: its fatal signal
        self.attached: set[int] = set()           # VM indices attached (multiprocess)
        self.g_cpu: "Vcpu | None" = None
        self.c_cpu: "Vcpu | None" = None
        self.points: dict[tuple[int, int, int], list[list[tuple["Vcpu", Any]]]] = {}
        self._stepping: "Vcpu | None" = None
        self._next_poll = 0.0
        self.packets = 0                          # packets handled (statistics, tests)

    # -- the socket -----------------------------------------------------------------------------------
    def listen(self) -> int:
        try:
            self.listener = socket.create_server((LOOPBACK, self.requested_port), backlog=1)
        except OSError as e:
            raise HarnessInputError(f"gdb stub: cannot listen on {LOOPBACK}:{self.requested_port}: "
                                    f"{e.strerror or e}") from None
        self.listener.setblocking(False)
        if self.requested_port == 0 and self.announce is not None:
            self.announce(f"gdb stub listening on {LOOPBACK}:{self.port}")
        return self.port

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1] if self.listener is not None else self.requested_port

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def _accept(self, block: bool) -> bool:
        """Take the next debugger's connection; False when none is there (or no listener)."""
        if self.listener is None:
            return False
        if not block and not select.select([self.listener], [], [], 0)[0]:
            return False
        try:
            if block:
                select.select([self.listener], [], [])
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return False
        self.conn = _Conn(sock)
        self.attached = set(range(len(self.machine.vms)))
        first = self.machine.vcpus[0] if self.machine.vcpus else None
        self.g_cpu = self.c_cpu = first
        self.resumed = False
        return True

    # -- machine plugin hooks ---------------------------------------------------------------------------
    def before_run(self, machine: "Machine") -> None:
        machine.scheduler.alone_slice_insns = ALONE_SLICE_INSNS
        if self.listener is None:
            self.listen()
        if self.wait:                              # -S: stopped before the first instruction
            self._serve()

    def slice_end(self, vcpu: "Vcpu") -> None:
        if self.serving:
            return
        now = time.monotonic()
        if now < self._next_poll:
            return
        self._next_poll = now + POLL_INTERVAL
        if self.conn is None:
            if self._accept(block=False):          # a debugger connecting stops the machine
                self.machine.scheduler.request_stop()
            return
        hit = self.conn.poll_interrupt()
        if hit is None:
            self.conn = None                       # gone without detaching: the machine runs on
        elif hit:
            self._stop_at(vcpu, StopEvent(vcpu, SIGINT))

    def stopped(self, machine: "Machine") -> None:
        stop, self.stop = self.stop, None
        if stop is None and machine.scheduler.stalled:
            stop = self._wait_interrupt()
        self._report(stop)
        self._serve()

    def after_run(self, machine: "Machine") -> None:
        out = machine.outcome
        try:
            if self.conn is not None and self.resumed and out is not None and out.kind is not Kind.KILLED:
                sig = _DEATH_SIGNALS.get(out.kind)
                v = next((v for v in machine.vcpus if v.dvm_name == out.vcpu), None)
                if sig is not None and v is not None:
                    self.dead = StopEvent(v, sig)      # the fatal signal first: the debugger looks, then X
                    self._report(self.dead)
                    self._serve(reconnect=False)
                elif sig is not None:
                    self.conn.send(b"X%02x" % sig)
                else:
                    self.conn.send(b"W%02x" % (out.exit_code & 0xFF))
        finally:
            self.close()

    # -- stopping -------------------------------------------------------------------------------------
    def _stop_at(self, vcpu: "Vcpu", ev: StopEvent) -> None:
        if self.stop is None:
            self.stop = ev
        self.machine.scheduler.request_stop(vcpu)

    def _on_breakpoint(self, vcpu: "Vcpu", ev) -> None:
        if self._stepping is not vcpu:             # single step overrides breakpoints (QEMU)
            self._stop_at(vcpu, StopEvent(vcpu, SIGTRAP))

    def _wait_interrupt(self) -> StopEvent | None:
        """Only held vCPUs could run: nothing happens until the debugger interrupts (or goes)."""
        while self.conn is not None:
            ev = self.conn.next_event()
            if ev is None:
                self.conn = None
            elif isinstance(ev, Interrupt):
                return StopEvent(self.c_cpu, SIGINT)
            elif isinstance(ev, Packet):
                self.conn.events.appendleft(ev)    # handled once stopped
                return StopEvent(self.c_cpu, SIGINT)
        return None

    def _report(self, stop: StopEvent | None) -> None:
        """The machine stopped: the stopping thread becomes current; the stop reply if one is owed."""
        if stop is not None and stop.vcpu is not None:
            self.g_cpu = self.c_cpu = stop.vcpu
        if stop is not None and self.conn is not None and self.resumed:
            self.conn.send(self._stop_reply(stop))
        self.resumed = False

    def _stop_reply(self, stop: StopEvent) -> bytes:
        out = b"T%02xthread:%s;" % (stop.signal, self._tid(stop.vcpu))
        if stop.watch is not None:
            kind, addr = stop.watch
            out += b"%swatch:%x;" % (kind.encode(), addr)
        return out

    # -- serving ----------------------------------------------------------------------------------------
    def _serve(self, reconnect: bool = True) -> None:
        """The machine is stopped: answer the debugger until it resumes, detaches or kills (waiting for a
        debugger to connect while none is, unless not `reconnect`)."""
        self.serving = True
        try:
            while True:
                if self.conn is None and not (reconnect and self._accept(block=True)):
                    return                         # no debugger will come: go on
                body = self.conn.next_packet()
                if body is None:
                    self.conn = None               # QEMU: the machine stays stopped for the next debugger
                    continue
                self.packets += 1
                try:
                    reply = self._handle(body)
                except _Bad as e:
                    reply = e.reply
                except (ValueError, OverflowError, UnicodeError, IndexError):
                    reply = b"E22"
                except UcError:
                    reply = b"E14"
                if reply is _RESUME:
                    self._next_poll = 0.0          # look at the connection at the first slice end
                    return
                if reply is not None and self.conn is not None:
                    self.conn.send(reply)
                    if body == b"QStartNoAckMode":
                        self.conn.noack = True
        finally:
            self.serving = False

    def _handle(self, body: bytes):
        """One packet -> its reply (bytes), None (replied already) or _RESUME."""
        head, rest = body[:1], body[1:]
        h = self._HANDLERS.get(head)
        if h is None:
            return b""
        return h(self, rest)

    # -- threads --------------------------------------------------------------------------------------
    def _tid(self, v: "Vcpu") -> bytes:
        if self.conn is not None and self.conn.multiprocess:
            return b"p%02x.%02x" % (self.machine.vms.index(v.vm) + 1, v.index + 1)
        return b"%02x" % (v.id + 1)

    def _attached_vcpus(self) -> list["Vcpu"]:
        vms = self.machine.vms
        return [v for v in self.machine.vcpus if vms.index(v.vm) in self.attached]

    def _threads(self, t: ThreadId) -> list["Vcpu"]:
        """The vCPUs a thread-id names (-1: all, 0: the first), among the attached ones; [] for none."""
        machine = self.machine
        multiprocess = self.conn is not None and self.conn.multiprocess
        if t.pid is None or not multiprocess:
            pool = self._attached_vcpus()
            if t.tid == -1:
                return pool
            if t.tid == 0:
                return pool[:1]
            if multiprocess:                       # a bare tid: a thread of the first attached process
                pool = [v for v in pool if v.vm is pool[0].vm] if pool else []
                return [v for v in pool if v.index + 1 == t.tid]
            return [v for v in pool if v.id + 1 == t.tid]
        if t.pid == -1:
            vms = sorted(self.attached)
        elif t.pid == 0:
            vms = sorted(self.attached)[:1]
        else:
            vms = [t.pid - 1] if t.pid - 1 in self.attached else []
        pool = [v for i in vms for v in machine.vms[i].vcpus]
        if t.tid == -1:
            return pool
        if t.tid == 0:
            return pool[:1]
        return [v for v in pool if v.index + 1 == t.tid]

    def _one(self, text: bytes) -> "Vcpu":
        found = self._threads(parse_thread_id(text))
        if not found:
            raise _Bad()
        return found[0]

    def _state(self, v: "Vcpu") -> str:
        if not v.on:
            return "off"
        return "halted" if v.id in self.machine.scheduler.waiting else "running"

    # -- queries ----------------------------------------------------------------------------------------
    def _q(self, rest: bytes):
        name, _, args = rest.partition(b":")
        if rest.startswith(b"Supported"):
            return self._q_supported(args)
        if rest == b"C":
            v = self._attached_vcpus()[:1] or self.machine.vcpus[:1]
            return b"QC" + self._tid(v[0]) if v else b""
        if rest == b"fThreadInfo":
            self.conn.query = self._attached_vcpus()
            return self._q_threads()
        if rest == b"sThreadInfo":
            return self._q_threads()
        if rest.startswith(b"ThreadExtraInfo,"):
            v = self._one(rest[len(b"ThreadExtraInfo,"):])
            return f"{v.dvm_name} [{self._state(v)}]".encode().hex().encode()
        if name == b"Attached":
            return b"1"
        if rest.startswith(b"Xfer:features:read:"):
            return self._q_features(rest[len(b"Xfer:features:read:"):])
        return b""

    def _q_supported(self, args: bytes) -> bytes:
        self.conn.multiprocess = b"multiprocess+" in args.split(b";")
        if self.conn.multiprocess:
            self.attached = {0} if self.machine.vms else set()      # QEMU: the first process attached
        out = b"PacketSize=%x;qXfer:features:read+;QStartNoAckMode+;vContSupported+" % MAX_PACKET
        return out + (b";multiprocess+" if self.conn.multiprocess else b"")

    def _q_threads(self) -> bytes:
        if not self.conn.query:
            return b"l"
        return b"m" + self._tid(self.conn.query.pop(0))

    def _q_features(self, args: bytes) -> bytes:
        annex, _, span = args.partition(b":")
        off, _, length = span.partition(b",")
        xml = gdbregs.feature_xml(annex.decode("latin-1"))
        if xml is None:
            return b"E00"
        data = xml.encode()
        start, n = parse_hex(off), parse_hex(length)
        if start > len(data):
            return b"E00"
        n = min(n, (MAX_PACKET - 5) // 2)
        chunk = data[start:start + n]
        return (b"m" if start + n < len(data) else b"l") + escape(chunk)

    def _Q(self, rest: bytes):
        if rest == b"StartNoAckMode":
            return b"OK"                           # acknowledgments stop after this reply (_serve)
        return b""

    # -- threads, registers, memory --------------------------------------------------------------------
    def _H(self, rest: bytes):
        op, tid = rest[:1], rest[1:]
        if op not in (b"g", b"c"):
            raise _Bad()
        t = parse_thread_id(tid)
        if t.tid == -1 or t.pid == -1:
            return b"OK"                           # all threads: nothing to select (QEMU)
        v = self._one(tid)
        if op == b"g":
            self.g_cpu = v
        else:
            self.c_cpu = v
        return b"OK"

    def _T(self, rest: bytes):
        self._one(rest)
        return b"OK"

    def _g(self, rest: bytes):
        return gdbregs.read_core(self.g_cpu.uc).hex().encode()

    def _G(self, rest: bytes):
        gdbregs.write_core(self.g_cpu.uc, bytes.fromhex(_hexdata(rest)))
        return b"OK"

    def _p(self, rest: bytes):
        data = gdbregs.read_register(self.g_cpu.uc, parse_hex(rest))
        return b"E14" if data is None else data.hex().encode()

    def _P(self, rest: bytes):
        num, eq, value = rest.partition(b"=")
        if not eq:
            raise _Bad()
        ok = gdbregs.write_register(self.g_cpu.uc, parse_hex(num), bytes.fromhex(_hexdata(value)))
        return b"OK" if ok else b"E14"

    def _m(self, rest: bytes):
        addr, length = _addr_len(rest)
        if length > MAX_PACKET // 2:
            raise _Bad()
        try:
            return self.g_cpu.read_virt(addr, length).hex().encode()
        except BusError:
            return b"E14"

    def _M(self, rest: bytes):
        where, colon, data = rest.partition(b":")
        if not colon:
            raise _Bad()
        addr, length = _addr_len(where)
        raw = bytes.fromhex(_hexdata(data))
        if length > len(raw):
            raise _Bad()
        return self._write_mem(addr, raw[:length])

    def _X(self, rest: bytes):
        where, colon, data = rest.partition(b":")
        if not colon:
            raise _Bad()
        addr, length = _addr_len(where)
        if length != len(data):                    # the framing has already undone the escapes
            raise _Bad()
        return self._write_mem(addr, data)

    def _write_mem(self, addr: int, data: bytes) -> bytes:
        """Write `data` at VA `addr` of the g thread; nothing is written unless every page translates."""
        v = self.g_cpu
        try:
            pages = list(v.pages(addr, len(data)))       # every page translated before one is written
        except BusError:
            return b"E14"
        pieces, off = [], 0
        for ipa, n in pages:
            pieces.append((ipa, data[off:off + n]))
            off += n
        vm = v.vm
        try:
            for ipa, chunk in pieces:
                if vm.in_ram(ipa, len(chunk)):
                    for u in vm.vcpus:             # each Unicorn drops its translations of the bytes
                        u.uc.mem_write(ipa, chunk)
                else:
                    vm.ipa.write_bytes(ipa, chunk)
        except BusError:
            return b"E14"
        return b"OK"

    # -- breakpoints and watchpoints ------------------------------------------------------------------
    def _Z(self, rest: bytes):
        typ, addr, kind = _point(rest)
        if typ > 4:
            return b""
        if typ >= 2 and not (0 < kind <= MAX_WATCH and addr + kind <= 1 << 64):
            raise _Bad()
        targets = self.machine.vcpus
        if self.conn is not None and self.conn.multiprocess and self.g_cpu is not None:
            targets = self.g_cpu.vm.vcpus
        handles = []
        for v in targets:
            if typ < 2:
                handles.append((v, v.debug.add_breakpoint(addr, self._on_breakpoint)))
            else:
                action = self._watch_action(("", "r", "a")[typ - 2])
                handles.append((v, v.debug.add_watchpoint(addr, kind, action, read=typ >= 3,
                                                          write=typ in (2, 4))))
        self.points.setdefault((typ, addr, kind), []).append(handles)
        return b"OK"

    def _watch_action(self, kind: str):
        def action(vcpu: "Vcpu", ev) -> None:
            self._stop_at(vcpu, StopEvent(vcpu, SIGTRAP, (kind, ev.addr)))
        return action

    def _z(self, rest: bytes):
        typ, addr, kind = _point(rest)
        if typ > 4:
            return b""
        inserted = self.points.get((typ, addr, kind))
        if not inserted:
            return b"E22"
        for v, h in inserted.pop():
            v.debug.remove(h)
        if not inserted:
            del self.points[(typ, addr, kind)]
        return b"OK"

    def _remove_points(self, vms: set[int] | None = None) -> None:
        """Remove the debugger's breakpoints and watchpoints (of the vCPUs of `vms`; None: all)."""
        all_vms = self.machine.vms
        for key in list(self.points):
            keep = []
            for handles in self.points[key]:
                gone = [(v, h) for v, h in handles if vms is None or all_vms.index(v.vm) in vms]
                for v, h in gone:
                    v.debug.remove(h)
                left = [x for x in handles if x not in gone]
                if left:
                    keep.append(left)
            if keep:
                self.points[key] = keep
            else:
                del self.points[key]

    # -- execution ----------------------------------------------------------------------------------------
    def _question(self, rest: bytes):
        self._remove_points()                      # a debugger's first question: start clean (QEMU)
        v = self.c_cpu or (self.machine.vcpus[0] if self.machine.vcpus else None)
        if self.dead is not None:
            return self._stop_reply(self.dead)
        return b"T%02xthread:%s;" % (SIGTRAP, self._tid(v)) if v is not None else b"W00"

    def _c(self, rest: bytes):
        if rest:
            self._set_pc(self.c_cpu, parse_hex(rest))
        return self._resume([], None)

    def _C(self, rest: bytes):
        sig, _, addr = rest.partition(b";")
        parse_hex(sig)                             # the signal is ignored (QEMU system mode)
        return self._c(addr)

    def _s(self, rest: bytes):
        if rest:
            self._set_pc(self.c_cpu, parse_hex(rest))
        return self._resume([self.c_cpu], None)

    def _S(self, rest: bytes):
        sig, _, addr = rest.partition(b";")
        parse_hex(sig)
        return self._s(addr)

    def _set_pc(self, v: "Vcpu", pc: int) -> None:
        gdbregs.write_register(v.uc, 32, pc.to_bytes(8, "little"))

    def _v(self, rest: bytes):
        if rest == b"Cont?":
            return b"vCont;c;C;s;S"
        if rest.startswith(b"Cont;"):
            return self._vcont(rest[len(b"Cont"):])
        if rest.startswith(b"Attach;"):
            pid = parse_hex(rest[len(b"Attach;"):], 1 << 32)
            if not 1 <= pid <= len(self.machine.vms):
                return b"E22"
            self.attached.add(pid - 1)
            self.g_cpu = self.c_cpu = self.machine.vms[pid - 1].vcpus[0]
            return b"T%02xthread:%s;" % (SIGTRAP, self._tid(self.c_cpu))
        if rest.startswith(b"Kill"):
            self.conn.send(b"OK")
            return self._k(b"")
        return b""

    def _vcont(self, args: bytes):
        actions: dict[int, str] = {}
        order: list["Vcpu"] = []
        for part in args[1:].split(b";"):
            act, colon, tid = part.partition(b":")
            if not act or act[:1] not in (b"c", b"C", b"s", b"S"):
                return b""                         # 't', 'r' ...: not supported
            if act[:1] in (b"C", b"S"):
                parse_hex(act[1:])
            elif len(act) != 1:
                raise _Bad()
            vcpus = self._threads(parse_thread_id(tid)) if colon else self.machine.vcpus
            if colon and not vcpus:
                raise _Bad()
            for v in vcpus:
                if v.id not in actions:            # the leftmost action that names a thread applies
                    actions[v.id] = act[:1].lower().decode()
                    order.append(v)
        steps = [v for v in order if actions[v.id] == "s"]
        return self._resume(steps, {i for i, a in actions.items() if a == "c"})

    def _resume(self, steps: list["Vcpu"], conts: set[int] | None):
        """Step `steps` (one instruction each, the others stopped; then report) or continue: every vCPU
        (`conts` None) or those in `conts`, the others held."""
        if self.dead is not None:                  # nothing runs after a death: the process is gone
            self.conn.send(b"X%02x" % self.dead.signal)
            return _RESUME
        m = self.machine
        if steps:
            return self._step(steps)
        m.scheduler.held = set() if conts is None else {v.id for v in m.vcpus if v.id not in conts}
        self.resumed = True
        return _RESUME

    def _step(self, steps: list["Vcpu"]):
        m = self.machine
        for v in steps:
            self._stepping = v
            try:
                m.scheduler.step(v)
            finally:
                self._stepping = None
            if m.outcome is not None or self.stop is not None:
                break
        if m.outcome is not None:                  # the step ended the run: after_run reports it
            self.resumed = True
            return _RESUME
        stop, self.stop = self.stop, None
        self.resumed = True
        self._report(stop or StopEvent(steps[0], SIGTRAP))
        return None

    def _D(self, rest: bytes):
        pid = None
        if rest.startswith(b";"):
            pid = parse_hex(rest[1:], 1 << 32)
        elif rest:
            raise _Bad()
        vms = set(range(len(self.machine.vms))) if pid is None else {pid - 1}
        self._remove_points(vms)
        self.attached -= vms
        self.conn.send(b"OK")
        if self.attached:
            return None
        self.machine.scheduler.held = set()        # nothing attached: the guest runs on
        self.resumed = False
        return _RESUME

    def _k(self, rest: bytes):
        self._remove_points()
        self.machine.stop(None, Outcome(Kind.KILLED, "killed from the debugger (gdb kill)"))
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.resumed = False
        return _RESUME

    def _bang(self, rest: bytes):
        return b"OK"                               # extended mode accepted, as QEMU does

    _HANDLERS: dict[bytes, Callable[["GdbStub", bytes], Any]] = {
        b"q": _q, b"Q": _Q, b"H": _H, b"T": _T, b"g": _g, b"G": _G, b"p": _p, b"P": _P, b"m": _m, b"M": _M,
        b"X": _X, b"Z": _Z, b"z": _z, b"?": _question, b"c": _c, b"C": _C, b"s": _s, b"S": _S, b"v": _v,
        b"D": _D, b"k": _k, b"!": _bang,
    }


def _hexdata(raw: bytes) -> str:
    """Hex digits of a packet as text for bytes.fromhex (which would skip blanks: refuse them)."""
    if raw and not all(c in b"0123456789abcdefABCDEF" for c in raw):
        raise _Bad()
    if len(raw) % 2:
        raise _Bad()
    return raw.decode("ascii")


def _addr_len(raw: bytes) -> tuple[int, int]:
    addr, comma, length = raw.partition(b",")
    if not comma:
        raise _Bad()
    return parse_hex(addr), parse_hex(length, 1 << 32)


def _point(raw: bytes) -> tuple[int, int, int]:
    parts = raw.split(b";")[0].split(b",")        # conditions/commands after ';' are ignored
    if len(parts) != 3:
        raise _Bad()
    return parse_hex(parts[0], 1 << 8), parse_hex(parts[1]), parse_hex(parts[2], 1 << 32)


def stderr_announce(text: str) -> None:
    print(f"smmu-harness: {text}", file=sys.stderr, flush=True)
