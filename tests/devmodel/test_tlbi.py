"""devmodel.tlbi: the TLBI table against independent oracles (capstone 5, LLVM's assembler) and the operand
decode on worked examples (Arm ARM C5.5 TLBI pages; QEMU target/arm/tcg/tlb-insns.c for the range layout)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import capstone
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devmodel import tlbi
from devmodel.tlbi import BY_ENCODING, BY_NAME, TABLE, Operand, decode, encoding, range_bytes, sys_word
from devmodel.tlbi_types import DecodeContext, Regime, Scope, Share, Stage, UndefinedTlbi

EL1 = DecodeContext(el=1, vmid=5, hcr_fb=True)
EL1_NOFB = DecodeContext(el=1, vmid=5, hcr_fb=False)
EL2 = DecodeContext(el=2, vmid=9)
EL3 = DecodeContext(el=3)


def _dec(name: str, xt: int | None = None, ctx: DecodeContext = EL3):
    return decode(*encoding(name), xt, ctx)


# --- the table against capstone 5 ------------------------------------------------------------------------

def test_capstone_agrees_on_every_crn8_encoding():
    md = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    named = 0
    for op1 in range(8):
        for crm in range(16):
            for op2 in range(8):
                word = sys_word(op1, 8, crm, op2, rt=0)
                insn = next(md.disasm(word.to_bytes(4, "little"), 0x1000))
                d = BY_ENCODING.get((op1, 8, crm, op2))
                if insn.mnemonic == "tlbi":
                    named += 1
                    cs_name = insn.op_str.split(",")[0].strip().upper()
                    assert d is not None, f"capstone knows tlbi {cs_name} at {op1}/{crm}/{op2}, table does not"
                    assert d.name == cs_name
                    assert decode(op1, 8, crm, op2, 0, EL3).name == cs_name
                elif d is not None:
                    # capstone 5 predates FEAT_TLBIW; everything else it must name
                    assert d.name.startswith("VMALLWS2E1"), (d.name, insn.mnemonic, insn.op_str)
                else:
                    with pytest.raises(UndefinedTlbi):
                        decode(op1, 8, crm, op2, 0, EL3)
    assert named == 82


def test_table_size_and_nxs_twins():
    base = [d for d in TABLE if not d.nxs]
    nxs = [d for d in TABLE if d.nxs]
    assert len(base) == 85                      # 82 named by capstone 5 + VMALLWS2E1{,IS,OS}
    assert len(nxs) == 81                       # every op but PAALL, PAALLOS, RPAOS, RPALOS (Arm ARM K14.3.15)
    for d in nxs:
        twin = BY_ENCODING[(d.op1, 8, d.crm, d.op2)]
        assert d.crn == 9 and d.name == twin.name + "NXS"
        assert (d.operand, d.share, d.family, d.scope, d.stage, d.leaf) == \
               (twin.operand, twin.share, twin.family, twin.scope, twin.stage, twin.leaf)


def test_nxs_decode_matches_the_base_form():
    xt = (0x42 << 48) | (1 << 44) | 0x12345
    for d in TABLE:
        if d.nxs:
            a = decode(d.op1, 9, d.crm, d.op2, xt, EL3)
            b = decode(d.op1, 8, d.crm, d.op2, xt, EL3)
            assert a.name == b.name + "NXS" and a.nxs and not b.nxs and a.crn == 9
            assert (a.addr, a.asid, a.size, a.ttl, a.broadcast, a.regime) == \
                   (b.addr, b.asid, b.size, b.ttl, b.broadcast, b.regime)
    for name in ("PAALL", "PAALLOS", "RPAOS", "RPALOS"):
        op1, _, crm, op2 = encoding(name)
        with pytest.raises(UndefinedTlbi):
            decode(op1, 9, crm, op2, 0, EL3)


def _zig_available() -> bool:
    try:
        import ziglang  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _zig_available(), reason="ziglang not installed")
def test_llvm_assembler_agrees_with_table(tmp_path: Path):
    """LLVM (zig's clang) assembles every name of the table to our encoding: checks nXS and VMALLWS2E1*."""
    lines, want = [".text"], []
    for i, d in enumerate(TABLE):
        rt = i % 31
        lines.append(f"tlbi {d.name.lower()}" + (f", x{rt}" if d.operand is not Operand.NONE else ""))
        want.append(sys_word(*d.key, rt=rt if d.operand is not Operand.NONE else 31))
    src = tmp_path / "all.S"
    src.write_text("\n".join(lines) + "\n")
    obj = tmp_path / "all.o"
    subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", "aarch64-freestanding",
                    "-mcpu=generic+v8_4a+xs+rme+tlbiw", "-c", str(src), "-o", str(obj)], check=True)
    from elftools.elf.elffile import ELFFile
    with obj.open("rb") as f:
        text = ELFFile(f).get_section_by_name(".text").data()
    got = [int.from_bytes(text[i:i + 4], "little") for i in range(0, len(text), 4)]
    assert [hex(w) for w in got] == [hex(w) for w in want]


