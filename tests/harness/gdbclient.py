"""Test helpers for the gdb stub: a minimal GDB remote-protocol client written from the GDB manual (not the
stub's code), and a machine run in a thread with a stub that waits for it (`-S`)."""
from __future__ import annotations

import socket
import threading

from harness.gdbstub import GdbStub


def csum(body: bytes) -> bytes:
    return b"%02x" % (sum(body) & 0xFF)


class Client:
    """Talks to 127.0.0.1:port; `ask(body)` sends a packet and returns the reply's body."""

    def __init__(self, port: int, timeout: float = 20.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)     # as gdb's ser-tcp.c
        self.buf = b""
        self.noack = False
        self.acks: list[bytes] = []          # '+' / '-' received, in order

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, body: bytes) -> None:
        self.send_raw(b"$" + body + b"#" + csum(body))

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the stub closed the connection")
        self.buf += data

    def read_ack(self) -> bytes:
        while not self.buf:
            self._more()
        c, self.buf = self.buf[:1], self.buf[1:]
        assert c in (b"+", b"-"), (c, self.buf)
        self.acks.append(c)
        return c

    def read_packet(self) -> bytes:
        """The next packet (acknowledged unless no-ack); acks before it are recorded."""
        while True:
            i = self.buf.find(b"$")
            j = self.buf.find(b"#", i) if i >= 0 else -1
            if j >= 0 and len(self.buf) >= j + 3:
                self.acks += [bytes([c]) for c in self.buf[:i] if c in b"+-"]
                body, digits, self.buf = self.buf[i + 1:j], self.buf[j + 1:j + 3], self.buf[j + 3:]
                assert digits == csum(body), (body, digits)
                if not self.noack:
                    self.send_raw(b"+")
                return body
            self._more()

    def ask(self, body: bytes) -> bytes:
        self.send(body)
        if not self.noack:
            assert self.read_ack() == b"+"
        return self.read_packet()

    def closed(self, timeout: float = 10.0) -> bool:
        """Did the stub close the connection (EOF within `timeout`, ignoring acks)?"""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(4096)
                if not data:
                    return True
        except (TimeoutError, socket.timeout):
            return False
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


class Debugged:
    """`machine` run in a thread under a stub that waits for a debugger (`-S`; `wait=False`: it only listens);
    `client` is connected unless `connect=False`."""

    def __init__(self, machine, *, max_insns: int | None = None, timeout: float = 60.0, connect: bool = True,
                 wait: bool = True):
        self.machine = machine
        self.stub = GdbStub(machine, 0, wait=wait)
        self.stub.listen()
        machine.add_plugin(self.stub)
        self.outcome = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(max_insns, timeout), daemon=True)
        self.thread.start()
        self.client = Client(self.stub.port) if connect else None

    def _run(self, max_insns, timeout) -> None:
        try:
            self.outcome = self.machine.run(max_insns=max_insns, timeout=timeout)
        except BaseException as e:            # surfaced by finish()
            self.error = e

    def connect(self) -> Client:
        self.client = Client(self.stub.port)
        return self.client

    def finish(self, timeout: float = 30.0):
        """Wait for the run's end; its outcome."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.abort()
            raise AssertionError("the machine did not finish")
        if self.error is not None:
            raise self.error
        return self.outcome

    def abort(self) -> None:
        """End a session that is still going (a failed test): kill it from a new connection."""
        if not self.thread.is_alive():
            return
        if self.client is not None:
            self.client.close()
        try:
            Client(self.stub.port, 5).send(b"k")
        except OSError:
            pass
        self.thread.join(10)
