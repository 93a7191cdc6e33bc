"""SMMUv3 device behaviour: CMDQ (wrap, CERROR stop-and-resume, CMD_SYNC via MSI/IRQ/SEV), EVTQ (records in
memory, IRQ/MSI, overflow flag and never GERROR), translation through the core (S1, S2, nested with a CD
table at an IPA), TLBI commands reaching the core, BTM gating."""
from __future__ import annotations

import pytest

from devmodel.pagetable import PERM_R, PERM_W, PageAllocator, PageTableBuilder
from devmodel.smmuv3 import cd as CD
from devmodel.smmuv3 import commands as C
from devmodel.smmuv3 import events as E
from devmodel.smmuv3 import ste as S
from devmodel.smmuv3.fault import EventType, Fault
from devmodel.smmuv3.regs import SmmuFeatures
from devmodel.smmuv3.translate import TranslationCore
from devmodel.tlbi_types import Regime, Scope, Security, Share, Stage, TlbiOp

from .bench import (CDTAB, CMDQ, CMDQ_CONS, CR0, CR2, EVTQ, EVTQ_CONS, EVTQ_IRQ_CFG0, EVTQ_IRQ_CFG1, EVTQ_PROD,
                    GERROR, GERRORN, IRQ_CTRL, MSI, RAM, S2_OK, Bench)

Q_OVERFLOW_FLAG = 1 << 31           # Linux arm-smmu-v3.h


def test_cmdq_wraps(bench: Bench) -> None:
    bench.cmdq_log2 = 2                                       # 4 entries
    bench.setup()
    for i in range(11):                                       # 2.75 laps around the ring
        bench.cmd("CMD_SYNC", cs=1, msiaddr=MSI + 4 * i, msidata=0x100 + i)
        assert bench.cons() == bench.prod
    assert [bench.bus.read32(MSI + 4 * i) for i in range(11)] == [0x100 + i for i in range(11)]
    assert bench.cons() == 11 & 0b111 and (bench.cons() >> 2) & 1 == 0    # wrap bit toggled an even number


def test_cmdq_batch_across_wrap(bench: Bench) -> None:
    bench.cmdq_log2 = 2
    bench.setup()
    bench.submit(*[C.encode("CFGI_STE", sid=i) for i in range(3)])
    bench.submit(*[C.encode("CMD_SYNC", cs=1, msiaddr=MSI + 4 * i, msidata=i + 1) for i in range(4)])
    assert bench.cons() == bench.prod == 7 and bench.bus.read32(MSI + 12) == 4
    assert bench.smmu.stats["cmd_CFGI_STE"] == 3


def test_cmdq_error_stop_and_resume(bench: Bench) -> None:
    bench.setup()
    bench.submit(C.encode("CMD_SYNC", cs=1, msiaddr=MSI, msidata=1), bytes([0x7F]) + bytes(15),
                 C.encode("CMD_SYNC", cs=1, msiaddr=MSI + 4, msidata=2))
    assert bench.cons() == 1                                  # stopped at the bad command
    assert (bench.r32(CMDQ_CONS) >> 24) & 0x7F == C.CERROR_ILL
    assert bench.r32(GERROR) & 1 and bench.bus.read32(MSI + 4) == 0
    bench.cmd("CMD_SYNC", cs=1, msiaddr=MSI + 8, msidata=3)   # PROD moves: still stopped
    assert bench.cons() == 1 and bench.bus.read32(MSI + 8) == 0
    trace = bench.sink.of("smmuv3_cmdq_consume_error")
    assert trace[0]["cmd_name"] == "UNKNOWN_0x7f" and trace[0]["cmd_error"] == 1
    bench.bus.write_bytes(CMDQ + 16, C.encode("CMD_SYNC"))   # fix it up (Linux: replace with CMD_SYNC)
    bench.w32(GERRORN, bench.r32(GERROR))                     # acknowledge: consumption resumes
    assert bench.cons() == 4 and bench.bus.read32(MSI + 4) == 2 and bench.bus.read32(MSI + 8) == 3