# --- permission and classification -------------------------------------------------------------------------

@pytest.mark.parametrize("name, el", [("IPAS2E1IS", 1), ("ALLE1IS", 1), ("VAE2IS", 1), ("VMALLS12E1IS", 1),
                                      ("ALLE3", 2), ("VAE3IS", 1), ("PAALL", 2), ("VAE1IS", 0),
                                      ("VAE2ISNXS", 1)])
def test_ops_above_the_current_el_are_undefined(name, el):
    with pytest.raises(UndefinedTlbi, match=name):
        _dec(name, 0, DecodeContext(el=el))


def test_non_tlbi_encodings_are_undefined():
    for key in ((0, 8, 0, 0), (3, 7, 4, 1), (0, 7, 5, 0), (0, 9, 0, 0), (4, 8, 3, 2)):
        with pytest.raises(UndefinedTlbi):
            decode(*key, 0, EL3)


def test_fb_broadcasts_local_el1_ops_only_at_el1():
    for name in ("VMALLE1", "VAE1", "ASIDE1", "VAAE1", "VALE1", "VAALE1", "RVAE1", "RVAALE1"):
        assert _dec(name, 0, EL1).broadcast is True
        assert _dec(name, 0, EL1).shareability is Share.NSH       # as encoded
        assert _dec(name, 0, EL1_NOFB).broadcast is False
        assert _dec(name, 0, DecodeContext(el=2, hcr_fb=True)).broadcast is False
    for name in ("VAE1IS", "VAE1OS", "VMALLE1IS"):
        assert _dec(name, 0, EL1_NOFB).broadcast is True
    assert _dec("ALLE1", None, DecodeContext(el=2, hcr_fb=True)).broadcast is False
    assert _dec("VAE1OS", 0, EL1).shareability is Share.OSH


# --- worked operand examples --------------------------------------------------------------------------------

def test_va_operand():
    op = _dec("VAE1IS", (0x1234 << 48) | (0x2 << 44) | 0x40080, EL1)
    assert (op.name, op.regime, op.vmid, op.asid, op.addr, op.ttl, op.leaf, op.size, op.scope, op.stage) == \
           ("VAE1IS", Regime.EL10, 5, 0x1234, 0x4008_0000, 2, False, None, Scope.VA, Stage.S1)
    assert op.granule is None                                   # TTL[3:2] = 0b00: no granule hint
    assert _dec("VAE1IS", (0b0111 << 44) | 1, EL1).granule == 4096   # TTL = 4K granule, level 3
    # TTBR1 address: VA[55] set -> sign-extended
    xt = (0xFFFF_8000_0010_0000 >> 12) & ((1 << 44) - 1)
    assert xt == 0xFF8_0000_0100
    assert _dec("VALE1", xt, EL1).addr == 0xFFFF_8000_0010_0000
    assert _dec("VALE1", xt, EL1).leaf is True


