"""MMIO plumbing shared by the GIC models: per-CPU views of banked frames, ID register blocks, bad-access
accounting.

GIC frames are *banked*: what GICD_ISENABLER0 or a GICv2 GICC_* register means depends on the CPU that
accesses it. The models therefore implement `read(cpu, offset, size)` / `write(cpu, offset, value, size)` and hand
the bus an MMIO device that knows the CPU: `CpuView` is bound to one CPU (tests, per-vCPU mappings),
`CurrentCpuView` asks a callable for the CPU making the access (the glue's "which vCPU is running").
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

from ..regs import Access, Reg
from ..trace import Tracer

__all__ = ["CpuView", "CurrentCpuView", "id_regs", "BadAccess", "Log"]

Log = Callable[[str, str], None]   # (category, message), categories as QEMU -d: guest_errors, unimp


class CpuView:
    """An MMIO device for one CPU's view of a banked frame."""

    __slots__ = ("_read", "_write", "cpu")

    def __init__(self, read: Callable[[int, int, int], int], write: Callable[[int, int, int, int], None],
                 cpu: int):
        self._read = read
        self._write = write
        self.cpu = cpu

    def read(self, offset: int, size: int) -> int:
        return self._read(self.cpu, offset, size)

    def write(self, offset: int, value: int, size: int) -> None:
        self._write(self.cpu, offset, value, size)


class CurrentCpuView:
    """An MMIO device that routes each access to the view of the CPU `current_cpu()` names."""

    __slots__ = ("_read", "_write", "_current")

    def __init__(self, read: Callable[[int, int, int], int], write: Callable[[int, int, int, int], None],
                 current_cpu: Callable[[], int]):
        self._read = read
        self._write = write
        self._current = current_cpu

    def read(self, offset: int, size: int) -> int:
        return self._read(self._current(), offset, size)

    def write(self, offset: int, value: int, size: int) -> None:
        self._write(self._current(), offset, value, size)


def id_regs(base: int, pidr: tuple[int, ...], prefix: str) -> tuple[Reg, ...]:
    """The CoreSight-style ID block: PIDR4..7 at base, PIDR0..3 at base+0x10, CIDR0..3 at base+0x20
    (IHI 0048B 4.3.16 / IHI 0069 12.1.2). `pidr` is (PIDR0, PIDR1, PIDR2, PIDR3, PIDR4)."""
    p0, p1, p2, p3, p4 = pidr
    values = ((f"{prefix}PIDR4", base, p4), (f"{prefix}PIDR5", base + 4, 0), (f"{prefix}PIDR6", base + 8, 0),
              (f"{prefix}PIDR7", base + 0xC, 0), (f"{prefix}PIDR0", base + 0x10, p0),
              (f"{prefix}PIDR1", base + 0x14, p1), (f"{prefix}PIDR2", base + 0x18, p2),
              (f"{prefix}PIDR3", base + 0x1C, p3), (f"{prefix}CIDR0", base + 0x20, 0x0D),
              (f"{prefix}CIDR1", base + 0x24, 0xF0), (f"{prefix}CIDR2", base + 0x28, 0x05),
              (f"{prefix}CIDR3", base + 0x2C, 0xB1))
    return tuple(Reg(name, off, reset=v, access=Access.RO) for name, off, v in values)


class BadAccess:
    """Counts and reports accesses that hit no register or use an illegal size (RAZ/WI)."""

    def __init__(self, name: str, event: str, tracer: Tracer, log: Log | None):
        self.name = name
        self.event = event
        self.tracer = tracer
        self.log = log
        self.counts: Counter[str] = Counter()

    def __call__(self, cpu: int | None, frame: str, kind: str, offset: int, size: int,
                 value: int | None = None) -> None:
        self.counts[f"{frame}_{kind}"] += 1
        if self.event in self.tracer.enabled:
            self.tracer.emit(self.event, cpu=cpu, frame=frame, kind=kind, offset=offset, size=size)
        if self.log:
            what = f"{kind} size {size} at {frame}+{offset:#x}" + ("" if value is None else f" value {value:#x}")
            self.log("guest_errors", f"{self.name}: bad {what} (RAZ/WI)")

    @property
    def total(self) -> int:
        return sum(self.counts.values())
