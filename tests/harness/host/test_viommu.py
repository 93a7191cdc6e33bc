"""The VMM's virtio-iommu (harness/viommu.py): what each guest request becomes in the host IOMMU (iommufd
calls, the physical SMMU's STE, the DMA of the assigned device through the physical SMMU model), the BTM
flag policy, the extension left off, and hostile guests on the VMM side (each class one test: the right
status, no host call, no DMA anywhere but the guest's own memory, no traceback).

A Python driver (tests/devmodel/virtio/driver.py, iommu_driver.py: requests packed with `struct` from the
spec's C declarations) stands for the guest; its rings live in the VM's RAM, reached through the VM's IPA bus.
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "devmodel"))

from devmodel.smmuv3 import cd as cdmod  # noqa: E402
from devmodel.smmuv3 import commands as cmds  # noqa: E402
from devmodel.smmuv3 import ste as stemod  # noqa: E402
from devmodel.virtio import Status  # noqa: E402
from devmodel.virtio.iommu.pgtable import (INVAL_F_CONFIG, INVAL_F_LEAF, INVAL_S_DOMAIN, INVAL_S_PASID,  # noqa: E402
                                           INVAL_S_VA, F_ATTACH_TABLE, Invalidation, PSTF_F_BTM)
from devmodel.virtio.ring import VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE  # noqa: E402
from harness.machine import Machine  # noqa: E402
from harness.viommu import CMDQ_MAX_TLBI_OPS, DEFAULT_ENDPOINT, invalidation_commands, setup_viommu_vm  # noqa: E402
from harness.vmm import setup_host  # noqa: E402
from virtio.driver import Guest, MmioDriver  # noqa: E402
from virtio.iommu_driver import (FAULT_SIZE, S_FAULT, S_INVAL, S_IOERR, S_NOENT, S_OK, S_RANGE,  # noqa: E402
                                 attach, attach_pgt_arm, detach, invalidate, map_, parse_properties,
                                 probe, unmap)

EP = DEFAULT_ENDPOINT
RAM = 0x4000_0000
RAM_SIZE = 16 << 20
TCR = 16 | 1 << 8 | 1 << 10 | 3 << 12 | 1 << 23 | 5 << 32 | 1 << 36     # T0SZ 16, 4K, WBWA, EPD1, IPS 48, AS
PAGE = 0x1000
PROBE_SIZE = 512
DMA_IOVA, DMA_LEN, DMA_CMD, DMA_DATA, DMA_STATUS, DMA_ATTR = 0x10, 0x18, 0x1C, 0x20, 0x04, 0x40
ST_DONE, ST_FAULT = 1, 2


class VmGuest(Guest):
    """The driver's memory: the VM's own RAM through its IPA bus (allocations from its second half)."""

    def __init__(self, vm):
        self.bus = vm.ipa
        self.next = vm.ram_ipa + vm.ram.size // 2
        self.end = vm.ram_ipa + vm.ram.size


class Env:
    """One VM with its assigned DMA test device behind the VMM's virtio-iommu, and a driver for it."""

    def __init__(self, policy="shared", *, page_tables=True, btm=True, advertise_btm="pinned", machine=None,
                 host=None, name="vm0", negotiate_tables=True):
        self.m = machine or Machine()
        self.vm = self.m.add_vm(name, ram_size=RAM_SIZE)
        self.host = host or setup_host(self.m, policy=policy, btm=btm, vmid_bits=16,
                                       kvm_kw=dict(split=policy == "split",
                                                   smmu_reserved=4096 if policy == "restricted" else 0))
        kvm = self.host.kvm
        kvm.attach_vcpu(self.vm.vcpus[0])
        kv = kvm.vm_of(self.vm)
        kvm.vcpu_load(kv.vcpus[0], 0)             # KVM gives the VM its VMID at the first vcpu_load
        kvm.vcpu_put(kv.vcpus[0])
        self.vv = setup_viommu_vm(self.m, self.vm, self.host, page_tables=page_tables, advertise_btm=advertise_btm)
        self.g = VmGuest(self.vm)
        self.drv = MmioDriver(self.vm.virtio.transport(self.vv.transport_index), self.g)
        wanted = None if negotiate_tables else ~F_ATTACH_TABLE & (2**64 - 1)
        self.features = self.drv.init(wanted)
        self.reqq, self.evq = self.drv.setup_queue(0, 64), self.drv.setup_queue(1, 16)
        self.drv.driver_ok()
        for _ in range(4):
            self.evq.add(in_sizes=[FAULT_SIZE])
        self.evq.kick()

    @property
    def backend(self):
        return self.vv.backend

    def request(self, readable: bytes, writable: int = 4):
        self.reqq.add([readable], [writable])
        self.reqq.kick()
        (u,) = self.reqq.used()
        return u

    def status(self, readable: bytes, writable: int = 4):
        u = self.request(readable, writable)
        return u.data[-4] if u.len else None

    def page(self, value: int) -> int:
        """A guest page holding `value` (its IPA)."""
        addr = self.g.alloc(PAGE)
        self.vm.ipa.write_bytes(addr, value.to_bytes(8, "little"))
        return addr

    def dma_read(self, iova: int) -> tuple[int, int]:
        """The assigned device reads 8 bytes at `iova` (through the physical SMMU): (STATUS, value)."""
        mm = self.vv.mmio
        mm.write(DMA_IOVA, iova, 8)
        mm.write(DMA_LEN, 8, 4)
        mm.write(DMA_CMD, 1, 4)
        return mm.read(DMA_STATUS, 4), mm.read(DMA_DATA, 8)

    def ste(self):
        return self.host.driver.read_ste(self.vv.dev.master)

    def calls(self) -> int:
        return self.backend.stats["host_calls"]


