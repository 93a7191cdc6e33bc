"""virtio-iommu conformance, request by request and status by status (OASIS virtio v1.2 section 5.13; each
test names the subsection whose requirement it checks). The driver side is tests/devmodel/virtio/
iommu_driver.py: Linux's request framing, packed independently of the device's layouts."""
from __future__ import annotations

import pytest

from devmodel.virtio import Status
from devmodel.virtio.iommu import Endpoint, IommuBackend, IommuStatus, ResvMem
from devmodel.virtio.iommu.spec import (F_BYPASS, F_BYPASS_CONFIG, F_DOMAIN_RANGE, F_INPUT_RANGE, F_MAP_UNMAP,
                                        F_MMIO, F_PROBE)
from devmodel.virtio.constants import F_VERSION_1

from .driver import DEVICE_ID, QUEUE_NUM_MAX, QUEUE_SEL, RAM_BASE
from .iommu_driver import (EP, EP2, EP3, MSI_BASE, MSI_SIZE, S_FAULT, S_INVAL, S_IOERR, S_NOENT, S_NOMEM,
                           S_OK, S_RANGE, S_UNSUPP, IommuRig, attach, detach, map_, parse_properties, probe,
                           unmap)

ALL = F_INPUT_RANGE | F_DOMAIN_RANGE | F_MAP_UNMAP | F_PROBE | F_MMIO | F_BYPASS_CONFIG
PAGE = 0x1000


@pytest.fixture
def r() -> IommuRig:
    return IommuRig().up()


# -- 5.13.1 - 5.13.5: identification, queues, features, configuration, initialization ------------------------
def test_5_13_1_device_id_and_5_13_2_two_queues():
    rig = IommuRig()
    assert rig.drv.r(DEVICE_ID) == 23
    sizes = []
    for q in (0, 1, 2):
        rig.drv.w(QUEUE_SEL, q)
        sizes.append(rig.drv.r(QUEUE_NUM_MAX))
    assert sizes == [256, 256, 0]


def test_5_13_3_features_offered():
    offered = IommuRig().drv.device_features()
    assert offered & ALL == ALL and offered & F_VERSION_1
    assert not offered & F_BYPASS                       # 5.13.3.2: new devices SHOULD NOT offer BYPASS
    assert not offered & (1 << 8)                       # the page-table extension is off unless enabled
    lean = IommuRig(probe=False, mmio=False).drv.device_features()
    assert not lean & (F_PROBE | F_MMIO) and lean & F_MAP_UNMAP


def test_5_13_4_configuration_layout():
    rig = IommuRig(page_size_mask=0x4020_1000, input_range=(0x1000, (1 << 48) - 1), domain_range=(1, 63))
    cfg = rig.drv.config
    assert cfg(0, 4) | cfg(4, 4) << 32 == 0x4020_1000
    assert (cfg(8, 4), cfg(16, 4) | cfg(20, 4) << 32) == (0x1000, (1 << 48) - 1)
    assert (cfg(24, 4), cfg(28, 4), cfg(32, 4), cfg(36, 1), cfg(37, 2)) == (1, 63, 512, 1, 0)
    assert cfg(40, 4) == 0xFFFF_FFFF                    # past the 40-byte structure
    rig.drv.set_config(32, 4096, 4)                     # 5.13.4.1: MUST NOT write other fields: ignored
    assert cfg(32, 4) == 512


def test_5_13_4_bypass_written_by_the_driver():
    rig = IommuRig(boot_bypass=False).up()
    rig.drv.set_config(36, 1, 1)
    assert rig.drv.config(36, 1) == 1 and rig.dev.bypass and rig.dev.translate(EP, 0x1234) == 0x1234
    assert [e["accepted"] for e in rig.events("virtio_iommu_set_config")] == [1]
    rig.drv.set_config(36, 2, 1)                        # MUST NOT write a value other than 0 or 1
    assert rig.drv.config(36, 1) == 1                   # MUST NOT present another value
    assert rig.drv.status() & Status.DEVICE_NEEDS_RESET  # QEMU: virtio_error
    assert rig.dev.errors and [e["accepted"] for e in rig.events("virtio_iommu_set_config")] == [1, 0]


