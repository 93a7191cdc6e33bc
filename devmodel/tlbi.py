"""Every AArch64 TLBI operation as data, and the pure decoder `decode(op1, crn, crm, op2, xt, ctx) -> TlbiOp`
(`decoder(op1, crn, crm, op2, ctx)(xt)` in two steps).
On the TLBI path (see `dvm.py`) this is step 2: what the trapped instruction means for the issuing PE (regime,
VMID, ASID, address/range, broadcast or not), as one message every receiver gets unchanged.

Sources checked (cited, not copied):
* Encodings: LLVM `llvm/lib/Target/AArch64/AArch64SystemOperands.td` (TLBI table, FEAT_TLBIOS/TLBIRANGE,
  RME, FEAT_TLBIW `VMALLWS2E1*`: op1=4 CRm=6/2/5 op2=2) and capstone 5 (the oracle in the tests).
* nXS forms: Arm ARM K14.3.15 "TLB maintenance system instructions" lists an `...NXS` twin (CRn=0b1001,
  FEAT_XS) for every TLBI except the RME ones (`PAALL`, `PAALLOS`, `RPAOS`, `RPALOS`), which LLVM's
  multiclass generates anyway; we follow the Arm ARM and treat CRn=9 forms of the RME ops as undefined.
* Operand layouts: Arm ARM C5.5 (TLBI instruction pages; `RPAOS`: SIZE Xt[47:44], PA[51:12] = Xt[39:0]) and
  QEMU `target/arm/tcg/tlb-insns.c` (`tlbi_aa64_vae1_write`: page = sextract64(Xt << 12, 0, 56);
  `tlbi_aa64_get_range`: TG Xt[47:46], SCALE Xt[45:44], NUM Xt[43:39], BaseADDR Xt[36:0] sign-extended from
  bit 36 only for two-VA-range regimes, length (NUM+1) << (5*SCALE+1+page_shift); `ipas2e1_tlbmask`: NS =
  Xt[63]; `vae1_tlbmask`: with HCR_EL2.{E2H,TGE} = {1,1} the *E1 operations act on EL2&0).

Decisions (documented, tested):
* VA operands (`VAE1`, `VAE2`, ...): ASID = Xt[63:48] (16 bits kept even with 8-bit ASIDs), TTL = Xt[47:44],
  address = VA[55:12] = Xt[43:0] sign-extended from VA[55], as an unsigned 64-bit byte address.
* IPA operands: IPA[55:12] = Xt[43:0] (zero-extended: an IPA has no TTBR1 half), TTL = Xt[47:44], NS = Xt[63].
* Range operands: ASID Xt[63:48], TG Xt[47:46] (1=4K, 2=16K, 3=64K), SCALE Xt[45:44], NUM Xt[43:39],
  TTL Xt[38:37] (a level), BaseADDR Xt[36:0] in granule units (4K: VA[48:12], 16K: VA[50:14], 64K: VA[52:16]),
  sign-extended from BaseADDR[36] in the EL1&0 and EL2&0 regimes. Bytes covered:
  (NUM+1) * 2^(5*SCALE+1) pages of the TG granule. TG=0 is reserved: the op covers no bytes (`size=0`),
  as the Arm ARM allows ("no TLB entries are required to be invalidated") and QEMU does.
* Regime: op1=0 (`*E1`) ops act on EL1&0 of the issuing vCPU's VMID, except at EL2 with E2H=1 and TGE=1,
  where they act on EL2&0 (no VMID). op1=4 `*E2` ops act on EL2, or EL2&0 when E2H=1 (then by-VA ops carry
  the ASID). `ALLE1*` carries no VMID (all VMIDs); `IPAS2*`, `VMALLS12E1*`, `VMALLWS2E1*` carry the current
  VMID. `PAALL*`/`RPA*` are the RME GPT regime.
* Permission: any TLBI at EL0, op1=4 ops below EL2 and op1=6 ops below EL3 raise `UndefinedTlbi`.
* Broadcast: IS/OS forms always; NSH forms too when issued at EL1 with HCR_EL2.FB=1 (they then act as Inner
  Shareable). `shareability` stays what the instruction encodes.

Not modelled yet: FEAT_LPA2 (TCR.DS=1 makes range BaseADDR 64K units), FEAT_D128 `TLBIP` (SYSP) forms,
TTL validity checks (a reserved TTL is reported as encoded), GPCCR_EL3.PGS other than 4K for `RPA*`,
HCR_EL2.TTLB/TTLBIS/TTLBOS traps and FGT.
"""
from __future__ import annotations