@pytest.fixture
def env() -> Env:
    return Env()


# ---- MAP/UNMAP shadowing ---------------------------------------------------------------------------------------
def test_map_unmap_are_shadowed_into_the_host_iommu(env):
    pa = env.page(0x1234_5678)
    assert env.status(attach(1, EP)) == S_OK
    assert env.ste().config == stemod.CONFIG_S1                 # a kernel-managed stage-1 paging HWPT
    assert env.dma_read(0x10_0000)[0] & ST_FAULT                # nothing mapped yet
    before = env.calls()
    assert env.status(map_(1, 0x10_0000, 0x10_0FFF, pa)) == S_OK
    assert env.calls() == before + 1                           # one IOMMU_IOAS_MAP per mapping
    assert env.dma_read(0x10_0000) == (ST_DONE, 0x1234_5678)    # through the physical SMMU, guest's mapping
    cmds_before = env.backend.stats["host_cmds"]
    assert env.status(unmap(1, 0x10_0000, 0x10_0FFF)) == S_OK
    assert env.backend.stats["host_cmds"] - cmds_before >= 2  # the host's TLBI + CMD_SYNC
    assert env.dma_read(0x10_0000)[0] & ST_FAULT


def test_bypass_domain_is_the_vms_stage2(env):
    pa = env.page(0xB1FA55)
    assert env.status(attach(2, EP, flags=1)) == S_OK
    assert env.ste().config == stemod.CONFIG_S2
    assert env.dma_read(pa) == (ST_DONE, 0xB1FA55)


def test_detach_leaves_the_endpoint_bypassed_or_blocked_as_config_says(env):
    pa = env.page(0xD7)
    assert env.status(attach(1, EP)) == S_OK and env.dma_read(pa)[0] & ST_FAULT
    assert env.status(detach(1, EP)) == S_OK
    assert env.dma_read(pa) == (ST_DONE, 0xD7)                  # config.bypass = 1 (boot value): identity
    assert 1 not in env.backend.domains                        # the domain's HWPT and IOAS are destroyed
    env.drv.set_config(36, 0, 1)                               # bypass = 0: unattached endpoints blocked
    assert env.dma_read(pa)[0] & ST_FAULT


def test_moving_an_endpoint_frees_the_old_domain(env):
    pa = env.page(0x77)
    assert env.status(attach(1, EP)) == S_OK and env.status(map_(1, 0, 0xFFF, pa)) == S_OK
    old = env.backend.domains[1]
    assert env.status(attach(2, EP)) == S_OK
    assert 1 not in env.backend.domains and old.hwpt not in env.host.ictx.objects
    assert env.dma_read(0)[0] & ST_FAULT                        # domain 2 maps nothing


