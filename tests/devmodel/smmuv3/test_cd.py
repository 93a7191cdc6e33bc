"""CD and L1CD layouts (IHI 0070 5.3, 5.4) against Linux masks, round trip, and CD validation."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devmodel.smmuv3 import cd as CD
from devmodel.smmuv3.config import StreamWorld
from devmodel.smmuv3.fault import EventType
from devmodel.smmuv3.regs import SmmuFeatures

from .test_ste import genmask

# Linux drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h CTXDESC_CD_* (word index, mask)
LINUX_CD = [
    ("t0sz", 0, genmask(5, 0)),        # CTXDESC_CD_0_TCR_T0SZ
    ("tg0", 0, genmask(7, 6)),         # CTXDESC_CD_0_TCR_TG0
    ("ir0", 0, genmask(9, 8)),         # CTXDESC_CD_0_TCR_IRGN0
    ("or0", 0, genmask(11, 10)),       # CTXDESC_CD_0_TCR_ORGN0
    ("sh0", 0, genmask(13, 12)),       # CTXDESC_CD_0_TCR_SH0
    ("epd0", 0, 1 << 14),              # CTXDESC_CD_0_TCR_EPD0
    ("endi", 0, 1 << 15),              # CTXDESC_CD_0_ENDI
    ("epd1", 0, 1 << 30),              # CTXDESC_CD_0_TCR_EPD1
    ("v", 0, 1 << 31),                 # CTXDESC_CD_0_V
    ("ips", 0, genmask(34, 32)),       # CTXDESC_CD_0_TCR_IPS
    ("aa64", 0, 1 << 41),              # CTXDESC_CD_0_AA64
    ("hd", 0, 1 << 42),                # CTXDESC_CD_0_TCR_HD
    ("ha", 0, 1 << 43),                # CTXDESC_CD_0_TCR_HA
    ("s", 0, 1 << 44),                 # CTXDESC_CD_0_S
    ("r", 0, 1 << 45),                 # CTXDESC_CD_0_R
    ("a", 0, 1 << 46),                 # CTXDESC_CD_0_A
    ("aset", 0, 1 << 47),              # CTXDESC_CD_0_ASET
    ("asid", 0, genmask(63, 48)),      # CTXDESC_CD_0_ASID
    ("ttb0", 1, genmask(51, 4)),       # CTXDESC_CD_1_TTB0_MASK (address)
    # QEMU include/hw/arm/smmuv3-common.h CD_0/CD_1/CD_4 (32-bit words)
    ("t1sz", 0, genmask(21, 16)),      # CD_0 TSZ1 16,6
    ("tg1", 0, genmask(23, 22)),       # CD_0 TG1 22,2
    ("affd", 0, 1 << 35),              # CD_1 AFFD 3
    ("tbi", 0, genmask(39, 38)),       # CD_1 TBI 6,2 (Linux CTXDESC_CD_0_TCR_TBI0 is bit 38)
    ("had0", 1, 1 << 1),               # CD_2 HAD0 1
    ("ttb1", 2, genmask(51, 4)),       # CD_4/CD_5 TTB1
    ("had1", 2, 1 << 1),               # CD_4 HAD1 1
]
ADDR = {"ttb0", "ttb1"}


@pytest.mark.parametrize("field,word,mask", LINUX_CD, ids=[x[0] for x in LINUX_CD])
def test_cd_field_matches_linux_mask(field: str, word: int, mask: int) -> None:
    value = mask if field in ADDR else mask >> ((mask & -mask).bit_length() - 1)
    raw = CD.encode(CD.Cd(**{field: value}))
    words = [int.from_bytes(raw[i * 8:i * 8 + 8], "little") for i in range(8)]
    assert words[word] == mask and all(w == 0 for i, w in enumerate(words) if i != word)
    assert getattr(CD.decode(raw), field) == value


def test_l1cd_matches_linux_masks() -> None:
    # CTXDESC_L1_DESC_V (1UL << 0), CTXDESC_L1_DESC_L2PTR_MASK GENMASK_ULL(51, 12)
    assert int.from_bytes(CD.encode_l1(CD.L1Cd(v=1)), "little") == 1
    assert int.from_bytes(CD.encode_l1(CD.L1Cd(l2ptr=genmask(51, 12))), "little") == genmask(51, 12)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**512 - 1))
def test_cd_round_trip(raw: int) -> None:
    cd = CD.decode(raw.to_bytes(64, "little"))
    assert int.from_bytes(CD.encode(cd), "little") == raw & CD.CD_LAYOUT.defined_mask


F = SmmuFeatures()
GOOD = CD.Cd(v=1, aa64=1, t0sz=16, tg0=0, epd1=1, ips=5, asid=7, r=1, ttb0=0x4060_0000)


def test_valid_cd_and_decode() -> None:
    assert CD.validate(GOOD, F) is None
    c = CD.s1_config(dataclasses.replace(GOOD, tg0=2, tg1=3, ips=6, aset=1), F)
    assert (c.tg0, c.tg1, c.ips, c.asid, c.aset, c.ttb0, c.record) == (16384, 65536, 48, 7, True,
                                                                       0x4060_0000, True)


@pytest.mark.parametrize("change,feat,needle", [
    (dict(v=0), F, "V == 0"),
    (dict(aa64=0), F, "AA64"),
    (dict(endi=1), F, "ENDI"),
    (dict(asid=0x100), SmmuFeatures(asid16=False), "ASID16"),
    (dict(s=1), F, "CD.S=1"),
    (dict(tg0=3), F, "TG0"),
    (dict(tg0=1), SmmuFeatures(gran64k=False), "64KB"),
    (dict(t0sz=15), F, "T0SZ"),
    (dict(t0sz=40), F, "T0SZ"),
    (dict(epd1=0, tg1=0), F, "TG1"),
    (dict(ttb0=1 << 48), F, "OAS"),
])
def test_illegal_cd_classes(change: dict, feat: SmmuFeatures, needle: str) -> None:
    f = CD.validate(dataclasses.replace(GOOD, **change), feat, sid=3, ssid=4)
    assert f is not None and f.type == EventType.C_BAD_CD and (f.sid, f.ssid) == (3, 4)
    assert needle in f.reason


def test_disabled_halves_are_not_checked_and_el2_ignores_ttb1() -> None:
    assert CD.validate(dataclasses.replace(GOOD, epd0=1, t0sz=0, tg0=3, epd1=1), F) is None
    el2 = dataclasses.replace(GOOD, epd1=0, tg1=0)
    assert CD.validate(el2, F, world=StreamWorld.EL2) is None
    assert CD.validate(el2, F, world=StreamWorld.NS_EL1) is not None


def test_s1stalld_forbids_cd_stall() -> None:
    stall = SmmuFeatures(stall_model=0)
    assert CD.validate(dataclasses.replace(GOOD, s=1), stall) is None
    assert CD.validate(dataclasses.replace(GOOD, s=1), stall, s1stalld=True) is not None