def test_cmdq_stays_stopped_after_fix_up_until_acknowledged(bench: Bench) -> None:
    """IHI 0070 7.1: after a CERROR the SMMU consumes nothing until GERRORN acknowledges CMDQ_ERR, even when
    software has already replaced the bad command and moves PROD again."""
    bench.setup()
    bench.submit(bytes([0x7F]) + bytes(15))
    assert bench.cons() == 0 and bench.smmu.gerror_active() == 1
    bench.bus.write_bytes(CMDQ, C.encode("CMD_SYNC", cs=1, msiaddr=MSI, msidata=7))   # fixed up in place
    bench.cmd("CMD_SYNC", cs=1, msiaddr=MSI + 4, msidata=8)                             # PROD moves
    assert bench.cons() == 0 and bench.bus.read32(MSI) == 0 and bench.bus.read32(MSI + 4) == 0
    bench.w32(GERRORN, bench.r32(GERROR))
    assert bench.cons() == 2 and bench.bus.read32(MSI) == 7 and bench.bus.read32(MSI + 4) == 8


def test_cmdq_fetch_abort_is_cerror_abt() -> None:
    b = Bench()
    b.setup(enable=False)
    b.w64(0x90, 0x3_0000_0000 | 4)                            # unmapped queue
    b.w32(CR0, 0b1000)
    b.w32(0x98, 1)
    assert (b.r32(CMDQ_CONS) >> 24) & 0x7F == C.CERROR_ABT and b.r32(GERROR) & 1


def test_cmdq_disabled_does_not_consume(bench: Bench) -> None:
    bench.setup(enable=False)
    bench.cmd("CMD_SYNC", cs=1, msiaddr=MSI, msidata=9)
    assert bench.cons() == 0 and bench.bus.read32(MSI) == 0
    bench.w32(CR0, 0b1000)                                    # CMDQEN: picks up what is pending
    assert bench.cons() == 1 and bench.bus.read32(MSI) == 9


def test_cmd_sync_completion_modes() -> None:
    b = Bench(SmmuFeatures(msi=False)).setup()
    b.cmd("CMD_SYNC", cs=1, msiaddr=MSI, msidata=5)           # no MSI support: wired interrupt
    assert b.irqs == ["cmd_sync"] and b.bus.read32(MSI) == 0
    b.cmd("CMD_SYNC", cs=2)
    assert b.smmu.stats["sev"] == 1
    b.cmd("CMD_SYNC", cs=0, msiaddr=MSI, msidata=5)
    assert b.irqs == ["cmd_sync"] and b.bus.read32(MSI) == 0 and b.smmu.stats["sync"] == 3
    m = Bench().setup()
    m.cmd("CMD_SYNC", cs=1, msiaddr=0)                        # MSI supported but no address: wired
    assert m.irqs == ["cmd_sync"]
    w = Bench().setup()
    w.cmd("CMD_SYNC", cs=1, msiaddr=MSI + 8, msidata=0x55)    # MSI: the write signals completion, no wire
    assert w.bus.read32(MSI + 8) == 0x55 and w.irqs == [] and w.cons() == 1


def test_cmd_sync_msi_abort_sets_gerror(bench: Bench) -> None:
    bench.setup()
    bench.cmd("CMD_SYNC", cs=1, msiaddr=0x5_0000_0000, msidata=1)
    assert bench.r32(GERROR) == 1 << 4                        # GERROR_MSI_CMDQ_ABT_ERR
    assert bench.cons() == 1                                  # the command itself completed


def _events(b: Bench) -> list[E.Event]:
    return [E.decode(b.bus.read_bytes(EVTQ + 32 * i, 32)) for i in range(1 << b.evtq_log2)]


def test_evtq_irq_and_msi(bench: Bench) -> None:
    bench.setup()
    bench.w32(IRQ_CTRL, 0b100)
    bench.smmu.translate(7, None, 0x1000)                     # STE V=0: C_BAD_STE
    assert bench.irqs == ["eventq"]
    bench.w32(IRQ_CTRL, 0)
    bench.w64(EVTQ_IRQ_CFG0, MSI)
    bench.w32(EVTQ_IRQ_CFG1, 0xCAFE)
    bench.w32(IRQ_CTRL, 0b100)
    bench.smmu.translate(8, None, 0x1000)
    assert bench.bus.read32(MSI) == 0xCAFE and bench.irqs == ["eventq"]
    assert [(e.name, e.sid) for e in _events(bench)[:2]] == [("C_BAD_STE", 7), ("C_BAD_STE", 8)]


