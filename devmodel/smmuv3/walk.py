"""VMSAv8-64 translation table walks for the SMMUv3 model: pure functions over a `read(addr) -> u64` callable
(`Bus.read64`, or `Bus.read`, whose size defaults to 8).

Sources (checked, not copied): Arm ARM DDI 0487 chapter D8 (VMSAv8-64 translation: D8.2 input size, start
level and concatenation, D8.3 descriptor formats, D8.4 permissions, D8.5 access flag); SMMUv3 IHI 0070 3.4
(address sizes), 5.2/5.4 (STE/CD fields), 7.3 (fault events); QEMU `hw/arm/smmu-common.c` (smmu_ptw_64_s1,
smmu_ptw_64_s2), `hw/arm/smmu-internal.h` (level_shift, get_start_level), `target/arm/ptw.c` (get_S1prot:
APTable merged into AP, PXN implied for EL0-writable pages in two-range regimes); Linux io-pgtable-arm.c
(descriptor bits).

Walk results:
* `Leaf` - one stage's translation of one input address: output address, the block it came from (input and
  output base, size, level, granule) and the permissions it grants to privileged and unprivileged accesses.
* `WalkFault` - what went wrong, with the stage, the CLASS of the access (CD / TT / IN), the level, the IPA
  (stage-2 faults) or fetch address (external aborts). `TranslationCore` turns it into a `Fault`.

Fault priority follows the Arm ARM pseudo-code: translation (invalid or reserved descriptor, input out of
range, EPD) > address size (table or output address above the output size) > access flag > permission.
Permission checks are separate (the caller compares `Leaf.perm_*` with `need_of(...)`), so a cached entry
can fault without a walk.

Not modelled yet: 52-bit VA/IPA/PA (FEAT_LVA/LPA/LPA2 formats; descriptor bits [51:48] are ignored),
hardware AF/dirty updates (CD.HA/HD, STE.S2HA/S2HD: with HA=1 an AF=0 descriptor is used as if AF were 1,
memory is not written), HPD, the Contiguous hint (entries are cached one descriptor at a time), big-endian
tables (CD.ENDI/STE.S2ENDI are rejected by the programming model), S2PTW device-memory checks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..bus import BusError
from .config import PERM_R, PERM_W, PERM_X, S1Cfg, S2Cfg, StreamWorld
from .fault import EventType, FaultClass

__all__ = ["Leaf", "WalkFault", "walk_s1", "walk_s2", "s1_select", "s2_perms", "need_of", "ReadFn", "TableXlate",
           "MIN_TSZ", "MAX_TSZ"]

ReadFn = Callable[[int], int]     # read(addr) -> the little-endian 64-bit descriptor at addr
# nested walks: translates the IPA of a stage-1 table access (cls = TT or CD) -> PA or a stage-2 WalkFault
TableXlate = Callable[[int], "int | WalkFault"]

MIN_TSZ = 16          # 48-bit input (52-bit VA not modelled)
MAX_TSZ = 48          # SMMU_IDR3.STT=1 small translation tables (39 without STT)
_MASK64 = (1 << 64) - 1
_MASK56 = (1 << 56) - 1
_OA_FIELD = ((1 << 48) - 1)            # descriptor OA bits [47:0] (low bits masked per level)
# Descriptor bits [51:48] (OA[51:48]/[49:48] only in FEAT_LPA/LPA2 formats) are RES0 here and ignored, as
# QEMU/Unicorn's MMU does (checked by test_walk_unicorn.py's bit-48/49 experiment; see test_walk.py).
_SINGLE_RANGE = (StreamWorld.EL2, StreamWorld.EL3)


@dataclass(frozen=True, slots=True)
class Leaf:
    """One stage's translation: `oa` for the input address, from a `size`-byte block at `level`."""
    oa: int
    in_base: int          # input address of the block (aligned to size)
    out_base: int
    size: int
    level: int
    granule: int
    perm_priv: int        # PERM_* granted to privileged accesses
    perm_user: int        # ... to unprivileged accesses
    global_: bool = True  # stage 1: nG == 0
    desc: int = 0         # the raw leaf descriptor


@dataclass(frozen=True, slots=True)
class WalkFault:
    type: EventType
    stage2: bool = False
    cls: FaultClass = FaultClass.IN
    level: int = 0
    ipa: int = 0          # stage-2 faults: the IPA; F_WALK_EABT: the descriptor fetch address
    reason: str = ""


def _gshift(granule: int) -> int:
    return {4096: 12, 16384: 14, 65536: 16}.get(granule, 0)