def test_5_13_4_bypass_needs_bypass_config():
    rig = IommuRig(boot_bypass=False).up(wanted=ALL & ~F_BYPASS_CONFIG)
    rig.drv.set_config(36, 1, 1)
    assert rig.drv.config(36, 1) == 0 and not rig.dev.bypass
    assert rig.drv.status() & Status.DEVICE_NEEDS_RESET


def test_5_13_4_bypass_survives_device_reset_not_system_reset(r):
    r.drv.set_config(36, 0, 1)
    r.drv.w(0x070, 0)                                   # device reset
    assert r.drv.config(36, 1) == 0
    r.dev.system_reset()
    assert r.drv.config(36, 1) == 1 and r.events("virtio_iommu_system_reset")


def test_5_13_5_reset_detaches_every_endpoint(r):
    calls = []

    class Rec(IommuBackend):
        def detach(self, domain, endpoint):
            calls.append(("detach", domain, endpoint))

        def free_domain(self, domain):
            calls.append(("free", domain))

    r.dev.backend = Rec()
    assert r.status(attach(1, EP)) == S_OK and r.status(attach(2, EP2)) == S_OK
    r.drv.w(0x070, 0)
    assert r.dev.domains == {} and r.dev.attached == {}
    assert calls == [("detach", 1, EP), ("detach", 2, EP2), ("free", 1), ("free", 2)]


# -- 5.13.6 requests in general ------------------------------------------------------------------------------
def test_5_13_6_tail_is_the_last_four_bytes_and_used_length_the_writable_part(r):
    reply = r.request(attach(1, EP), 12)
    assert reply.len == 12 and reply.data == bytes(8) + bytes((S_OK, 0, 0, 0))   # reserved tail bytes zero


def test_5_13_6_2_unrecognized_type_returned_unwritten(r):
    buf = r.guest.alloc(4, 16)
    r.guest.bus.write_bytes(buf, b"\xAA\xBB\xCC\xDD")
    out = r.guest.buffer(bytes((0x80, 0, 0, 0)))
    r.reqq.put_desc(0, out, 4, 1, 1)
    r.reqq.put_desc(1, buf, 4, 2)
    r.reqq.publish(0)
    r.reqq.kick()
    assert r.reqq.used_elem(0) == (0, 0)                                 # SHOULD set used length 0
    assert r.guest.bus.read_bytes(buf, 4) == b"\xAA\xBB\xCC\xDD"         # SHOULD NOT write (QEMU: UNSUPP)
    assert r.events("virtio_iommu_bad_request")[-1]["status"] is None


def test_5_13_6_head_reserved_ignored(r):
    raw = bytearray(attach(1, EP))
    raw[1:4] = b"\x01\x02\x03"
    assert r.status(bytes(raw)) == S_OK


def test_5_13_6_truncated_request_is_ioerr(r):
    assert r.status(attach(1, EP)[:12]) == S_IOERR
    assert r.dev.domains == {}
    assert r.events("virtio_iommu_bad_request")[-1]["status"] == "IOERR"


# -- 5.13.6.3 ATTACH -----------------------------------------------------------------------------------------
def test_5_13_6_3_attach_creates_the_domain(r):
    assert r.status(attach(5, EP)) == S_OK
    assert r.dev.domains[5].endpoints == {EP} and r.dev.attached == {EP: 5}
    ev = r.events("virtio_iommu_attach")[-1]
    assert (ev["domain"], ev["endpoint"], ev["status"]) == (5, EP, "OK")


def test_5_13_6_3_2_attach_rejections(r):
    assert r.status(attach(1, EP, reserved=b"\0\0\0\1")) == S_INVAL     # reserved != 0: MUST INVAL
    assert r.status(attach(1, EP, flags=2)) == S_INVAL                 # unknown flag: MUST INVAL
    assert r.status(attach(1, 0x99)) == S_NOENT                        # no such endpoint: MUST NOENT
    assert r.dev.domains == {}