# ---- page-table sharing ----------------------------------------------------------------------------------------
def test_attach_table_becomes_a_nested_hwpt_on_the_vms_viommu(env):
    ttb = env.g.alloc(PAGE)
    assert env.status(attach_pgt_arm(1, EP, 0x42, TCR, ttb, mair=0xFF44)) == S_OK
    ste = env.ste()
    assert ste.config == stemod.CONFIG_NESTED and ste.s2vmid == env.vv.vmid
    cd_ipa = ste.s1contextptr
    assert not env.vm.in_ram(cd_ipa)                          # the VMM's CD page, above guest RAM
    cd = cdmod.decode(env.m.bus.read_bytes(env.vv.cd_page.pa + cd_ipa - env.vv.cd_page.ipa, 64))
    assert (cd.v, cd.asid, cd.ttb0, cd.t0sz, cd.mair) == (1, 0x42, ttb, 16, 0xFF44)
    assert cd.aset == 0                                        # BTM offered (shared policy): broadcasts apply
    assert env.status(detach(1, EP)) == S_OK and env.vv.cd_page.free.count(0) == 1


def test_the_cd_page_is_read_only_for_the_guests_device(env):
    assert env.status(attach(2, EP, flags=1)) == S_OK          # bypass: the device sees the whole stage 2
    mm, ipa = env.vv.mmio, env.vv.cd_page.ipa
    mm.write(DMA_IOVA, ipa, 8)
    mm.write(DMA_DATA, 0xBAD, 8)
    mm.write(DMA_LEN, 8, 4)
    mm.write(DMA_CMD, 2, 4)                                    # WRITE64
    assert mm.read(DMA_STATUS, 4) & ST_FAULT
    assert env.m.bus.read_bytes(env.vv.cd_page.pa, 8) == bytes(8)


def test_invalidate_becomes_hwpt_invalidate_with_the_vioummus_vmid(env):
    ttb = env.g.alloc(PAGE)
    assert env.status(attach_pgt_arm(1, EP, 0x42, TCR, ttb)) == S_OK
    sent = []
    real = env.host.driver.submit
    env.host.driver.submit = lambda batch, sync=True: sent.extend(batch) or real(batch, sync)
    before = env.calls()
    assert env.status(invalidate(1, INVAL_S_VA, INVAL_F_LEAF, asid=0x42, virt_start=0x2000, nr_pages=2,
                                 granule=12)) == S_OK
    assert env.calls() == before + 1                           # one IOMMU_HWPT_INVALIDATE
    got = [cmds.decode(c) for c in sent]
    assert [(c.name, c.vmid, c.asid, c.addr, c.leaf) for c in got] == \
        [("TLBI_NH_VA", env.vv.vmid, 0x42, 0x2000, 1), ("TLBI_NH_VA", env.vv.vmid, 0x42, 0x3000, 1)]


def test_invalidation_commands_per_scope():
    from devmodel.virtio.iommu.pgtable import PageTable
    pt = PageTable(7, TCR, 0x1000, 0, 0, cdmod.Cd(), frozenset({12, 21, 30}))

    def names(inv):
        return [(c.name, c.asid, c.addr) for c in map(cmds.decode, invalidation_commands(inv, pt, [EP]))]

    assert names(Invalidation(INVAL_S_VA, True, False, 0, 7, 0x20_0000, 2, 21, )) == \
        [("TLBI_NH_VA", 7, 0x20_0000), ("TLBI_NH_VA", 7, 0x40_0000)]
    assert names(Invalidation(INVAL_S_VA, False, False, 0, 7, 0, CMDQ_MAX_TLBI_OPS + 1, 12)) == \
        [("TLBI_NH_ASID", 7, 0)]                                # Linux: too many pages -> the whole ASID
    assert names(Invalidation(INVAL_S_PASID, False, False, 0, 7, 0, 0, 12)) == [("TLBI_NH_ASID", 7, 0)]
    assert names(Invalidation(INVAL_S_DOMAIN, False, False, 0, 0, 0, 0, 12)) == [("TLBI_NH_ASID", 7, 0)]
    cfg = [cmds.decode(c) for c in invalidation_commands(Invalidation(INVAL_S_PASID, False, True, 3, 0, 0, 0, 12),
                                                          pt, [EP])]
    assert [(c.name, c.sid, c.ssid) for c in cfg] == [("CFGI_CD", EP, 3)]



