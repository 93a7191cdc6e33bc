"""Shared test bench for the SMMUv3 model: a bus with RAM, the SMMU on it, and a tiny driver that programs
it the way Linux does (through MMIO and memory only)."""
from __future__ import annotations

from devmodel.bus import Bus
from devmodel.smmuv3 import commands as C
from devmodel.smmuv3 import ste as S
from devmodel.smmuv3.device import SMMUv3
from devmodel.smmuv3.regs import SmmuFeatures
from devmodel.trace import ListSink, Tracer

RAM = 0x4000_0000
RAM_SIZE = 0x100_0000
SMMU_BASE = 0x0905_0000
STRTAB = RAM + 0x00_0000      # linear table: up to 2^12 STEs (256 KiB)
L2 = RAM + 0x08_0000          # 2-level: level-2 tables
CMDQ = RAM + 0x10_0000
EVTQ = RAM + 0x20_0000
CDTAB = RAM + 0x30_0000
MSI = RAM + 0x40_0000

# register offsets (IHI 0070 6.3; also Linux ARM_SMMU_*)
IDR0, IDR1, IDR3, IDR5 = 0x00, 0x04, 0x0C, 0x14
CR0, CR0ACK, CR1, CR2, GBPA = 0x20, 0x24, 0x28, 0x2C, 0x44
IRQ_CTRL, IRQ_CTRLACK, GERROR, GERRORN = 0x50, 0x54, 0x60, 0x64
GERROR_IRQ_CFG0, GERROR_IRQ_CFG1 = 0x68, 0x70
STRTAB_BASE, STRTAB_BASE_CFG = 0x80, 0x88
CMDQ_BASE, CMDQ_PROD, CMDQ_CONS = 0x90, 0x98, 0x9C
EVTQ_BASE, EVTQ_PROD, EVTQ_CONS = 0xA0, 0x100A8, 0x100AC
EVTQ_IRQ_CFG0, EVTQ_IRQ_CFG1 = 0xB0, 0xB8


class Bench:
    def __init__(self, features: SmmuFeatures = SmmuFeatures(), cmdq_log2: int = 4, evtq_log2: int = 4):
        self.bus = Bus()
        self.ram = self.bus.add_ram(RAM, RAM_SIZE)
        self.irqs: list[str] = []
        self.sink = ListSink()
        self.tracer = Tracer(sinks=[self.sink])
        self.tracer.enable_all()
        self.smmu = SMMUv3(self.bus, features=features, tracer=self.tracer, irq=self.irqs.append)
        self.bus.add_device(SMMU_BASE, 0x20000, self.smmu, "smmu0")
        self.cmdq_log2 = cmdq_log2
        self.evtq_log2 = evtq_log2
        self.prod = 0

    # MMIO shortcuts
    def r32(self, off: int) -> int:
        return self.smmu.read(off, 4)

    def w32(self, off: int, v: int) -> None:
        self.smmu.write(off, v, 4)

    def w64(self, off: int, v: int) -> None:
        self.smmu.write(off, v, 8)

    def r64(self, off: int) -> int:
        return self.smmu.read(off, 8)

    def setup(self, log2size: int = 8, fmt: int = 0, split: int = 8, enable: bool = True,
              recinvsid: bool = True) -> "Bench":
        self.w64(STRTAB_BASE, STRTAB)
        self.w32(STRTAB_BASE_CFG, (fmt << 16) | (split << 6) | log2size)
        self.w64(CMDQ_BASE, CMDQ | self.cmdq_log2)
        self.w64(EVTQ_BASE, EVTQ | self.evtq_log2)
        self.w32(CR2, 0b110 if recinvsid else 0b100)      # PTM | RECINVSID
        if enable:
            self.w32(CR0, 0b1100)                          # CMDQEN | EVTQEN
            self.w32(CR0, 0b1101)                          # + SMMUEN
        return self

    def put_ste(self, sid: int, ste: S.Ste, base: int = STRTAB) -> int:
        addr = base + sid * 64
        self.bus.write_bytes(addr, S.encode(ste))
        return addr

    def submit(self, *raw_cmds: bytes) -> None:
        """Write commands at PROD and publish them with one CMDQ_PROD write."""
        n = 1 << self.cmdq_log2
        for raw in raw_cmds:
            idx = self.prod & (n - 1)
            self.bus.write_bytes(CMDQ + idx * 16, raw)
            self.prod = (self.prod + 1) & ((n << 1) - 1)
        self.w32(CMDQ_PROD, self.prod)

    def cmd(self, name: str, **kw: int) -> None:
        self.submit(C.encode(name, **kw))

    def cons(self) -> int:
        return self.r32(CMDQ_CONS) & ((2 << self.cmdq_log2) - 1)


# A stage-2-only STE that passes validation with the default features (4KB granule, 40-bit IPA, level 1).
S2_OK = dict(v=1, config=S.CONFIG_S2, s2vmid=5, s2t0sz=24, s2sl0=1, s2tg=0, s2ps=2, s2aa64=1, s2r=1,
             s2ttb=RAM + 0x50_0000)