def test_5_13_6_3_bypass_flag_needs_bypass_config():
    rig = IommuRig().up(wanted=ALL & ~F_BYPASS_CONFIG)
    assert rig.status(attach(1, EP, flags=1)) == S_INVAL
    r2 = IommuRig(boot_bypass=False).up()
    assert r2.status(attach(1, EP, flags=1)) == S_OK
    assert r2.dev.translate(EP, 0x4000_1234) == 0x4000_1234              # bypass domain: identity
    assert r2.status(map_(1, 0, PAGE - 1, RAM_BASE)) == S_INVAL           # MAP on a bypass domain


def test_5_13_6_3_shared_domain_and_inconsistent_bypass(r):
    assert r.status(attach(1, EP)) == S_OK and r.status(attach(1, EP2)) == S_OK
    assert r.dev.domains[1].endpoints == {EP, EP2}
    assert r.status(attach(1, EP3, flags=1)) == S_INVAL                  # SHOULD INVAL: flag inconsistent
    assert EP3 not in r.dev.attached


def test_5_13_6_3_reattach_moves_the_endpoint(r):
    assert r.status(attach(1, EP)) == S_OK and r.status(map_(1, 0x1000, 0x1FFF, RAM_BASE)) == S_OK
    assert r.status(attach(2, EP2)) == S_OK and r.status(map_(2, 0x1000, 0x1FFF, RAM_BASE + PAGE)) == S_OK
    assert r.status(attach(2, EP)) == S_OK                               # as DETACH(1) then ATTACH(2)
    assert 1 not in r.dev.domains and r.dev.attached[EP] == 2            # domain 1 had no endpoint left
    assert r.dev.translate(EP, 0x1000) == RAM_BASE + PAGE
    assert [e["domain"] for e in r.events("virtio_iommu_put_domain")] == [1]


def test_5_13_6_3_failed_move_leaves_the_endpoint_where_it_was(r):
    assert r.status(attach(1, EP)) == S_OK and r.status(attach(2, EP2, flags=1)) == S_OK
    assert r.status(attach(2, EP)) == S_INVAL                            # domain 2 is a bypass domain
    assert r.dev.attached[EP] == 1 and 1 in r.dev.domains                # (QEMU detaches it first)


def test_5_13_6_3_attach_again_to_the_same_domain_keeps_it(r):
    assert r.status(attach(1, EP)) == S_OK and r.status(map_(1, 0, PAGE - 1, RAM_BASE)) == S_OK
    assert r.status(attach(1, EP)) == S_OK
    assert r.mappings(1) == [(0, PAGE - 1, RAM_BASE, 3)]                 # (QEMU recreates it empty)


def test_5_13_6_3_domain_range_and_resources():
    rig = IommuRig(domain_range=(1, 8), max_domains=2).up()
    assert rig.status(attach(0, EP)) == S_RANGE and rig.status(attach(9, EP)) == S_RANGE
    assert rig.status(attach(1, EP)) == S_OK and rig.status(attach(2, EP2)) == S_OK
    assert rig.status(attach(3, EP3)) == S_NOMEM
    assert rig.status(attach(3, EP)) == S_OK                            # the move frees domain 1


def test_5_13_6_3_incompatible_endpoint_properties_unsupp(r):
    assert r.status(attach(1, EP2)) == S_OK
    assert r.status(map_(1, MSI_BASE, MSI_BASE + PAGE - 1, RAM_BASE)) == S_OK
    assert r.status(attach(1, EP)) == S_UNSUPP                           # its MSI window is mapped there
    assert EP not in r.dev.attached


# -- 5.13.6.4 DETACH -----------------------------------------------------------------------------------------
def test_5_13_6_4_detach(r):
    assert r.status(attach(1, EP)) == S_OK and r.status(map_(1, 0, PAGE - 1, RAM_BASE)) == S_OK
    assert r.status(detach(1, 0x99)) == S_NOENT                          # MUST NOENT
    assert r.status(detach(2, EP)) == S_INVAL                            # not attached to that domain
    assert r.status(detach(1, EP, reserved=b"\xff" * 8)) == S_OK         # reserved: MUST ignore
    assert r.dev.domains == {} and r.status(detach(1, EP)) == S_INVAL
    assert r.dev.translate(EP, 0) == 0                                   # detached, bypass = 1: identity
    r.drv.set_config(36, 0, 1)
    assert r.dev.translate(EP, 0).reason == 1                            # MUST NOT reach the mappings: DOMAIN
    assert r.status(attach(1, EP, flags=1)) == S_OK                      # the ID can be reused