from enum import Enum
from typing import Callable

from .fields import bits, sext
from .record import Frozen, assign
from .tlbi_types import DecodeContext, Regime, Scope, Share, Stage, TlbiOp, UndefinedTlbi

__all__ = ["Operand", "Family", "TlbiDef", "TABLE", "BY_ENCODING", "BY_NAME", "decode", "decoder", "encoding", "sys_word",
           "range_bytes", "GRANULE_SHIFT"]

MASK64 = (1 << 64) - 1
CRN_TLBI = 8
CRN_TLBI_NXS = 9
#: TG field of range operations (Arm ARM: 0b01 4KB, 0b10 16KB, 0b11 64KB, 0b00 reserved)
GRANULE_SHIFT = {1: 12, 2: 14, 3: 16}
#: RPA* SIZE field (Arm ARM C5.5.28): bytes; other values reserved
RPA_SIZE = {0: 4 << 10, 1: 16 << 10, 2: 64 << 10, 3: 2 << 20, 4: 32 << 20, 5: 512 << 20, 6: 1 << 30,
            7: 16 << 30, 8: 64 << 30, 9: 512 << 30}


class Operand(str, Enum):
    """What Xt holds."""
    NONE = "none"          # no register operand (Rt = 31)
    VA = "va"              # ASID[63:48] TTL[47:44] VA[55:12]
    ASID = "asid"          # ASID[63:48]
    IPA = "ipa"            # NS[63] TTL[47:44] IPA[55:12]
    RVA = "rva"            # ASID[63:48] TG SCALE NUM TTL BaseADDR
    RIPA = "ripa"          # NS[63] TG SCALE NUM TTL BaseADDR
    RPA = "rpa"            # SIZE[47:44] PA[51:12]


class Family(str, Enum):
    """Which exception level's operations (decides the regime and the minimum EL)."""
    E1 = "E1"              # op1=0: EL1&0 operations, allowed at EL1+
    E1_HYP = "E1_HYP"      # op1=4 operations on EL1&0 (IPAS2, VMALLS12E1, ALLE1, VMALLWS2E1): EL2+
    E2 = "E2"              # op1=4 operations on EL2 / EL2&0: EL2+
    E3 = "E3"              # op1=6: EL3
    GPT = "GPT"            # op1=6 RME: EL3


_MIN_EL = {Family.E1: 1, Family.E1_HYP: 2, Family.E2: 2, Family.E3: 3, Family.GPT: 3}


class TlbiDef(Frozen):
    """One row of the table: a TLBI instruction as the Arm ARM names and encodes it."""
    __slots__ = ("name", "op1", "crn", "crm", "op2", "operand", "share", "family", "scope", "stage", "leaf", "nxs")
    name: str
    op1: int
    crn: int
    crm: int
    op2: int
    operand: Operand
    share: Share
    family: Family
    scope: Scope
    stage: Stage
    leaf: bool
    nxs: bool

    def __init__(self, name: str, op1: int, crn: int, crm: int, op2: int, operand: Operand, share: Share,
                 family: Family, scope: Scope, stage: Stage, leaf: bool, nxs: bool = False) -> None:
        assign(self, "name", name)
        assign(self, "op1", op1)
        assign(self, "crn", crn)
        assign(self, "crm", crm)
        assign(self, "op2", op2)
        assign(self, "operand", operand)
        assign(self, "share", share)
        assign(self, "family", family)
        assign(self, "scope", scope)
        assign(self, "stage", stage)
        assign(self, "leaf", leaf)
        assign(self, "nxs", nxs)

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.op1, self.crn, self.crm, self.op2)

    @property
    def min_el(self) -> int:
        return _MIN_EL[self.family]


_N, _I, _O = Share.NSH, Share.ISH, Share.OSH

