"""Test helpers for the ITS of a VM: a Python stand-in for a guest's GICv3 + ITS driver (`PyIts`), programming
them as Linux's irq-gic-v3-its.c does (Device/Collection tables through GITS_BASER<n>, the command queue, the
LPI property and pending tables, GICR_CTLR.EnableLPIs) through MMIO and guest RAM only."""
from __future__ import annotations

from devmodel.gic.its import Its
from devmodel.gic.its_cmd import encode

GITS_CTLR, GITS_CBASER, GITS_CWRITER, GITS_CREADR, GITS_BASER = 0x0, 0x80, 0x88, 0x90, 0x100
GICR_CTLR, GICR_PROPBASER, GICR_PENDBASER = 0x0, 0x70, 0x78
LPI_PRIO = 0xA0 | 1                                   # property byte: priority 0xA0, Enable


class PyIts:
    """A guest's ITS driver over RAM at `base` (IPA, 1 MiB: command queue, tables, ITTs)."""

    def __init__(self, its: Its, ipa, base: int):
        self.its, self.ipa, self.gic = its, ipa, its.gic
        self.cmdq, self.devt, self.collt, self.prop, self.pend = (base + o for o in
                                                                  (0, 0x1_0000, 0x2_0000, 0x3_0000, 0x4_0000))
        self.itt = base + 0x8_0000
        self.n = 0

    def init(self, nlpis: int = 64) -> "PyIts":
        g = self.gic
        g.distributor.write(0, 2, 4)                                     # GICD_CTLR.EnableGrp1A
        for c in range(g.ncpus):
            icc = g.cpu_interface(c)
            icc.write_sysreg("ICC_PMR_EL1", 0xFF)
            icc.write_sysreg("ICC_IGRPEN1_EL1", 1)
            rd = g.redistributor(c)
            rd.write(GICR_PROPBASER, self.prop | 13, 8)                 # IDbits 13: INTIDs up to 16383
            rd.write(GICR_PENDBASER, self.pend + c * 0x1_0000, 8)
            rd.write(GICR_CTLR, 1, 4)                                    # EnableLPIs
        for n in range(nlpis):
            self.ipa.write(self.prop + n, LPI_PRIO, 1)
        its = self.its
        its.write(GITS_BASER, 1 << 63 | 2 << 8 | self.devt, 8)         # Valid, 64 KiB pages, flat, 1 page
        its.write(GITS_BASER + 8, 1 << 63 | 2 << 8 | self.collt, 8)
        its.write(GITS_CBASER, 1 << 63 | self.cmdq | 15, 8)            # 16 pages: 2048 commands
        its.write(GITS_CTLR, 1, 4)
        return self

    def cmd(self, name: str, **fields: int) -> int:
        self.ipa.write_bytes(self.cmdq + 32 * (self.n % 2048), encode(name, **fields))
        self.n += 1
        self.its.write(GITS_CWRITER, 32 * (self.n % 2048), 8)
        return self.its.read(GITS_CREADR, 8)

    def map(self, dev: int, ev: int, intid: int, icid: int = 0, cpu: int = 0, size: int = 4) -> None:
        """MAPD (an ITT of 2^(size+1) events), MAPC, MAPTI, SYNC: event `ev` of `dev` is LPI `intid` on `cpu`."""
        self.cmd("MAPD", deviceid=dev, size=size, itt_addr=self.itt + (dev & 0xFF) * 0x400, v=1)
        self.cmd("MAPC", icid=icid, rdbase=cpu << 16, v=1)
        self.cmd("MAPTI", deviceid=dev, eventid=ev, pintid=intid, icid=icid)
        self.cmd("SYNC", rdbase=cpu << 16)

    def ack(self, cpu: int = 0) -> int:
        return self.gic.cpu_interface(cpu).read_sysreg("ICC_IAR1_EL1")

    def eoi(self, intid: int, cpu: int = 0) -> None:
        self.gic.cpu_interface(cpu).write_sysreg("ICC_EOIR1_EL1", intid)

    def pending(self) -> list[int]:
        return [i for c in range(self.gic.ncpus) for i in self.gic.state()["cpus"][c]["lpis_pending"]]