def test_invalidation_whole_asid_from_max_tlbi_ops_pages():
    """Linux `arm_smmu_mm_arch_invalidate_secondary_tlbs`: `size >= CMDQ_MAX_TLBI_OPS * PAGE_SIZE` invalidates
    the whole ASID, so exactly 512 pages is one TLBI_NH_ASID and 511 pages are 511 TLBI_NH_VA."""
    from devmodel.virtio.iommu.pgtable import PageTable
    pt = PageTable(7, TCR, 0x1000, 0, 0, cdmod.Cd(), frozenset({12, 21, 30}))

    def names(n):
        inv = Invalidation(INVAL_S_VA, True, False, 0, 7, 0x10_0000, n, 12)
        return [c.name for c in map(cmds.decode, invalidation_commands(inv, pt, [EP]))]

    assert names(CMDQ_MAX_TLBI_OPS) == ["TLBI_NH_ASID"]
    assert names(CMDQ_MAX_TLBI_OPS - 1) == ["TLBI_NH_VA"] * (CMDQ_MAX_TLBI_OPS - 1)

def _pstf_flags(env) -> int:
    u = env.request(probe(EP), PROBE_SIZE + 4)
    props = dict(parse_properties(u.data[:-4]))
    return struct.unpack_from("<Q", props[7], 4)[0] if 7 in props else -1


@pytest.mark.parametrize("policy, advertise, btm", [
    ("shared", "pinned", True), ("split", "pinned", True), ("restricted", "pinned", True),
    ("private", "pinned", False), ("unpinned", "pinned", False),
    ("private", "host", True), ("unpinned", "host", True), ("shared", "never", False)])
def test_the_btm_flag_follows_the_vmid_policy(policy, advertise, btm):
    e = Env(policy, advertise_btm=advertise)
    assert bool(_pstf_flags(e) & PSTF_F_BTM) == btm == e.vv.btm_offered
    pinned = e.host.kvm.vmids.is_pinned_vmid(e.vv.vmid)
    assert advertise != "pinned" or btm == pinned


def test_no_btm_flag_without_host_btm():
    assert not _pstf_flags(Env("shared", btm=False, advertise_btm="host")) & PSTF_F_BTM


def test_the_extension_is_off_unless_enabled():
    off, on = Env(page_tables=False), Env(page_tables=True, negotiate_tables=False)
    assert not off.features & F_ATTACH_TABLE and off.vv.viommu == 0 and off.vv.cd_page is None
    assert not off.drv.device_features() & F_ATTACH_TABLE and on.drv.device_features() & F_ATTACH_TABLE
    assert off.features == on.features                       # a MAP/UNMAP driver negotiates the same
    assert off.request(probe(EP), PROBE_SIZE + 4).data == on.request(probe(EP), PROBE_SIZE + 4).data
    assert off.request(attach_pgt_arm(1, EP, 1, TCR, RAM), 4).len == 0     # type 6 unrecognized


# ---- hostile guests, VMM side ------------------------------------------------------------------------------------
def test_hostile_chain_out_of_ram_or_looping_reaches_no_host_call():
    for desc in ((0x1_0000_0000, 20, 0, 0), None):
        e = Env()
        q = e.reqq
        if desc is None:                                      # a loop: 0 -> 1 -> 0
            q.put_desc(0, e.g.buffer(attach(1, EP)), 20, VIRTQ_DESC_F_NEXT, 1)
            q.put_desc(1, e.g.alloc(16), 4, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 0)
        else:
            q.put_desc(0, *desc)
        q.publish(0)
        q.kick()
        assert e.drv.status() & Status.DEVICE_NEEDS_RESET
        assert e.calls() == 0 and e.ste().config == stemod.CONFIG_S2     # still the boot bypass