# -- 5.13.6.5 MAP --------------------------------------------------------------------------------------------
def test_5_13_6_5_map_inclusive_end_and_translation(r):
    assert r.status(attach(1, EP)) == S_OK
    assert r.status(map_(1, 0x1000, 0x2FFF, RAM_BASE + 0x8000, 1)) == S_OK
    assert r.dev.translate(EP, 0x2FFF) == RAM_BASE + 0x9FFF
    assert r.dev.translate(EP, 0x3000).reason == 2
    assert r.dev.translate(EP, 0x1000, write=True).reason == 2           # MUST NOT allow writes without WRITE
    ev = r.events("virtio_iommu_map")[-1]
    assert (ev["virt_start"], ev["virt_end"], ev["phys_start"], ev["flags"], ev["status"]) == \
        (0x1000, 0x2FFF, RAM_BASE + 0x8000, 1, "OK")


def test_5_13_6_5_2_map_rejections(r):
    assert r.status(attach(1, EP)) == S_OK
    base = RAM_BASE
    assert r.status(map_(2, 0, PAGE - 1, base)) == S_NOENT                         # SHOULD NOENT
    assert r.status(map_(1, 0, PAGE - 1, base, 1 << 3)) == S_INVAL                 # MUST INVAL: flag
    assert r.status(map_(1, 0x800, 0x17FF, base)) == S_RANGE                       # virt_start misaligned
    assert r.status(map_(1, 0, 0x17FF, base)) == S_RANGE                           # virt_end + 1 misaligned
    assert r.status(map_(1, 0, PAGE - 1, base + 0x10)) == S_RANGE                  # phys misaligned
    assert r.status(map_(1, 0x2000, 0x1FFF, base)) == S_INVAL                      # virt_end < virt_start
    assert r.status(map_(1, 0, PAGE - 1, 0x1000)) == S_FAULT                       # not guest memory
    assert r.status(map_(1, 0x4000, 0x5FFF, base)) == S_OK
    assert r.status(map_(1, 0x5000, 0x5FFF, base)) == S_INVAL                      # SHOULD INVAL: overlap
    assert r.status(map_(1, 0x3000, 0x4FFF, base)) == S_INVAL
    assert r.status(map_(1, MSI_BASE, MSI_BASE + PAGE - 1, base)) == S_INVAL       # reserved region
    assert r.mappings(1) == [(0x4000, 0x5FFF, base, 3)]


def test_5_13_6_5_mmio_flag_needs_f_mmio():
    rig = IommuRig().up(wanted=ALL & ~F_MMIO)
    assert rig.status(attach(1, EP)) == S_OK and rig.status(map_(1, 0, PAGE - 1, RAM_BASE, 4 | 2)) == S_INVAL
    rig2 = IommuRig().up()
    assert rig2.status(attach(1, EP)) == S_OK and rig2.status(map_(1, 0, PAGE - 1, RAM_BASE, 4 | 2)) == S_OK


def test_5_13_6_5_input_range():
    rig = IommuRig(input_range=(0x10_0000, (1 << 39) - 1)).up()
    assert rig.status(attach(1, EP)) == S_OK
    assert rig.status(map_(1, 0, PAGE - 1, RAM_BASE)) == S_RANGE
    assert rig.status(map_(1, (1 << 39) - PAGE, (1 << 39) + PAGE - 1, RAM_BASE)) == S_RANGE
    assert rig.status(map_(1, 0x10_0000, 0x10_0FFF, RAM_BASE)) == S_OK
    assert rig.status(unmap(1, 0, 0x10_0FFF)) == S_RANGE and len(rig.mappings(1)) == 1


