"""Differential test: the SMMU stage-1 walk against Unicorn's own CPU MMU (QEMU's target/arm/ptw.c), an oracle
nobody here wrote.

For random stage-1 tables in guest memory (random granule, input size, pages and blocks, AP bits, AF, invalid
entries), a Unicorn vCPU at EL1 with SCTLR_EL1.M=1 and TTBR0_EL1/TCR_EL1/MAIR_EL1 describing the same tables
loads through every VA (LDR: privileged read, LDTR: unprivileged read, STR: privileged write). Memory holds at
every 8-byte slot its own physical address, so the loaded value is the PA the CPU translated to. The SMMU must
give the same PA, or fault exactly when the CPU faults. (Unicorn 2.1.4 delivers the abort to UC_HOOK_INTR
before the exception is taken, so ESR_EL1 stays 0 and the fault kind cannot be compared; the kinds are covered
by test_walk.py.)
"""
from __future__ import annotations

import ctypes
import random
import struct

import pytest

unicorn = pytest.importorskip("unicorn")
from unicorn import UC_ARCH_ARM64, UC_HOOK_INTR, UC_MODE_ARM, UC_PROT_ALL, Uc, UcError  # noqa: E402
from unicorn.arm64_const import (UC_ARM64_REG_PC, UC_ARM64_REG_TTBR0_EL1,  # noqa: E402
                                 UC_ARM64_REG_X0, UC_ARM64_REG_X1, UC_ARM64_REG_X2)

from devmodel.pagetable import PERM_R, PERM_W, PERM_X, block_levels, level_shift  # noqa: E402
from devmodel.smmuv3.config import CfgKind, TransResult  # noqa: E402
from devmodel.smmuv3.fault import EventType, Fault  # noqa: E402

from .xlat_env import RAM_BASE, RAM_SIZE, Env, cfg, s1  # noqa: E402

CODE = RAM_BASE + (40 << 20)         # identity-mapped code page
DATA = RAM_BASE                       # data pages the random mappings point into: [0, 32M), 32M-aligned
DATA_SIZE = 32 << 20
FAULT = "fault"
LDR, LDTR, STR = 0xF9400001, 0xF8400801, 0xF9000002
TG0 = {4096: 0, 65536: 1, 16384: 2}
GS = {4096: 12, 16384: 14, 65536: 16}


class Cpu:
    def __init__(self, env: Env):
        self.uc = uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        uc.ctl_set_tcg_buffer_size(16 << 20)
        uc.cpr_write(3, 6, 1, 1, 0, 0x500)               # SCR_EL3 = RW (bit 10) | HCE (bit 8), Arm ARM SCR_EL3
        self._buf = (ctypes.c_char * RAM_SIZE).from_buffer(env.ram.buf)
        uc.mem_map_ptr(RAM_BASE, RAM_SIZE, UC_PROT_ALL, ctypes.addressof(self._buf))
        env.bus.write_bytes(CODE, struct.pack("<III", LDR, LDTR, STR))
        self.exc = None
        uc.hook_add(UC_HOOK_INTR, self._intr)

    def _intr(self, uc, intno, _ud):
        self.exc = intno
        uc.emu_stop()

    def enable_mmu(self, ttb: int, tsz: int, granule: int, ips_bits: int = 48) -> None:
        uc = self.uc
        ips = {32: 0, 36: 1, 40: 2, 42: 3, 44: 4, 48: 5}[ips_bits]
        tcr = tsz | (TG0[granule] << 14) | (1 << 23) | (ips << 32) | (3 << 12) | (1 << 8) | (1 << 10)
        uc.cpr_write(3, 0, 10, 2, 0, 0xFF)               # MAIR_EL1: attr0 Normal WB
        uc.cpr_write(3, 0, 2, 0, 2, tcr)                 # TCR_EL1 (EPD1=1)
        uc.reg_write(UC_ARM64_REG_TTBR0_EL1, ttb)
        sctlr = uc.cpr_read(3, 0, 1, 0, 0)
        uc.cpr_write(3, 0, 1, 0, 0, (sctlr | 1) & ~(1 << 1))   # M=1, A=0

    def access(self, va: int, insn: int) -> int | str:
        """Run one LDR/LDTR/STR at EL1 on `va`: the loaded value, or FAULT (data abort)."""
        uc = self.uc
        self.exc = None
        pc = CODE + 4 * (LDR, LDTR, STR).index(insn)
        uc.reg_write(UC_ARM64_REG_X0, va)
        uc.reg_write(UC_ARM64_REG_X1, 0xDEAD)
        uc.reg_write(UC_ARM64_REG_X2, 0x5151_5151)
        uc.reg_write(UC_ARM64_REG_PC, pc)
        try:
            uc.emu_start(pc, pc + 4, count=1)
        except UcError as e:                      # not expected: surface it in the assertion message
            return f"UcError {e}"                 # type: ignore[return-value]
        if self.exc is not None:
            return FAULT if self.exc == 4 else f"exception {self.exc}"   # 4: QEMU EXCP_DATA_ABORT
        if uc.reg_read(UC_ARM64_REG_PC) != pc + 4:
            return f"pc {uc.reg_read(UC_ARM64_REG_PC):#x}"
        return uc.reg_read(UC_ARM64_REG_X1)