@pytest.mark.parametrize("target", ["QueueNotify of its own transport", "the assigned device's CMD register"])
def test_hostile_reply_aimed_at_mmio_reaches_no_device(target):
    """A reply buffer (or a ring) at an MMIO address is a bus error for the device (its DMA sees guest RAM
    only): no re-entry into the transport, no command to the assigned device; the device's error state."""
    e = Env(page_tables=False)
    addr = (0x0A00_0000 + 0x200 * e.vv.transport_index + 0x50) if target.startswith("QueueNotify") \
        else 0x0910_0000 + DMA_CMD
    notified = []
    real = e.vv.device.queue_notify
    e.vv.device.queue_notify = lambda i: notified.append(i) or real(i)
    q = e.reqq
    q.put_desc(0, e.g.buffer(attach(1, EP)), 20, VIRTQ_DESC_F_NEXT, 1)
    q.put_desc(1, addr, 4, VIRTQ_DESC_F_WRITE, 0)
    q.publish(0)
    q.kick()
    assert e.drv.status() & Status.DEVICE_NEEDS_RESET
    assert notified == [0]                                   # the guest's kick only: no re-entry
    assert e.vv.mmio.read(DMA_STATUS, 4) == 0                # no command reached the assigned device


def test_hostile_wrong_lengths_and_readable_reply_buffers(env):
    assert env.status(attach(1, EP)[:12]) == S_IOERR          # shorter than struct virtio_iommu_req_attach
    q = env.reqq
    q.add([attach(1, EP)], [])                                # no device-writable tail: returned unwritten
    q.kick()
    (u,) = q.used()
    assert u.len == 0
    q.add([attach(1, EP), bytes(4)], [])                      # the "tail" device-readable
    q.kick()
    (u,) = q.used()
    assert u.len == 0
    assert env.calls() == 0 and 1 not in env.backend.domains


def test_hostile_unknown_domains_and_endpoints(env):
    assert env.status(attach(1, EP + 1)) == S_NOENT
    assert env.status(map_(9, 0, 0xFFF, RAM)) == S_NOENT
    assert env.status(unmap(9, 0, 0xFFF)) == S_NOENT
    assert env.status(invalidate(9, INVAL_S_DOMAIN)) == S_NOENT
    assert env.calls() == 0


def test_hostile_overlapping_maps_and_foreign_memory(env):
    assert env.status(attach(1, EP)) == S_OK
    n = env.calls()
    assert env.status(map_(1, 0, 0x1FFF, RAM)) == S_OK
    assert env.status(map_(1, 0x1000, 0x2FFF, RAM)) == S_INVAL                      # overlap
    assert env.status(map_(1, 0x10_0000, 0x10_0FFF, RAM + RAM_SIZE)) == S_FAULT     # the VMM's CD page
    assert env.status(map_(1, 0x10_0000, 0x10_0FFF, 0x8000_0000)) == S_FAULT        # beyond guest RAM
    assert env.status(map_(1, 0x10_0800, 0x10_17FF, RAM)) == S_RANGE               # misaligned
    assert env.calls() == n + 1                                # only the good MAP reached iommufd
    ioas = env.host.ictx.objects[env.backend.domains[1].ioas]
    assert [(iova, ln, pa) for iova, (ln, pa, _) in ioas.maps.items()] == [(0, 0x2000, env.vm.ram_pa)]


@pytest.mark.parametrize("tcr, ttb, status", [
    (TCR | 1 << 63, None, S_INVAL),                       # a TCR bit the layout does not name
    (TCR | 7 << 32, None, S_INVAL),                        # IPS 0b111
    (TCR, RAM | 0x20, S_INVAL),                            # TTB not 64-byte aligned
    (TCR, RAM | 1 << 50, S_INVAL),                         # TTB bits [63:48] / above the output size
    (TCR, 0x8000_0000, S_FAULT),                           # outside guest memory
    ((TCR & ~0x3F) | 10, None, S_INVAL),                   # T0SZ out of range (C_BAD_CD)
])
def test_hostile_attach_table_with_illegal_values_attaches_nothing(env, tcr, ttb, status):
    before = env.ste()
    got = env.status(attach_pgt_arm(1, EP, 0x42, tcr, RAM if ttb is None else ttb))
    assert got == status
    assert env.calls() == 0 and env.ste() == before and 1 not in env.backend.domains
    assert env.vv.cd_page.free == list(range(64))


