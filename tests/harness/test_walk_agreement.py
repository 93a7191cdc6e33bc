"""The three users of the one stage-1 walker (devmodel/vmsa.py) agree, with each other and with Unicorn's MMU.

For random stage-1 tables in a VM's RAM (random granules per TTBR, input sizes, pages and blocks, AF, nG,
invalid and reserved descriptors, EL1&0 with two VA ranges or EL2 with one), every VA is translated by:
* the vCPU's view (`Vcpu.translate`: its TCR/TTBR/SCTLR/ID registers decoded by harness/vmem.py);
* the page-table builder's `translate` (which by contract ignores access flags);
* the SMMU's walk (`devmodel.smmuv3.walk.walk_s1` with the equivalent `S1Cfg` and StreamWorld);
* Unicorn's own MMU (QEMU's target/arm page-table walk) through `AT S1E1R` / `AT S1E2R` and PAR_EL1, which
  gives the PA or the fault status code: an oracle nobody here wrote.

Where Unicorn 2.1.4 is not an oracle (it departs from the Arm ARM) the tests pin what it does instead:
`test_unicorn_departures_from_the_arm_arm`.
"""
from __future__ import annotations

import random
from dataclasses import replace

import pytest

pytest.importorskip("unicorn")
from unicorn.arm64_const import UC_ARM64_REG_PSTATE, UC_ARM64_REG_TTBR0_EL1, UC_ARM64_REG_X0  # noqa: E402

from devmodel.pagetable import PERM_R, PERM_W, PERM_X, PageAllocator, block_levels, level_shift, pte_table  # noqa: E402
from devmodel.smmuv3.config import S1Cfg, StreamWorld  # noqa: E402
from devmodel.smmuv3.fault import EventType  # noqa: E402
from devmodel.smmuv3.walk import Leaf, WalkFault, walk_s1  # noqa: E402
from devmodel.vmsa import FaultKind  # noqa: E402
from harness.machine import Machine  # noqa: E402

RAM = 0x4000_0000
TABLES = RAM + (48 << 20)
DATA = RAM                                  # the random mappings point into [RAM, RAM + 32M)
DATA_SIZE = 32 << 20
CODE_PA = RAM + (40 << 20)
CODE_VA = 0                                 # the AT code runs at VA 0 (inside every input size)
ISB = 0xD5033FDF
AT = {1: 0xD5087800, 2: 0xD50C7800}         # AT S1E1R, X0 / AT S1E2R, X0 (SYS #0|#4, C7, C8, #0)
SYSREGS = {1: dict(sctlr=(3, 0, 1, 0, 0), tcr=(3, 0, 2, 0, 2), ttbr1=(3, 0, 2, 0, 1), mair=(3, 0, 10, 2, 0)),
           2: dict(sctlr=(3, 4, 1, 0, 0), tcr=(3, 4, 2, 0, 2), ttbr0=(3, 4, 2, 0, 0), mair=(3, 4, 10, 2, 0))}
PAR_EL1 = (3, 0, 7, 4, 0)
TG0 = {4096: 0, 65536: 1, 16384: 2}
TG1 = {16384: 1, 4096: 2, 65536: 3}         # TCR_EL1.TG1: not TG0's encoding
EVENT = {FaultKind.TRANSLATION: EventType.F_TRANSLATION, FaultKind.ADDRESS_SIZE: EventType.F_ADDR_SIZE,
         FaultKind.ACCESS_FLAG: EventType.F_ACCESS, FaultKind.EXTERNAL_ABORT: EventType.F_WALK_EABT}
TOP = (1 << 64) - 1


