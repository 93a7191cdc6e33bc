"""SMMUv3 register file (IHI 0070 6.3): reset values, access behaviour, handshakes.

Expected ID register values are built from Linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h masks
(IDR0_*, IDR1_*, IDR5_*), written here independently of the model's declarations."""
from __future__ import annotations

import pytest

from devmodel.smmuv3 import commands as C
from devmodel.smmuv3.regs import SmmuFeatures

from .bench import (CMDQ, CMDQ_BASE, CMDQ_CONS, CMDQ_PROD, CR0, CR0ACK, CR1, CR2, EVTQ_BASE, EVTQ_CONS, EVTQ_PROD,
                    EVTQ_IRQ_CFG0, GBPA, GERROR, GERROR_IRQ_CFG0, GERROR_IRQ_CFG1, GERRORN, IDR0, IDR1, IDR3, IDR5,
                    IRQ_CTRL, IRQ_CTRLACK, MSI, STRTAB_BASE, STRTAB_BASE_CFG, Bench)

# --- Linux arm-smmu-v3.h ---
IDR0_ST_LVL_SHIFT = 27            # GENMASK(28, 27)
IDR0_STALL_MODEL_SHIFT = 24       # GENMASK(25, 24)
IDR0_TTENDIAN_SHIFT = 21          # GENMASK(22, 21)
IDR0_CD2L = 1 << 19
IDR0_VMID16 = 1 << 18
IDR0_PRI = 1 << 16
IDR0_SEV = 1 << 14
IDR0_MSI = 1 << 13
IDR0_ASID16 = 1 << 12
IDR0_ATS = 1 << 10
IDR0_HYP = 1 << 9
IDR0_HTTU_SHIFT = 6               # GENMASK(7, 6)
IDR0_BTM = 1 << 5                 # (QEMU FIELD(IDR0, BTM, 5, 1); Linux IDR0_BTM (1 << 5))
IDR0_COHACC = 1 << 4
IDR0_TTF_SHIFT = 2                # GENMASK(3, 2), IDR0_TTF_AARCH64 = 2
IDR0_S1P = 1 << 1
IDR0_S2P = 1 << 0
IDR1_CMDQS_SHIFT, IDR1_EVTQS_SHIFT, IDR1_PRIQS_SHIFT = 21, 16, 11   # GENMASK(25,21) (20,16) (15,11)
IDR1_SSIDSIZE_SHIFT, IDR1_SIDSIZE_SHIFT = 6, 0                     # GENMASK(10,6) (5,0)
IDR3_RIL = 1 << 10
IDR5_GRAN64K, IDR5_GRAN16K, IDR5_GRAN4K = 1 << 6, 1 << 5, 1 << 4
IDR5_OAS_48_BIT, IDR5_OAS_44_BIT = 5, 4
CR0_CMDQEN, CR0_EVTQEN, CR0_SMMUEN = 1 << 3, 1 << 2, 1 << 0
CR2_PTM, CR2_RECINVSID, CR2_E2H = 1 << 2, 1 << 1, 1 << 0
GBPA_UPDATE, GBPA_ABORT = 1 << 31, 1 << 20
IRQ_CTRL_EVTQ_IRQEN, IRQ_CTRL_GERROR_IRQEN = 1 << 2, 1 << 0
GERROR_CMDQ_ERR = 1 << 0
GERROR_ERR_MASK = 0x1FD
CMDQ_CONS_ERR_SHIFT = 24          # GENMASK(30, 24)
Q_OVERFLOW_FLAG = 1 << 31


def test_id_registers_default_features(bench: Bench) -> None:
    want0 = (IDR0_S2P | IDR0_S1P | (2 << IDR0_TTF_SHIFT) | IDR0_COHACC | IDR0_HYP | IDR0_ASID16 | IDR0_MSI
             | IDR0_SEV | IDR0_VMID16 | IDR0_CD2L | (2 << IDR0_TTENDIAN_SHIFT) | (1 << IDR0_STALL_MODEL_SHIFT)
             | (1 << IDR0_ST_LVL_SHIFT))
    assert bench.r32(IDR0) == want0
    assert bench.r32(IDR1) == (19 << IDR1_CMDQS_SHIFT) | (19 << IDR1_EVTQS_SHIFT) | (20 << IDR1_SSIDSIZE_SHIFT) \
        | (16 << IDR1_SIDSIZE_SHIFT)
    assert bench.r32(IDR3) == IDR3_RIL
    assert bench.r32(IDR5) == IDR5_GRAN64K | IDR5_GRAN16K | IDR5_GRAN4K | IDR5_OAS_48_BIT