# (base name, op1, (CRm, op2) for NSH / IS / OS forms or None, operand, family, scope, stage, leaf).
# The NSH form is named `base`, the others `base + "IS"` / `base + "OS"`.
_FAMILIES = (
    ("VMALLE1",    0, (7, 0), (3, 0), (1, 0), Operand.NONE, Family.E1, Scope.VMALL, Stage.S1, False),
    ("VAE1",       0, (7, 1), (3, 1), (1, 1), Operand.VA,   Family.E1, Scope.VA,    Stage.S1, False),
    ("ASIDE1",     0, (7, 2), (3, 2), (1, 2), Operand.ASID, Family.E1, Scope.ASID,  Stage.S1, False),
    ("VAAE1",      0, (7, 3), (3, 3), (1, 3), Operand.VA,   Family.E1, Scope.VAA,   Stage.S1, False),
    ("VALE1",      0, (7, 5), (3, 5), (1, 5), Operand.VA,   Family.E1, Scope.VA,    Stage.S1, True),
    ("VAALE1",     0, (7, 7), (3, 7), (1, 7), Operand.VA,   Family.E1, Scope.VAA,   Stage.S1, True),
    ("RVAE1",      0, (6, 1), (2, 1), (5, 1), Operand.RVA,  Family.E1, Scope.VA,    Stage.S1, False),
    ("RVAAE1",     0, (6, 3), (2, 3), (5, 3), Operand.RVA,  Family.E1, Scope.VAA,   Stage.S1, False),
    ("RVALE1",     0, (6, 5), (2, 5), (5, 5), Operand.RVA,  Family.E1, Scope.VA,    Stage.S1, True),
    ("RVAALE1",    0, (6, 7), (2, 7), (5, 7), Operand.RVA,  Family.E1, Scope.VAA,   Stage.S1, True),
    ("IPAS2E1",    4, (4, 1), (0, 1), (4, 0), Operand.IPA,  Family.E1_HYP, Scope.IPA, Stage.S2, False),
    ("IPAS2LE1",   4, (4, 5), (0, 5), (4, 4), Operand.IPA,  Family.E1_HYP, Scope.IPA, Stage.S2, True),
    ("RIPAS2E1",   4, (4, 2), (0, 2), (4, 3), Operand.RIPA, Family.E1_HYP, Scope.IPA, Stage.S2, False),
    ("RIPAS2LE1",  4, (4, 6), (0, 6), (4, 7), Operand.RIPA, Family.E1_HYP, Scope.IPA, Stage.S2, True),
    ("ALLE1",      4, (7, 4), (3, 4), (1, 4), Operand.NONE, Family.E1_HYP, Scope.ALL, Stage.S12, False),
    ("VMALLS12E1", 4, (7, 6), (3, 6), (1, 6), Operand.NONE, Family.E1_HYP, Scope.VMALL, Stage.S12, False),
    # FEAT_TLBIW: stage-2 "dirty state" by VMID; modelled as an invalidation of the VMID's stage-2 entries.
    ("VMALLWS2E1", 4, (6, 2), (2, 2), (5, 2), Operand.NONE, Family.E1_HYP, Scope.VMALL, Stage.S2, False),
    ("ALLE2",      4, (7, 0), (3, 0), (1, 0), Operand.NONE, Family.E2, Scope.ALL,   Stage.S1, False),
    ("VAE2",       4, (7, 1), (3, 1), (1, 1), Operand.VA,   Family.E2, Scope.VA,    Stage.S1, False),
    ("VALE2",      4, (7, 5), (3, 5), (1, 5), Operand.VA,   Family.E2, Scope.VA,    Stage.S1, True),
    ("RVAE2",      4, (6, 1), (2, 1), (5, 1), Operand.RVA,  Family.E2, Scope.VA,    Stage.S1, False),
    ("RVALE2",     4, (6, 5), (2, 5), (5, 5), Operand.RVA,  Family.E2, Scope.VA,    Stage.S1, True),
    ("ALLE3",      6, (7, 0), (3, 0), (1, 0), Operand.NONE, Family.E3, Scope.ALL,   Stage.S1, False),
    ("VAE3",       6, (7, 1), (3, 1), (1, 1), Operand.VA,   Family.E3, Scope.VA,    Stage.S1, False),
    ("VALE3",      6, (7, 5), (3, 5), (1, 5), Operand.VA,   Family.E3, Scope.VA,    Stage.S1, True),
    ("RVAE3",      6, (6, 1), (2, 1), (5, 1), Operand.RVA,  Family.E3, Scope.VA,    Stage.S1, False),
    ("RVALE3",     6, (6, 5), (2, 5), (5, 5), Operand.RVA,  Family.E3, Scope.VA,    Stage.S1, True),
    # RME (FEAT_RME): GPT information; no IS forms and no nXS twins.
    ("PAALL",      6, (7, 4), None,   (1, 4), Operand.NONE, Family.GPT, Scope.PA,   Stage.S1, False),
    ("RPA",        6, None,   None,   (4, 3), Operand.RPA,  Family.GPT, Scope.PA,   Stage.S1, False),
    ("RPAL",       6, None,   None,   (4, 7), Operand.RPA,  Family.GPT, Scope.PA,   Stage.S1, True),
)


