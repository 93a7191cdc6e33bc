"""Property: whatever request stream a driver sends -- every request type (extension included) with fields
from small pools and anywhere, truncated or padded, with any device-writable size, mixed with bypass writes,
emulated DMA, fault reports, event buffers and resets -- and whatever a VMM backend refuses, the device never
raises and stays consistent:

* its state: every domain has endpoints, each endpoint is where `attached` says, mappings are sorted and
  disjoint, table domains hold no mappings and MAP domains no table;
* its backend: a mirror built only from the backend calls the device made equals the device's state (so a
  refused call changed nothing on either side);
* isolation: a request names one domain (MAP, UNMAP, INVALIDATE) or one endpoint (ATTACH*, DETACH), and no
  other domain's mappings change.

The default suite runs a bounded number of examples; `-m slow` runs a long campaign."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devmodel.virtio.iommu import DomainKind, IommuBackend, IommuStatus, TableFormat
from devmodel.virtio.iommu.device import MAX_REPLY

from . import iommu_driver as D
from .driver import RAM_BASE
from .test_iommu_pgtable import TCR

ENDPOINTS = [D.EP, D.EP2, D.EP3, 0x99]


def mostly(pool, anything):
    """Values from `pool` four times out of five, so streams get far enough to meet every rule."""
    return st.one_of(pool, pool.map(lambda v: v), pool.map(lambda v: v), pool.map(lambda v: v), anything)


ADDR = mostly(st.integers(0, 15).map(lambda i: i * 0x1000), st.one_of(st.just(D.MSI_BASE),
                                                                        st.integers(0, 2**64 - 1)))
END = mostly(st.integers(0, 15).map(lambda i: i * 0x1000 + 0xFFF), st.integers(0, 2**64 - 1))
PHYS = mostly(st.integers(0, 15).map(lambda i: RAM_BASE + i * 0x1000), st.integers(0, 2**64 - 1))
U32 = mostly(st.integers(0, 8), st.integers(0, 2**32 - 1))
EPS = mostly(st.sampled_from(ENDPOINTS[:3]), st.sampled_from([0x99, 2**32 - 1]))
# a domain: ("live", i) picks the i-th existing domain when there is one, ("id", n) is n itself
DOM = mostly(st.tuples(st.just("live"), st.integers(0, 3)),
             st.tuples(st.just("id"), st.one_of(st.integers(0, 2), st.integers(0, 2**32 - 1))))


def _build(fn):
    return lambda dom, *args, **kw: (fn, dom, args, kw)


_attach = st.builds(_build(D.attach), DOM, EPS, mostly(st.just(0), st.sampled_from([1, 2])))
_map = st.builds(_build(D.map_), DOM, ADDR, END, PHYS, mostly(st.sampled_from([1, 2, 3, 7]), st.just(8)))
_unmap = st.builds(_build(D.unmap), DOM, ADDR, END)
REQUESTS = st.one_of(
    _attach, _attach.map(lambda v: v), _map, _map.map(lambda v: v), _map.map(lambda v: v), _unmap,
    _unmap.map(lambda v: v), st.builds(_build(D.detach), DOM, EPS), st.builds(_build(D.probe), DOM, EPS),
    st.builds(_build(D.attach_pgt_arm), DOM, EPS, st.integers(0, 3), mostly(st.just(TCR), st.integers(0, 2**64 - 1)),
              mostly(st.just(RAM_BASE + 0x8000), PHYS), fmt=mostly(st.just(1), st.just(3))),
    st.builds(_build(D.attach_pst_arm), DOM, EPS, mostly(st.just(RAM_BASE + 0x8000), PHYS), st.integers(0, 6),
              st.integers(0, 3), st.integers(0, 3)),
    st.builds(_build(D.invalidate), DOM, st.sampled_from([1, 2, 4, 3, 8]), st.integers(0, 3), U32,
              st.integers(0, 3), ADDR, st.integers(0, 4), st.sampled_from([12, 13, 21, 64])),
    st.binary(max_size=90))
# (request, readable bytes cut or padded to, device-writable size: "auto" = the request's own)
REQUEST_OP = st.tuples(st.just("req"), REQUESTS, mostly(st.none(), st.sampled_from([3, 8, 19, 40])),
                       mostly(st.just("auto"), st.sampled_from([0, 3, 8, 100, MAX_REPLY + 4])))
OTHER_OPS = st.one_of(
    st.tuples(st.just("bypass"), mostly(st.integers(0, 1), st.integers(2, 255))),
    st.tuples(st.just("dma"), st.sampled_from(ENDPOINTS), ADDR, st.booleans()),
    st.tuples(st.just("report"), st.sampled_from(ENDPOINTS), st.integers(0, 3)),
    st.tuples(st.just("evbuf"), st.sampled_from([24, 24, 8, 0])),
    st.tuples(st.just("reset"), st.booleans()),
)
OPS = st.lists(mostly(REQUEST_OP, OTHER_OPS), min_size=10, max_size=40)


def request_bytes(rig: D.IommuRig, req) -> bytes:
    """The request a drawn op stands for, its domain chosen against the device's current domains."""
    if isinstance(req, bytes):
        return req
    fn, (how, n), args, kw = req
    live = sorted(rig.dev.domains)
    if how == "live":
        n = live[n % len(live)] if live else n % 3
    if fn is D.probe:
        return fn(*args, **kw)
    return fn(n, *args, **kw)


