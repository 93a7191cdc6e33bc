"""Test helpers for the vSMMU: a Python stand-in for guest code (`PyGuest`) that drives a VM's vSMMU through
its MMIO (the same `read`/`write` calls Unicorn's MMIO callbacks make, so exits are counted the same way) and
builds its structures in guest RAM through the VM's IPA bus, with devmodel's encoders. Hostile tests use it to
write what no well-behaved driver would; the C driver (guest_fw/lib/vsmmu.c) is checked separately in
test_vsmmu.py by decoding what it wrote with the same devmodel layouts."""
from __future__ import annotations

from devmodel.dmatest import CMD_READ64, CMD_WRITE64
from devmodel.pagetable import PageAllocator, PageTableBuilder
from devmodel.smmuv3 import ats as A
from devmodel.smmuv3 import cd as CD
from devmodel.smmuv3 import commands as C
from devmodel.smmuv3 import events as E
from devmodel.smmuv3 import ste as S
from devmodel.smmuv3 import translate as _translate  # noqa: F401 - registers the smmu_* trace events
from devmodel.smmuv3.regs import PAGE1
from devmodel.trace import ListSink
from harness.machine import Machine
from harness.vmm import NestedVm, setup_nested_vm

REG = {"CR0": 0x20, "CR0ACK": 0x24, "CR2": 0x2C, "GBPA": 0x44, "GERROR": 0x60, "GERRORN": 0x64,
       "STRTAB_BASE": 0x80, "STRTAB_BASE_CFG": 0x88, "CMDQ_BASE": 0x90, "CMDQ_PROD": 0x98, "CMDQ_CONS": 0x9C,
       "EVTQ_BASE": 0xA0, "EVTQ_PROD": PAGE1 + 0xA8, "EVTQ_CONS": PAGE1 + 0xAC, "IDR0": 0x00,
       "PRIQ_BASE": 0xC0, "PRIQ_PROD": PAGE1 + 0xC8, "PRIQ_CONS": PAGE1 + 0xCC}
CMDQ_LOG2, EVTQ_LOG2, STRTAB_LOG2, PRIQ_LOG2 = 5, 5, 8, 6
TRACE = ("vsmmu_*,hostsmmu_cmd,hostsmmu_event,iommufd_*,smmuv3_cmdq_opcode,smmuv3_translate_success,"
         "smmu_iotlb_lookup_hit,smmu_iotlb_lookup_miss,dmatest_cmd,smmuv3_record_event")