def s1_select(s1: S1Cfg, va: int, world: StreamWorld = StreamWorld.NS_EL1):
    """Pick the TTB for `va` (IHI 0070 3.4.1, DDI 0487 D8.2.3): returns
    (ttb, tsz, granule, tbi, upper) or a WalkFault. Two VA ranges except in single-range worlds (EL2 with
    E2H=0, EL3), where only TTB0 exists."""
    two = world not in _SINGLE_RANGE
    upper = two and bool(va >> 55 & 1)
    if upper:
        ttb, tsz, gran, epd, tbi = s1.ttb1, s1.t1sz, s1.tg1, s1.epd1, bool(s1.tbi & 2)
    else:
        ttb, tsz, gran, epd, tbi = s1.ttb0, s1.t0sz, s1.tg0, s1.epd0, bool(s1.tbi & 1)
    if not MIN_TSZ <= tsz <= MAX_TSZ or not _gshift(gran):
        return WalkFault(EventType.F_TRANSLATION, reason=f"T{int(upper)}SZ={tsz}/TG={gran:#x} unusable")
    inputsize = 64 - tsz
    top = 56 if tbi else 64
    hi = (va & ((1 << top) - 1)) >> inputsize
    want = (1 << (top - inputsize)) - 1 if upper else 0
    if hi != want:
        return WalkFault(EventType.F_TRANSLATION,
                         reason=f"va {va:#x} outside the {inputsize}-bit TTB{int(upper)} range")
    if epd:
        return WalkFault(EventType.F_TRANSLATION, reason=f"EPD{int(upper)}=1: no walk through TTB{int(upper)}")
    return ttb, tsz, gran, tbi, upper