def test_vaa_carries_no_asid_aside_no_address():
    xt = (0xBEEF << 48) | 0x123
    vaa = _dec("VAAE1IS", xt, EL1)
    assert vaa.asid is None and vaa.addr == 0x123000 and vaa.scope is Scope.VAA and vaa.vmid == 5
    aside = _dec("ASIDE1IS", xt, EL1)
    assert aside.asid == 0xBEEF and aside.addr is None and aside.scope is Scope.ASID
    vm = _dec("VMALLE1IS", 0xFFFF, EL1)
    assert vm.xt is None and vm.asid is None and vm.addr is None and vm.vmid == 5


def test_ipa_operand_and_hypervisor_ops():
    op = _dec("IPAS2E1IS", (1 << 63) | (3 << 44) | 0x8_0000, EL2)
    assert (op.addr, op.ipa_ns, op.ttl, op.vmid, op.asid, op.stage, op.scope, op.regime) == \
           (0x8000_0000, True, 3, 9, None, Stage.S2, Scope.IPA, Regime.EL10)
    assert _dec("IPAS2LE1", 0x8_0000, EL2).leaf and _dec("IPAS2LE1", 0x8_0000, EL2).ipa_ns is False
    # IPA is not sign-extended
    assert _dec("IPAS2E1", 1 << 43, EL2).addr == 1 << 55
    alle1 = _dec("ALLE1IS", None, EL2)
    assert alle1.vmid is None and alle1.stage is Stage.S12 and alle1.scope is Scope.ALL and alle1.broadcast
    s12 = _dec("VMALLS12E1IS", None, EL2)
    assert s12.vmid == 9 and s12.stage is Stage.S12 and s12.scope is Scope.VMALL
    w = _dec("VMALLWS2E1OS", None, EL2)
    assert w.vmid == 9 and w.stage is Stage.S2 and w.shareability is Share.OSH


def test_el2_and_vhe_regimes():
    xt = (0x77 << 48) | 0x100
    vae2 = _dec("VAE2IS", xt, EL2)
    assert vae2.regime is Regime.EL2 and vae2.asid is None and vae2.vmid is None and vae2.addr == 0x100000
    vhe = DecodeContext(el=2, vmid=9, e2h=True)
    vae2h = _dec("VAE2IS", xt, vhe)
    assert vae2h.regime is Regime.EL20 and vae2h.asid == 0x77
    # E2H+TGE: the *E1 ops act on EL2&0 (QEMU vae1_tlbmask), no VMID
    host = DecodeContext(el=2, vmid=9, e2h=True, tge=True)
    vae1 = _dec("VAE1IS", xt, host)
    assert vae1.regime is Regime.EL20 and vae1.vmid is None and vae1.asid == 0x77
    # E2H without TGE: *E1 ops at EL2 still target the guest's EL1&0 of VTTBR_EL2.VMID
    assert _dec("VAE1IS", xt, vhe).regime is Regime.EL10 and _dec("VAE1IS", xt, vhe).vmid == 9
    assert _dec("ALLE3IS", None, EL3).regime is Regime.EL3


def _range_xt(asid=0, tg=1, scale=0, num=0, ttl=0, base=0, ns=0):
    return (ns << 63) | (asid << 48) | (tg << 46) | (scale << 44) | (num << 39) | (ttl << 37) | base


