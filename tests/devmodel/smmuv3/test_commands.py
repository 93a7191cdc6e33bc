"""Command encodings (IHI 0070 chapter 4) against Linux CMDQ_* masks, round trip, CERROR_ILL rules."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devmodel.smmuv3 import commands as C
from devmodel.smmuv3.regs import SmmuFeatures

from .test_ste import genmask


def words(raw: bytes) -> tuple[int, int]:
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")


# Linux arm-smmu-v3.h CMDQ_OP_* values
LINUX_OPCODES = {"PREFETCH_CONFIG": 0x1, "CFGI_STE": 0x3, "CFGI_STE_RANGE": 0x4, "CFGI_CD": 0x5,
                 "CFGI_CD_ALL": 0x6, "TLBI_NH_ASID": 0x11, "TLBI_NH_VA": 0x12, "TLBI_EL2_ALL": 0x20,
                 "TLBI_EL2_ASID": 0x21, "TLBI_EL2_VA": 0x22, "TLBI_S12_VMALL": 0x28, "TLBI_S2_IPA": 0x2A,
                 "TLBI_NSNH_ALL": 0x30, "ATC_INV": 0x40, "PRI_RESP": 0x41, "RESUME": 0x44, "CMD_SYNC": 0x46}


@pytest.mark.parametrize("name,op", sorted(LINUX_OPCODES.items()))
def test_opcodes_match_linux(name: str, op: int) -> None:
    assert C.OPCODES[name] == op
    assert words(C.encode(name))[0] & genmask(7, 0) == op        # CMDQ_0_OP


# (command, field, value, word, Linux mask)
LINUX_FIELDS = [
    ("PREFETCH_CONFIG", "sid", 2**32 - 1, 0, genmask(63, 32)),     # CMDQ_PREFETCH_0_SID
    ("PREFETCH_ADDR", "size", 31, 1, genmask(4, 0)),               # CMDQ_PREFETCH_1_SIZE
    ("PREFETCH_ADDR", "addr", genmask(63, 12), 1, genmask(63, 12)),  # CMDQ_PREFETCH_1_ADDR_MASK
    ("CFGI_CD", "ssid", 2**20 - 1, 0, genmask(31, 12)),            # CMDQ_CFGI_0_SSID
    ("CFGI_STE", "sid", 2**32 - 1, 0, genmask(63, 32)),            # CMDQ_CFGI_0_SID
    ("CFGI_STE", "leaf", 1, 1, 1),                                 # CMDQ_CFGI_1_LEAF
    ("CFGI_STE_RANGE", "span", 31, 1, genmask(4, 0)),              # CMDQ_CFGI_1_RANGE
    ("TLBI_NH_VA", "num", 31, 0, genmask(16, 12)),                 # CMDQ_TLBI_0_NUM
    ("TLBI_NH_VA", "scale", 31, 0, genmask(24, 20)),               # CMDQ_TLBI_0_SCALE
    ("TLBI_NH_VA", "vmid", 0xFFFF, 0, genmask(47, 32)),            # CMDQ_TLBI_0_VMID
    ("TLBI_NH_VA", "asid", 0xFFFF, 0, genmask(63, 48)),            # CMDQ_TLBI_0_ASID
    ("TLBI_NH_VA", "leaf", 1, 1, 1),                               # CMDQ_TLBI_1_LEAF
    ("TLBI_NH_VA", "ttl", 3, 1, genmask(9, 8)),                    # CMDQ_TLBI_1_TTL
    ("TLBI_NH_VA", "tg", 3, 1, genmask(11, 10)),                   # CMDQ_TLBI_1_TG
    ("TLBI_NH_VA", "addr", genmask(63, 12), 1, genmask(63, 12)),   # CMDQ_TLBI_1_VA_MASK
    ("TLBI_S2_IPA", "addr", genmask(51, 12), 1, genmask(51, 12)),  # CMDQ_TLBI_1_IPA_MASK
    ("ATC_INV", "ssid", 2**20 - 1, 0, genmask(31, 12)),            # CMDQ_ATC_0_SSID
    ("ATC_INV", "sid", 2**32 - 1, 0, genmask(63, 32)),             # CMDQ_ATC_0_SID
    ("ATC_INV", "global_", 1, 0, 1 << 9),                          # CMDQ_ATC_0_GLOBAL
    ("ATC_INV", "size", 63, 1, genmask(5, 0)),                     # CMDQ_ATC_1_SIZE
    ("ATC_INV", "addr", genmask(63, 12), 1, genmask(63, 12)),      # CMDQ_ATC_1_ADDR_MASK
    ("ATC_INV", "ssv", 1, 0, 1 << 11),                             # CMDQ_0_SSV
    ("PRI_RESP", "grpid", 511, 1, genmask(8, 0)),                  # CMDQ_PRI_1_GRPID
    ("PRI_RESP", "resp", 3, 1, genmask(13, 12)),                   # CMDQ_PRI_1_RESP
    ("RESUME", "resp", 3, 0, genmask(13, 12)),                     # CMDQ_RESUME_0_RESP
    ("RESUME", "sid", 2**32 - 1, 0, genmask(63, 32)),              # CMDQ_RESUME_0_SID
    ("RESUME", "stag", 0xFFFF, 1, genmask(15, 0)),                 # CMDQ_RESUME_1_STAG
    ("CMD_SYNC", "cs", 3, 0, genmask(13, 12)),                     # CMDQ_SYNC_0_CS
    ("CMD_SYNC", "msh", 3, 0, genmask(23, 22)),                    # CMDQ_SYNC_0_MSH
    ("CMD_SYNC", "msiattr", 15, 0, genmask(27, 24)),               # CMDQ_SYNC_0_MSIATTR
    ("CMD_SYNC", "msidata", 2**32 - 1, 0, genmask(63, 32)),        # CMDQ_SYNC_0_MSIDATA
    ("CMD_SYNC", "msiaddr", genmask(51, 2), 1, genmask(51, 2)),    # CMDQ_SYNC_1_MSIADDR_MASK
]


@pytest.mark.parametrize("name,field,value,word,mask", LINUX_FIELDS,
                         ids=[f"{x[0]}.{x[1]}" for x in LINUX_FIELDS])
def test_command_fields_match_linux(name: str, field: str, value: int, word: int, mask: int) -> None:
    w = words(C.encode(name, **{field: value}))
    op_mask = genmask(7, 0) if word == 0 else 0
    assert w[word] & ~op_mask == mask
    assert w[1 - word] & ~(genmask(7, 0) if word == 1 else 0) == 0
    assert getattr(C.decode(C.encode(name, **{field: value})), field) == value


def test_decode_fields_used_by_invalidation() -> None:
    cmd = C.decode(C.encode("TLBI_NH_VA", vmid=3, asid=0x1234, addr=0xFFFF_8000_1234_5000, leaf=1, num=4,
                            scale=2, tg=1, ttl=3))
    assert (cmd.name, cmd.opcode, cmd.vmid, cmd.asid, cmd.addr, cmd.leaf, cmd.num, cmd.scale, cmd.tg, cmd.ttl) \
        == ("TLBI_NH_VA", 0x12, 3, 0x1234, 0xFFFF_8000_1234_5000, 1, 4, 2, 1, 3)
    ipa = C.decode(C.encode("TLBI_S2_IPA", vmid=9, addr=0x8_0000_0000))
    assert (ipa.vmid, ipa.addr) == (9, 0x8_0000_0000)


def test_cfgi_ste_range_span() -> None:
    assert C.ste_range(C.decode(C.encode("CFGI_STE_RANGE", sid=0x13, span=1))) == (0x10, 0x13)
    assert C.ste_range(C.decode(C.encode("CFGI_STE_RANGE", sid=0x13, span=0))) == (0x12, 0x13)
    assert C.ste_range(C.decode(C.encode("CFGI_STE_RANGE", sid=7, span=31))) is None     # CFGI_ALL


def test_encode_rejects_bad_names_and_values() -> None:
    with pytest.raises(KeyError):
        C.encode("TLBI_NOPE")
    with pytest.raises(KeyError):
        C.encode("CMD_SYNC", vmid=1)
    with pytest.raises(ValueError, match="0x10000"):
        C.encode("TLBI_NH_ASID", asid=0x10000)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**128 - 1))
def test_decode_never_raises_and_reencodes(raw: int) -> None:
    cmd = C.decode(raw.to_bytes(16, "little"))
    assert cmd.raw == raw and cmd.opcode == raw & 0xFF
    if cmd.known:
        layout = C.LAYOUTS[cmd.name]
        assert int.from_bytes(C.encode_command(cmd), "little") == raw & layout.defined_mask
    C.check(cmd, SmmuFeatures())


F = SmmuFeatures()


@pytest.mark.parametrize("raw,feat,err", [
    (bytes(16), F, C.CERROR_ILL),                                   # opcode 0
    (bytes([0x07]) + bytes(15), F, C.CERROR_ILL),                   # unallocated opcode
    (C.encode("CMD_SYNC", cs=3), F, C.CERROR_ILL),                  # reserved CS
    (C.encode("TLBI_EL3_ALL"), F, C.CERROR_ILL),                    # EL3 op on the NS queue
    (C.encode("CFGI_STE", ssec=1), F, C.CERROR_ILL),                # SSec on the NS queue
    (C.encode("TLBI_EL2_ALL"), SmmuFeatures(hyp=False), C.CERROR_ILL),
    (C.encode("TLBI_S2_IPA"), SmmuFeatures(s2p=False), C.CERROR_ILL),
    (C.encode("TLBI_NH_VA"), SmmuFeatures(s1p=False), C.CERROR_ILL),
    (C.encode("ATC_INV"), F, C.CERROR_ILL),                         # no ATS
    (C.encode("CFGI_CD", ssid=1 << 10), SmmuFeatures(ssidsize=10), C.CERROR_ILL),
    (C.encode("CFGI_CD", ssid=(1 << 10) - 1), SmmuFeatures(ssidsize=10), C.CERROR_NONE),
    (C.encode("CMD_SYNC", cs=2), F, C.CERROR_NONE),
    (C.encode("TLBI_NH_VA", asid=1, addr=0x1000), F, C.CERROR_NONE),
])
def test_check(raw: bytes, feat: SmmuFeatures, err: int) -> None:
    assert C.check(C.decode(raw), feat) == err
