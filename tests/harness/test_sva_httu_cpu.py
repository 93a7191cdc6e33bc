"""HTTU on shared page tables, seen by the CPU (IHI 0070 3.13; DDI 0487 D8.5): a vCPU runs with its MMU on over
stage-1 tables in its RAM; an SMMU context descriptor shares those tables (SVA: CD.TTB0 = the CPU's TTBR0, with
CD.HA/HD); a DMA test device writes through the SMMU. The vCPU itself then loads its own descriptors (through a
VA mapping of its leaf table) and finds the Access flag and the dirty state the SMMU set, and a store by the vCPU
to a descriptor (making a page read-only, as software does before writing it back) is never overwritten by the
SMMU's later update."""
from __future__ import annotations

import pytest

pytest.importorskip("unicorn")
from unicorn.arm64_const import UC_ARM64_REG_PSTATE, UC_ARM64_REG_TTBR0_EL1, UC_ARM64_REG_X0, UC_ARM64_REG_X1  # noqa: E402

from devmodel.dmatest import CMD_WRITE64, DmaTestDevice, STATUS_DONE, STATUS_FAULT  # noqa: E402
from devmodel.pagetable import PERM_R, PERM_W, PERM_X, PageAllocator, PageTableBuilder  # noqa: E402
from devmodel.smmuv3 import cd as CD  # noqa: E402
from devmodel.smmuv3 import ste as S  # noqa: E402
from devmodel.smmuv3.device import MMIO_SIZE, SMMUv3  # noqa: E402
from devmodel.smmuv3.fault import EventType  # noqa: E402
from devmodel.smmuv3.regs import SmmuFeatures  # noqa: E402
from harness.machine import Machine  # noqa: E402

RAM = 0x4000_0000                   # the VM's RAM at IPA = PA (a host process's tables stand in)
SMMU_PA, DMA_PA = 0x0905_0000, 0x0910_0000
STRTAB, EVTQ, CDTAB, TABLES = RAM + 0x30_0000, RAM + 0x31_0000, RAM + 0x32_0000, RAM + 0x40_0000
CODE_PA, DATA_PA = RAM + 0x20_0000, RAM + 0x28_0000
CODE_VA, DATA_VA, PTE_VA = 0x0, 0x10_0000, 0x20_0000
AF, AP2, DBM = 1 << 10, 1 << 7, 1 << 51
LDR_X1_X0, STR_X1_X0, ISB = 0xF9400001, 0xF9000001, 0xD5033FDF