def test_evtq_overflow_sets_ovflg_not_gerror() -> None:
    b = Bench(evtq_log2=2).setup()                            # 4 entries
    for sid in range(6):
        b.smmu.translate(sid, None, 0x1000)
    assert b.r32(EVTQ_PROD) == Q_OVERFLOW_FLAG | 0b100        # full (wrap set, index 0) + OVFLG
    assert b.r32(GERROR) == 0 and b.smmu.gerror_active() == 0  # QEMU's bug: it raised GERROR here
    assert [e.sid for e in b.smmu.events] == [0, 1, 2, 3] and [e.sid for e in b.smmu.dropped] == [4, 5]
    assert len(b.sink.of("smmuv3_evtq_overflow")) == 1        # toggled once until acknowledged
    b.w32(EVTQ_CONS, Q_OVERFLOW_FLAG | 0b100)                 # consume all, ack the overflow
    b.smmu.translate(9, None, 0x1000)
    assert b.r32(EVTQ_PROD) == Q_OVERFLOW_FLAG | 0b101        # OVFLG == OVACKFLG: no new overflow
    assert _events(b)[0].sid == 9


def test_evtq_disabled_drops_events(bench: Bench) -> None:
    bench.setup()
    bench.w32(CR0, 0b1001)                                    # EVTQEN off
    f = bench.smmu.translate(3, None, 0x1000)
    assert isinstance(f, Fault) and bench.smmu.events == [] and len(bench.smmu.dropped) == 1
    assert bench.r32(EVTQ_PROD) == 0


def test_evtq_write_abort_sets_gerror() -> None:
    b = Bench()
    b.setup(enable=False)
    b.w64(0xA0, 0x6_0000_0000 | 4)
    b.w32(CR0, 0b1101)
    b.smmu.translate(1, None, 0)
    assert b.r32(GERROR) == 1 << 2                            # GERROR_EVTQ_ABT_ERR


# -- translation through the core ------------------------------------------------------------------------
def _tables(b: Bench):
    alloc = PageAllocator(b.bus, RAM + 0x80_0000, 0x40_0000)
    return alloc


def test_s2_translation_end_to_end(bench: Bench) -> None:
    if bench.smmu.core is None:
        pytest.skip("translation core not available")
    bench.setup()
    alloc = _tables(bench)
    s2 = PageTableBuilder(bench.bus, alloc, granule=4096, stage=2, ias=40)
    s2.map(0x8000_0000, RAM + 0x90_0000, 0x2000, PERM_R)
    bench.put_ste(20, S.Ste(**dict(S2_OK, s2t0sz=24, s2sl0=s2.sl0, s2ttb=s2.ttb)))
    r = bench.smmu.translate(20, None, 0x8000_1234)
    assert r.pa == RAM + 0x90_1234
    f = bench.smmu.translate(20, None, 0x8000_1000, write=True)
    assert isinstance(f, Fault) and f.type == EventType.F_PERMISSION and f.sid == 20
    f = bench.smmu.translate(20, None, 0x9000_0000)
    assert f.type == EventType.F_TRANSLATION
    evs = bench.smmu.events
    assert [(e.name, e.sid, e.s2, e.rnw) for e in evs] == [("F_PERMISSION", 20, 1, 0), ("F_TRANSLATION", 20, 1, 1)]
    assert evs[1].input_addr == 0x9000_0000 and evs[1].ipa == 0x9000_0000