def _build() -> tuple[TlbiDef, ...]:
    rows: list[TlbiDef] = []
    for base, op1, nsh, ish, osh, operand, family, scope, stage, leaf in _FAMILIES:
        for enc, share, suffix in ((nsh, _N, ""), (ish, _I, "IS"), (osh, _O, "OS")):
            if enc is None:
                continue
            rows.append(TlbiDef(base + suffix, op1, CRN_TLBI, enc[0], enc[1], operand, share, family, scope,
                                stage, leaf))
    for r in list(rows):
        if r.family is not Family.GPT:
            rows.append(TlbiDef(r.name + "NXS", r.op1, CRN_TLBI_NXS, r.crm, r.op2, r.operand, r.share,
                                r.family, r.scope, r.stage, r.leaf, nxs=True))
    return tuple(rows)


TABLE: tuple[TlbiDef, ...] = _build()
BY_ENCODING: dict[tuple[int, int, int, int], TlbiDef] = {}
BY_NAME: dict[str, TlbiDef] = {}
for _d in TABLE:
    if _d.key in BY_ENCODING or _d.name in BY_NAME:
        raise ValueError(f"TLBI table: duplicate {_d.name} at {_d.key}")
    BY_ENCODING[_d.key] = _d
    BY_NAME[_d.name] = _d
del _d


def encoding(name: str) -> tuple[int, int, int, int]:
    """(op1, CRn, CRm, op2) of a TLBI by Arm ARM name (case-insensitive)."""
    try:
        return BY_NAME[name.upper()].key
    except KeyError:
        raise KeyError(f"unknown TLBI operation {name!r}") from None


def sys_word(op1: int, crn: int, crm: int, op2: int, rt: int = 31) -> int:
    """The A64 instruction word of `SYS #op1, C<crn>, C<crm>, #op2, X<rt>` (op0 = 1, L = 0)."""
    return 0xD5080000 | (op1 << 16) | (crn << 12) | (crm << 8) | (op2 << 5) | rt


def range_bytes(tg: int, scale: int, num: int) -> int:
    """Bytes covered by a range TLBI: (NUM+1) * 2^(5*SCALE+1) pages of granule TG (0 for reserved TG)."""
    shift = GRANULE_SHIFT.get(tg)
    if shift is None:
        return 0
    return (num + 1) << (5 * scale + 1 + shift)


def _regime(d: TlbiDef, ctx: DecodeContext) -> Regime:
    fam = d.family
    if fam is Family.E1:
        return Regime.EL20 if (ctx.el == 2 and ctx.e2h and ctx.tge) else Regime.EL10
    if fam is Family.E1_HYP:
        return Regime.EL10
    if fam is Family.E2:
        return Regime.EL20 if ctx.e2h else Regime.EL2
    if fam is Family.E3:
        return Regime.EL3
    return Regime.GPT


def decode(op1: int, crn: int, crm: int, op2: int, xt: int | None, ctx: DecodeContext) -> TlbiOp:
    """Decode one TLBI as the issuing PE described by `ctx` executes it.

    Raises `UndefinedTlbi` for an encoding that is not a TLBI (DC/IC/AT/unallocated) or is not allowed at
    `ctx.el` (an undefined instruction for the guest, as on hardware).
    """
    return decoder(op1, crn, crm, op2, ctx)(xt)


