"""Host SVA: a process address space whose page tables the SMMU walks, and the I/O page fault handler that
populates it, in the shape of Linux `drivers/iommu/iommu-sva.c` (`iommu_sva_iopf_handler`,
`iommu_sva_handle_iopf`, `iommu_sva_handle_mm`) and the arm-smmu-v3 SVA notifier
(`arm_smmu_mm_arch_invalidate_secondary_tlbs`).

`HostMm` stands for a process's `mm_struct`: stage-1 tables in host memory (a `PageTableBuilder`), VMAs
(`mmap(va, size, prot)`: nothing is mapped until a fault populates it, as anonymous memory), page allocation
from host memory, and invalidation notifiers. `handle_fault(addr, perm)` is `handle_mm_fault` for one page:
it succeeds when a VMA covers the address and allows the access (read, write, exec); the page is then mapped
(or made writable) and the response is IOMMU_PAGE_RESP_SUCCESS, else IOMMU_PAGE_RESP_INVALID.
`munmap(va, size)` clears the tables and calls the notifiers (the SMMU driver's: TLBI by ASID and VA, then
ATC_INV, each with CMD_SYNC).

`sva_iopf_handler(queue)` is the domain's `iopf_handler`: it defers the group to the iopf workqueue; the work
handles every fault of the group and answers it once (`iopf_group_response`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from devmodel.pagetable import PERM_R, PERM_W, PERM_X, PageTableBuilder

from .iopf import (IOMMU_FAULT_PERM_EXEC, IOMMU_FAULT_PERM_WRITE, IOMMU_PAGE_RESP_INVALID, IOMMU_PAGE_RESP_SUCCESS,
                   IopfGroup, IopfQueue)

__all__ = ["HostMm", "Vma", "sva_iopf_handler"]

_PAGE = 4096


@dataclass
class Vma:
    start: int
    end: int
    prot: int                    # PERM_R | PERM_W | PERM_X


class HostMm:
    """A host process's address space for SVA (module docstring). `mem` allocates pages (host memory: the
    driver's `HostMemory` or any allocator callable), `bus` is where the tables live."""

    def __init__(self, bus: Any, mem: Callable[..., int], *, ias: int = 48, name: str = "mm"):
        self.bus, self.mem, self.name = bus, mem, name
        self.pgd = PageTableBuilder(bus, mem, granule=_PAGE, stage=1, ias=ias)
        self.vmas: list[Vma] = []
        self.pages: dict[int, int] = {}                 # VA page -> PA
        self.notifiers: list[Callable[[int, int], None]] = []
        self.stats: Counter[str] = Counter()

    def mmap(self, va: int, size: int, prot: int = PERM_R | PERM_W) -> None:
        """A VMA of `size` bytes at `va` (page aligned); populated on fault."""
        if va % _PAGE or size % _PAGE or size <= 0:
            raise ValueError(f"mmap({va:#x}, {size:#x}) is not page aligned")
        self.vmas.append(Vma(va, va + size, prot))

    def vma(self, addr: int) -> Vma | None:
        return next((v for v in self.vmas if v.start <= addr < v.end), None)

    def handle_fault(self, addr: int, perm: int) -> int:
        """`handle_mm_fault` for the page of `addr` with the IOMMU_FAULT_PERM_* access asked: the response."""
        v = self.vma(addr)
        need = PERM_W if perm & IOMMU_FAULT_PERM_WRITE else (PERM_X if perm & IOMMU_FAULT_PERM_EXEC else PERM_R)
        if v is None or not v.prot & need:
            self.stats["fault_invalid"] += 1
            return IOMMU_PAGE_RESP_INVALID
        page = addr & ~(_PAGE - 1)
        pa = self.pages.get(page)
        if pa is None:
            pa = self.pages[page] = self.mem(_PAGE, _PAGE)
            self.stats["pages_populated"] += 1
        # the whole VMA protection at once (as a write fault on a private page ends up writable)
        self.pgd.map(page, pa, _PAGE, v.prot)
        self.stats["fault_success"] += 1
        return IOMMU_PAGE_RESP_SUCCESS

    def munmap(self, va: int, size: int) -> None:
        """Remove the mappings of [va, va + size) and tell the notifiers (the IOTLB/ATC invalidation)."""
        self.pgd.unmap(va, size)
        for page in range(va & ~(_PAGE - 1), va + size, _PAGE):
            self.pages.pop(page, None)
        self.vmas = [v for v in self.vmas if v.end <= va or v.start >= va + size]
        for fn in list(self.notifiers):
            fn(va, size)

    def read64(self, va: int) -> int | None:
        pa = self.pgd.translate(va)
        return None if pa is None else self.bus.read64(pa)

    def write64(self, va: int, value: int) -> None:
        pa = self.pgd.translate(va)
        if pa is None:
            self.handle_fault(va, IOMMU_FAULT_PERM_WRITE)
            pa = self.pgd.translate(va)
        self.bus.write64(pa, value)


def sva_iopf_handler(queue: IopfQueue, mm: HostMm) -> Callable[[IopfGroup], int]:
    """The SVA domain's `iopf_handler`: queue the group on the workqueue (`iommu_sva_iopf_handler`)."""
    def work(group: IopfGroup) -> None:                  # iommu_sva_handle_iopf
        status = IOMMU_PAGE_RESP_SUCCESS
        for f in group.faults:
            if status != IOMMU_PAGE_RESP_SUCCESS:
                break
            status = mm.handle_fault(f.addr, f.perm)
        queue.respond(group, status)

    def handler(group: IopfGroup) -> int:
        return queue.queue_work(group, work)
    return handler
