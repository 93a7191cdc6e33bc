"""What a virtio-iommu device asks of the VMM behind it: the backend interface.

The device keeps the architectural state a guest sees (endpoints, domains, their mappings or tables, the
bypass setting) and answers the requests; before it changes that state it asks its backend, which does what
the change means outside the VM:

* for emulated endpoints, nothing (`IommuBackend` itself: every call succeeds) -- their DMA is translated by
  the device from its own state (`VirtioIommu.translate`), as QEMU's virtio-iommu does for emulated devices;
* for endpoints assigned to the VM, a VMM backend shadows the change into the host IOMMU -- ATTACH into
  attaching the device to a host domain, MAP/UNMAP into iommufd IOAS map/unmap, ATTACH_TABLE into a nested
  HWPT over the VM's stage 2, INVALIDATE into IOMMU_HWPT_INVALIDATE -- as QEMU's VFIO listener does with the
  notifications of its IOMMU memory region (`virtio_iommu_notify_map` / `_unmap`).

Contract (the device keeps it; a backend may rely on it):
* A call that returns a status other than `IommuStatus.OK` refuses the change: the device gives the guest
  that status and changes nothing (the backend must have changed nothing either).
* `attach` / `attach_table` may be called for an endpoint that is attached elsewhere: the backend moves it
  (iommufd's "replace"); on success the device then calls `free_domain` for the old domain if it became empty.
* Calls happen in request order; `map` / `unmap` are per domain (whatever endpoints are attached); `unmap` is
  called once per mapping an UNMAP removes, with that mapping's exact range, as QEMU notifies them.
* `detach` and `free_domain` cannot fail: after DETACH the endpoint must not reach the domain's mappings
  (5.13.6.4.2 MUST). On device reset the device detaches every endpoint and frees every domain.
* A backend that raises is a bug in the VMM: the exception propagates (the device does not catch it).
"""
from __future__ import annotations

from .pgtable import Invalidation, PageTable, PasidTable
from .spec import IommuStatus

__all__ = ["IommuBackend"]


class IommuBackend:
    """Base class and the backend of emulated endpoints: accepts everything, does nothing."""

    def attach(self, domain: int, endpoint: int, *, bypass: bool) -> IommuStatus:
        """`endpoint` now translates through `domain` (identity if `bypass`)."""
        return IommuStatus.OK

    def attach_table(self, domain: int, endpoint: int, table: PageTable | PasidTable) -> IommuStatus:
        """`endpoint` now translates through the guest's stage-1 `table` (over the VM's stage 2)."""
        return IommuStatus.OK

    def detach(self, domain: int, endpoint: int) -> None:
        """`endpoint` left `domain`: it is unattached (bypass or blocked, see `set_bypass`)."""

    def free_domain(self, domain: int) -> None:
        """`domain` ceased to exist (its last endpoint left): forget its mappings or table."""

    def map(self, domain: int, iova: int, pa: int, size: int, flags: int) -> IommuStatus:
        """Map [iova, iova + size) of `domain` to guest-physical `pa` with MAP_F_* `flags`."""
        return IommuStatus.OK

    def unmap(self, domain: int, iova: int, size: int) -> IommuStatus:
        """Remove the mapping [iova, iova + size) of `domain` (exactly one earlier `map`)."""
        return IommuStatus.OK

    def invalidate(self, domain: int, inv: Invalidation) -> IommuStatus:
        """The guest changed the tables attached to `domain`: invalidate what `inv` says."""
        return IommuStatus.OK

    def set_bypass(self, enabled: bool) -> None:
        """Config field `bypass` changed: unattached endpoints bypass (identity) or are blocked."""
