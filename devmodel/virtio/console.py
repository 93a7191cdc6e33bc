"""virtio console (virtio v1.2 section 5.3, device ID 3) as QEMU's `-device virtio-serial-device -device
virtconsole,chardev=...` builds it (hw/char/virtio-serial-bus.c, hw/char/virtio-console.c, QEMU 7.2).

What QEMU 7.2 offers by default, and so this model:
* features VIRTIO_CONSOLE_F_MULTIPORT (`max_ports` = 31 > 1) and VIRTIO_CONSOLE_F_EMERG_WRITE (property
  `emergency-write`, on since QEMU 4.0), not VIRTIO_CONSOLE_F_SIZE; plus the ring features of every QEMU
  virtio device (INDIRECT_DESC, EVENT_IDX; NOTIFY_ON_EMPTY and ANY_LAYOUT on the legacy interface);
* configuration `cols` = `rows` = 0, `max_nr_ports` = 31, `emerg_wr` (12 bytes; 8 without emergency write);
* 2 * (max_ports + 1) virtqueues whether or not MULTIPORT is negotiated: port 0 receiveq/transmitq (0, 1),
  control receiveq/transmitq (2, 3), port n receiveq/transmitq (2n + 2, 2n + 3); QueueNumMax 1024 for every
  queue (QEMU's virtio-mmio reports VIRTQUEUE_MAX_SIZE for each existing queue);
* one port, 0, the virtconsole: a console port (`is_console`), open on the host side from the start (QEMU
  opens console ports at realize), writing to its `backend` (a callable taking bytes, e.g. `ChrTestdev.write`).

kvm-unit-tests' chr-testdev (lib/chr-testdev.c) uses only port 0's receiveq and transmitq through the legacy
interface, without feature negotiation or DRIVER_OK, which the legacy interface allows (spec 3.1.2).

Device operation (5.3.6): transmitq buffers go to the port's backend and are returned with used length 0
(QEMU `do_flush_queued_data`); transmitq buffers of ports that do not exist are discarded; `write_to_guest`
fills receiveq buffers (QEMU `virtio_serial_write`: only once the guest has the port open); an `emerg_wr`
write sends its low byte to port 0 (5.3.5.1: allowed at any time, even on an unconfigured device). With
MULTIPORT negotiated the control queues carry the 5.3.6.2 protocol: DEVICE_READY -> PORT_ADD for each port;
PORT_READY -> CONSOLE_PORT (console ports), PORT_NAME (named ports), PORT_OPEN (host side open);
PORT_OPEN from the driver sets the guest side. Without MULTIPORT, DRIVER_OK opens port 0 on the guest side
(QEMU `set_status`).

Differences from QEMU, each a QEMU shortcut the spec does not sanction: control messages for the driver wait
until it posts a control receiveq buffer (QEMU drops them); a control receiveq buffer too small for the
message is returned empty and counted (QEMU copies past its end); PORT_NAME carries no NUL terminator (spec
5.3.6.2; QEMU appends one); buffers in the wrong direction (5.3.6.1) are counted and returned empty; an
`emerg_wr` write sends a byte only when it touches `emerg_wr` (QEMU re-sends on any later config write).

Not modelled: hot-plug (DEVICE_ADD/REMOVE after DEVICE_READY), RESIZE, throttling, virtserialport ports.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

from ..fields import Field, Layout
from ..trace import NULL_TRACER, Tracer
from . import events  # noqa: F401  (declares the trace events)
from .config import ConfigField, ConfigSpace
from .constants import VIRTIO_ID_CONSOLE, Status, bit
from .device import Log, VirtioDevice
from .ring import DmaMemory, Virtqueue

__all__ = ["VirtioConsole", "Port", "CONSOLE_CONFIG", "CONTROL_LAYOUT", "VIRTIO_CONSOLE_F_SIZE",
           "VIRTIO_CONSOLE_F_MULTIPORT", "VIRTIO_CONSOLE_F_EMERG_WRITE", "DEVICE_READY", "DEVICE_ADD",
           "DEVICE_REMOVE", "PORT_READY", "CONSOLE_PORT", "RESIZE", "PORT_OPEN", "PORT_NAME", "QUEUE_NUM_MAX",
           "port_queues"]

VIRTIO_CONSOLE_F_SIZE = bit(0)
VIRTIO_CONSOLE_F_MULTIPORT = bit(1)
VIRTIO_CONSOLE_F_EMERG_WRITE = bit(2)

# struct virtio_console_control events (spec 5.3.6.2; Linux calls 1 and 2 PORT_ADD / PORT_REMOVE)
DEVICE_READY, DEVICE_ADD, DEVICE_REMOVE, PORT_READY, CONSOLE_PORT, RESIZE, PORT_OPEN, PORT_NAME = range(8)

CONTROL_LAYOUT = Layout("virtio_console_control", 64, (Field("ID", 0, 32), Field("EVENT", 32, 16),
                                                         Field("VALUE", 48, 16)))
CONTROL_SIZE = CONTROL_LAYOUT.nbytes

# struct virtio_console_config (spec 5.3.4)
CONSOLE_CONFIG = (ConfigField("cols", 0, 2), ConfigField("rows", 2, 2), ConfigField("max_nr_ports", 4, 4),
                  ConfigField("emerg_wr", 8, 4, writable=True, doc="low byte goes to port 0"))

QUEUE_NUM_MAX = 1024                # QEMU virtio-mmio QueueNumMax: VIRTQUEUE_MAX_SIZE
_CONTROL_RX, _CONTROL_TX = 2, 3
_MAX_PENDING_CONTROL = 256

Backend = Callable[[bytes], object]


def port_queues(port: int) -> tuple[int, int]:
    """(receiveq, transmitq) indices of a port (spec 5.3.2)."""
    return (0, 1) if port == 0 else (2 * port + 2, 2 * port + 3)


def _queue_port(index: int) -> tuple[int, bool] | None:
    """(port, is transmitq) of a data queue index, None for the control queues."""
    if index in (_CONTROL_RX, _CONTROL_TX):
        return None
    port = 0 if index < 2 else (index - 2) // 2
    return port, bool(index & 1)


@dataclass
class Port:
    id: int
    backend: Backend | None = None
    is_console: bool = True
    name: str | None = None
    host_connected: bool = True
    guest_connected: bool = False


class VirtioConsole(VirtioDevice):
    """virtio-serial-device with a virtconsole on port 0 writing to `backend`."""

    device_id = VIRTIO_ID_CONSOLE
    device_feature_names = {VIRTIO_CONSOLE_F_SIZE: "CONSOLE_F_SIZE", VIRTIO_CONSOLE_F_MULTIPORT: "CONSOLE_F_MULTIPORT",
                            VIRTIO_CONSOLE_F_EMERG_WRITE: "CONSOLE_F_EMERG_WRITE"}

    def __init__(self, memory: DmaMemory, backend: Backend | None = None, *, max_ports: int = 31,
                 emergency_write: bool = True, port_name: str | None = None, name: str = "virtio-console",
                 tracer: Tracer = NULL_TRACER, log: Log | None = None):
        if not 1 <= max_ports <= 511:
            raise ValueError(f"max_ports {max_ports} outside 1..511")
        features = (VIRTIO_CONSOLE_F_MULTIPORT if max_ports > 1 else 0) | \
                   (VIRTIO_CONSOLE_F_EMERG_WRITE if emergency_write else 0)
        config = ConfigSpace(CONSOLE_CONFIG if emergency_write else CONSOLE_CONFIG[:3])
        super().__init__(memory, queue_sizes=[QUEUE_NUM_MAX] * (2 * max_ports + 2), features=features,
                         config=config, name=name, tracer=tracer, log=log)
        self.config.set("max_nr_ports", max_ports, notify=False)
        self.max_ports = max_ports
        self.ports = {0: Port(0, backend, is_console=True, name=port_name)}
        self.pending_control: deque[bytes] = deque()

    # -- VirtioDevice hooks ------------------------------------------------------------------------------
    def handle_queue(self, vq: Virtqueue) -> None:
        if vq.index == _CONTROL_TX:
            self._control_out(vq)
            return
        if vq.index == _CONTROL_RX:
            self._flush_control()
            return
        port, transmit = _queue_port(vq.index)
        if transmit:
            self._output(self.ports.get(port), vq)

    def reset_device(self) -> None:
        for p in self.ports.values():
            p.guest_connected = False
        self.pending_control.clear()

    def status_changed(self, old: int, new: int) -> None:
        if not new & Status.DRIVER_OK:
            for p in self.ports.values():
                p.guest_connected = False
        elif not self.multiport and 0 in self.ports:
            self.ports[0].guest_connected = True

    def config_written(self, names: tuple[str, ...]) -> None:
        if "emerg_wr" not in names or not self.host_features & VIRTIO_CONSOLE_F_EMERG_WRITE:
            return
        value = self.config["emerg_wr"]
        port = self.ports.get(0)
        if value and port is not None:
            ch = value & 0xFF
            if "virtio_console_emerg_write" in self.tracer.enabled:
                self.tracer.emit("virtio_console_emerg_write", dev=self.name, ch=ch)
            self._to_backend(port, bytes((ch,)))

    # -- data ports --------------------------------------------------------------------------------------
    @property
    def multiport(self) -> bool:
        return bool(self.guest_features & VIRTIO_CONSOLE_F_MULTIPORT)

    def _to_backend(self, port: Port, data: bytes) -> None:
        if "virtio_console_flush_buf" in self.tracer.enabled:
            self.tracer.emit("virtio_console_flush_buf", dev=self.name, port=port.id, len=len(data))
        if port.backend is not None:
            port.backend(data)

    def _wrong_direction(self, vq: Virtqueue, what: str) -> None:
        self.errors["wrong_direction"] += 1
        self.guest_error(f"queue {vq.index}: {what} (spec 5.3.6.1): returned with used length 0")

    def _output(self, port: Port | None, vq: Virtqueue) -> None:
        """Guest-to-host data on a transmitq: to the port's backend, or discarded without a port."""
        while (chain := vq.pop()) is not None:
            if chain.writable:
                self._wrong_direction(vq, "device-writable buffer in a transmitq")
            if port is not None and port.host_connected and chain.readable:
                self._to_backend(port, chain.readable)
            if not vq.push(chain, 0):
                break
        self.notify(vq)

    def write_to_guest(self, data: bytes, port: int = 0) -> int:
        """Host-to-guest data for a port: fills receiveq buffers; returns the bytes the guest took (0 while
        the guest side of the port is closed, as QEMU's `virtio_serial_write`)."""
        p = self.ports.get(port)
        if p is None or not p.host_connected or not p.guest_connected or not self.may_consume():
            return 0
        vq = self.vqs[port_queues(port)[0]]
        offset = 0
        while offset < len(data) and (chain := vq.pop()) is not None:
            if not chain.capacity:
                self._wrong_direction(vq, "device-readable buffer in a receiveq")
            n = min(chain.capacity, len(data) - offset)
            if not vq.push(chain, data[offset:offset + n]):
                break
            offset += n
        if "virtio_console_chr_read" in self.tracer.enabled:
            self.tracer.emit("virtio_console_chr_read", dev=self.name, port=port, len=len(data), written=offset)
        self.notify(vq)
        return offset

    # -- control queues (multiport) -----------------------------------------------------------------------
    def _control_out(self, vq: Virtqueue) -> None:
        while (chain := vq.pop()) is not None:
            if chain.writable:
                self._wrong_direction(vq, "device-writable buffer in the control transmitq")
            self._handle_control(chain.readable)
            if not vq.push(chain, 0):
                break
        self.notify(vq)

    def _handle_control(self, buf: bytes) -> None:
        if len(buf) < CONTROL_SIZE:
            self.errors["short_control"] += 1
            self.guest_error(f"control message of {len(buf)} bytes (needs {CONTROL_SIZE}): ignored")
            return
        msg = CONTROL_LAYOUT.unpack(CONTROL_LAYOUT.from_bytes(buf[:CONTROL_SIZE]))
        pid, event, value = msg["id"], msg["event"], msg["value"]
        if "virtio_serial_handle_control_message" in self.tracer.enabled:
            self.tracer.emit("virtio_serial_handle_control_message", dev=self.name, event=event, value=value,
                             port=pid)
        if event == DEVICE_READY:
            if not value:
                self.guest_error("driver failed to add the device (DEVICE_READY 0)")
                return
            for p in self.ports.values():
                self.send_control(p.id, DEVICE_ADD, 1)
            return
        port = self.ports.get(pid)
        if port is None:
            self.errors["unknown_port"] += 1
            self.guest_error(f"control event {event} for port {pid}, which does not exist")
            return
        if event == PORT_READY:
            self._port_ready(port, value)
        elif event == PORT_OPEN:
            port.guest_connected = bool(value)

    def _port_ready(self, port: Port, value: int) -> None:
        if not value:
            self.guest_error(f"driver failed to add port {port.id} (PORT_READY 0)")
            return
        if port.is_console:
            self.send_control(port.id, CONSOLE_PORT, 1)
        if port.name:
            self.send_control(port.id, PORT_NAME, 1, port.name.encode())
        if port.host_connected:
            self.send_control(port.id, PORT_OPEN, 1)

    def send_control(self, port: int, event: int, value: int, extra: bytes = b"") -> None:
        """Queue a control message for the driver and deliver what its control receiveq can take."""
        if len(self.pending_control) >= _MAX_PENDING_CONTROL:
            self.errors["control_overflow"] += 1
            return
        msg = CONTROL_LAYOUT.to_bytes(CONTROL_LAYOUT.pack(id=port, event=event, value=value)) + extra
        self.pending_control.append(msg)
        self._flush_control()
        if "virtio_serial_send_control_event" in self.tracer.enabled:
            sent = not any(m is msg for m in self.pending_control)
            self.tracer.emit("virtio_serial_send_control_event", dev=self.name, port=port, event=event,
                             value=value, sent=int(sent))

    def _flush_control(self) -> int:
        vq = self.vqs[_CONTROL_RX]
        sent = 0
        while self.pending_control and self.may_consume() and (chain := vq.pop()) is not None:
            msg = self.pending_control.popleft()
            if chain.capacity < len(msg):
                self.errors["control_buffer_small"] += 1
                self.guest_error(f"control receiveq buffer of {chain.capacity} bytes for a {len(msg)}-byte "
                                 "message: message dropped")
                if not vq.push(chain, 0):
                    break
                continue
            if not vq.push(chain, msg):
                break
            sent += 1
        if sent:
            self.notify(vq)
        return sent