def test_id_registers_follow_features() -> None:
    f = SmmuFeatures(btm=True, vmid16=False, asid16=False, s1p=False, httu=2, sidsize=8, ssidsize=0, cmdqs=8,
                     eventqs=7, ril=False, gran16k=False, oas=44, st_level_2=False, msi=False)
    b = Bench(f)
    idr0 = b.r32(IDR0)
    assert idr0 & IDR0_BTM and not idr0 & IDR0_VMID16 and not idr0 & IDR0_ASID16 and not idr0 & IDR0_S1P
    assert (idr0 >> IDR0_HTTU_SHIFT) & 3 == 2 and not idr0 & IDR0_MSI and (idr0 >> IDR0_ST_LVL_SHIFT) & 3 == 0
    assert b.r32(IDR1) == (8 << IDR1_CMDQS_SHIFT) | (7 << IDR1_EVTQS_SHIFT) | 8
    assert b.r32(IDR3) == 0
    assert b.r32(IDR5) == IDR5_GRAN64K | IDR5_GRAN4K | IDR5_OAS_44_BIT


def test_id_registers_are_read_only(bench: Bench) -> None:
    before = [bench.r32(o) for o in (IDR0, IDR1, IDR5, 0x18, 0x1C)]
    for o in (IDR0, IDR1, IDR5, 0x18, 0x1C):
        bench.w32(o, 0xFFFF_FFFF)
    assert [bench.r32(o) for o in (IDR0, IDR1, IDR5, 0x18, 0x1C)] == before
    assert bench.r32(0x1C) == 0x02         # AIDR: SMMUv3.2


def test_reset_values_of_control_registers(bench: Bench) -> None:
    assert bench.r32(CR0) == bench.r32(CR0ACK) == 0
    assert bench.r32(CR1) == 0
    assert bench.r32(CR2) == 0                        # BTM=0: PTM is RES0
    assert bench.r32(GBPA) == 1 << 12                 # SHCFG=use incoming, ABORT=0, UPDATE=0
    assert bench.r32(GERROR) == bench.r32(GERRORN) == 0
    assert bench.r64(STRTAB_BASE) == 0 and bench.r32(CMDQ_PROD) == bench.r32(CMDQ_CONS) == 0
    assert bench.r32(EVTQ_PROD) == bench.r32(EVTQ_CONS) == 0


def test_ptm_resets_to_one_with_btm_and_is_writable_while_disabled() -> None:
    b = Bench(SmmuFeatures(btm=True))
    assert b.r32(CR2) == CR2_PTM                       # documented pick (regs.py)
    b.w32(CR2, CR2_RECINVSID)
    assert b.r32(CR2) == CR2_RECINVSID
    b.w32(CR0, CR0_SMMUEN)
    b.w32(CR2, CR2_PTM)                                # RO while SMMUEN=1
    assert b.r32(CR2) == CR2_RECINVSID


def test_e2h_is_res0_without_hyp() -> None:
    b = Bench(SmmuFeatures(hyp=False))
    b.w32(CR2, CR2_E2H | CR2_RECINVSID)
    assert b.r32(CR2) == CR2_RECINVSID


def test_cr0_cr0ack_handshake(bench: Bench) -> None:
    bench.w32(CR0, CR0_EVTQEN | CR0_CMDQEN)
    assert bench.r32(CR0ACK) == CR0_EVTQEN | CR0_CMDQEN
    bench.w32(CR0, 0xFFFF_FFFF)                        # RES0 bits (and PRIQEN/ATSCHK without PRI/ATS) stay 0
    assert bench.r32(CR0) == bench.r32(CR0ACK) == CR0_SMMUEN | CR0_EVTQEN | CR0_CMDQEN
    bench.w32(CR0, 0)
    assert bench.r32(CR0ACK) == 0