def test_hostile_invalidate_of_another_vms_domain():
    a = Env(name="vmA")
    b = Env(machine=a.m, host=a.host, name="vmB")
    assert a.status(attach_pgt_arm(1, EP, 0x42, TCR, a.g.alloc(PAGE))) == S_OK
    sent = []
    real = a.host.driver.submit
    a.host.driver.submit = lambda batch, sync=True: sent.extend(batch) or real(batch, sync)
    assert b.status(invalidate(1, INVAL_S_DOMAIN)) == S_NOENT             # domain IDs are per device (per VM)
    assert b.status(invalidate(1, INVAL_S_VA, INVAL_F_LEAF, asid=0x42, virt_start=0, nr_pages=1,
                               granule=12)) == S_NOENT
    assert sent == [] and b.calls() == 0
    # B's own table domain: its commands carry B's VMID, never A's
    assert b.status(attach_pgt_arm(1, EP, 0x42, TCR, b.g.alloc(PAGE))) == S_OK
    sent.clear()
    assert b.status(invalidate(1, INVAL_S_PASID, asid=0x42)) == S_OK
    assert {cmds.decode(c).vmid for c in sent if cmds.decode(c).name != "CMD_SYNC"} == {b.vv.vmid} != {a.vv.vmid}


def test_hostile_invalidate_with_config_on_a_page_table_domain(env):
    assert env.status(attach_pgt_arm(1, EP, 0x42, TCR, env.g.alloc(PAGE))) == S_OK
    n = env.calls()
    assert env.status(invalidate(1, INVAL_S_PASID, INVAL_F_CONFIG)) == S_INVAL
    assert env.status(invalidate(1, INVAL_S_PASID, asid=0x43)) == S_INVAL     # another ASID than the domain's
    assert env.calls() == n


def test_physical_faults_reach_the_event_queue(env):
    ttb = env.g.alloc(PAGE)                                    # an empty table: every access faults
    assert env.status(attach_pgt_arm(1, EP, 0x42, TCR, ttb)) == S_OK
    mm = env.vv.mmio
    mm.write(DMA_ATTR, 1, 4)
    assert env.dma_read(0x5000)[0] & ST_FAULT
    assert env.vv.poll_faults() == 1
    (u,) = env.evq.used()
    reason, flags, endpoint, address = struct.unpack_from("<B3xIIxxxxQ", u.data)
    assert (reason, endpoint, address) == (2, EP, 0x5000) and flags & 1 and flags & 0x100


# ---- the device tree ---------------------------------------------------------------------------------------------
def test_the_device_tree_describes_the_virtio_iommu_and_the_endpoint(env, tmp_path):
    """QEMU virt's virtio-iommu-device on virtio-mmio, as Linux's binding says (virtio/mmio.yaml: a transport
    with `#iommu-cells = <1>`; the endpoint's `iommus = <&viommu ENDPOINT_ID>`); dtc decompiles it cleanly."""
    import shutil
    import subprocess

    from harness.board import board_spec
    from harness.devicetree import board_dtb, build_tree
    spec = board_spec(env.vm)
    assert spec.virtio_iommu == env.vv.transport_index == 31 and spec.smmu is None
    t = build_tree(spec)
    node = t.find("/virtio_mmio@a003e00")
    assert node.u32s("#iommu-cells") == (1,) and node.string("compatible") == "virtio,mmio"
    dma = t.find("/dmatest@9100000")
    assert dma.u32s("iommus") == (node.u32s("phandle")[0], EP)
    if shutil.which("dtc") is None:
        pytest.skip("dtc not installed (Debian: apt-get install device-tree-compiler)")
    (tmp_path / "b.dtb").write_bytes(board_dtb(spec))
    p = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", str(tmp_path / "b.dtb")], capture_output=True, text=True)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert "#iommu-cells = <0x01>;" in p.stdout and f"iommus = <0x{node.u32s('phandle')[0]:x} 0x{EP:x}>;" in p.stdout