class PyGuest:
    """Guest-side driver in Python for one `NestedVm`. Memory layout (IPAs, top of RAM): stream table, queues,
    a sync word, and a bump allocator for CDs and page tables."""

    def __init__(self, nv: NestedVm):
        self.nv, self.vm, self.vs = nv, nv.vm, nv.vsmmu
        self.ipa = self.vm.ipa
        top = self.vm.ram_ipa + self.vm.ram.size
        self.strtab = top - (1 << 20)                      # 16 KiB used
        self.cmdq = self.strtab + 0x8000
        self.evtq = self.strtab + 0x9000
        self.sync_word = self.strtab + 0xA000
        self.alloc = PageAllocator(self.ipa, top - (8 << 20), 4 << 20)
        self.priq = self.strtab + 0xB000                   # 64 entries of 16 bytes
        self.prod = 0
        self.evcons = 0
        self.pricons = 0
        self.seq = 0

    # -- MMIO (the guest's loads and stores to the vSMMU page) -------------------------------------------------
    def w(self, reg: str, v: int, size: int = 4) -> None:
        self.vs.write(REG[reg], v, size)

    def r(self, reg: str, size: int = 4) -> int:
        return self.vs.read(REG[reg], size)

    def init(self, enable: bool = True, priq: bool = False) -> None:
        """Linux's bring-up order; `priq`: also the PRI queue (2^6 entries, CR0.PRIQEN) before SMMUEN."""
        self.w("CR0", 0)
        self.prod = self.evcons = self.pricons = 0
        self.w("STRTAB_BASE", self.strtab, 8)
        self.w("STRTAB_BASE_CFG", STRTAB_LOG2)
        self.w("CMDQ_BASE", self.cmdq | CMDQ_LOG2, 8)
        self.w("CMDQ_PROD", 0)
        self.w("CMDQ_CONS", 0)
        self.w("CR0", 0b1000)
        self.w("EVTQ_BASE", self.evtq | EVTQ_LOG2, 8)
        self.w("EVTQ_PROD", 0)
        self.w("EVTQ_CONS", 0)
        self.w("CR0", 0b1100)
        cr0 = 0b1100
        if priq:
            self.w("PRIQ_BASE", self.priq | PRIQ_LOG2, 8)
            self.w("PRIQ_PROD", 0)
            self.w("PRIQ_CONS", 0)
            cr0 |= 0b10
            self.w("CR0", cr0)
        if enable:
            self.w("CR0", cr0 | 1)
        assert self.r("CR0ACK") == (cr0 | 1 if enable else cr0)

    # -- command queue -----------------------------------------------------------------------------------------
    def queue(self, raw: bytes) -> None:
        slot = self.cmdq + (self.prod & ((1 << CMDQ_LOG2) - 1)) * 16
        self.ipa.write_bytes(slot, raw)
        self.prod = (self.prod + 1) & ((2 << CMDQ_LOG2) - 1)

    def cmd(self, name: str, **kw: int) -> None:
        self.queue(C.encode(name, **kw))

    def kick(self) -> None:
        self.w("CMDQ_PROD", self.prod)

    def sync(self) -> int:
        """CMD_SYNC with an MSI into guest RAM; kick; returns CMDQ_CONS.ERR (0 = all done). On an error, skips
        the failing entry like Linux and resumes, so later commands still run."""
        self.seq += 1
        self.cmd("CMD_SYNC", cs=C.CS_IRQ, msiaddr=self.sync_word, msidata=self.seq)
        self.kick()
        err = 0
        for _ in range(8):
            if self.ipa.read(self.sync_word, 4) == self.seq:
                return err
            if (self.r("GERROR") ^ self.r("GERRORN")) & 1:
                cons = self.r("CMDQ_CONS")
                err = err or (cons >> 24) & 0x7F
                self.ipa.write_bytes(self.cmdq + (cons & ((1 << CMDQ_LOG2) - 1)) * 16, C.encode("CMD_SYNC"))
                self.w("GERRORN", self.r("GERROR"))
        raise AssertionError("CMD_SYNC never completed")

    def run(self, name: str, **kw: int) -> int:
        self.cmd(name, **kw)
        return self.sync()

    # -- structures in guest RAM ---------------------------------------------------------------------------------
    def s1(self, ias: int = 39) -> PageTableBuilder:
        return PageTableBuilder(self.ipa, self.alloc, granule=4096, stage=1, ias=ias)

    def write_cd(self, b: PageTableBuilder | None, asid: int, at: int | None = None, **kw: int) -> int:
        ipa = self.alloc(64, 64) if at is None else at
        fields = dict(v=1, aa64=1, tg0=0, ir0=1, or0=1, sh0=3, epd1=1, tg1=2, ips=5, asid=asid, r=1, a=1,
                      mair=0x04FF)
        if b is not None:
            fields.update(t0sz=b.tsz, ttb0=b.ttb)
        fields.update(kw)
        self.ipa.write_bytes(ipa, CD.encode(CD.Cd(**fields)))
        return ipa

    def ste_addr(self, vsid: int) -> int:
        return self.strtab + vsid * 64

    def write_ste_raw(self, vsid: int, raw: bytes) -> None:
        self.ipa.write_bytes(self.ste_addr(vsid), raw)

    def install(self, vsid: int, ste: S.Ste | bytes) -> int:
        self.write_ste_raw(vsid, ste if isinstance(ste, bytes) else S.encode(ste))
        return self.run("CFGI_STE", sid=vsid, leaf=1)

    def s1_ste(self, cd_ipa: int, **kw: int) -> S.Ste:
        return S.Ste(v=1, config=S.CONFIG_S1, s1contextptr=cd_ipa, s1cir=1, s1cor=1, s1csh=3, **kw)

    def setup_s1(self, vsid: int, asid: int, maps: dict[int, int]) -> PageTableBuilder:
        """Tables mapping iova -> ipa (4 KiB each), a CD, the STE; CFGI_STE + sync must succeed."""
        b = self.s1()
        for iova, ipa in maps.items():
            b.map(iova, ipa, 4096)
        cd = self.write_cd(b, asid)
        assert self.install(vsid, self.s1_ste(cd)) == 0
        return b

    # -- events ------------------------------------------------------------------------------------------------
    def events(self) -> list[E.Event]:
        out = []
        mask = (2 << EVTQ_LOG2) - 1
        prod = self.r("EVTQ_PROD") & mask
        while self.evcons != prod:
            slot = self.evtq + (self.evcons & ((1 << EVTQ_LOG2) - 1)) * 32
            out.append(E.decode(self.ipa.read_bytes(slot, 32)))
            self.evcons = (self.evcons + 1) & mask
        self.w("EVTQ_CONS", self.evcons)
        return out

    def page_requests(self) -> list[A.PageRequest]:
        """The PRI queue entries from CONS to PROD (consumed)."""
        out = []
        mask = (2 << PRIQ_LOG2) - 1
        prod = self.r("PRIQ_PROD") & mask
        while self.pricons != prod:
            slot = self.priq + (self.pricons & ((1 << PRIQ_LOG2) - 1)) * 16
            out.append(A.decode_pri(self.ipa.read_bytes(slot, 16)))
            self.pricons = (self.pricons + 1) & mask
        self.w("PRIQ_CONS", self.pricons)
        return out

    # -- the assigned DMA test device, through the guest's MMIO window ------------------------------------------
    def dma_read(self, iova: int) -> tuple[int, int, int]:
        m = self.nv.mmio
        m.write(0x10, iova, 8)
        m.write(0x1C, CMD_READ64, 4)
        return m.read(0x04, 4), m.read(0x20, 8), m.read(0x30, 4)

    def dma_write(self, iova: int, value: int) -> tuple[int, int]:
        m = self.nv.mmio
        m.write(0x10, iova, 8)
        m.write(0x20, value, 8)
        m.write(0x1C, CMD_WRITE64, 4)
        return m.read(0x04, 4), m.read(0x30, 4)

    # -- guest RAM --------------------------------------------------------------------------------------------
    def page(self) -> int:
        return self.alloc(4096, 4096)

    def read64(self, ipa: int) -> int:
        return self.ipa.read(ipa, 8)

    def write64(self, ipa: int, v: int) -> None:
        self.ipa.write(ipa, v, 8)