def test_gbpa_update_handshake(bench: Bench) -> None:
    bench.w32(GBPA, GBPA_ABORT)                        # no UPDATE: IGNORED (SMMUv3.2)
    assert bench.r32(GBPA) == 1 << 12
    assert bench.smmu.translate(1, None, 0x1000).pa == 0x1000
    bench.w32(GBPA, GBPA_UPDATE | GBPA_ABORT)
    assert bench.r32(GBPA) == GBPA_ABORT               # update completed: UPDATE reads 0
    f = bench.smmu.translate(1, None, 0x1000)
    assert not hasattr(f, "pa") and not f.record       # abort, no event
    bench.w32(GBPA, GBPA_UPDATE)
    assert bench.smmu.translate(1, None, 0x2000).pa == 0x2000


def test_irq_ctrl_handshake(bench: Bench) -> None:
    bench.w32(IRQ_CTRL, 0xFF)
    assert bench.r32(IRQ_CTRL) == bench.r32(IRQ_CTRLACK) == IRQ_CTRL_EVTQ_IRQEN | IRQ_CTRL_GERROR_IRQEN
    bench.w32(IRQ_CTRLACK, 0)                          # RO
    assert bench.r32(IRQ_CTRLACK) == IRQ_CTRL_EVTQ_IRQEN | IRQ_CTRL_GERROR_IRQEN


def test_gerror_gerrorn_toggle_semantics(bench: Bench) -> None:
    bench.setup()
    bench.w32(IRQ_CTRL, IRQ_CTRL_GERROR_IRQEN)
    bench.submit(bytes(16))                            # opcode 0: CERROR_ILL
    assert bench.r32(GERROR) == GERROR_CMDQ_ERR and bench.r32(GERRORN) == 0
    assert bench.irqs == ["gerror"]
    bench.w32(GERROR, 0)                               # GERROR is RO
    assert bench.r32(GERROR) == GERROR_CMDQ_ERR
    # ack without fixing the command: consumption resumes, hits the same command, and the SMMU toggles
    # GERROR again (now 0 against GERRORN=1): active again
    bench.w32(GERRORN, GERROR_CMDQ_ERR)
    assert bench.r32(GERROR) == 0 and bench.r32(GERRORN) == GERROR_CMDQ_ERR
    assert bench.smmu.gerror_active() == GERROR_CMDQ_ERR and bench.irqs == ["gerror", "gerror"]
    # Linux's recovery: replace the bad command with CMD_SYNC, then ack by writing GERRORN = GERROR
    bench.bus.write_bytes(CMDQ, C.encode("CMD_SYNC"))
    bench.w32(GERRORN, bench.r32(GERROR))
    assert bench.smmu.gerror_active() == 0
    assert bench.r32(GERROR) & GERROR_ERR_MASK == bench.r32(GERRORN) & GERROR_ERR_MASK
    assert bench.cons() == 1


def test_64bit_registers_take_32bit_halves_and_other_sizes_are_raz_wi(bench: Bench) -> None:
    bench.w32(STRTAB_BASE, 0x1234_5640)
    bench.w32(STRTAB_BASE + 4, 0x0000_0089)
    assert bench.r64(STRTAB_BASE) == 0x89_1234_5640
    assert bench.r32(STRTAB_BASE + 4) == 0x89
    bench.smmu.write(STRTAB_BASE, 0xFF, 1)             # byte access: WI
    bench.smmu.write(STRTAB_BASE + 2, 0xFFFF, 4)       # misaligned: WI
    bench.smmu.write(CR0, 1, 8)                        # 64-bit access to a 32-bit register: WI
    assert bench.r64(STRTAB_BASE) == 0x89_1234_5640 and bench.r32(CR0) == 0
    assert bench.smmu.read(STRTAB_BASE, 2) == 0 and bench.smmu.read(CR0 + 1, 4) == 0
    assert bench.r32(0x30) == 0 and bench.r32(0x1FFFC) == 0 and bench.smmu.read(0x30000, 4) == 0
    bench.w32(0x30, 0xFFFF_FFFF)                       # unallocated: WI, no exception