class Board:
    """One VM whose vCPU 0 runs `AT` on tables the test builds in its RAM (bypassing the scheduler)."""

    def __init__(self, el: int):
        self.m = Machine(console=lambda vm, data, stream: None, tcg_buffer_size=8 << 20)
        self.vm = self.m.add_vm(ram_size=64 << 20, start_el=el)
        self.v = self.vm.vcpus[0]
        self.el = el
        self.alloc = PageAllocator(self.vm.ipa, TABLES, 16 << 20)
        self.vm.ipa.write_bytes(CODE_PA, b"".join(w.to_bytes(4, "little") for w in (AT[el], ISB)))
        uc = self.v.uc
        uc.reg_write(UC_ARM64_REG_PSTATE, (0xF << 6) | (0b1001 if el == 2 else 0b0101))

    def builder(self, granule: int, ias: int):
        from devmodel.pagetable import PageTableBuilder
        return PageTableBuilder(self.vm.ipa, self.alloc, granule=granule, ias=ias)

    def enable(self, b0, b1=None, *, epd1: bool = False, t0sz: int | None = None) -> None:
        uc, r = self.v.uc, SYSREGS[self.el]
        t0sz = b0.tsz if t0sz is None else t0sz
        if self.el == 2:                                           # TCR_EL2: RES1 31, 23; PS 48-bit
            tcr = (1 << 31) | (1 << 23) | (5 << 16) | (TG0[b0.granule] << 14) | (3 << 12) | (1 << 10) | (1 << 8) | t0sz
            uc.cpr_write(*r["ttbr0"], b0.ttb)
        else:
            g1 = b1.granule if b1 is not None else 4096
            tcr = ((5 << 32) | (TG1[g1] << 30) | (int(epd1 or b1 is None) << 23) | ((b1.tsz if b1 else 16) << 16)
                   | (TG0[b0.granule] << 14) | (3 << 12) | (1 << 10) | (1 << 8) | t0sz)
            uc.reg_write(UC_ARM64_REG_TTBR0_EL1, b0.ttb)
            uc.cpr_write(*r["ttbr1"], b1.ttb if b1 is not None else 0)
        uc.cpr_write(*r["mair"], 0xFF)
        uc.cpr_write(*r["tcr"], tcr)
        uc.cpr_write(*r["sctlr"], (uc.cpr_read(*r["sctlr"]) | 1) & ~(1 << 1))     # M=1, A=0
        self.v.flush_tlb()

    def at(self, va: int) -> tuple[str, int]:
        """Unicorn's translation of `va`: ("pa", PA) or ("fault", FST)."""
        uc = self.v.uc
        uc.reg_write(UC_ARM64_REG_X0, va)
        uc.emu_start(CODE_VA, CODE_VA + 8, count=2)
        assert self.m.outcome is None, self.m.outcome            # the AT code itself never faults
        par = uc.cpr_read(*PAR_EL1)
        if par & 1:
            return "fault", (par >> 1) & 0x3F
        return "pa", (par & ((1 << 48) - 1) & ~0xFFF) | (va & 0xFFF)


def _random_maps(b, rnd: random.Random, upper: bool) -> list[int]:
    """Random pages and blocks (AF, nG, AP random) in `b`; returns VAs worth translating."""
    gs = b.gshift
    base = (TOP << b.ias) & TOP if upper else 0
    vas, used = [], []
    for _ in range(rnd.randint(6, 16)):
        levels = [lv for lv in (*block_levels(gs), 3) if lv >= b.start and (1 << level_shift(lv, gs)) <= DATA_SIZE]
        lv = rnd.choice(levels + [3, 3])
        bs = 1 << level_shift(lv, gs)
        off = rnd.randrange(0, 1 << b.ias, bs)
        if off < (2 << 20) or any(abs(off - u) < 2 * max(bs, 1 << 21) for u in used):
            continue                                             # keep [0, 2M) for the code page
        used.append(off)
        pa = DATA + rnd.randrange(0, DATA_SIZE - bs + 1, bs)
        b.map(base | off, pa, bs, rnd.choice([PERM_R, PERM_R | PERM_W]), level=lv, user=rnd.random() < 0.5,
              af=rnd.random() < 0.8, global_=rnd.random() < 0.3)
        vas += [base | off, base | (off + bs - 8), base | (off + rnd.randrange(0, bs, 8)), base | (off + bs)]
    for va in rnd.sample(vas, min(3, len(vas))):                # invalid / reserved descriptors
        ref = b.walk(va)
        if ref.value & 1:
            b.mem.write(ref.addr, ref.value & ~(2 if ref.level == 3 else 1), 8)
    vas += [base | (rnd.randrange(0, 1 << b.ias) & ~7) for _ in range(6)]
    return vas


def _tables(board: Board, rnd: random.Random):
    def one(upper: bool):
        gran = rnd.choice([4096, 16384, 65536])
        ias = rnd.choice([25, 30, 36, 39, 42, 47, 48])         # TxSZ 16..39: Unicorn's A72 model
        b = board.builder(gran, ias)
        vas = _random_maps(b, rnd, upper)
        return b, vas
    b0, vas = one(False)
    b0.map(CODE_VA, CODE_PA & ~(b0.granule - 1), b0.granule, PERM_R | PERM_X, user=False, level=3)
    b1 = None
    if board.el == 1 and rnd.random() < 0.8:
        b1, vas1 = one(True)
        vas += vas1
    vas += [1 << 40, (1 << 63) | 0x1000, TOP & ~0xFFF]           # outside both ranges / in TTB1's
    return b0, b1, vas


def _smmu_cfg(board: Board, b0, b1, epd1: bool) -> S1Cfg:
    return S1Cfg(ttb0=b0.ttb, ttb1=b1.ttb if b1 else 0, t0sz=b0.tsz, t1sz=b1.tsz if b1 else 16,
                 tg0=b0.granule, tg1=b1.granule if b1 else 4096, epd0=False, epd1=epd1 or b1 is None, ips=48,
                 asid=0, aset=False, affd=False)


