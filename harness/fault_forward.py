"""The VMM's side of an iommufd fault object (`harness.host.iommufd.FaultQueue`): what a guest-visible IOMMU
needs to hand recoverable faults to its guest and the guest's answers back, independent of how that IOMMU
shows them. QEMU's accelerated vSMMU reads the fault fd from its event loop when it polls readable and writes
`struct iommu_hwpt_page_response` records back; this class is that loop's state.

* `poll(deliver)`: when the fd is readable, read the records (one `read`), group them by cookie into
  `ForwardedGroup`s (the guest endpoint from the record's dev_id via `endpoint_of`), and offer each group to
  `deliver(group) -> Delivery`: `Delivery.tag(t)` (the guest was given the fault under tag `t`, a value the
  guest IOMMU names in its response: the vSMMU's vSTAG, or (SubstreamID, PRG index)), `Delivery.LATER` (no
  room in the guest's queue now: offered again at the next poll), `Delivery.REFUSE` (the guest cannot take
  it: answered Invalid at once) or `Delivery.answered(success)` (the guest IOMMU answered it itself while
  taking it, as an SMMU answers a page request group it could not queue). Groups of a device the guest does not
  own (no endpoint) are refused.
* `respond(endpoint, tag, success)`: the guest's answer (CMD_RESUME, CMD_PRI_RESP; a virtio-iommu page
  response request would call the same) -> one fault fd write. A tag that names nothing this guest was given
  - another endpoint's, another VM's, one already answered, or made up - is ignored (False, counted
  `responses_ignored`): the cookie never leaves the VMM, so a guest can only answer its own faults.
  `respond_all(endpoint)` answers every outstanding fault of an endpoint (CMD_STALL_TERM, SMMUEN 1 -> 0).
* Bounds: at most `max_outstanding` faults given to the guest and not answered plus waiting for room; beyond
  that groups are refused (counted `refused_full`), so a guest that never answers cannot hold more.

Counters (`stats`, a Counter the owner may share, keys prefixed with `prefix`): `reads` (fd reads that returned
records), `writes` (fd writes), `groups`, `delivered`, `refused`, `answered`, `responses`, `responses_ignored`,
`host_errors`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from .host.iommufd import IOMMUFD_PAGE_RESP_INVALID, IOMMUFD_PAGE_RESP_SUCCESS, HwptPageResponse, HwptPgfault

__all__ = ["FaultForwarder", "ForwardedGroup", "Delivery", "MAX_OUTSTANDING"]

MAX_OUTSTANDING = 64


@dataclass(frozen=True)
class ForwardedGroup:
    """One fault group as the VMM read it: the guest endpoint (vSID, virtio endpoint ID) and its records."""
    endpoint: int
    cookie: int
    records: tuple[HwptPgfault, ...]

    @property
    def last(self) -> HwptPgfault:
        return self.records[-1]


class Delivery:
    """What `deliver` did with a group: `Delivery.tag(t)`, `Delivery.LATER` or `Delivery.REFUSE`."""
    LATER: "Delivery"
    REFUSE: "Delivery"

    def __init__(self, kind: str, value: Hashable = None):
        self.kind, self.value = kind, value

    @classmethod
    def tag(cls, value: Hashable) -> "Delivery":
        return cls("tag", value)

    @classmethod
    def answered(cls, success: bool) -> "Delivery":
        return cls("answered", bool(success))


Delivery.LATER = Delivery("later")
Delivery.REFUSE = Delivery("refuse")


class FaultForwarder:
    """See the module docstring. `queue`: the fault object; `endpoint_of(dev_id) -> endpoint | None`."""

    def __init__(self, queue: Any, endpoint_of: Callable[[int], int | None], *,
                 max_outstanding: int = MAX_OUTSTANDING, stats: Counter | None = None, prefix: str = ""):
        self.queue, self.endpoint_of = queue, endpoint_of
        self.max_outstanding = max_outstanding
        self.waiting: list[ForwardedGroup] = []                      # read, no room in the guest yet
        self.outstanding: dict[tuple[int, Hashable], int] = {}        # (endpoint, tag) -> cookie
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.prefix = prefix

    def _count(self, key: str) -> None:
        self.stats[self.prefix + key] += 1

    def poll(self, deliver: Callable[[ForwardedGroup], Delivery]) -> int:
        """Offer waiting groups, then read the fd if it is readable; returns the groups delivered."""
        groups, self.waiting = self.waiting, []
        if self.queue.readable:
            records = self.queue.read()
            self._count("reads")
            groups += self._groups(records)
        n = 0
        for g in groups:
            n += self._offer(g, deliver)
        return n

    def _groups(self, records: list[HwptPgfault]) -> list[ForwardedGroup]:
        by_cookie: dict[int, list[HwptPgfault]] = {}
        for r in records:
            by_cookie.setdefault(r.cookie, []).append(r)
        out = []
        for cookie, recs in by_cookie.items():
            self._count("groups")
            ep = self.endpoint_of(recs[-1].dev_id)
            if ep is None:
                self._count("refused_no_endpoint")
                self._write(cookie, IOMMUFD_PAGE_RESP_INVALID)
                continue
            out.append(ForwardedGroup(ep, cookie, tuple(recs)))
        return out

    def _offer(self, g: ForwardedGroup, deliver: Callable[[ForwardedGroup], Delivery]) -> int:
        if len(self.outstanding) + len(self.waiting) >= self.max_outstanding:
            self._count("refused_full")
            self._write(g.cookie, IOMMUFD_PAGE_RESP_INVALID)
            return 0
        d = deliver(g)
        if d.kind == "later":
            self.waiting.append(g)
            return 0
        if d.kind == "refuse":
            self._count("refused")
            self._write(g.cookie, IOMMUFD_PAGE_RESP_INVALID)
            return 0
        if d.kind == "answered":
            self._count("answered")
            self._write(g.cookie, IOMMUFD_PAGE_RESP_SUCCESS if d.value else IOMMUFD_PAGE_RESP_INVALID)
            return 1
        self.outstanding[(g.endpoint, d.value)] = g.cookie
        self._count("delivered")
        return 1

    def given(self, endpoint: int, tag: Hashable) -> bool:
        """Is (`endpoint`, `tag`) a fault the guest was given and has not answered?"""
        return (endpoint, tag) in self.outstanding

    def respond(self, endpoint: int, tag: Hashable, success: bool) -> bool:
        """The guest answered (`endpoint`, `tag`): one fault fd write; False when it names nothing it was given."""
        cookie = self.outstanding.pop((endpoint, tag), None)
        if cookie is None:
            self._count("responses_ignored")
            return False
        self._count("responses")
        self._write(cookie, IOMMUFD_PAGE_RESP_SUCCESS if success else IOMMUFD_PAGE_RESP_INVALID)
        return True

    def respond_all(self, endpoint: int | None = None, success: bool = False,
                    match: Callable[[Hashable], bool] = lambda tag: True) -> int:
        """Answer every outstanding fault of `endpoint` (None: of every endpoint) whose tag `match`es, and
        refuse the waiting ones of that endpoint."""
        keys = [k for k in self.outstanding if (endpoint is None or k[0] == endpoint) and match(k[1])]
        for ep, tag in keys:
            self.respond(ep, tag, success)
        waiting = [g for g in self.waiting if endpoint is None or g.endpoint == endpoint]
        self.waiting = [g for g in self.waiting if g not in waiting]
        for g in waiting:
            self._write(g.cookie, IOMMUFD_PAGE_RESP_INVALID)
        return len(keys) + len(waiting)

    def _write(self, cookie: int, code: int) -> None:
        self._count("writes")
        try:
            self.queue.write([HwptPageResponse(cookie, code)])
        except OSError:                 # the kernel answered it already (device moved: auto-response)
            self._count("host_errors")
