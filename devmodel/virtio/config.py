"""Device configuration space (virtio v1.2 section 2.5) as a declaration: named little-endian fields.

A device lists its `ConfigField`s (the spec's `struct virtio_<dev>_config`); `ConfigSpace` keeps the bytes,
serves the transport's driver accesses (`read` / `write` of 1, 2 or 4 bytes at any offset, as virtio-mmio's
"accessed with byte alignment" allows) and tells the device which fields a driver write touched. Fields the
driver may not change (`writable=False`) ignore its writes. Device-side updates (`set`) report a change so
the device can bump the configuration generation and notify the driver (2.5, 4.2.2 ConfigGeneration).

Bytes beyond the declared size read as 0xff and ignore writes: what a guest sees on QEMU, whose
`virtio_config_readb/w/l` (hw/virtio/virtio.c) return all ones past the end and whose memory core splits
accesses wider than 4 bytes or unaligned ones into aligned pieces. Legacy configuration space is
guest-endian (2.5.3): little-endian on the AArch64 guests modelled here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

__all__ = ["ConfigField", "ConfigSpace"]


@dataclass(frozen=True)
class ConfigField:
    name: str
    offset: int
    size: int
    writable: bool = False
    doc: str = ""

    @property
    def end(self) -> int:
        return self.offset + self.size


class ConfigSpace:
    """The bytes of one device's configuration space and the access rules above."""

    def __init__(self, fields: Iterable[ConfigField], size: int | None = None,
                 on_write: Callable[[tuple[str, ...]], None] | None = None):
        self.fields: dict[str, ConfigField] = {}
        used = 0
        for f in fields:
            if f.size not in (1, 2, 4, 8) or f.offset < 0:
                raise ValueError(f"config field {f.name}: size {f.size} at {f.offset} (sizes 1, 2, 4, 8)")
            mask = ((1 << f.size) - 1) << f.offset
            if used & mask or f.name in self.fields:
                raise ValueError(f"config field {f.name} overlaps another field or is declared twice")
            used |= mask
            self.fields[f.name] = f
        end = max((f.end for f in self.fields.values()), default=0)
        self.size = end if size is None else size
        if self.size < end:
            raise ValueError(f"config space of {self.size} bytes is smaller than its fields ({end})")
        self.data = bytearray(self.size)
        self.on_write = on_write
        self.on_change: Callable[[], None] | None = None

    # -- device side ------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> int:
        f = self.fields[name]
        return int.from_bytes(self.data[f.offset:f.end], "little")

    def set(self, name: str, value: int, notify: bool = True) -> None:
        """Device-side update; a change calls `on_change` (configuration change notification) if `notify`."""
        f = self.fields[name]
        new = value.to_bytes(f.size, "little")
        if self.data[f.offset:f.end] != new:
            self.data[f.offset:f.end] = new
            if notify and self.on_change is not None:
                self.on_change()

    # -- driver side (the transport) --------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        lo, hi = max(offset, 0), min(offset + size, self.size)
        raw = bytearray(b"\xff" * size)
        if lo < hi:
            raw[lo - offset:hi - offset] = self.data[lo:hi]
        return int.from_bytes(raw, "little")

    def write(self, offset: int, value: int, size: int) -> tuple[str, ...]:
        """Apply a driver write to the writable fields it covers; returns the names of the fields touched."""
        raw = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        touched = []
        for f in self.fields.values():
            lo, hi = max(f.offset, offset), min(f.end, offset + size)
            if lo < hi and f.writable:
                self.data[lo:hi] = raw[lo - offset:hi - offset]
                touched.append(f.name)
        names = tuple(touched)
        if names and self.on_write is not None:
            self.on_write(names)
        return names

    def field_at(self, offset: int) -> ConfigField | None:
        for f in self.fields.values():
            if f.offset <= offset < f.end:
                return f
        return None