@pytest.mark.parametrize("seed", range(10))
def test_vcpu_view_builder_smmu_and_unicorn_agree(seed):
    rnd = random.Random(seed)
    board = Board(el=2 if seed % 4 == 3 else 1)
    b0, b1, vas = _tables(board, rnd)
    epd1 = b1 is not None and seed % 5 == 1
    board.enable(b0, b1, epd1=epd1)
    cfg = _smmu_cfg(board, b0, b1, epd1)
    world = StreamWorld.EL2 if board.el == 2 else StreamWorld.NS_EL1
    read = board.vm.ipa.read64
    kinds, oks = set(), 0
    for va in vas:
        w = board.v.translate(va)
        smmu = walk_s1(cfg, va, read, world=world)
        cpu = board.at(va)
        if w.ok:
            oks += 1
            assert type(smmu) is Leaf and smmu.oa == w.ipa, (hex(va), w, smmu)
            assert cpu == ("pa", w.ipa), (hex(va), w, cpu)
        else:
            kinds.add(w.kind)
            assert type(smmu) is WalkFault and smmu.type == EVENT[w.kind] and smmu.level == w.level, (hex(va), w, smmu)
            assert cpu == ("fault", w.fsc), (hex(va), w, cpu)
        b = _builder_for(va, b0, b1, epd1)
        if b is not None:                 # the builder ignores access flags (and knows nothing of EPD)
            af_off = walk_s1(replace(cfg, affd=True), va, read, world=world)
            assert b.translate(va) == (af_off.oa if type(af_off) is Leaf else None), (hex(va), w)
    assert oks >= 5 and FaultKind.TRANSLATION in kinds


def _builder_for(va: int, b0, b1, epd1: bool):
    """The builder whose input range holds `va` (its `translate` does not check ranges), if a walk uses it."""
    if va >> b0.ias == 0:
        return b0
    if b1 is not None and not epd1 and va >> b1.ias == TOP >> b1.ias:
        return b1
    return None


@pytest.mark.parametrize("granule,t0sz,ias", [(4096, 45, 25), (65536, 48, 25), (16384, 40, 25), (4096, 10, 48),
                                              (65536, 12, 48)])
def test_vcpu_view_clamps_txsz_as_unicorn_does(granule, t0sz, ias):
    """TCR.T0SZ outside [16, 39] (this CPU: no FEAT_TTST, no FEAT_LVA) acts as the nearest bound, on Unicorn's
    MMU and in the vCPU's view; the SMMU walker, given such a TxSZ, faults (out-of-range CD.TxSZ is ILLEGAL)."""
    board = Board(el=1)
    b = board.builder(granule, ias)
    va = (1 << ias) - granule                                   # the top page of the clamped input range
    b.map(va, DATA + granule, granule, level=3)
    b.map(CODE_VA, CODE_PA & ~(granule - 1), granule, PERM_R | PERM_X, user=False, level=3)
    board.enable(b, t0sz=t0sz)
    w = board.v.translate(va + 8)
    assert w.ok and w.ipa == DATA + granule + 8
    assert board.at(va + 8) == ("pa", DATA + granule + 8)
    cfg = _smmu_cfg(board, b, None, True)
    f = walk_s1(replace(cfg, t0sz=t0sz), va + 8, board.vm.ipa.read64)
    assert type(f) is WalkFault and f.type == EventType.F_TRANSLATION


def test_unicorn_departures_from_the_arm_arm():
    """Two places where Unicorn 2.1.4's MMU is not the Arm ARM, and the vCPU view follows the Arm ARM:
    * an output address above ID_AA64MMFR0_EL1.PARange (44 bits here) is an Address size fault (DDI 0487 D8.2);
      Unicorn translates it;
    * a table in memory that does not exist is a synchronous External abort on the walk (FSC 0b0101LL), as
      QEMU's current MMU reports; Unicorn reads zeros, an invalid descriptor (translation fault, same level)."""
    board = Board(el=1)
    b = board.builder(4096, 39)
    b.map(CODE_VA, CODE_PA, 4096, PERM_R | PERM_X, user=False, level=3)
    b.map(0x4000_0000, 1 << 45, 1 << 30, level=1)
    b.set_pte(0x8000_0000, 1, pte_table(0x7_0000_0000))      # level-2 table where nothing is mapped
    board.enable(b)
    assert board.v.translation_regs().pa_bits == 44
    w = board.v.translate(0x4000_1000)
    assert not w.ok and w.kind is FaultKind.ADDRESS_SIZE and w.fsc == 0b000001
    assert board.at(0x4000_1000) == ("pa", (1 << 45) | 0x1000)
    w = board.v.translate(0x8000_0000)
    assert not w.ok and w.kind is FaultKind.EXTERNAL_ABORT and w.fsc == 0b010110
    assert board.at(0x8000_0000) == ("fault", 0b000110)
