"""Recoverable I/O page faults on the host, in the shape of Linux `drivers/iommu/io-pgfault.c`.

The SMMU driver turns what it drains into `IopfFault`s (`struct iopf_fault`: a page request with flags, PASID,
group index, permissions and address) and reports each one with `IopfQueue.report(master, fault)`
(`iommu_report_device_fault`):

* a fault without IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE is kept on the master's partial list
  (`report_partial_fault`); the one with LAST_PAGE gathers the partial faults of its group index into an
  `IopfGroup` (`iopf_group_alloc`). A stall is always a one-fault group (Linux `arm_smmu_handle_event` sets
  LAST_PAGE, grpid = STAG).
* the group goes to the handler of the domain the master (or, with a PASID, that PASID) is attached to
  (`find_fault_handler`, `domain->iopf_handler`): the host SVA handler (`harness/host/sva.py`, which defers
  the work to this queue's workqueue as `iommu_sva_iopf_handler` does) or an iommufd fault object
  (`harness/host/iommufd.py`, which queues it for userspace). No domain or no handler: the fault is answered
  at once with IOMMU_PAGE_RESP_INVALID (`iopf_error_response`); a handler that refuses the group (returns an
  errno): IOMMU_PAGE_RESP_FAILURE (the `err_abort` path).
* `respond(group, code)` (`iopf_group_response`) hands the response to the driver's `page_response(master,
  fault, code)`, once per group; a second response to the same group is ignored and counted.

The workqueue (`queue_work`, `flush`) runs deferred handlers: on a board the queue is a machine plugin and
runs its work at the end of every vCPU slice (where the host gets CPU time); tests call `flush()` as
`iopf_queue_flush_dev` would.

Bounds (choices of this model; upstream relies on the device's own limits): at most `max_partial` partial
faults per master (the oldest is dropped, counted `partial_dropped`) and `max_work` queued groups (more are
answered IOMMU_PAGE_RESP_FAILURE, counted `work_overflow`), so a flooding device cannot grow the host's memory.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

from devmodel.trace import NULL_TRACER, Tracer, define

__all__ = ["IopfFault", "IopfGroup", "IopfQueue", "IOMMU_FAULT_PAGE_REQUEST_PASID_VALID",
           "IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE", "IOMMU_FAULT_PERM_READ", "IOMMU_FAULT_PERM_WRITE",
           "IOMMU_FAULT_PERM_EXEC", "IOMMU_FAULT_PERM_PRIV", "IOMMU_PAGE_RESP_SUCCESS", "IOMMU_PAGE_RESP_INVALID",
           "IOMMU_PAGE_RESP_FAILURE", "RESPONSE_NAMES", "perm_text"]

# include/linux/iommu.h (struct iommu_fault_page_request, enum iommu_page_response_code)
IOMMU_FAULT_PAGE_REQUEST_PASID_VALID = 1 << 0
IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE = 1 << 1
IOMMU_FAULT_PERM_READ, IOMMU_FAULT_PERM_WRITE, IOMMU_FAULT_PERM_EXEC, IOMMU_FAULT_PERM_PRIV = 1, 2, 4, 8
IOMMU_PAGE_RESP_SUCCESS, IOMMU_PAGE_RESP_INVALID, IOMMU_PAGE_RESP_FAILURE = 0, 1, 2
RESPONSE_NAMES = {IOMMU_PAGE_RESP_SUCCESS: "success", IOMMU_PAGE_RESP_INVALID: "invalid",
                  IOMMU_PAGE_RESP_FAILURE: "failure"}
MAX_PARTIAL = 256
MAX_WORK = 1024

define("iopf_report", ("dev", "sid", "source", "grpid", "pasid", "addr", "perm", "last", "outcome"),
       "a recoverable fault reported to the iopf queue (outcome: partial | group | no_handler | refused)")
define("iopf_response", ("dev", "sid", "source", "grpid", "code", "faults"), "a page response to a fault group")


def perm_text(perm: int) -> str:
    """`rwxp` letters of IOMMU_FAULT_PERM_* bits ('-' for each one not set)."""
    return "".join(c if perm & b else "-" for c, b in (("r", IOMMU_FAULT_PERM_READ), ("w", IOMMU_FAULT_PERM_WRITE),
                                                         ("x", IOMMU_FAULT_PERM_EXEC), ("p", IOMMU_FAULT_PERM_PRIV)))


@dataclass(frozen=True)
class IopfFault:
    """One recoverable fault (`struct iopf_fault` / `iommu_fault_page_request`). `source` says how the SMMU
    delivered it ("stall": an event with Stall=1, `grpid` is its STAG; "pri": a PRI queue entry, `grpid` its
    PRG index): the driver needs it to choose CMD_RESUME or CMD_PRI_RESP."""
    flags: int
    grpid: int
    perm: int
    addr: int
    pasid: int = 0
    source: str = "stall"
    sid: int = 0

    @property
    def last(self) -> bool:
        return bool(self.flags & IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE)

    @property
    def pasid_valid(self) -> bool:
        return bool(self.flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID)

    @property
    def write(self) -> bool:
        return bool(self.perm & IOMMU_FAULT_PERM_WRITE)


@dataclass(eq=False)
class IopfGroup:
    """`struct iopf_group`: the faults of one page request group (the last one is `last`), the master and the
    domain whose handler got it. `cookie` is for the handler (iommufd's fault object numbers groups)."""
    master: Any
    domain: Any
    faults: list[IopfFault]
    cookie: int = 0
    responded: int | None = None         # the response code once sent
    data: dict = field(default_factory=dict)

    @property
    def last(self) -> IopfFault:
        return self.faults[-1]


class IopfQueue:
    """The host's iopf queue and workqueue for one SMMU driver (module docstring). `respond_fn(master, fault,
    code)` is the driver's page response."""

    def __init__(self, respond_fn: Callable[[Any, IopfFault, int], None], *, tracer: Tracer = NULL_TRACER,
                 name: str = "iopf", max_partial: int = MAX_PARTIAL, max_work: int = MAX_WORK):
        self.respond_fn = respond_fn
        self.tracer, self.name = tracer, name
        self.max_partial, self.max_work = max_partial, max_work
        self.partial: dict[int, list[IopfFault]] = {}        # StreamID -> faults waiting for their group's last
        self.work: deque[tuple[IopfGroup, Callable[[IopfGroup], None]]] = deque()
        self.stats: Counter[str] = Counter()
        self.groups: list[IopfGroup] = []                     # every group formed (tests and metrics)

    # -- reporting (iommu_report_device_fault) -----------------------------------------------------------------
    def report(self, master: Any, fault: IopfFault) -> IopfGroup | None:
        """Report one fault of `master`; returns the group it completed (None while it is partial)."""
        self.stats["faults"] += 1
        self.stats[f"faults_{fault.source}"] += 1
        domain = self._domain(master, fault)
        handler = getattr(domain, "iopf_handler", None)
        if handler is None:
            self._trace_report(master, fault, "no_handler")
            self.stats["no_handler"] += 1
            self._respond_faults(master, [fault], IOMMU_PAGE_RESP_INVALID)     # iopf_error_response
            return None
        if not fault.last:
            part = self.partial.setdefault(master.sid, [])
            if len(part) >= self.max_partial:
                part.pop(0)
                self.stats["partial_dropped"] += 1
            part.append(fault)
            self._trace_report(master, fault, "partial")
            return None
        group = IopfGroup(master, domain, self._take_partial(master.sid, fault) + [fault])
        self.groups.append(group)
        self.stats["groups"] += 1
        err = handler(group)
        self._trace_report(master, fault, "refused" if err else "group")
        if err:
            self.stats["handler_refused"] += 1
            self.respond(group, IOMMU_PAGE_RESP_FAILURE)
        return group

    @staticmethod
    def _domain(master: Any, fault: IopfFault) -> Any:
        """The domain that handles `fault` (`find_fault_handler`): the PASID's, else the master's own."""
        if fault.pasid_valid:
            pasids = getattr(master, "pasid_domains", None) or {}
            if fault.pasid in pasids:
                return pasids[fault.pasid]
        return master.domain

    def _take_partial(self, sid: int, last: IopfFault) -> list[IopfFault]:
        part = self.partial.get(sid, [])
        mine = [f for f in part if f.grpid == last.grpid]
        if mine:
            self.partial[sid] = [f for f in part if f.grpid != last.grpid]
        return mine

    def discard_partial(self, sid: int) -> int:
        """Forget the partial faults of a StreamID (`iopf_queue_discard_partial`, e.g. on PRI reset)."""
        return len(self.partial.pop(sid, []))

    # -- responses (iopf_group_response) ------------------------------------------------------------------------
    def respond(self, group: IopfGroup, code: int) -> bool:
        """Send the page response of `group` (once); False when it was answered already."""
        if group.responded is not None:
            self.stats["response_repeated"] += 1
            return False
        group.responded = code
        self._respond_faults(group.master, group.faults, code)
        return True

    def _respond_faults(self, master: Any, faults: list[IopfFault], code: int) -> None:
        last = faults[-1]
        self.stats["responses"] += 1
        self.stats[f"responses_{RESPONSE_NAMES.get(code, code)}"] += 1
        if "iopf_response" in self.tracer.enabled:
            self.tracer.emit("iopf_response", dev=self.name, sid=master.sid, source=last.source, grpid=last.grpid,
                             code=RESPONSE_NAMES.get(code, str(code)), faults=len(faults))
        if last.last:                        # only a group's last request needs an answer (PCIe PRI)
            self.respond_fn(master, last, code)

    # -- the workqueue -------------------------------------------------------------------------------------------
    def queue_work(self, group: IopfGroup, fn: Callable[[IopfGroup], None]) -> int:
        """Defer `fn(group)` to the workqueue (`iopf_queue_work`); returns 0, or an errno when it is full."""
        if len(self.work) >= self.max_work:
            self.stats["work_overflow"] += 1
            return 12                          # ENOMEM: the group is answered FAILURE by report()
        self.work.append((group, fn))
        return 0

    def flush(self) -> int:
        """Run the queued work (`iopf_queue_flush_dev`); returns how many groups were handled. Work queued by
        the handlers themselves runs too."""
        n = 0
        while self.work:
            group, fn = self.work.popleft()
            fn(group)
            n += 1
        self.stats["work_done"] += n
        return n

    # machine plugin: the host's workqueues run between vCPU slices
    def slice_end(self, vcpu: Any) -> None:
        if self.work:
            self.flush()

    def _trace_report(self, master: Any, f: IopfFault, outcome: str) -> None:
        if "iopf_report" in self.tracer.enabled:
            self.tracer.emit("iopf_report", dev=self.name, sid=master.sid, source=f.source, grpid=f.grpid,
                             pasid=f.pasid if f.pasid_valid else -1, addr=f.addr, perm=perm_text(f.perm),
                             last=int(f.last), outcome=outcome)