def test_attach_pst_arm_gives_the_guests_cd_table_to_the_nested_hwpt(env):
    from virtio.iommu_driver import attach_pst_arm
    cdt = env.g.alloc(PAGE)
    assert env.status(attach_pst_arm(1, EP, cdt, s1cdmax=2)) == S_OK
    ste = env.ste()
    assert ste.config == stemod.CONFIG_NESTED and ste.s1contextptr == cdt and ste.s1cdmax == 2
    assert ste.s2vmid == env.vv.vmid and env.vv.cd_page.free == list(range(64))   # no VMM-built CD


def test_a_refused_host_call_changes_nothing(env, monkeypatch):
    import errno

    from harness.host.iommufd import IommufdError
    assert env.status(attach(1, EP)) == S_OK

    def refuse(*a, **kw):
        raise IommufdError(errno.ENOMEM, "pinned-page limit")
    monkeypatch.setattr(env.host.ictx, "ioas_map", refuse)
    assert env.status(map_(1, 0, 0xFFF, RAM)) == 8                    # NOMEM
    assert env.vv.device.domains[1].mappings.lookup(0) is None       # the device kept nothing either
    assert env.backend.refusals == [("map", errno.ENOMEM, "pinned-page limit")]


def test_a_refused_bypass_attach_leaves_the_endpoint_blocked_not_a_traceback(env, monkeypatch):
    """DETACH with config.bypass = 1 re-attaches the endpoint to the VM's stage 2; if the host refuses, the
    request still completes (the device has detached) and the endpoint is blocked, the refusal recorded."""
    import errno

    from harness.host.iommufd import IommufdError
    pa = env.page(0xB10C)
    assert env.status(attach(1, EP)) == S_OK

    def refuse(*a, **kw):
        raise IommufdError(errno.EBUSY, "in use")
    monkeypatch.setattr(env.host.ictx, "device_attach", refuse)
    assert env.status(detach(1, EP)) == S_OK
    assert env.dma_read(pa)[0] & ST_FAULT                              # blocked, not the old domain's tables
    assert env.backend.refusals == [("bypass", errno.EBUSY, "in use")]
    env.drv.set_config(36, 1, 1)                                       # bypass on again: refused again, no raise
    assert env.backend.refusals[-1] == ("bypass", errno.EBUSY, "in use")


def test_hostile_dma_never_reaches_another_vm_or_the_host():
    a = Env(name="vmA")
    b = Env(machine=a.m, host=a.host, name="vmB")
    x = b.g.alloc(PAGE)                                   # the same IPA in both VMs: each its own RAM
    a.vm.ipa.write_bytes(x, b"A" * 8)
    assert b.status(attach(1, EP)) == S_OK and b.status(map_(1, 0, 0xFFF, x)) == S_OK
    mm = b.vv.mmio
    mm.write(DMA_IOVA, 0, 8)
    mm.write(DMA_DATA, 0x4242424242424242, 8)
    mm.write(DMA_LEN, 8, 4)
    mm.write(DMA_CMD, 2, 4)
    assert mm.read(DMA_STATUS, 4) == ST_DONE
    assert b.vm.ipa.read_bytes(x, 8) == b"B" * 8 and a.vm.ipa.read_bytes(x, 8) == b"A" * 8
    for phys in (a.vm.ram_pa, b.vm.ram_pa, 0x0905_0000, 0xFFFF_F000):   # host PAs (A's, B's RAM, the SMMU)
        assert b.status(map_(1, 0x10_0000, 0x10_0FFF, phys)) == S_FAULT    # are not B's guest-physical memory
    assert b.calls() == 4                                  # ATTACH (3 calls) + the one good MAP


def test_a_write_only_map_is_readable_through_the_host_iommu(env):
    """The one documented difference from the device's own translation: Arm stage-1 descriptors have no
    write-only permission (Linux io-pgtable-arm maps IOMMU_WRITE alone as read/write), so a MAP_F_WRITE-only
    mapping shadowed into the host reads, as with QEMU over VFIO; the device would refuse an emulated read."""
    pa = env.page(0x1234)
    assert env.status(attach(1, EP)) == S_OK and env.status(map_(1, 0, 0xFFF, pa, flags=2)) == S_OK
    assert env.vv.device.resolve(EP, 0).why == "mapping flags 0x2"
    assert env.dma_read(0) == (ST_DONE, 0x1234)


