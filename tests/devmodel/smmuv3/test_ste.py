"""STE and L1STD layouts (IHI 0070 5.1, 5.2) against Linux masks, round trip, and STE validation."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devmodel.smmuv3 import ste as S
from devmodel.smmuv3.config import StreamWorld
from devmodel.smmuv3.fault import EventType
from devmodel.smmuv3.regs import SmmuFeatures


def genmask(hi: int, lo: int) -> int:
    return ((1 << (hi - lo + 1)) - 1) << lo


# (field, 64-bit word index, Linux mask) -- drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h STRTAB_STE_*;
# value is the all-ones field value (addresses as byte addresses).
LINUX_STE = [
    ("v", 0, 1 << 0),                                   # STRTAB_STE_0_V
    ("config", 0, genmask(3, 1)),                       # STRTAB_STE_0_CFG
    ("s1fmt", 0, genmask(5, 4)),                        # STRTAB_STE_0_S1FMT
    ("s1contextptr", 0, genmask(51, 6)),                # STRTAB_STE_0_S1CTXPTR_MASK (address)
    ("s1cdmax", 0, genmask(63, 59)),                    # STRTAB_STE_0_S1CDMAX
    ("s1dss", 1, genmask(1, 0)),                        # STRTAB_STE_1_S1DSS
    ("s1cir", 1, genmask(3, 2)),                        # STRTAB_STE_1_S1CIR
    ("s1cor", 1, genmask(5, 4)),                        # STRTAB_STE_1_S1COR
    ("s1csh", 1, genmask(7, 6)),                        # STRTAB_STE_1_S1CSH
    ("s1stalld", 1, 1 << 27),                           # STRTAB_STE_1_S1STALLD
    ("eats", 1, genmask(29, 28)),                       # STRTAB_STE_1_EATS
    ("strw", 1, genmask(31, 30)),                       # STRTAB_STE_1_STRW
    ("shcfg", 1, genmask(45, 44)),                      # STRTAB_STE_1_SHCFG
    ("s2vmid", 2, genmask(15, 0)),                      # STRTAB_STE_2_S2VMID
    ("s2t0sz", 2, genmask(5, 0) << 32),                 # STRTAB_STE_2_VTCR(GENMASK(50,32)) + VTCR_S2T0SZ
    ("s2sl0", 2, genmask(7, 6) << 32),                  # VTCR_S2SL0
    ("s2ir0", 2, genmask(9, 8) << 32),                  # VTCR_S2IR0
    ("s2or0", 2, genmask(11, 10) << 32),                # VTCR_S2OR0
    ("s2sh0", 2, genmask(13, 12) << 32),                # VTCR_S2SH0
    ("s2tg", 2, genmask(15, 14) << 32),                 # VTCR_S2TG
    ("s2ps", 2, genmask(18, 16) << 32),                 # VTCR_S2PS
    ("s2aa64", 2, 1 << 51),                             # STRTAB_STE_2_S2AA64
    ("s2endi", 2, 1 << 52),                             # STRTAB_STE_2_S2ENDI
    ("s2ptw", 2, 1 << 54),                              # STRTAB_STE_2_S2PTW
    ("s2s", 2, 1 << 57),                                # STRTAB_STE_2_S2S
    ("s2r", 2, 1 << 58),                                # STRTAB_STE_2_S2R
    ("s2ttb", 3, genmask(51, 4)),                       # STRTAB_STE_3_S2TTB_MASK (address)
    # QEMU include/hw/arm/smmuv3-common.h STE_5 (word 5 = bits [191:160]): S2AFFD 21, S2HD 23, S2HA 24
    ("s2affd", 2, 1 << (32 + 21)),
    ("s2hd", 2, 1 << (32 + 23)),
    ("s2ha", 2, 1 << (32 + 24)),
]
ADDRESS_FIELDS = {"s1contextptr", "s2ttb"}


def _all_ones(field: str, word_mask: int) -> int:
    if field in ADDRESS_FIELDS:
        return word_mask
    lo = (word_mask & -word_mask).bit_length() - 1
    return word_mask >> lo


@pytest.mark.parametrize("field,word,mask", LINUX_STE, ids=[x[0] for x in LINUX_STE])
def test_ste_field_matches_linux_mask(field: str, word: int, mask: int) -> None:
    raw = S.encode(S.Ste(**{field: _all_ones(field, mask)}))
    words = [int.from_bytes(raw[i * 8:i * 8 + 8], "little") for i in range(8)]
    assert words[word] == mask
    assert all(w == 0 for i, w in enumerate(words) if i != word)
    back = S.decode(raw)
    assert getattr(back, field) == _all_ones(field, mask)


def test_l1std_matches_linux_masks() -> None:
    # STRTAB_L1_DESC_SPAN GENMASK_ULL(4, 0), STRTAB_L1_DESC_L2PTR_MASK GENMASK_ULL(51, 6)
    assert int.from_bytes(S.encode_l1(S.L1Std(span=31)), "little") == genmask(4, 0)
    assert int.from_bytes(S.encode_l1(S.L1Std(l2ptr=genmask(51, 6))), "little") == genmask(51, 6)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**512 - 1))
def test_ste_round_trip(raw: int) -> None:
    ste = S.decode(raw.to_bytes(64, "little"))
    assert ste.raw == raw
    assert int.from_bytes(S.encode(ste), "little") == raw & S.STE_LAYOUT.defined_mask


F = SmmuFeatures()
S2 = dict(v=1, config=S.CONFIG_S2, s2vmid=5, s2t0sz=24, s2sl0=1, s2tg=0, s2ps=2, s2aa64=1, s2r=1,
          s2ttb=0x4050_0000)


def bad(feat: SmmuFeatures = F, **kw: int) -> str:
    f = S.validate(S.Ste(**kw), feat, sid=9)
    assert f is not None and f.type == EventType.C_BAD_STE and f.sid == 9
    return f.reason


def test_valid_configs_pass() -> None:
    assert S.validate(S.Ste(**S2), F) is None
    assert S.validate(S.Ste(v=1, config=S.CONFIG_BYPASS), F) is None
    assert S.validate(S.Ste(v=1, config=S.CONFIG_S1, s1cdmax=4, s1fmt=1), F) is None
    assert S.validate(S.Ste(v=1, config=0b010), F) is None      # reserved 0b0xx: abort, no event
    assert S.validate(S.Ste(v=1, config=S.CONFIG_BYPASS, s2aa64=0, s2tg=3), F) is None  # S2 fields IGNORED


@pytest.mark.parametrize("kw,feat,needle", [
    (dict(v=0, config=S.CONFIG_BYPASS), F, "V == 0"),
    (dict(v=1, config=S.CONFIG_S1), SmmuFeatures(s1p=False), "S1P"),
    (dict(S2), SmmuFeatures(s2p=False), "S2P"),
    (dict(v=1, config=S.CONFIG_S1, s1cdmax=21), F, "S1CDMax"),
    (dict(v=1, config=S.CONFIG_S1, s1cdmax=3, s1fmt=1), SmmuFeatures(cd2l=False), "CD2L"),
    (dict(v=1, config=S.CONFIG_S1, s1stalld=1), F, "S1STALLD"),
    (dict(v=1, config=S.CONFIG_S1, strw=0b01), F, "STRW"),
    (dict(v=1, config=S.CONFIG_S1, strw=0b11), F, "STRW"),
    (dict(S2, s2aa64=0), F, "S2AA64"),
    (dict(S2, s2vmid=0x100), SmmuFeatures(vmid16=False), "VMID16"),
    (dict(S2, s2tg=3), F, "S2TG"),
    (dict(S2, s2tg=2), SmmuFeatures(gran16k=False), "16KB"),
    (dict(S2, s2t0sz=15), F, "S2T0SZ"),
    (dict(S2, s2t0sz=40), F, "S2T0SZ"),
    (dict(S2, s2sl0=3), F, "reserved"),
    (dict(S2, s2sl0=0), F, "inconsistent"),          # 40-bit IPA cannot start at level 2 with 4KB
    (dict(S2, s2endi=1), F, "S2ENDI"),
    (dict(S2, s2s=1), F, "S2S"),
    (dict(S2, s2ttb=1 << 48), F, "OAS"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_illegal_ste_classes(kw: dict, feat: SmmuFeatures, needle: str) -> None:
    assert needle in bad(feat, **kw)


def test_ats_eats_rules() -> None:
    fa = SmmuFeatures(ats=True)
    assert "EATS" in bad(fa, **dict(S2, eats=0b10))
    assert "EATS" in bad(SmmuFeatures(ats=True, stall_model=0), **dict(S2, eats=0b01, s2s=1))
    assert S.validate(S.Ste(**dict(S2, eats=0b10)), F) is None      # IGNORED without IDR0.ATS


@pytest.mark.parametrize("gran_tg,sl0,t0sz,ok", [
    (0, 2, 16, True), (0, 2, 25, False), (0, 1, 21, True), (0, 1, 34, False), (0, 0, 30, True),
    (1, 0, 31, True), (1, 0, 30, False), (1, 1, 18, True), (1, 2, 16, True), (1, 2, 22, False),
    (2, 2, 17, True), (2, 1, 17, False), (2, 1, 28, True), (2, 1, 39, False), (2, 0, 36, True),
])
def test_s2_start_level_vs_t0sz(gran_tg: int, sl0: int, t0sz: int, ok: bool) -> None:
    # Arm ARM VTCR_EL2 tables: 4KB SL0=2 (L0) T0SZ 16..24, SL0=1 (L1) 21..33, SL0=0 (L2) 30..39;
    # 64KB SL0=0 (L3) 31..39, SL0=1 (L2) 18..34 (with concatenation), SL0=2 (L1) 16..21;
    # 16KB SL0=2 (L1) 16..27, SL0=1 (L2) 24..38 (with concatenation), SL0=0 (L3) 35..39.
    r = S.validate(S.Ste(**dict(S2, s2tg=gran_tg, s2sl0=sl0, s2t0sz=t0sz)), F)
    assert (r is None) == ok, r


def test_s2_config_decode() -> None:
    c = S.s2_config(S.Ste(**dict(S2, s2ps=6, s2tg=1, s2sl0=1, s2t0sz=20)), SmmuFeatures(oas=48))
    assert (c.vmid, c.tg, c.ps, c.t0sz, c.sl0, c.vttb, c.record) == (5, 65536, 48, 20, 1, 0x4050_0000, True)
    c8 = S.s2_config(S.Ste(**dict(S2, s2vmid=0x1234)), SmmuFeatures(vmid16=False))
    assert c8.vmid == 0x34


def test_stream_world() -> None:
    s1 = S.Ste(v=1, config=S.CONFIG_S1, strw=0b10)
    assert S.stream_world(s1, F, e2h=False) == StreamWorld.EL2
    assert S.stream_world(s1, F, e2h=True) == StreamWorld.EL2_E2H
    assert S.stream_world(dataclasses.replace(s1, config=S.CONFIG_NESTED), F, e2h=True) == StreamWorld.NS_EL1
    assert S.stream_world(s1, SmmuFeatures(hyp=False), e2h=True) == StreamWorld.NS_EL1