def test_nested_cd_fetch_through_stage2(bench: Bench) -> None:
    if bench.smmu.core is None:
        pytest.skip("translation core not available")
    bench.setup()
    alloc = _tables(bench)
    s2 = PageTableBuilder(bench.bus, alloc, granule=4096, stage=2, ias=40)
    s1 = PageTableBuilder(bench.bus, alloc, granule=4096, stage=1, ias=48)
    # guest: CD at IPA 0x1000_0000 (PA CDTAB); stage-1 tables identity-mapped in IPA space
    s2.map(0x1000_0000, CDTAB, 0x1000, PERM_R)
    s2.map(RAM + 0x80_0000, RAM + 0x80_0000, 0x40_0000, PERM_R | PERM_W)
    s2.map(0x2000_0000, RAM + 0xA0_0000, 0x1000, PERM_R | PERM_W)
    s1.map(0x7000, 0x2000_0000, 0x1000, PERM_R | PERM_W)
    bench.bus.write_bytes(CDTAB, CD.encode(CD.Cd(v=1, aa64=1, t0sz=16, epd1=1, ips=5, asid=3, r=1, ttb0=s1.ttb)))
    bench.put_ste(21, S.Ste(**dict(S2_OK, config=S.CONFIG_NESTED, s1contextptr=0x1000_0000, s2sl0=s2.sl0,
                                   s2ttb=s2.ttb)))
    r = bench.smmu.translate(21, None, 0x7010)
    assert r.pa == RAM + 0xA0_0010
    assert bench.sink.of("smmuv3_get_cd")[0]["addr"] == 0x1000_0000          # an IPA
    # CD pointer at an IPA stage 2 does not map: stage-2 fault with CLASS=CD
    bench.put_ste(22, S.Ste(**dict(S2_OK, config=S.CONFIG_NESTED, s1contextptr=0x3000_0000, s2sl0=s2.sl0,
                                   s2ttb=s2.ttb)))
    f = bench.smmu.translate(22, None, 0x7010)
    assert isinstance(f, Fault) and f.stage2 and f.sid == 22 and int(f.cls) == 0


class _Recorder:
    def __init__(self) -> None:
        self.cmds: list[str] = []
        self.ops: list[str] = []

    def invalidate(self, cmd: C.Command) -> None:
        self.cmds.append(cmd.name)

    def dvm_tlbi(self, op: TlbiOp) -> dict:
        self.ops.append(op.name)
        return {"malformed": ""}

    def translate(self, *a):  # pragma: no cover - not used here
        raise AssertionError

    def translate_s2(self, *a):  # pragma: no cover
        raise AssertionError


def test_tlbi_and_atc_commands_reach_the_core_before_sync() -> None:
    b = Bench(SmmuFeatures(ats=True)).setup()
    rec = _Recorder()
    b.smmu.core = rec
    b.submit(C.encode("TLBI_NH_VA", vmid=1, asid=2, addr=0x1000), C.encode("TLBI_S12_VMALL", vmid=1),
             C.encode("ATC_INV", sid=3, size=52), C.encode("CFGI_STE", sid=3),
             C.encode("CMD_SYNC", cs=1, msiaddr=MSI, msidata=1))
    assert rec.cmds == ["TLBI_NH_VA", "TLBI_S12_VMALL", "ATC_INV"] and b.bus.read32(MSI) == 1


OP = TlbiOp("VMALLE1IS", 0, 8, 3, 0, None, Share.ISH, True, Regime.EL10, Security.NS, Stage.S1, Scope.VMALL,
            5, None, None, None, False, 0)


@pytest.mark.parametrize("btm,ptm,smmuen,applied", [
    (True, False, True, True), (True, True, True, False), (True, False, False, False), (False, False, True, False),
])
def test_btm_gating(btm: bool, ptm: bool, smmuen: bool, applied: bool) -> None:
    b = Bench(SmmuFeatures(btm=btm))
    b.setup(enable=False)
    b.w32(CR2, (0b100 if ptm else 0) | 0b10)
    b.w32(CR0, 0b1101 if smmuen else 0b1100)
    rec = _Recorder()
    b.smmu.core = rec
    b.smmu.dvm_tlbi(OP, 1)
    assert rec.ops == (["VMALLE1IS"] if applied else [])
    assert b.smmu.stats["btm_ignored"] == (0 if applied else 1)
    assert b.sink.of("smmuv3_dvm_tlbi")[0]["applied"] == int(applied)