class Sva:
    def __init__(self) -> None:
        self.m = Machine(console=lambda vm, data, stream: None, tcg_buffer_size=8 << 20)
        self.vm = self.m.add_vm(ram_size=64 << 20, ram_pa=RAM, ram_ipa=RAM, start_el=1)
        self.v = self.vm.vcpus[0]
        self.pt = PageTableBuilder(self.vm.ipa, PageAllocator(self.vm.ipa, TABLES, 4 << 20), granule=4096, ias=39)
        self.smmu = SMMUv3(self.m.bus, SmmuFeatures(httu=2, stall_model=1))
        self.m.add_device(SMMU_PA, MMIO_SIZE, self.smmu)
        self.dma = DmaTestDevice(self.m.bus, self.smmu.translate, sid=1)
        self.m.add_device(DMA_PA, 0x1000, self.dma)

    def share(self) -> None:
        """Tables built: the vCPU's MMU on over them (TTBR0_EL1, 39-bit VA, 4K) and the SMMU's CD on the same."""
        uc = self.v.uc
        uc.reg_write(UC_ARM64_REG_PSTATE, (0xF << 6) | 0b0101)                       # EL1h
        tcr = (5 << 32) | (2 << 30) | (1 << 23) | (16 << 16) | (3 << 12) | (1 << 10) | (1 << 8) | self.pt.tsz
        uc.reg_write(UC_ARM64_REG_TTBR0_EL1, self.pt.ttb)
        uc.cpr_write(3, 0, 10, 2, 0, 0xFF)                                           # MAIR_EL1
        uc.cpr_write(3, 0, 2, 0, 2, tcr)                                             # TCR_EL1
        uc.cpr_write(3, 0, 1, 0, 0, (uc.cpr_read(3, 0, 1, 0, 0) | 1) & ~(1 << 1))    # SCTLR_EL1.M
        self.v.flush_tlb()
        bus, s = self.m.bus, self.smmu
        bus.write_bytes(CDTAB, CD.encode(CD.Cd(v=1, aa64=1, r=1, a=1, ha=1, hd=1, t0sz=self.pt.tsz, tg0=0, ips=5,
                                               epd1=1, asid=7, ttb0=self.pt.ttb)))
        bus.write_bytes(STRTAB + 64, S.encode(S.Ste(v=1, config=S.CONFIG_S1, s1contextptr=CDTAB)))
        s.write(0x80, STRTAB, 8)
        s.write(0x88, 4, 4)
        s.write(0xA0, EVTQ | 4, 8)
        s.write(0x20, 0b0100, 4)
        s.write(0x20, 0b0101, 4)

    def cpu(self, *words: int, x0: int = 0, x1: int = 0) -> int:
        """Run `words` at CODE_VA on the vCPU; returns X1."""
        self.vm.ipa.write_bytes(CODE_PA, b"".join(w.to_bytes(4, "little") for w in (*words, ISB)))
        self.v.flush_tlb()
        uc = self.v.uc
        uc.reg_write(UC_ARM64_REG_X0, x0)
        uc.reg_write(UC_ARM64_REG_X1, x1)
        uc.emu_start(CODE_VA, CODE_VA + 4 * (len(words) + 1), count=len(words) + 1)
        assert self.m.outcome is None, self.m.outcome
        return uc.reg_read(UC_ARM64_REG_X1)

    def device_write(self, va: int, value: int) -> int:
        self.dma.write(0x10, va, 8)
        self.dma.write(0x20, value, 8)
        self.dma.write(0x1C, CMD_WRITE64, 4)
        return self.dma.read(0x04, 4)


def board() -> tuple[Sva, int]:
    """DATA_VA: writable-clean (DBM, read-only) and never accessed (AF=0); the leaf table visible at PTE_VA."""
    s = Sva()
    s.pt.map(CODE_VA, CODE_PA, 0x1000, PERM_R | PERM_X, user=False)
    s.pt.map(DATA_VA, DATA_PA, 0x1000, PERM_R, af=False)
    ref = s.pt.update(DATA_VA, set_bits=DBM)
    s.pt.map(PTE_VA, ref.addr & ~0xFFF, 0x1000, PERM_R | PERM_W, user=False)
    s.share()
    return s, PTE_VA + (ref.addr & 0xFFF)


def test_the_cpu_reads_the_access_and_dirty_state_the_smmu_set() -> None:
    s, pte_va = board()
    before = s.cpu(LDR_X1_X0, x0=pte_va)
    assert not before & AF and before & AP2 and before & DBM                # untouched, clean
    assert s.device_write(DATA_VA + 0x10, 0x5A5A) == STATUS_DONE
    after = s.cpu(LDR_X1_X0, x0=pte_va)
    assert after == (before | AF) & ~AP2                                     # accessed, writable-dirty
    assert s.m.bus.read64(DATA_PA + 0x10) == 0x5A5A and s.smmu.core.stats["httu_updates"] == 1


def test_the_cpus_own_change_is_kept_and_the_smmu_faults() -> None:
    """The CPU makes the page read-only (clears DBM) with a store; the device's write then finds no
    writable-clean descriptor: a permission fault, and the descriptor is what the CPU wrote (plus AF)."""
    s, pte_va = board()
    pte = s.cpu(LDR_X1_X0, x0=pte_va)
    s.cpu(STR_X1_X0, x0=pte_va, x1=pte & ~DBM)
    assert s.device_write(DATA_VA, 1) == STATUS_FAULT
    assert s.dma.read(0x30, 4) == EventType.F_PERMISSION
    assert s.cpu(LDR_X1_X0, x0=pte_va) == (pte & ~DBM) | AF