def _fill_markers(env: Env) -> None:
    mv = memoryview(env.ram.buf)
    off = DATA - RAM_BASE
    words = range(DATA, DATA + DATA_SIZE, 8)
    mv[off:off + DATA_SIZE] = struct.pack(f"<{len(words)}Q", *words)


def _random_tables(env: Env, rnd: random.Random, granule: int, ias: int):
    b = env.builder(granule=granule, ias=ias)
    gs = GS[granule]
    b.map(CODE & ~(granule - 1), CODE & ~(granule - 1), granule, PERM_R | PERM_X, user=False, level=3)
    vas = []
    used = set()
    for _ in range(rnd.randint(8, 24)):
        levels = [lv for lv in (*block_levels(gs), 3) if lv >= b.start and (1 << level_shift(lv, gs)) <= DATA_SIZE]
        lv = rnd.choice(levels + [3, 3])
        bs = 1 << level_shift(lv, gs)
        va = rnd.randrange(0, 1 << ias, bs)
        if va >> 30 == CODE >> 30 or any(abs(va - u) < max(bs, 1 << 21) * 2 for u in used):
            continue
        pa = DATA + rnd.randrange(0, DATA_SIZE - bs + 1, bs)
        perm = rnd.choice([PERM_R, PERM_R | PERM_W])
        kw = dict(user=rnd.random() < 0.5, af=rnd.random() < 0.85, global_=rnd.random() < 0.3)
        b.map(va, pa, bs, perm, level=lv, **kw)
        used.add(va)
        vas += [va, va + bs - 8]                     # first and last word of every mapping ...
        for _ in range(3):                           # ... and three inside it
            vas.append(va + rnd.randrange(0, bs, 8))
        vas.append(va + bs)                          # just past the mapping: often unmapped
    # a few descriptors of odd kinds: reserved level-3 (bit 1 clear), RES0 OA bits [49:48] set, contiguous
    for va in rnd.sample(vas, min(4, len(vas))):
        ref = b.walk(va)
        if not ref.value & 1:
            continue
        if ref.level == 3 and rnd.random() < 0.4:
            env.bus.write64(ref.addr, ref.value & ~2)
        else:
            env.bus.write64(ref.addr, ref.value | (rnd.choice([1, 2, 3]) << 48))
    vas += [rnd.randrange(0, 1 << ias) & ~7 for _ in range(8)]
    vas += [(1 << ias) + 0x1000]                     # outside the input range
    return b, vas


def _smmu_outcome(core, c, va, write, priv):
    r = core.translate(c, va, write=write, priv=priv)
    if isinstance(r, TransResult):
        return r.pa
    assert isinstance(r, Fault) and r.type in (EventType.F_TRANSLATION, EventType.F_ADDR_SIZE,
                                               EventType.F_ACCESS, EventType.F_PERMISSION), r
    return FAULT


@pytest.mark.parametrize("seed", range(9))
def test_smmu_stage1_matches_unicorn_mmu(seed):
    rnd = random.Random(seed)
    granule = (4096, 16384, 65536)[seed % 3]
    ias = rnd.choice([36, 39, 42, 47, 48]) if granule == 4096 else rnd.choice([36, 42, 47, 48])
    env = Env()
    _fill_markers(env)
    b, vas = _random_tables(env, rnd, granule, ias)
    cpu = Cpu(env)
    cpu.enable_mmu(b.ttb, b.tsz, granule)
    c = cfg(CfgKind.S1, s1(b))
    checked = faults = 0
    for va in vas:
        for insn, write, priv in ((LDR, False, True), (LDTR, False, False), (STR, True, True)):
            smmu = _smmu_outcome(env.core, c, va, write, priv)
            got = cpu.access(va, insn)
            cpu_ok = type(got) is int                     # EventType is an IntEnum: compare types exactly
            if cpu_ok and write:
                # the store wrote X2 at the PA the CPU chose: check it landed where the SMMU says, restore
                assert type(smmu) is int, f"va {va:#x}: CPU stored, SMMU says {smmu!r}"
                assert env.bus.read64(smmu & ~7) == 0x5151_5151, f"va {va:#x}: store not at SMMU PA {smmu:#x}"
                env.bus.write64(smmu & ~7, smmu & ~7)
                checked += 1
                continue
            if cpu_ok:
                assert type(smmu) is int and smmu == got, f"va {va:#x} insn {insn:#x}: SMMU {smmu!r} CPU {got:#x}"
            else:
                faults += 1
                assert smmu == got == FAULT, f"va {va:#x} insn {insn:#x}: SMMU {smmu!r} CPU {got!r}"
            checked += 1
    assert checked >= 3 * len(vas) and faults > 0 and checked - faults > 0
