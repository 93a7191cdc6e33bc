"""A bench for recoverable faults, ATS/PRI and HTTU: the SMMU of `bench.Bench` set up as Linux does, stage-1
(and stage-2) page tables in RAM, CDs/STEs with the stall, ATS and HTTU fields, DMA test devices on the bus, and
helpers to read the EVTQ/PRIQ records software would see. Imported by the tests next to it."""
from __future__ import annotations

from devmodel.dmatest import DMATEST_BASE, DmaTestDevice
from devmodel.pagetable import PERM_R, PERM_W, PageAllocator, PageTableBuilder
from devmodel.smmuv3 import ats as A
from devmodel.smmuv3 import cd as CD
from devmodel.smmuv3 import events as E
from devmodel.smmuv3 import ste as S
from devmodel.smmuv3.regs import SmmuFeatures

from .bench import CDTAB, CMDQ_CONS, EVTQ, EVTQ_CONS, EVTQ_PROD, RAM, Bench

PRIQ = RAM + 0x48_0000
PRIQ_BASE, PRIQ_PROD, PRIQ_CONS = 0xC0, 0x100C8, 0x100CC        # Linux ARM_SMMU_PRIQ_* (PROD/CONS on page 1)
PRIQ_IRQ_CFG0, PRIQ_IRQ_CFG1 = 0xD0, 0xD8
TABLES = RAM + 0x60_0000
DATA = RAM + 0xA0_0000          # pages the tests map
VA = 0x12_3400_0000             # where the tests map them
FEATURES = SmmuFeatures(stall_model=0, ats=True, pri=True, priqs=4, httu=2)


class IopfBench(Bench):
    def __init__(self, features: SmmuFeatures = FEATURES, evtq_log2: int = 4, priq_log2: int = 4,
                 enable_priq: bool = True):
        super().__init__(features, evtq_log2=evtq_log2)
        self.setup(enable=False)
        cr0 = 0b1100
        if features.pri and enable_priq:
            self.w64(PRIQ_BASE, PRIQ | priq_log2)
            cr0 |= 0b10
        self.w32(0x20, cr0)
        self.w32(0x20, cr0 | 1)
        self.alloc = PageAllocator(self.bus, TABLES, 0x40_0000)
        self.pt = PageTableBuilder(self.bus, self.alloc, granule=4096, stage=1, ias=48)
        self.evtq_cons = 0
        self.priq_cons = 0
        self.devs: dict[int, DmaTestDevice] = {}

    # -- configuration -------------------------------------------------------------------------------------------
    def s1_stream(self, sid: int, *, s: int = 1, r: int = 1, a: int = 1, ha: int = 0, hd: int = 0, eats: int = 0,
                  s1stalld: int = 0, asid: int = 1, pt: PageTableBuilder | None = None) -> int:
        """A stage-1 stream (linear CD table of one CD at CDTAB + sid*64) sharing `pt` (default self.pt)."""
        pt = pt or self.pt
        cd_pa = CDTAB + sid * 64
        self.bus.write_bytes(cd_pa, CD.encode(CD.Cd(v=1, aa64=1, r=r, a=a, s=s, ha=ha, hd=hd, t0sz=16, tg0=0,
                                                    ips=5, epd1=1, asid=asid, ttb0=pt.ttb)))
        self.put_ste(sid, S.Ste(v=1, config=S.CONFIG_S1, s1contextptr=cd_pa, s1stalld=s1stalld, eats=eats))
        self.cmd("CFGI_STE", sid=sid)
        return cd_pa

    def map(self, va: int, pa: int, perm: int = PERM_R | PERM_W, size: int = 4096, **kw) -> None:
        self.pt.map(va, pa, size, perm, **kw)

    def dma(self, sid: int, base: int | None = None, **kw) -> DmaTestDevice:
        d = DmaTestDevice(self.bus, self.smmu.translate, sid=sid, tracer=self.tracer, name=f"dma{sid}", **kw)
        self.bus.add_device(base if base is not None else DMATEST_BASE + 0x1000 * len(self.devs), 0x1000, d)
        self.devs[sid] = d
        return d

    # -- commands ------------------------------------------------------------------------------------------------
    def sync(self) -> int:
        """CMD_SYNC; returns CMDQ_CONS.ERR (0: completed)."""
        self.cmd("CMD_SYNC")
        return (self.r32(CMDQ_CONS) >> 24) & 0x7F

    def resume(self, sid: int, stag: int, resp: int) -> None:
        self.cmd("RESUME", sid=sid, stag=stag, resp=resp)

    # -- what software reads -----------------------------------------------------------------------------------
    def new_events(self) -> list[E.Event]:
        """EVTQ records from CONS to PROD (consumed: EVTQ_CONS moves, OVACKFLG follows OVFLG)."""
        return self._drain("evtq_cons", EVTQ_PROD, EVTQ_CONS, EVTQ, self.evtq_log2, E.EVENT_SIZE, E.decode)

    def new_page_requests(self, log2: int = 4) -> list[A.PageRequest]:
        """PRIQ records from CONS to PROD, consumed likewise (`log2`: the PRIQ_BASE.LOG2SIZE programmed)."""
        return self._drain("priq_cons", PRIQ_PROD, PRIQ_CONS, PRIQ, log2, A.PRIQ_ENTRY_SIZE, A.decode_pri)

    def _drain(self, cons_attr: str, prod_off: int, cons_off: int, base: int, log2: int, size: int, decode):
        out, n, cons = [], 1 << log2, getattr(self, cons_attr)
        prod = self.r32(prod_off) & ((2 * n) - 1)
        while cons != prod:
            out.append(decode(self.bus.read_bytes(base + (cons & (n - 1)) * size, size)))
            cons = (cons + 1) & ((2 * n) - 1)
        setattr(self, cons_attr, cons)
        self.w32(cons_off, cons | (self.r32(prod_off) & (1 << 31)))
        return out