# ---- differential: the device's own translation against the DMA through the host IOMMU ------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PAGES = 6                                                   # IOVA pages 0..5, guest pages 0..5 of the pool
_OP = st.one_of(
    st.tuples(st.just("attach"), st.integers(1, 3), st.booleans()),
    st.tuples(st.just("detach"), st.integers(1, 3)),
    st.tuples(st.just("map"), st.integers(1, 3), st.integers(0, _PAGES - 1), st.integers(1, 3),
              st.integers(0, _PAGES - 1), st.sampled_from((1, 3))),      # write-only: the next test
    st.tuples(st.just("unmap"), st.integers(1, 3), st.integers(0, _PAGES - 1), st.integers(1, 3)),
    st.tuples(st.just("bypass"), st.booleans()))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_OP, max_size=12))
def test_dma_through_the_host_iommu_is_what_the_device_says(ops):
    """Any request stream: the assigned device's DMA through the physical SMMU (the host IOMMU the VMM
    programmed) reads exactly what the virtio-iommu's own translation of that IOVA says, and faults exactly
    where it faults; the backend's IOAS holds exactly the device's mappings."""
    e = Env(page_tables=False)
    pool = e.g.alloc(_PAGES * PAGE)
    for j in range(_PAGES):
        e.vm.ipa.write_bytes(pool + j * PAGE, (0xC0DE_0000 + j).to_bytes(8, "little"))
    for op in ops:
        if op[0] == "attach":
            e.status(attach(op[1], EP, flags=int(op[2])))
        elif op[0] == "detach":
            e.status(detach(op[1], EP))
        elif op[0] == "map":
            _, d, v, n, p, fl = op
            e.status(map_(d, v * PAGE, (v + n) * PAGE - 1, pool + min(p, _PAGES - n) * PAGE, fl))
        elif op[0] == "unmap":
            _, d, v, n = op
            e.status(unmap(d, v * PAGE, (v + n) * PAGE - 1))
        else:
            e.drv.set_config(36, int(op[1]), 1)
    dev = e.vv.device
    assert set(e.backend.domains) == set(dev.domains)
    for d, bd in e.backend.domains.items():
        if bd.kind == "map":
            ioas = e.host.ictx.objects[bd.ioas]
            want = {m.start: (m.size, e.vm.ram_pa + m.phys - e.vm.ram_ipa) for m in dev.domains[d].mappings}
            assert {iova: (ln, pa) for iova, (ln, pa, _) in ioas.maps.items()} == want
    for v in range(_PAGES + 1):
        iova = v * PAGE if dev.attached.get(EP) is not None and dev.domains[dev.attached[EP]].kind.value == "map" \
            else pool + (v % _PAGES) * PAGE                   # identity cases: a guest page
        out = dev.resolve(EP, iova)
        status, value = e.dma_read(iova)
        if isinstance(out, tuple):
            assert status == ST_DONE and value == int.from_bytes(e.vm.ipa.read_bytes(out[0], 8), "little"), (iova, out)
        else:
            assert status & ST_FAULT, (iova, out)


@pytest.mark.parametrize("gic, region", [(2, (0x0802_0000, 0x0802_0FFF)), (3, (0x0809_0000, 0x0809_FFFF))])
def test_the_msi_region_is_the_boards_msi_doorbell(gic, region):
    """QEMU virt (`virt_machine_device_pre_plug_cb`) gives virtio-iommu endpoints the doorbell of the board's MSI
    controller as their RESV_MEM MSI region: the GICv2m frame on GICv2, the ITS translation frame on GICv3."""
    from devmodel.virtio.iommu.spec import RESV_MEM_T_MSI
    from harness.viommu import add_emulated_viommu
    vm = Machine().add_vm("vm0", ram_size=RAM_SIZE, gic_version=gic)
    dev = add_emulated_viommu(vm)
    assert [(r.subtype, r.start, r.end) for r in dev.endpoints[EP].resv] == [(RESV_MEM_T_MSI, *region)]