def test_btm_through_interconnect_with_real_core() -> None:
    from devmodel.dvm import Interconnect
    b = Bench(SmmuFeatures(btm=True))
    assert isinstance(b.smmu.core, TranslationCore)           # the default backend, imported normally
    b.setup(enable=False)
    b.w32(CR2, 0b10)                                          # PTM=0
    b.w32(CR0, 0b1101)
    ic = Interconnect()
    ic.attach(b.smmu)
    assert ic.tlbi(OP, None) == 1 and ic.sync(None) == 1
    assert b.smmu.stats["btm_applied"] == 1 and b.smmu.stats["dvm_sync"] == 1


def test_cmdq_error_acknowledged_from_inside_the_gerror_interrupt() -> None:
    """A handler that acknowledges CMDQ_ERR while the SMMU is still consuming (wired IRQ or MSI delivered
    synchronously) must make consumption resume, not be swallowed by the re-entrancy guard."""
    b = Bench()

    def handler(what: str) -> None:
        b.irqs.append(what)
        if what == "gerror" and b.r32(GERROR) & 1:
            b.bus.write_bytes(CMDQ + 16, C.encode("CMD_SYNC"))     # replace the bad command, as Linux does
            b.w32(GERRORN, b.r32(GERROR))

    b.smmu.irq = handler
    b.setup()
    b.w32(IRQ_CTRL, 0b111)
    b.submit(C.encode("CMD_SYNC", cs=1, msiaddr=MSI, msidata=1), bytes([0x7F]) + bytes(15),
             C.encode("CMD_SYNC", cs=1, msiaddr=MSI + 4, msidata=2))
    assert "gerror" in b.irqs
    assert b.cons() == 3 and b.bus.read32(MSI + 4) == 2


@pytest.mark.parametrize("s2p,tag", [(True, 5), (False, 0)])
def test_stage1_only_entries_are_tagged_with_s2vmid_when_s2_is_implemented(s2p: bool, tag: int) -> None:
    """IHI 0070 3.17: for stage-1-only translation the VMID comes from STE.S2VMID when stage 2 is implemented;
    with IDR0.S2P=0 there is no VMID and broadcasts match as VMID 0. So a broadcast VAE1IS hits the context's
    entries only with that VMID."""
    from devmodel.dvm import Interconnect
    b = Bench(SmmuFeatures(btm=True, s2p=s2p))
    b.setup(enable=False)
    b.w32(CR2, 0b10)                                          # PTM=0: take part in broadcasts
    b.w32(CR0, 0b1101)
    ic = Interconnect()
    ic.attach(b.smmu)
    alloc = _tables(b)
    s1 = PageTableBuilder(b.bus, alloc, granule=4096, stage=1, ias=48)
    s1.map(0x7000, RAM + 0xA0_0000, 0x1000, PERM_R | PERM_W)
    b.bus.write_bytes(CDTAB, CD.encode(CD.Cd(v=1, aa64=1, t0sz=16, epd1=1, ips=5, asid=3, r=1, ttb0=s1.ttb)))
    b.put_ste(30, S.Ste(v=1, config=S.CONFIG_S1, s1contextptr=CDTAB, s2vmid=5 if s2p else 0))
    assert b.smmu.translate(30, None, 0x7010).pa == RAM + 0xA0_0010
    s1.map(0x7000, RAM + 0xB0_0000, 0x1000, PERM_R | PERM_W)        # remap, no invalidation yet
    va_op = OP._replace(name="VAE1IS", crm=3, op2=1, scope=Scope.VA, asid=3, addr=0x7000)
    for vmid in sorted({0, 5} - {tag}):                        # the other VMID: entries stay (stale)
        ic.tlbi(va_op._replace(vmid=vmid), None)
        assert b.smmu.translate(30, None, 0x7010).pa == RAM + 0xA0_0010
    ic.tlbi(va_op._replace(vmid=tag), None)
    assert b.smmu.translate(30, None, 0x7010).pa == RAM + 0xB0_0010