def two_vm_board(policy: str = "shared", **kw):
    """A machine with two nested VMs on one host (vm0 and vm1), a ListSink on the tracer, Python guests."""
    m = Machine(tcg_buffer_size=8 << 20)
    sink = ListSink()
    m.tracer.add_sink(sink)
    m.tracer.enable(TRACE)
    vm0, vm1 = m.add_vm("vm0", ram_size=32 << 20), m.add_vm("vm1", ram_size=32 << 20)
    nv0 = setup_nested_vm(m, vm0, policy=policy, **kw)
    nv1 = setup_nested_vm(m, vm1, host=nv0.host, **kw)
    # a slice each, so KVM has given both VMs a VMID (as running them would)
    for nv in (nv0, nv1):
        v = nv.vm.vcpus[0]
        nv.host.kvm.slice_start(v)
        nv.host.kvm.slice_end(v)
    return m, sink, (nv0, PyGuest(nv0)), (nv1, PyGuest(nv1))


def confined(sink: ListSink, psid: int, vm) -> list:
    """Translations of the device with StreamID `psid` that left `vm`'s RAM (must be empty)."""
    lo, hi = vm.ram_pa, vm.ram_pa + vm.ram.size
    return [r.fields for r in sink.of("smmuv3_translate_success")
            if r["sid"] == psid and not lo <= r["translated"] < hi]