def test_range_operand_formula():
    # 4K, SCALE=1, NUM=3: (3+1) * 2^(5*1+1) = 256 pages of 4K = 1 MiB, from BaseADDR 0x100 (VA 0x100000)
    op = _dec("RVAE1IS", _range_xt(asid=7, tg=1, scale=1, num=3, ttl=2, base=0x100), EL1)
    assert (op.asid, op.tg, op.scale, op.num, op.ttl, op.addr, op.size) == (7, 1, 1, 3, 2, 0x100000, 1 << 20)
    assert op.granule == 4096
    # 16K, SCALE=0, NUM=0: 2 pages of 16K; BaseADDR in 16K units
    op = _dec("RVALE1", _range_xt(tg=2, base=0x10), EL1)
    assert (op.addr, op.size, op.leaf) == (0x40000, 32 << 10, True)
    # 64K, largest: 32 * 2^16 pages of 64K = 2^37 bytes
    op = _dec("RVAAE1OS", _range_xt(asid=3, tg=3, scale=3, num=31, base=1), EL1)
    assert (op.addr, op.size, op.asid) == (0x10000, 1 << 37, None)
    # TTBR1 range: BaseADDR[36] set -> sign-extended in EL1&0, not in EL2 (one VA range)
    neg = _range_xt(tg=1, base=0x1F_FFFF_FF00)
    assert _dec("RVAE1IS", neg, EL1).addr == 0xFFFF_FFFF_FFF0_0000
    assert _dec("RVAE2IS", neg, EL2).addr == 0x1F_FFFF_FF00 << 12
    # TG=0 reserved: covers nothing
    assert _dec("RVAE1IS", _range_xt(tg=0, num=5, base=4), EL1).size == 0
    # IPA range: NS bit, unsigned base
    ipa = _dec("RIPAS2E1IS", _range_xt(tg=1, scale=0, num=1, base=0x1F_0000_0000, ns=1), EL2)
    assert (ipa.addr, ipa.size, ipa.ipa_ns, ipa.vmid, ipa.stage) == (0x1F_0000_0000 << 12, 4 * 4096, True, 9,
                                                                     Stage.S2)


def test_rpa_operand():
    op = _dec("RPAOS", (3 << 44) | (0x8_0000), EL3)
    assert (op.addr, op.size, op.scope, op.regime, op.vmid, op.asid) == (0x8000_0000, 2 << 20, Scope.PA,
                                                                       Regime.GPT, None, None)
    assert _dec("RPALOS", (0xF << 44), EL3).size == 0          # reserved SIZE


@given(tg=st.sampled_from([1, 2, 3]), scale=st.integers(0, 3), num=st.integers(0, 31))
def test_range_bytes_is_the_arm_formula(tg, scale, num):
    granule = {1: 4096, 2: 16384, 3: 65536}[tg]
    op = _dec("RVAE1", _range_xt(tg=tg, scale=scale, num=num), EL1)
    assert op.size == range_bytes(tg, scale, num) == (num + 1) * 2 ** (5 * scale + 1) * granule


@given(page=st.integers(0, (1 << 44) - 1), asid=st.integers(0, 0xFFFF), ttl=st.integers(0, 15))
def test_va_round_trip(page, asid, ttl):
    va = page << 12
    if va >> 55:
        va |= 0xFF80_0000_0000_0000                             # canonical TTBR1 form
    op = _dec("VAE1IS", (asid << 48) | (ttl << 44) | page, EL1)
    assert (op.addr, op.asid, op.ttl) == (va, asid, ttl)


def test_encoding_lookup():
    assert encoding("vae1is") == (0, 8, 3, 1)
    assert encoding("VAE1ISNXS") == (0, 9, 3, 1)
    assert BY_NAME["RVALE1OS"].key == (0, 8, 5, 5)
    with pytest.raises(KeyError, match="FOO"):
        encoding("FOO")


# --- decoder(): decode in two steps, reused for many Xt (the TLBI trap's native replay) ---------------------

@given(st.sampled_from(TABLE), st.integers(0, 3), st.booleans(), st.booleans(), st.booleans(),
       st.lists(st.integers(0, (1 << 64) - 1), min_size=1, max_size=6))
def test_one_decoder_serves_every_xt(d, el, e2h, tge, fb, xts):
    from devmodel.tlbi import decoder
    ctx = DecodeContext(el=el, vmid=9, hcr_fb=fb, e2h=e2h, tge=tge)
    try:
        of = decoder(*d.key, ctx)
    except UndefinedTlbi:                        # raised once, before any Xt: as decode raises for every Xt
        for xt in xts:
            with pytest.raises(UndefinedTlbi):
                decode(*d.key, xt, ctx)
        return
    ops = [of(xt) for xt in xts]                 # one closure, many operands: no state carried between them
    assert ops == [decoder(*d.key, ctx)(xt) for xt in xts]
    for op, xt in zip(ops, xts):
        assert op.xt == (None if d.operand is Operand.NONE else xt)
        assert (op.name, op.broadcast, op.regime, op.vmid) == (d.name, ops[0].broadcast, ops[0].regime, ops[0].vmid)