def decoder(op1: int, crn: int, crm: int, op2: int, ctx: DecodeContext) -> Callable[[int | None], TlbiOp]:
    """`decode` in two steps: what depends on the encoding and the PE (checked, and `UndefinedTlbi` raised,
    here) once, then `of(xt)` -> the op for one Xt. `decoder(...)(xt) == decode(..., xt, ctx)`; the TLBI
    trap keeps one per (encoding, PE state) for the stream of TLBIs a guest issues with ever new addresses."""
    d = BY_ENCODING.get((op1, crn, crm, op2))
    if d is None:
        raise UndefinedTlbi(f"SYS #{op1}, C{crn}, C{crm}, #{op2} is not a TLBI operation")
    if ctx.el < d.min_el:
        raise UndefinedTlbi(f"TLBI {d.name} is undefined at EL{ctx.el} (needs EL{d.min_el})")
    regime = _regime(d, ctx)
    broadcast = d.share is not Share.NSH or (ctx.el == 1 and ctx.hcr_fb and d.family is Family.E1)
    # VMID: EL1&0 operations of one VM carry the issuing vCPU's VMID; ALLE1 covers every VMID.
    vmid = ctx.vmid if (regime is Regime.EL10 and d.scope is not Scope.ALL) else None
    has_asid = d.scope in (Scope.VA, Scope.ASID) and regime in (Regime.EL10, Regime.EL20)
    head = (d.name, op1, crn, crm, op2)
    mid = (d.share, broadcast, regime, ctx.security, d.stage, d.scope, vmid)
    operand, leaf, nxs = d.operand, d.leaf, d.nxs
    if operand is Operand.NONE:
        none = TlbiOp(*head, None, *mid, None, None, None, leaf, 0, None, None, None, nxs, None)
        return lambda xt: none
    fields = _OPERANDS[operand]
    two_ranges = regime is Regime.EL10 or regime is Regime.EL20

    def of(xt: int | None) -> TlbiOp:
        x = (xt or 0) & MASK64
        addr, size, ttl, tg, scale, num, ipa_ns = fields(x, two_ranges)
        return TlbiOp(*head, x, *mid, bits(x, 63, 48) if has_asid else None, addr, size, leaf, ttl, tg, scale, num,
                      nxs, ipa_ns)
    return of


# Operand layouts: Xt -> (addr, size, ttl, tg, scale, num, ipa_ns); `two_ranges`: the regime has a TTBR1 half
def _va(x: int, two_ranges: bool) -> tuple:
    return sext(bits(x, 43, 0) << 12, 56) & MASK64, None, bits(x, 47, 44), None, None, None, None


def _ipa(x: int, two_ranges: bool) -> tuple:
    return bits(x, 43, 0) << 12, None, bits(x, 47, 44), None, None, None, bool(x >> 63)


def _range(x: int, two_ranges: bool, ipa: bool = False) -> tuple:
    tg, scale, num = bits(x, 47, 46), bits(x, 45, 44), bits(x, 43, 39)
    base = bits(x, 36, 0)
    if not ipa and two_ranges:                     # two VA ranges: TTBR1 half
        base = sext(base, 37)
    addr = (base << GRANULE_SHIFT.get(tg, 12)) & MASK64
    return addr, range_bytes(tg, scale, num), bits(x, 38, 37), tg, scale, num, bool(x >> 63) if ipa else None


def _ripa(x: int, two_ranges: bool) -> tuple:
    return _range(x, two_ranges, ipa=True)


def _rpa(x: int, two_ranges: bool) -> tuple:
    return bits(x, 39, 0) << 12, RPA_SIZE.get(bits(x, 47, 44), 0), 0, None, None, None, None


def _no_address(x: int, two_ranges: bool) -> tuple:
    return None, None, 0, None, None, None, None


_OPERANDS = {Operand.VA: _va, Operand.ASID: _no_address, Operand.IPA: _ipa, Operand.RVA: _range,
             Operand.RIPA: _ripa, Operand.RPA: _rpa}