def walk_s1(s1: S1Cfg, va: int, read: ReadFn, *, world: StreamWorld = StreamWorld.NS_EL1, oas: int = 48,
            table_xlate: TableXlate | None = None, wc: dict | None = None) -> Leaf | WalkFault:
    """Stage-1 walk of `va`. Output size = min(CD.IPS, oas). In nested mode `table_xlate` translates every
    table address (an IPA) through stage 2; its faults come back unchanged (stage2=True, CLASS=TT).
    Permissions are not checked here (`Leaf.perm_priv`/`perm_user`)."""
    sel = s1_select(s1, va, world)
    if isinstance(sel, WalkFault):
        return sel
    ttb, tsz, gran, _tbi, _upper = sel
    gshift = _gshift(gran)
    stride = gshift - 3
    inputsize = 64 - tsz
    level = 4 - (-(-(inputsize - gshift) // stride))
    outsize = min(s1.ips, oas, 48)
    omask = (1 << outsize) - 1
    bits = inputsize - (gshift + (3 - level) * stride)
    # TTB: bits below the (min 64-byte) table alignment are RES0 and ignored (D8.2.4)
    table = ttb & _MASK64 & ~((1 << max(bits + 3, 6)) - 1)
    if table & ~omask:
        return WalkFault(EventType.F_ADDR_SIZE, level=level, reason=f"TTB {ttb:#x} above {outsize}-bit IPS")
    ap_table = 0            # APTable[1:0] accumulated
    xn_table = 0            # bit0 PXNTable, bit1 UXNTable accumulated
    single = world in _SINGLE_RANGE
    va56 = va & _MASK56
    if wc:
        for lv in range(3, level, -1):
            sh = gshift + (4 - lv) * stride
            hit = wc.get((sh, va56 >> sh))
            if hit is not None:
                table, ap_table, xn_table = hit
                level, bits = lv, stride
                break
    while True:
        shift = gshift + (3 - level) * stride
        idx = (va >> shift) & ((1 << bits) - 1)
        daddr = table + 8 * idx
        if table_xlate is not None:
            pa = table_xlate(daddr)
            if type(pa) is WalkFault:
                return pa
        else:
            pa = daddr
        try:
            desc = read(pa)
        except BusError as e:
            return WalkFault(EventType.F_WALK_EABT, cls=FaultClass.TT, level=level, ipa=pa,
                             reason=f"stage-1 level-{level} descriptor fetch: {e}")
        if not desc & 1:
            return WalkFault(EventType.F_TRANSLATION, level=level,
                             reason=f"invalid level-{level} descriptor {desc:#x} at {daddr:#x}")
        if level < 3 and desc & 2:                       # table descriptor
            nxt = desc & _OA_FIELD & ~((1 << gshift) - 1)
            if nxt & ~omask:
                return WalkFault(EventType.F_ADDR_SIZE, level=level,
                                 reason=f"next table {desc & ((1 << 52) - 1):#x} above {outsize}-bit IPS")
            if not single:
                ap_table |= (desc >> 61) & 3
                xn_table |= (desc >> 59) & 3
            else:
                ap_table |= (desc >> 61) & 2             # APTable[0] is RES0 in single-range regimes
                xn_table |= (desc >> 59) & 2             # only XNTable (bit 60)
            table = nxt
            level += 1
            bits = stride
            if wc is not None:
                wc[(shift, va56 >> shift)] = (nxt, ap_table, xn_table)
            continue
        if level == 3 and not desc & 2:
            return WalkFault(EventType.F_TRANSLATION, level=3, reason=f"reserved level-3 descriptor {desc:#x}")
        if level < 3 and not (level == 2 or (level == 1 and gshift == 12)):
            return WalkFault(EventType.F_TRANSLATION, level=level,
                             reason=f"block descriptor not allowed at level {level} with {gran >> 10}K granule")
        size = 1 << shift
        out_base = desc & _OA_FIELD & ~(size - 1)
        if out_base & ~omask:
            return WalkFault(EventType.F_ADDR_SIZE, level=level,
                             reason=f"output address {desc & ((1 << 52) - 1):#x} above {outsize}-bit IPS")
        if not desc & (1 << 10) and not (s1.affd or s1.ha):
            return WalkFault(EventType.F_ACCESS, level=level, reason=f"AF=0 in {desc:#x}")
        pp, pu = _s1_perms(s1, desc, ap_table, xn_table, single)
        in_base = va & ~(size - 1)
        return Leaf(out_base | (va & (size - 1)), in_base, out_base, size, level, gran, pp, pu,
                    not desc & (1 << 11), desc)


def _s1_perms(s1: S1Cfg, desc: int, ap_table: int, xn_table: int, single: bool) -> tuple[int, int]:
    """Stage-1 permissions (DDI 0487 D8.4; as QEMU get_S1prot): APTable[0] forces AP[1]=0, APTable[1]
    forces AP[2]=1; in two-range regimes privileged execution is never allowed from EL0-writable memory."""
    ap = (desc >> 6) & 3
    if ap_table & 1:
        ap &= ~1
    if ap_table & 2:
        ap |= 2
    if single:                                   # one privilege level: AP[1] ignored, XN = bit 54
        w = not ap & 2
        xn = bool(desc >> 54 & 1) or bool(xn_table & 2) or (s1.wxn and w)
        p = PERM_R | (PERM_W if w else 0) | (0 if xn else PERM_X)
        return p, p
    user_r = bool(ap & 1)
    user_w = ap == 1
    priv_w = not ap & 2
    uxn = bool(desc >> 54 & 1) or bool(xn_table & 2) or (s1.wxn and user_w)
    pxn = bool(desc >> 53 & 1) or bool(xn_table & 1) or user_w or (s1.wxn and priv_w)
    if s1.pan and user_r:                        # PAN: privileged data accesses to EL0-readable memory fail
        pp = 0
    else:
        pp = PERM_R | (PERM_W if priv_w else 0)
    pp |= 0 if pxn else PERM_X
    pu = (PERM_R if user_r else 0) | (PERM_W if user_w else 0) | (0 if uxn else PERM_X)
    return pp, pu


def _s2_start(s2: S2Cfg, gshift: int) -> int | WalkFault:
    """Start level from S2SL0 and check it against S2T0SZ (DDI 0487 D8.2.6 / AArch64.S2InconsistentSL):
    the start level resolves at least the bits above the natural start and at most 16 concatenated tables."""
    stride = gshift - 3
    inputsize = 64 - s2.t0sz
    if not MIN_TSZ <= s2.t0sz <= MAX_TSZ:
        return WalkFault(EventType.F_TRANSLATION, stage2=True, reason=f"S2T0SZ={s2.t0sz} unusable")
    if not 0 <= s2.sl0 <= 3:
        return WalkFault(EventType.F_TRANSLATION, stage2=True, reason=f"S2SL0={s2.sl0} unusable")
    level = 2 - s2.sl0 if gshift == 12 else 3 - s2.sl0
    natural = 4 - (-(-(inputsize - gshift) // stride))
    if level < 0 or (level == 0 and gshift != 12):
        return WalkFault(EventType.F_TRANSLATION, stage2=True,
                         reason=f"S2SL0={s2.sl0} reserved with a {1 << (gshift - 10)}K granule")
    extra = inputsize - (gshift + (3 - level) * stride) - stride
    if level < natural or extra > 4:
        return WalkFault(EventType.F_TRANSLATION, stage2=True, level=level,
                         reason=f"S2SL0={s2.sl0} (level {level}) inconsistent with S2T0SZ={s2.t0sz}")
    return level


def walk_s2(s2: S2Cfg, ipa: int, read: ReadFn, *, cls: FaultClass = FaultClass.IN,
            oas: int = 48, wc: dict | None = None, xnx: bool = False) -> Leaf | WalkFault:
    """Stage-2 walk of `ipa` (STE S2T0SZ/S2SL0/S2TG/S2PS). Faults carry stage2=True, `cls`, and the IPA.
    `wc`: optional walk cache, as for `walk_s1` (values are table addresses)."""
    gshift = _gshift(s2.tg)
    if not gshift:
        return WalkFault(EventType.F_TRANSLATION, stage2=True, cls=cls, ipa=ipa, reason=f"S2TG={s2.tg} unusable")
    level = _s2_start(s2, gshift)
    if type(level) is WalkFault:
        return WalkFault(level.type, True, cls, level.level, ipa, level.reason)
    stride = gshift - 3
    inputsize = 64 - s2.t0sz
    if ipa >> inputsize or ipa < 0:
        return WalkFault(EventType.F_TRANSLATION, True, cls, level, ipa,
                         f"IPA {ipa:#x} above the {inputsize}-bit stage-2 input size")
    outsize = min(s2.ps, oas, 48)
    omask = (1 << outsize) - 1
    bits = inputsize - (gshift + (3 - level) * stride)      # > stride: concatenated start tables
    table = s2.vttb & _MASK64 & ~((1 << max(bits + 3, 6)) - 1)
    if table & ~omask:
        return WalkFault(EventType.F_ADDR_SIZE, True, cls, level, ipa, f"S2TTB {s2.vttb:#x} above S2PS")
    if wc:
        for lv in range(3, level, -1):
            sh = gshift + (4 - lv) * stride
            hit = wc.get((sh, ipa >> sh))
            if hit is not None:
                table, level, bits = hit, lv, stride
                break
    while True:
        shift = gshift + (3 - level) * stride
        daddr = table + 8 * ((ipa >> shift) & ((1 << bits) - 1))
        try:
            desc = read(daddr)
        except BusError as e:
            return WalkFault(EventType.F_WALK_EABT, True, cls, level, daddr,
                             f"stage-2 level-{level} descriptor fetch for IPA {ipa:#x}: {e}")
        if not desc & 1:
            return WalkFault(EventType.F_TRANSLATION, True, cls, level, ipa,
                             f"invalid stage-2 level-{level} descriptor {desc:#x} at {daddr:#x}")
        if level < 3 and desc & 2:
            nxt = desc & _OA_FIELD & ~((1 << gshift) - 1)
            if nxt & ~omask:
                return WalkFault(EventType.F_ADDR_SIZE, True, cls, level, ipa,
                                 f"stage-2 next table {desc:#x} above {outsize}-bit S2PS")
            table = nxt
            level += 1
            bits = stride
            if wc is not None:
                wc[(shift, ipa >> shift)] = nxt
            continue
        if level == 3 and not desc & 2:
            return WalkFault(EventType.F_TRANSLATION, True, cls, 3, ipa, f"reserved level-3 descriptor {desc:#x}")
        if level < 3 and not (level == 2 or (level == 1 and gshift == 12)):
            return WalkFault(EventType.F_TRANSLATION, True, cls, level, ipa,
                             f"stage-2 block not allowed at level {level}")
        size = 1 << shift
        out_base = desc & _OA_FIELD & ~(size - 1)
        if out_base & ~omask:
            return WalkFault(EventType.F_ADDR_SIZE, True, cls, level, ipa,
                             f"stage-2 output {desc & ((1 << 52) - 1):#x} above {outsize}-bit S2PS")
        if not desc & (1 << 10) and not (s2.affd or s2.ha):
            return WalkFault(EventType.F_ACCESS, True, cls, level, ipa, f"stage-2 AF=0 in {desc:#x}")
        pp, pu = s2_perms(desc, xnx)
        return Leaf(out_base | (ipa & (size - 1)), ipa & ~(size - 1), out_base, size, level, s2.tg, pp, pu,
                    True, desc)


def s2_perms(desc: int, xnx: bool = False) -> tuple[int, int]:
    """S2AP (bit 6 read, bit 7 write) and XN (D8.4.3). Without FEAT_XNX only XN[1] (bit 54) counts, which is
    how Linux io-pgtable-arm's ARM_LPAE_PTE_XN (both bits) reads on such hardware."""
    rw = (PERM_R if desc >> 6 & 1 else 0) | (PERM_W if desc >> 7 & 1 else 0)
    xn = (desc >> 53) & 3
    if not xnx:
        x = 0 if xn & 2 else PERM_X
        return rw | x, rw | x
    priv_x = 0 if xn in (1, 2) else PERM_X
    user_x = 0 if xn in (2, 3) else PERM_X
    return rw | priv_x, rw | user_x


def need_of(write: bool, exec_: bool) -> int:
    """Permission an access needs: write -> W; instruction fetch -> X; otherwise R."""
    return PERM_W if write else (PERM_X if exec_ else PERM_R)
