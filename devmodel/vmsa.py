"""VMSAv8-64 translation table walks: the project's one implementation, pure functions over a `read(addr) -> u64`
callable (`Bus.read64`, or anything that returns the little-endian descriptor at an address).

Three users build on it with thin adapters:
* the SMMU (`devmodel/smmuv3/walk.py`): its decoded CD/STE (`S1Cfg`/`S2Cfg` have the field names of `S1Regime`
  and `S2Regime` below) in, `VmsaFault`s out as SMMU events (F_TRANSLATION, F_ADDR_SIZE, F_ACCESS, F_WALK_EABT);
* the vCPU's view of memory by VA (`harness/vmem.py`): TCR_ELx/TTBRn_ELx/SCTLR_ELx decoded into an `S1Regime`,
  faults as DFSC/IFSC values for death lines;
* the page-table builder (`devmodel/pagetable.py`): `walk_tables` locates the descriptor that translates an
  address (`Leaf.addr`, `VmsaFault.addr`/`desc`).

Sources (checked, not copied): Arm ARM DDI 0487 chapter D8 (D8.1/D8.2 translation granules, input size, TTBR
selection, start level and concatenation of stage-2 tables; D8.3 descriptor formats; D8.4 permissions; D8.5 the
access flag) and its pseudo-code (AArch64.MaxTxSZ, AArch64.S1DirectBasePermissions, AArch64.S2InconsistentSL);
QEMU `target/arm/ptw.c` and `target/arm/helper.c` (aa64_va_parameters: TxSZ bounds; get_S1prot: APTable merged
into AP, PXN implied for EL0-writable pages in two-range regimes), `hw/arm/smmu-common.c` (smmu_ptw_64_s1/s2).

Fault priority follows the pseudo-code: translation (invalid or reserved descriptor, input out of range, EPD,
unusable TxSZ) > address size (table or output address above the output size) > access flag. Permissions are
not checked here: a `Leaf` carries what it grants (`perm_priv`, `perm_user`) and the caller compares, so a
cached translation can fault without a walk.

TxSZ bounds are FEAT_TTST's (`max_tsz`): a caller whose CPU or SMMU lacks it checks or clamps first.

Hardware updates (`Httu`, DDI 0487 D8.5, FEAT_HAFDBS): with an `httu` the walk sets AF and, for writes, turns a
writable-clean leaf (DBM, bit 51) writable-dirty, each time with a compare-and-swap of the 64-bit descriptor and
a new walk when the descriptor changed in between; a `Leaf` left writable-clean says so (`dbm`), so a cached
read translation is never used for a write without the update. Without `httu`, HA=1 only stops AF=0 from
faulting and nothing is written (the vCPU's view).

Not modelled yet: 52-bit VA/IPA/PA (FEAT_LVA/LPA/LPA2 formats; descriptor bits [51:48] are ignored, as
Unicorn's MMU ignores them), hardware updates of table descriptors (FEAT_HAFT), HPD, the Contiguous hint (a
hint: one descriptor is one translation), big-endian tables.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Callable

from .bus import BusError

__all__ = ["PERM_R", "PERM_W", "PERM_X", "GRANULES", "granule_shift", "level_shift", "start_level", "block_levels",
           "MIN_TSZ", "max_tsz", "FaultKind", "VmsaFault", "Leaf", "S1Regime", "S2Regime", "s1_select", "walk_s1",
           "walk_s2", "s2_start_level", "s2_walk_start", "walk_tables", "s1_perms", "s2_perms", "ReadFn", "TableXlate",
           "Httu"]

PERM_R, PERM_W, PERM_X = 1, 2, 4           # the values devmodel.smmuv3.config and devmodel.pagetable use

GRANULES = (4096, 16384, 65536)
_GSHIFT = {4096: 12, 16384: 14, 65536: 16}
MIN_TSZ = 16                               # 48-bit input (FEAT_LVA's 52-bit VA not modelled)
_MASK64 = (1 << 64) - 1
_MASK56 = (1 << 56) - 1
_OA_FIELD = (1 << 48) - 1                  # descriptor OA bits [47:0] (low bits masked per level)
_AF, _NG = 1 << 10, 1 << 11
_AP2 = 1 << 7                               # stage 1 AP[2] (read-only); stage 2 S2AP[1] (write)
_DBM = 1 << 51

ReadFn = Callable[[int], int]              # read(addr) -> the 64-bit descriptor at addr; BusError if none there
# nested walks: the PA of a stage-1 table access at an IPA, or the caller's own fault value (returned unchanged)
TableXlate = Callable[[int], Any]
# perms(desc, ap_table, xn_table) -> (perm_priv, perm_user) for a leaf
PermsFn = Callable[[int, int, int], "tuple[int, int]"]


def granule_shift(granule: int) -> int:
    """log2 of a granule in bytes; ValueError for anything but 4K, 16K, 64K."""
    g = _GSHIFT.get(granule)
    if g is None:
        raise ValueError(f"granule {granule:#x} is not 4K, 16K or 64K")
    return g


def level_shift(level: int, gshift: int) -> int:
    """Address bit where `level` starts indexing (QEMU smmu-internal.h level_shift)."""
    return gshift + (3 - level) * (gshift - 3)


def start_level(inputsize: int, gshift: int) -> int:
    """Stage-1 start level for an input size (DDI 0487 D8.2: levels = ceil((inputsize - granule bits) / stride)).
    Only meaningful for input sizes within the granule's bounds (`max_tsz`): below them it would be level 4."""
    stride = gshift - 3
    return 4 - -(-(inputsize - gshift) // stride)


def block_levels(gshift: int) -> tuple[int, ...]:
    """Levels at which a block descriptor is allowed with 48-bit output addresses (D8.3)."""
    return (1, 2) if gshift == 12 else (2,)


def max_tsz(granule: int, ttst: bool = True) -> int:
    """The largest usable TxSZ (DDI 0487 pseudo-code AArch64.MaxTxSZ; IHI 0070 5.4 CD.T0SZ with IDR3.STT): 39
    without FEAT_TTST; with it 48 for the 4K and 16K granules and 47 for 64K, the smallest input size that
    still leaves one level of table (a 64K granule resolves 16 bits, so a 16-bit input would need level 4)."""
    if not ttst:
        return 39
    return 47 if granule == 65536 else 48


class FaultKind(IntEnum):
    """The walk's fault status codes (DDI 0487 pseudo-code Fault_*; DFSC/IFSC base values, level in bits[1:0])."""
    ADDRESS_SIZE = 0b000000        # Fault_AddressSize
    TRANSLATION = 0b000100         # Fault_Translation
    ACCESS_FLAG = 0b001000         # Fault_AccessFlag
    EXTERNAL_ABORT = 0b010100      # Fault_SyncExternalOnWalk: the descriptor read failed


@dataclass(frozen=True, slots=True)
class VmsaFault:
    """Why a walk stopped. `addr`: the descriptor's address (for EXTERNAL_ABORT the address whose read failed,
    after `table_xlate`); `desc`: the descriptor read (None when the fault came before any read)."""
    kind: FaultKind
    level: int = 0
    addr: int | None = None
    desc: int | None = None
    reason: str = ""

    @property
    def fsc(self) -> int:
        """The DFSC/IFSC value of this fault (ESR_ELx.ISS[5:0], DDI 0487 D17.2.37)."""
        return int(self.kind) | (self.level & 3)


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
    desc: int = 0         # the raw leaf descriptor (after any hardware update)
    addr: int = 0         # where it was read (before any table_xlate)
    dbm: bool = False     # writable-clean under hardware dirty management: a write needs the update first


@dataclass(frozen=True, slots=True)
class S1Regime:
    """What a stage-1 walk reads from its configuration: granules in bytes, sizes in bits (callers decode the
    TCR_ELx.TG0/TG1 or CD.TG0/TG1 encodings, which differ). The walkers read these attributes from any object
    that has them: the SMMU passes its `S1Cfg` unchanged."""
    ttb0: int
    ttb1: int = 0
    t0sz: int = 16
    t1sz: int = 16
    tg0: int = 4096
    tg1: int = 4096
    epd0: bool = False
    epd1: bool = False
    ips: int = 48
    tbi: int = 0          # bit 0 TBI0, bit 1 TBI1
    affd: bool = False    # access flag faults disabled (SMMU CD.AFFD; CPUs: False)
    ha: bool = False      # hardware access flag (FEAT_HAFDBS): AF=0 does not fault
    wxn: bool = False
    pan: bool = False


@dataclass(frozen=True, slots=True)
class S2Regime:
    """What a stage-2 walk reads (VTCR_EL2/VTTBR_EL2 or STE.S2*; the SMMU passes its `S2Cfg`)."""
    vttb: int
    t0sz: int
    sl0: int              # raw SL0 (its meaning depends on the granule)
    tg: int = 4096
    ps: int = 48
    affd: bool = False
    ha: bool = False


@dataclass(frozen=True, slots=True)
class Httu:
    """Hardware updates of one stage's descriptors (DDI 0487 D8.5 "Hardware updates of the translation tables",
    FEAT_HAFDBS; IHI 0070 3.13 "Translation table entries and Access/Dirty flags"): `ha` sets the Access flag of a
    leaf the walk uses, `hd` (effective only with `ha`) makes a writable-clean leaf writable-dirty on a write.
    `cas(pa, expected, new) -> found` is the atomic update (`Bus.cas64`: a CPU's concurrent change is never
    overwritten, the walk retries). `write_xlate(addr)`: for nested stage 1, the PA at which to write a
    descriptor whose address is an IPA (a stage-2 *write*), or the caller's fault value, returned unchanged."""
    ha: bool
    hd: bool
    cas: Callable[[int, int, int], int]
    write_xlate: TableXlate | None = None


def _fault(kind: FaultKind, level: int, reason: str, addr: int | None = None, desc: int | None = None):
    return VmsaFault(kind, level, addr, desc, reason)


# -- stage 1 ---------------------------------------------------------------------------------------------------

def s1_select(s1: S1Regime, va: int, two_ranges: bool = True):
    """Pick the TTB for `va` (DDI 0487 D8.2.3; IHI 0070 3.4.1): returns (ttb, tsz, granule, tbi, upper) or a
    VmsaFault. Two VA ranges except in single-range regimes (EL2 without E2H, EL3), which have TTB0 only."""
    upper = two_ranges and bool(va >> 55 & 1)
    if upper:
        ttb, tsz, gran, epd, tbi = s1.ttb1, s1.t1sz, s1.tg1, s1.epd1, bool(s1.tbi & 2)
    else:
        ttb, tsz, gran, epd, tbi = s1.ttb0, s1.t0sz, s1.tg0, s1.epd0, bool(s1.tbi & 1)
    if gran not in _GSHIFT or not MIN_TSZ <= tsz <= max_tsz(gran):
        return _fault(FaultKind.TRANSLATION, 0, f"T{int(upper)}SZ={tsz}/TG={gran:#x} unusable")
    inputsize = 64 - tsz
    top = 56 if tbi else 64
    hi = (va & ((1 << top) - 1)) >> inputsize
    if hi != ((1 << (top - inputsize)) - 1 if upper else 0):
        return _fault(FaultKind.TRANSLATION, 0, f"va {va:#x} outside the {inputsize}-bit TTB{int(upper)} range")
    if epd:
        return _fault(FaultKind.TRANSLATION, 0, f"EPD{int(upper)}=1: no walk through TTB{int(upper)}")
    return ttb, tsz, gran, tbi, upper


def walk_s1(s1: S1Regime, va: int, read: ReadFn, *, two_ranges: bool = True, oas: int = 48,
            table_xlate: TableXlate | None = None, wc: dict | None = None, httu: Httu | None = None,
            write: bool = False, priv: bool = False):
    """Stage-1 walk of `va` -> Leaf | VmsaFault (or a fault value of `table_xlate`, unchanged). Output size =
    min(IPS, oas, 48). In nested mode `table_xlate` translates every table address (an IPA) through stage 2.
    `wc`: an optional walk cache {(shift, va[55:shift]): (table, APTable, XNTable)} filled and used here.
    `httu`: hardware AF/dirty updates for an access that is a `write` (or not) at privilege `priv`; without
    it, `s1.ha` only stops AF=0 from faulting (a view that writes nothing, like the vCPU's)."""
    sel = s1_select(s1, va, two_ranges)
    if type(sel) is VmsaFault:
        return sel
    ttb, tsz, gran, _tbi, _upper = sel
    gshift = _GSHIFT[gran]
    inputsize = 64 - tsz
    level = start_level(inputsize, gshift)
    bits = inputsize - level_shift(level, gshift)
    outsize = min(s1.ips, oas, 48)
    # TTB: bits below the (at least 64-byte) table alignment are RES0 and ignored (D8.2.4)
    table = ttb & _MASK64 & ~((1 << max(bits + 3, 6)) - 1)
    if table >> outsize:
        return _fault(FaultKind.ADDRESS_SIZE, level, f"TTB {ttb:#x} above the {outsize}-bit output size")
    single = not two_ranges

    def perms(desc: int, ap_table: int, xn_table: int) -> tuple[int, int]:
        return s1_perms(s1, desc, ap_table, xn_table, single)
    return walk_tables(read, va, table, level, bits, gshift, outsize, perms, af_ok=s1.affd or s1.ha,
                       single=single, table_xlate=table_xlate, wc=wc, httu=httu, write=write, priv=priv)


def s1_perms(s1: S1Regime, desc: int, ap_table: int, xn_table: int, single: bool) -> tuple[int, int]:
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


# -- stage 2 ---------------------------------------------------------------------------------------------------

def s2_start_level(sl0: int, gshift: int) -> int:
    """SL0 / VTCR_EL2.SL0 / STE.S2SL0 -> start level (DDI 0487 D8.2.6; QEMU get_start_level); may be out of range
    (`s2_walk_start` checks)."""
    return 2 - sl0 if gshift == 12 else 3 - sl0


def s2_walk_start(s2: S2Regime, gshift: int) -> int | VmsaFault:
    """Start level from SL0, checked against T0SZ (DDI 0487 D8.2.6, AArch64.S2InconsistentSL): the start level
    resolves at least the bits above the natural start and at most 16 concatenated tables."""
    stride = gshift - 3
    inputsize = 64 - s2.t0sz
    if not MIN_TSZ <= s2.t0sz <= max_tsz(1 << gshift):
        return _fault(FaultKind.TRANSLATION, 0, f"T0SZ={s2.t0sz} unusable")
    if not 0 <= s2.sl0 <= 3:
        return _fault(FaultKind.TRANSLATION, 0, f"SL0={s2.sl0} unusable")
    level = s2_start_level(s2.sl0, gshift)
    if level < 0 or (level == 0 and gshift != 12):
        return _fault(FaultKind.TRANSLATION, 0, f"SL0={s2.sl0} reserved with a {1 << (gshift - 10)}K granule")
    extra = inputsize - level_shift(level, gshift) - stride
    if level < start_level(inputsize, gshift) or extra > 4:
        return _fault(FaultKind.TRANSLATION, level, f"SL0={s2.sl0} (level {level}) inconsistent with "
                                                    f"T0SZ={s2.t0sz}")
    return level


def walk_s2(s2: S2Regime, ipa: int, read: ReadFn, *, oas: int = 48, wc: dict | None = None,
            xnx: bool = False, httu: Httu | None = None, write: bool = False) -> Leaf | VmsaFault:
    """Stage-2 walk of `ipa` -> Leaf | VmsaFault. `xnx`: FEAT_XNX (XN[1:0] both count). `wc`, `httu` and
    `write` as for `walk_s1` (stage-2 permissions do not depend on privilege)."""
    gshift = _GSHIFT.get(s2.tg)
    if gshift is None:
        return _fault(FaultKind.TRANSLATION, 0, f"TG={s2.tg} unusable")
    level = s2_walk_start(s2, gshift)
    if type(level) is VmsaFault:
        return level
    inputsize = 64 - s2.t0sz
    if ipa >> inputsize or ipa < 0:
        return _fault(FaultKind.TRANSLATION, level, f"IPA {ipa:#x} above the {inputsize}-bit input size")
    outsize = min(s2.ps, oas, 48)
    bits = inputsize - level_shift(level, gshift)       # > stride: concatenated start tables
    table = s2.vttb & _MASK64 & ~((1 << max(bits + 3, 6)) - 1)
    if table >> outsize:
        return _fault(FaultKind.ADDRESS_SIZE, level, f"TTB {s2.vttb:#x} above the {outsize}-bit output size")

    def perms(desc: int, _ap: int, _xn: int) -> tuple[int, int]:
        return s2_perms(desc, xnx)
    return walk_tables(read, ipa, table, level, bits, gshift, outsize, perms, af_ok=s2.affd or s2.ha, s1=False,
                       wc=wc, httu=httu, write=write)


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


# -- the descent, shared by both stages ---------------------------------------------------------------------------

def _no_perms(_desc: int, _ap: int, _xn: int) -> tuple[int, int]:
    return 0, 0


def _wc_resume(wc: dict, key_addr: int, level: int, gshift: int) -> tuple[int, int, int, int] | None:
    """The deepest cached table for `key_addr` below `level`: (table, APTable, XNTable, its level) or None."""
    for lv in range(3, level, -1):
        sh = level_shift(lv - 1, gshift)
        hit = wc.get((sh, key_addr >> sh))
        if hit is not None:
            return (*hit, lv)
    return None


def walk_tables(read: ReadFn, addr: int, table: int, level: int, bits: int, gshift: int, outsize: int = 48,
                perms: PermsFn = _no_perms, *, af_ok: bool = False, s1: bool = True, single: bool = False,
                table_xlate: TableXlate | None = None, wc: dict | None = None, httu: Httu | None = None,
                write: bool = False, priv: bool = False):
    """Walk from `table` (the start level's, with `bits` index bits: more than a stride for concatenated stage-2
    tables) to the descriptor that translates `addr` -> Leaf | VmsaFault, with the descriptor checks of D8.3
    for either stage (`s1`: table attributes and nG). `Leaf.addr`, `VmsaFault.addr`/`desc` locate it.

    `httu`: hardware updates of the leaf (AF; dirty state for a `write` access at privilege `priv`), each one a
    compare-and-swap of the descriptor; when another agent changed the descriptor since it was read, the walk
    starts again from `table` and sees the new value (bounded: a descriptor that keeps changing faults)."""
    if httu is None:                        # nothing is written: no race to retry
        return _descend(read, addr, table, level, bits, gshift, outsize, perms, af_ok, s1, single, table_xlate, wc,
                        None, write, priv)
    for _ in range(_UPDATE_TRIES):
        r = _descend(read, addr, table, level, bits, gshift, outsize, perms, af_ok, s1, single, table_xlate, wc,
                     httu, write, priv)
        if r is not _RETRY:
            return r
    return VmsaFault(FaultKind.TRANSLATION, level, None, None,
                     f"the descriptor for {addr:#x} changed under {_UPDATE_TRIES} hardware updates in a row")


_RETRY = object()          # _descend: the hardware update lost a race; walk again
_UPDATE_TRIES = 4


def _descend(read: ReadFn, addr: int, table: int, level: int, bits: int, gshift: int, outsize: int,
             perms: PermsFn, af_ok: bool, s1: bool, single: bool, table_xlate: TableXlate | None, wc: dict | None,
             httu: Httu | None, write: bool, priv: bool):
    stride = gshift - 3
    omask = ~((1 << outsize) - 1)
    # APTable[1:0] and {UXNTable, PXNTable} accumulate in stage 1; single-range regimes have only APTable[1]
    # and XNTable (bit 60); stage 2 has neither (its table descriptors' bits [63:59] are RES0)
    tmask = (2 if single else 3) if s1 else 0
    ap_table = xn_table = 0
    key_addr = addr & _MASK56
    if wc:
        hit = _wc_resume(wc, key_addr, level, gshift)
        if hit is not None:
            table, ap_table, xn_table, level = hit
            bits = stride
    while True:
        shift = gshift + (3 - level) * stride
        daddr = table + 8 * ((addr >> shift) & ((1 << bits) - 1))
        pa = daddr if table_xlate is None else table_xlate(daddr)
        if type(pa) is not int:
            return pa                       # the caller's stage-2 fault, unchanged
        try:
            desc = read(pa)
        except BusError as e:
            return VmsaFault(FaultKind.EXTERNAL_ABORT, level, pa, None, f"level-{level} descriptor fetch: {e}")
        if not desc & 1:
            return VmsaFault(FaultKind.TRANSLATION, level, daddr, desc,
                             f"invalid level-{level} descriptor {desc:#x} at {daddr:#x}")
        if level < 3 and desc & 2:                       # table descriptor
            nxt = desc & _OA_FIELD & ~((1 << gshift) - 1)
            if nxt & omask:
                return VmsaFault(FaultKind.ADDRESS_SIZE, level, daddr, desc,
                                 f"next table {desc & ((1 << 52) - 1):#x} above the {outsize}-bit output size")
            ap_table |= (desc >> 61) & tmask
            xn_table |= (desc >> 59) & tmask
            table = nxt
            level += 1
            bits = stride
            if wc is not None:
                wc[(shift, key_addr >> shift)] = (nxt, ap_table, xn_table)
            continue
        return _leaf(desc, addr, daddr, pa, level, gshift, outsize, perms, af_ok, s1, (ap_table, xn_table), httu,
                     write, priv)


def _leaf(desc: int, addr: int, daddr: int, pa: int, level: int, gshift: int, outsize: int, perms: PermsFn,
          af_ok: bool, s1: bool, table_attrs: tuple[int, int], httu: Httu | None, write: bool, priv: bool):
    """The checks of a block/page descriptor (D8.3, D8.5), its hardware update, and the Leaf."""
    if level == 3 and not desc & 2:
        return VmsaFault(FaultKind.TRANSLATION, 3, daddr, desc, f"reserved level-3 descriptor {desc:#x}")
    if level < 3 and not (level == 2 or (level == 1 and gshift == 12)):
        return VmsaFault(FaultKind.TRANSLATION, level, daddr, desc,
                         f"block descriptor not allowed at level {level} with a {1 << (gshift - 10)}K granule")
    size = 1 << (gshift + (3 - level) * (gshift - 3))
    out_base = desc & _OA_FIELD & ~(size - 1)
    if out_base >> outsize:
        return VmsaFault(FaultKind.ADDRESS_SIZE, level, daddr, desc,
                         f"output address {desc & ((1 << 52) - 1):#x} above the {outsize}-bit output size")
    if not desc & _AF and not af_ok:
        return VmsaFault(FaultKind.ACCESS_FLAG, level, daddr, desc, f"AF=0 in {desc:#x}")
    ap_table, xn_table = table_attrs
    dbm = False
    if httu is not None:
        upd = _hw_update(httu, desc, pa, daddr, level, s1, perms, ap_table, xn_table, write, priv)
        if type(upd) is not tuple:
            return upd                      # _RETRY, or the caller's fault on the update's stage-2 write
        desc, dbm = upd
    pp, pu = perms(desc, ap_table, xn_table)
    return Leaf(out_base | (addr & (size - 1)), addr & ~(size - 1), out_base, size, level, 1 << gshift, pp, pu,
                not (s1 and desc & _NG), desc, daddr, dbm)


def _hw_update(httu: Httu, desc: int, pa: int, daddr: int, level: int, s1: bool, perms: PermsFn, ap_table: int,
               xn_table: int, write: bool, priv: bool):
    """The hardware update of a leaf (DDI 0487 D8.5; IHI 0070 3.13) -> (descriptor now in memory, writable-clean)
    or _RETRY when the compare-and-swap found another value, or the fault of `httu.write_xlate`.

    AF: set on any use of the descriptor (HA). Dirty state (HD, effective only with HA): a writable-clean leaf
    (DBM=1 with AP[2]=1 at stage 1, S2AP[1]=0 at stage 2) becomes writable-dirty (AP[2]=0 / S2AP[1]=1) on a write
    that the dirty descriptor would permit (APTable, PAN, privilege still apply: otherwise no update, and the
    caller's permission check faults). A leaf left writable-clean is reported so that a cached translation of it
    never grants a write without this update."""
    if not httu.ha:
        return desc, False
    new = desc | _AF
    clean = httu.hd and bool(desc & _DBM) and bool(desc & _AP2) == s1
    if clean and write:
        dirty = desc ^ _AP2                          # stage 1: AP[2] 1 -> 0; stage 2: S2AP[1] 0 -> 1
        pp, pu = perms(dirty, ap_table, xn_table)
        if (pp if priv else pu) & PERM_W:
            new, clean = dirty | _AF, False
    if new == desc:
        return desc, clean
    wpa = pa if httu.write_xlate is None else httu.write_xlate(daddr)
    if type(wpa) is not int:
        return wpa
    try:
        found = httu.cas(wpa, desc, new)
    except BusError as e:
        return VmsaFault(FaultKind.EXTERNAL_ABORT, level, wpa, desc, f"level-{level} descriptor update: {e}")
    if found != desc:
        return _RETRY
    return new, clean