class Mirror(IommuBackend):
    """Keeps what the device told it; refuses the calls `refusals` picks (deterministic per example)."""

    def __init__(self, refusals: list[bool]):
        self.refusals, self.n = refusals, 0
        self.attached: dict[int, int] = {}
        self.mapped: dict[int, set[tuple[int, int, int]]] = {}

    def _refuse(self) -> bool:
        self.n += 1
        return bool(self.refusals) and self.refusals[self.n % len(self.refusals)]

    def attach(self, domain, endpoint, *, bypass):
        if self._refuse():
            return IommuStatus.UNSUPP
        self.attached[endpoint] = domain
        return IommuStatus.OK

    def attach_table(self, domain, endpoint, table):
        return self.attach(domain, endpoint, bypass=False)

    def detach(self, domain, endpoint):
        assert self.attached.pop(endpoint) == domain

    def free_domain(self, domain):
        assert domain not in self.attached.values()
        self.mapped.pop(domain, None)

    def map(self, domain, iova, pa, size, flags):
        if self._refuse():
            return IommuStatus.NOMEM
        self.mapped.setdefault(domain, set()).add((iova, size, pa))
        return IommuStatus.OK

    def unmap(self, domain, iova, size):
        if self._refuse():
            return IommuStatus.DEVERR
        entry = next(m for m in self.mapped[domain] if m[:2] == (iova, size))
        self.mapped[domain].remove(entry)
        return IommuStatus.OK

    def invalidate(self, domain, inv):
        return IommuStatus.DEVERR if self._refuse() else IommuStatus.OK


def check(rig: D.IommuRig, mirror: Mirror) -> None:
    dev = rig.dev
    for d, dom in dev.domains.items():
        assert dom.endpoints and all(dev.attached[e] == d for e in dom.endpoints)
        maps = list(dom.mappings)
        assert all(a.end < b.start for a, b in zip(maps, maps[1:]))
        assert (dom.kind is DomainKind.TABLE) == (dom.table is not None)
        assert not maps or dom.kind is DomainKind.MAP
        assert mirror.mapped.get(d, set()) == {(m.start, m.size, m.phys) for m in maps}
    assert set(dev.attached.values()) == set(dev.domains)
    assert mirror.attached == dev.attached
    assert all(d in dev.domains for d, maps in mirror.mapped.items() if maps)


def snapshot(rig: D.IommuRig) -> dict[int, list]:
    return {d: list(dom.mappings) for d, dom in rig.dev.domains.items()}


def named(req: bytes) -> tuple[str, int] | None:
    """What a well-formed request names: ("domain", id) or ("endpoint", id)."""
    if len(req) < 12:
        return None
    t = req[0]
    if t in (D.T_MAP, D.T_UNMAP):
        return "domain", int.from_bytes(req[4:8], "little")
    if t == D.T_INVALIDATE:
        return "domain", int.from_bytes(req[8:12], "little")
    if t in (D.T_ATTACH, D.T_DETACH, D.T_ATTACH_TABLE):
        return "endpoint", int.from_bytes(req[8:12], "little")
    return None


def apply(rig: D.IommuRig, op) -> None:
    kind = op[0]
    if kind == "req":
        _, req, cut, writable = op
        req = request_bytes(rig, req)
        if writable == "auto":
            writable = rig.dev.probe_size + 4 if req[:1] == bytes((D.T_PROBE,)) else 4
        body = req if cut is None else (req[:cut] if cut < len(req) else req + bytes(cut))
        if not body and not writable:
            return                                   # a chain needs a buffer
        before, old_domain = snapshot(rig), None
        target = named(body)
        if target and target[0] == "endpoint":
            old_domain = rig.dev.attached.get(target[1])
        rig.reqq.add([body] if body else [], [writable] if writable else [])
        rig.reqq.kick()
        rig.reqq.used()
        after = snapshot(rig)
        touched = set()
        if target and target[0] == "domain":
            touched = {target[1]}
        elif target:
            touched = {old_domain, rig.dev.attached.get(target[1])}
        for d in set(before) & set(after) - touched:
            assert before[d] == after[d], f"domain {d} changed by a request for {target}"
    elif kind == "bypass":
        rig.drv.set_config(36, op[1], 1)
    elif kind == "dma":
        rig.dev.translate(op[1], op[2], write=op[3])
    elif kind == "report":
        rig.dev.report_fault(op[1], op[2] % 3, address=0x1000)
    elif kind == "evbuf":
        rig.evq.used()
        if rig.evq.free:
            rig.evq.add(in_sizes=[op[1]] if op[1] else [], out=[] if op[1] else [b"x"])
            rig.evq.kick()
    elif kind == "reset":
        if op[1]:
            rig.dev.system_reset()
        rig.up()


def run(ops, refusals: list[bool]) -> None:
    mirror = Mirror(refusals)
    rig = D.IommuRig(page_tables=True, table_format=TableFormat(pasid_bits=4), backend=mirror,
                     max_mappings=8, max_domains=6).up()
    for req in (D.attach(1, D.EP), D.attach(2, D.EP2), D.map_(1, 0, 0xFFF, RAM_BASE)):   # a warm start
        apply(rig, ("req", req, None, "auto"))
    for op in ops:
        if rig.dev.broken:
            rig.up()
        apply(rig, op)
        check(rig, mirror)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, refusals=st.lists(st.booleans(), max_size=5))
def test_random_request_streams_never_raise_and_stay_consistent(ops, refusals):
    run(ops, refusals)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, refusals=st.lists(st.booleans(), max_size=5))
def test_random_request_streams_long(ops, refusals):
    run(ops, refusals)