def test_5_13_6_5_top_of_the_address_space(r):
    assert r.status(attach(1, EP)) == S_OK
    assert r.status(map_(1, 2**64 - PAGE, 2**64 - 1, RAM_BASE)) == S_OK          # end + 1 wraps to 0: aligned
    assert r.dev.translate(EP, 2**64 - 1) == RAM_BASE + PAGE - 1
    assert r.status(map_(1, 0, PAGE - 1, 2**64 - PAGE // 2)) == S_RANGE


def test_5_13_6_5_map_unmap_need_the_feature():
    rig = IommuRig().up(wanted=ALL & ~F_MAP_UNMAP)
    assert rig.status(attach(1, EP)) == S_OK
    assert rig.status(map_(1, 0, PAGE - 1, RAM_BASE)) == S_UNSUPP
    assert rig.status(unmap(1, 0, PAGE - 1)) == S_UNSUPP


def test_5_13_6_5_nomem():
    rig = IommuRig(max_mappings=2).up()
    assert rig.status(attach(1, EP)) == S_OK
    assert [rig.status(map_(1, i * PAGE, i * PAGE + PAGE - 1, RAM_BASE)) for i in range(3)] == [S_OK, S_OK, S_NOMEM]


# -- 5.13.6.6 UNMAP: the spec's seven examples, and its rules --------------------------------------------------
UNMAP_EXAMPLES = [
    ([], (0, 4), S_OK, []),                                          # (1) succeeds, unmaps nothing
    ([(0, 9)], (0, 9), S_OK, []),                                    # (2)
    ([(0, 4), (5, 9)], (0, 9), S_OK, []),                            # (3) unmaps a and b
    ([(0, 9)], (0, 4), S_RANGE, [(0, 9)]),                           # (4) fails, unmaps nothing
    ([(0, 4), (5, 9)], (0, 4), S_OK, [(5, 9)]),                      # (5)
    ([(0, 4)], (0, 9), S_OK, []),                                    # (6)
    ([(0, 4), (10, 14)], (0, 14), S_OK, []),                         # (7)
    ([(0, 4), (5, 9)], (0, 7), S_RANGE, [(0, 4), (5, 9)]),           # a split removes nothing at all
]


@pytest.mark.parametrize("maps, rng, status, left", UNMAP_EXAMPLES, ids=[f"ex{i + 1}" for i in range(8)])
def test_5_13_6_6_unmap_examples(maps, rng, status, left):
    rig = IommuRig(page_size_mask=1).up()                # one-byte granule, as the spec's example numbers
    assert rig.status(attach(1, EP)) == S_OK
    for s, e in maps:
        assert rig.status(map_(1, s, e, RAM_BASE + s)) == S_OK
    assert rig.status(unmap(1, *rng)) == status
    assert [(s, e) for s, e, _p, _f in rig.mappings(1)] == left
    done = [(e["virt_start"], e["virt_end"]) for e in rig.events("virtio_iommu_unmap_done")]
    assert done == ([] if status != S_OK else [m for m in maps if m not in left])


def test_5_13_6_6_2_unmap_rejections(r):
    assert r.status(attach(1, EP)) == S_OK and r.status(map_(1, 0, PAGE - 1, RAM_BASE)) == S_OK
    assert r.status(unmap(1, 0, PAGE - 1, reserved=b"\0\0\1\0")) == S_INVAL      # the MAY: nothing removed
    assert r.status(unmap(7, 0, PAGE - 1)) == S_NOENT
    assert r.status(attach(2, EP2, flags=1)) == S_OK and r.status(unmap(2, 0, PAGE - 1)) == S_INVAL
    assert r.mappings(1) == [(0, PAGE - 1, RAM_BASE, 3)]


# -- 5.13.6.7 PROBE and 5.13.6.8 RESV_MEM --------------------------------------------------------------------
def test_5_13_6_7_probe_resv_mem_msi(r):
    reply = r.probe(EP)
    assert reply.len == 512 + 4 and reply.status == S_OK
    props = reply.data[:-4]
    assert parse_properties(props) == [(1, bytes((1, 0, 0, 0)) + MSI_BASE.to_bytes(8, "little")
                                        + (MSI_BASE + MSI_SIZE - 1).to_bytes(8, "little"))]
    assert props[24:] == bytes(512 - 24)                 # NONE terminator: the rest is zero
    ev = r.events("virtio_iommu_fill_resv_property")[-1]
    assert (ev["subtype"], ev["start"], ev["end"]) == (1, MSI_BASE, MSI_BASE + MSI_SIZE - 1)


def test_5_13_6_7_2_probe_rules(r):
    assert r.probe(EP2).data[:-4] == bytes(512)          # no property
    assert r.probe(0x99).status == S_NOENT
    small = r.request(probe(EP), 100)
    assert small.status == S_INVAL and small.data[:-4] == bytes(96)      # SHOULD NOT write any property


def test_5_13_6_7_2_probe_not_offered_not_written():
    rig = IommuRig(probe=False).up()
    assert rig.probe(EP).len == 0
    rig2 = IommuRig().up(wanted=ALL & ~F_PROBE)
    assert rig2.probe(EP).status == S_UNSUPP


def test_5_13_6_8_resv_mem_translation():
    rig = IommuRig([Endpoint(EP, (ResvMem(1, MSI_BASE, MSI_BASE + MSI_SIZE - 1),
                                  ResvMem(0, 0xF000_0000, 0xF0FF_FFFF)))]).up()
    assert rig.status(attach(1, EP)) == S_OK
    assert rig.dev.translate(EP, MSI_BASE + 0x40, write=True) == MSI_BASE + 0x40   # the doorbell, 1:1
    assert rig.dev.translate(EP, 0xF000_1000).reason == 2
    assert rig.status(map_(1, 0xF000_0000, 0xF000_0FFF, RAM_BASE)) == S_INVAL


# -- every status code, and who produces it ------------------------------------------------------------------
class Refuse(IommuBackend):
    def __init__(self, status):
        self.status = status

    def map(self, domain, iova, pa, size, flags):
        return self.status


def _nomem_backend(r):
    r.dev.backend = Refuse(IommuStatus.NOMEM)


def _deverr_backend(r):
    r.dev.backend = Refuse(IommuStatus.DEVERR)


# (requests that must succeed first, device set-up, the request, its status)
STATUS_CASES = [
    ([], None, attach(1, EP), S_OK),
    ([], None, attach(1, EP)[:8], S_IOERR),                                       # truncated request
    ([attach(1, EP2), map_(1, MSI_BASE, MSI_BASE + 0xFFF, RAM_BASE)], None, attach(1, EP), S_UNSUPP),
    ([attach(1, EP)], _deverr_backend, map_(1, 0, 0xFFF, RAM_BASE), IommuStatus.DEVERR),   # the VMM failed
    ([], None, attach(1, EP, flags=0x80), S_INVAL),
    ([attach(1, EP)], None, map_(1, 0x10, 0x100F, RAM_BASE), S_RANGE),
    ([], None, detach(1, 0x77), S_NOENT),
    ([attach(1, EP)], None, map_(1, 0, 0xFFF, 0x2000_0000), S_FAULT),              # not guest memory
    ([attach(1, EP)], _nomem_backend, map_(1, 0, 0xFFF, RAM_BASE), S_NOMEM),       # host out of memory
]


@pytest.mark.parametrize("before, setup, req, status", STATUS_CASES,
                         ids=["OK", "IOERR", "UNSUPP", "DEVERR", "INVAL", "RANGE", "NOENT", "FAULT", "NOMEM"])
def test_every_status_code(r, before, setup, req, status):
    assert [r.status(b) for b in before] == [S_OK] * len(before)
    if setup is not None:
        setup(r)
    assert r.status(req) == status
    kind = {1: "ATTACH", 2: "DETACH", 3: "MAP"}[req[0]]
    assert r.dev.requests[(kind, IommuStatus(status).name)] == 1


def test_refusing_backend_changes_nothing(r):
    assert r.status(attach(1, EP)) == S_OK
    r.dev.backend = Refuse(IommuStatus.NOMEM)
    assert r.status(map_(1, 0, PAGE - 1, RAM_BASE)) == S_NOMEM and r.mappings(1) == []
    assert r.dev.translate(EP, 0).reason == 2