def test_address_fields_drop_res0_bits(bench: Bench) -> None:
    bench.w64(STRTAB_BASE, 2**64 - 1)
    assert bench.r64(STRTAB_BASE) == 0x000F_FFFF_FFFF_FFC0 | (1 << 62)   # ADDR[51:6] + RA (Linux masks)
    bench.w64(CMDQ_BASE, 2**64 - 1)
    assert bench.r64(CMDQ_BASE) == 0x000F_FFFF_FFFF_FFE0 | (1 << 62) | 0x1F   # Q_BASE_ADDR_MASK + RWA + LOG2SIZE
    bench.w64(GERROR_IRQ_CFG0, 2**64 - 1)
    assert bench.r64(GERROR_IRQ_CFG0) == 0x000F_FFFF_FFFF_FFFC                # MSI_CFG0_ADDR_MASK [51:2]


def test_state_dependent_locks(bench: Bench) -> None:
    bench.setup()
    for off in (STRTAB_BASE, CMDQ_BASE, EVTQ_BASE):
        before = bench.r64(off)
        bench.w64(off, 0x1000)
        assert bench.r64(off) == before
    bench.w32(STRTAB_BASE_CFG, 0)
    assert bench.r32(STRTAB_BASE_CFG) != 0
    bench.w32(CMDQ_CONS, 5)                            # RO while CMDQEN
    assert bench.r32(CMDQ_CONS) == 0
    bench.w32(IRQ_CTRL, IRQ_CTRL_GERROR_IRQEN)
    bench.w64(GERROR_IRQ_CFG0, MSI)                    # RO while GERROR_IRQEN
    assert bench.r64(GERROR_IRQ_CFG0) == 0
    bench.w32(CR0, 0)
    bench.w64(CMDQ_BASE, CMDQ | 3)
    assert bench.r64(CMDQ_BASE) == CMDQ | 3


def test_evtq_pointers_on_page1_with_page0_alias(bench: Bench) -> None:
    bench.w32(EVTQ_CONS, 3)
    assert bench.r32(0xAC) == 3 and bench.r32(EVTQ_CONS) == 3
    bench.w32(0xA8, 2)
    assert bench.r32(EVTQ_PROD) == 2
    b = Bench(SmmuFeatures(evtq_page0_alias=False))
    b.w32(0xAC, 3)
    assert b.r32(EVTQ_CONS) == 0 and b.r32(0xAC) == 0


def test_msi_cfg_registers_are_res0_without_msi() -> None:
    b = Bench(SmmuFeatures(msi=False))
    b.w64(EVTQ_IRQ_CFG0, MSI)
    b.w32(GERROR_IRQ_CFG1, 0x55)
    assert b.r64(EVTQ_IRQ_CFG0) == 0 and b.r32(GERROR_IRQ_CFG1) == 0


def test_cmdq_cons_err_field_position(bench: Bench) -> None:
    bench.setup()
    bench.submit(bytes(16))
    assert (bench.r32(CMDQ_CONS) >> CMDQ_CONS_ERR_SHIFT) & 0x7F == 1     # CMDQ_ERR_CERROR_ILL_IDX


def test_evtq_prod_overflow_flag_position(bench: Bench) -> None:
    bench.w32(EVTQ_PROD, Q_OVERFLOW_FLAG | 1)          # writable while EVTQEN=0
    assert bench.r32(EVTQ_PROD) == Q_OVERFLOW_FLAG | 1
    bench.w32(EVTQ_CONS, Q_OVERFLOW_FLAG)
    assert bench.r32(EVTQ_CONS) == Q_OVERFLOW_FLAG


@pytest.mark.parametrize("bits", [32, 36, 40, 42, 44, 48, 52])
def test_oas_encodings(bits: int) -> None:
    enc = {32: 0, 36: 1, 40: 2, 42: 3, 44: 4, 48: 5, 52: 6}[bits]       # Linux IDR5_OAS_*_BIT
    assert Bench(SmmuFeatures(oas=bits)).r32(IDR5) & 7 == enc


def test_bad_feature_values_are_rejected_with_the_value() -> None:
    with pytest.raises(ValueError, match="47"):
        SmmuFeatures(oas=47)
    with pytest.raises(ValueError, match="sidsize=33"):
        SmmuFeatures(sidsize=33)


def test_queue_regs_exist_at_linux_offsets(bench: Bench) -> None:
    bench.w64(CMDQ_BASE, CMDQ | 5)
    bench.w32(CMDQ_PROD, 7)
    assert bench.smmu.read(0x90, 8) == CMDQ | 5 and bench.smmu.read(0x98, 4) == 7
