"""The mappings of one virtio-iommu domain (virtio v1.2 5.13.6.5 MAP, 5.13.6.6 UNMAP): non-overlapping
inclusive ranges [start; end] of virtual addresses, each created by one MAP request.

`MappingTree` keeps them sorted by start (binary search: O(log n) lookup on the translation path, as
QEMU's GTree of intervals in hw/virtio/virtio-iommu.c and Linux's interval tree in
drivers/iommu/virtio-iommu.c). It enforces what is a property of the set itself: no overlap on insert.
The request rules (alignment, ranges, flags, the UNMAP split rule) are the device's; `unmap_plan` is the
pure part of the split rule.
"""
from __future__ import annotations

from bisect import bisect_right, insort
from dataclasses import dataclass
from typing import Iterator

__all__ = ["Mapping", "MappingTree", "unmap_plan"]


@dataclass(frozen=True, slots=True)
class Mapping:
    """virt [start; end] -> phys [phys; phys + end - start], with MAP_F_* `flags`."""
    start: int
    end: int
    phys: int
    flags: int

    @property
    def size(self) -> int:
        return self.end - self.start + 1


class MappingTree:
    """Sorted, non-overlapping mappings."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._by_start: dict[int, Mapping] = {}

    def __len__(self) -> int:
        return len(self._starts)

    def __iter__(self) -> Iterator[Mapping]:
        return (self._by_start[s] for s in self._starts)

    def lookup(self, addr: int) -> Mapping | None:
        """The mapping containing `addr`, or None."""
        i = bisect_right(self._starts, addr) - 1
        if i < 0:
            return None
        m = self._by_start[self._starts[i]]
        return m if addr <= m.end else None

    def intersecting(self, start: int, end: int) -> list[Mapping]:
        """Mappings with at least one address in [start; end], in address order."""
        i = max(bisect_right(self._starts, start) - 1, 0)
        out = []
        while i < len(self._starts) and self._starts[i] <= end:
            m = self._by_start[self._starts[i]]
            if m.end >= start:
                out.append(m)
            i += 1
        return out

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect_right(self._starts, end) - 1
        return i >= 0 and self._by_start[self._starts[i]].end >= start

    def insert(self, m: Mapping) -> None:
        if m.end < m.start or self.overlaps(m.start, m.end):
            raise ValueError(f"mapping [{m.start:#x}; {m.end:#x}] is empty or overlaps another")
        insort(self._starts, m.start)
        self._by_start[m.start] = m

    def remove(self, m: Mapping) -> None:
        if self._by_start.get(m.start) != m:
            raise KeyError(f"no mapping [{m.start:#x}; {m.end:#x}]")
        del self._by_start[m.start]
        self._starts.remove(m.start)

    def clear(self) -> None:
        self._starts.clear()
        self._by_start.clear()


def unmap_plan(tree: MappingTree, start: int, end: int) -> list[Mapping] | Mapping:
    """What UNMAP [start; end] removes (5.13.6.6.2): every mapping it covers entirely -- or, when it would
    split one, that mapping (the request fails and removes nothing)."""
    hit = tree.intersecting(start, end)
    for m in hit:
        if m.start < start or m.end > end:
            return m
    return hit
