"""Shared fixtures for the translation-core tests (walk, IOTLB, invalidation, BTM): a host bus with RAM,
a table allocator, config builders and TLBI message builders. Imported by the test modules next to it."""
from __future__ import annotations

from dataclasses import dataclass

from devmodel.bus import Bus
from devmodel.pagetable import PageAllocator, PageTableBuilder
from devmodel.smmuv3.config import CfgKind, S1Cfg, S2Cfg, StreamWorld, TransCfg
from devmodel.smmuv3.translate import TranslationCore
from devmodel.tlbi_types import Regime, Scope, Security, Share, Stage, TlbiOp
from devmodel.trace import ListSink, Tracer

RAM_BASE = 0x4000_0000
RAM_SIZE = 64 << 20
TABLES = RAM_BASE + (48 << 20)          # page tables live in the last 16 MiB


@dataclass(frozen=True)
class Cmd:
    """Local stand-in with the agreed decoded-command attributes (tests also use the real Command)."""
    name: str
    vmid: int = 0
    asid: int = 0
    addr: int = 0
    leaf: int = 0
    num: int = 0
    scale: int = 0
    tg: int = 0
    ttl: int = 0
    opcode: int = 0
    sid: int = 0
    ssid: int = 0
    ssv: int = 0


class Env:
    def __init__(self, trace: str | None = None, **core_kw):
        self.bus = Bus()
        self.ram = self.bus.add_ram(RAM_BASE, RAM_SIZE)
        self.alloc = PageAllocator(self.bus, TABLES, 16 << 20)
        self.sink = ListSink()
        self.tracer = Tracer(trace, sinks=[self.sink]) if trace else Tracer()
        self.core = TranslationCore(read=self.bus.read64, tracer=self.tracer, **core_kw)

    def builder(self, stage: int = 1, granule: int = 4096, ias: int = 48, start: int | None = None):
        return PageTableBuilder(self.bus, self.alloc, granule=granule, stage=stage, ias=ias, start=start)


def s1(b, *, asid: int = 1, aset: bool = False, affd: bool = False, ttb1=None, epd1: bool | None = None,
       ips: int = 48, tbi: int = 0, **kw) -> S1Cfg:
    return S1Cfg(ttb0=b.ttb, ttb1=ttb1.ttb if ttb1 is not None else 0, t0sz=b.tsz,
                 t1sz=ttb1.tsz if ttb1 is not None else b.tsz, tg0=b.granule,
                 tg1=ttb1.granule if ttb1 is not None else b.granule, epd0=False,
                 epd1=(ttb1 is None) if epd1 is None else epd1, ips=ips, asid=asid, aset=aset, affd=affd,
                 tbi=tbi, **kw)


def s2(b, *, vmid: int = 1, ps: int = 48, **kw) -> S2Cfg:
    return S2Cfg(vmid=vmid, vttb=b.ttb, t0sz=b.tsz, sl0=b.sl0, tg=b.granule, ps=ps, **kw)


def cfg(kind: CfgKind, s1cfg=None, s2cfg=None, *, sid: int = 1, ssid=None,
        world: StreamWorld = StreamWorld.NS_EL1) -> TransCfg:
    return TransCfg(sid=sid, ssid=ssid, kind=kind, world=world, s1=s1cfg, s2=s2cfg)


def op(name: str, *, scope: Scope, stage: Stage = Stage.S1, regime: Regime = Regime.EL10, vmid=None,
       asid=None, addr=None, size=None, leaf: bool = False, ttl: int = 0, tg=None, scale=None, num=None,
       security: Security = Security.NS) -> TlbiOp:
    """A DVM TLBI message as the decoder would produce it (fields given explicitly)."""
    return TlbiOp(name=name, op1=0, crn=8, crm=3, op2=0, xt=None, shareability=Share.ISH, broadcast=True,
                  regime=regime, security=security, stage=stage, scope=scope, vmid=vmid, asid=asid, addr=addr,
                  size=size, leaf=leaf, ttl=ttl, tg=tg, scale=scale, num=num)


def cpu_range(tg: int, scale: int, num: int) -> int:
    """Bytes covered by a CPU range TLBI: (NUM+1) * 2^(5*SCALE+1) pages of TG (Arm ARM, TLBI RVA*)."""
    return (num + 1) * (1 << (5 * scale + 1)) * {1: 4096, 2: 16384, 3: 65536}[tg]
