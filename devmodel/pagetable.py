"""VMSAv8-64 translation table descriptors and a builder that writes stage-1 or stage-2 tables into memory.

Descriptor layouts (Arm ARM DDI 0487, D8.3 "Translation table descriptor formats"; bit positions checked
against Linux `drivers/iommu/io-pgtable-arm.c` (ARM_LPAE_PTE_AF = bit 10, NG = bit 11, AP_UNPRIV = 1 << 6,
AP_RDONLY = 2 << 6, HAP_READ = 1 << 6, HAP_WRITE = 2 << 6, XN = 3 << 53, APTABLE/XNTABLE in bits 63:59) and
QEMU `target/arm/ptw.c`):

* table descriptor (levels < 3, bits[1:0] = 0b11): next-level table address [47:granule], PXNTable 59,
  UXNTable 60, APTable 62:61, NSTable 63;
* block (levels 1-2, bits[1:0] = 0b01) and page (level 3, bits[1:0] = 0b11) descriptors, stage 1:
  AttrIndx 4:2, NS 5, AP[2:1] 7:6, SH 9:8, AF 10, nG 11, OA [47:level shift], DBM 51, Contiguous 52, PXN 53,
  UXN (XN in single-range regimes) 54;
* stage 2: MemAttr 5:2, S2AP 7:6 (bit 6 read, bit 7 write), SH 9:8, AF 10, XN 54 (XN[1:0] = 54:53 with
  FEAT_XNX).

`PageTableBuilder` is used by the walker's tests, the host SMMU driver (host stage-2 tables) and scenarios. It
writes through any object with `read(addr, size)`/`write(addr, value, size)` (a `devmodel.bus.Bus`), takes table
pages from an allocator callable (`PageAllocator` is a simple bump allocator) and finds descriptors with the
project's one walker (`devmodel/vmsa.py`, `walk_tables`), where the granule and level helpers it re-exports live.

Not modelled: 52-bit output addresses (FEAT_LPA/LPA2 descriptor formats), the Contiguous hint (never set by
the builder; the walker treats it as a hint and caches single entries), hierarchical permission disable (HPD).
"""
from __future__ import annotations

from typing import Callable, Protocol

from .bus import BusError
from .fields import Field, Layout
from .vmsa import (GRANULES, PERM_R, PERM_W, PERM_X, Leaf, block_levels, granule_shift, level_shift,
                   s2_start_level, start_level, walk_tables)

__all__ = [
    "S1_TABLE", "S1_LEAF", "S2_LEAF", "GRANULES", "PERM_R", "PERM_W", "PERM_X",
    "granule_shift", "level_shift", "start_level", "s2_start_level", "s2_sl0", "block_levels",
    "pte_s1", "pte_s2", "pte_table", "PageAllocator", "PageTableBuilder", "PteRef", "OA_MASK48",
]

OA_MASK48 = (1 << 48) - 1

# -- layouts ---------------------------------------------------------------------------------------------
S1_TABLE = Layout("S1_TABLE", 64, [
    Field("VALID", 0, 1), Field("TYPE", 1, 1, doc="1 = table at levels 0-2"),
    Field("NEXT", 12, 36, shift=12, doc="next-level table address [47:12] (low bits below the granule RES0)"),
    Field("PXNTABLE", 59, 1), Field("UXNTABLE", 60, 1), Field("APTABLE", 61, 2), Field("NSTABLE", 63, 1),
])

S1_LEAF = Layout("S1_LEAF", 64, [
    Field("VALID", 0, 1), Field("TYPE", 1, 1, doc="0 = block (levels 1-2), 1 = page (level 3)"),
    Field("ATTRINDX", 2, 3), Field("NS", 5, 1), Field("AP", 6, 2, doc="AP[2:1]: bit 7 read-only, bit 6 EL0"),
    Field("SH", 8, 2), Field("AF", 10, 1), Field("NG", 11, 1),
    Field("OA", 12, 36, shift=12, doc="output address [47:12]; bits below the block size RES0"),
    Field("OAHI", 48, 2, doc="OA[49:48] (52-bit formats); must be 0 with a 48-bit output size"),
    Field("DBM", 51, 1), Field("CONT", 52, 1), Field("PXN", 53, 1), Field("UXN", 54, 1),
    Field("SW", 55, 4), Field("PBHA", 59, 4),
])

S2_LEAF = Layout("S2_LEAF", 64, [
    Field("VALID", 0, 1), Field("TYPE", 1, 1), Field("MEMATTR", 2, 4),
    Field("S2AP", 6, 2, doc="bit 6 read, bit 7 write"), Field("SH", 8, 2), Field("AF", 10, 1),
    Field("OA", 12, 36, shift=12), Field("OAHI", 48, 2), Field("DBM", 51, 1), Field("CONT", 52, 1),
    Field("XN", 53, 2, doc="XN[1:0]; without FEAT_XNX only XN[1] (bit 54) counts"),
    Field("SW", 55, 4),
])

# AP[2:1] encodings (stage 1)
AP_RW_EL1, AP_RW_ALL, AP_RO_EL1, AP_RO_ALL = 0, 1, 2, 3

# MAIR index conventions used by the builder (Linux io-pgtable: 0 = Normal WBWA, 1 = Device-nGnRE ...)
ATTR_NORMAL = 0
S2_MEMATTR_NORMAL_WB = 0xF


def s2_sl0(level: int, gshift: int) -> int:
    """The SL0 value that makes a stage-2 walk start at `level` (inverse of `vmsa.s2_start_level`)."""
    return 2 - level if gshift == 12 else 3 - level


def pte_table(next_pa: int, *, aptable: int = 0, uxntable: bool = False, pxntable: bool = False) -> int:
    return S1_TABLE.pack(valid=1, type=1, next=next_pa, aptable=aptable, uxntable=int(uxntable),
                         pxntable=int(pxntable))


def pte_s1(pa: int, level: int, perm: int = PERM_R | PERM_W, *, user: bool = True, global_: bool = False,
           af: bool = True, attrindx: int = ATTR_NORMAL, pxn: bool | None = None, uxn: bool | None = None,
           sh: int = 3) -> int:
    """A stage-1 block (level < 3) or page (level 3) descriptor. `perm` PERM_W clears AP[2]; PERM_X clears
    UXN (and PXN unless `pxn` says otherwise); `user` sets AP[1] (EL0 access)."""
    ap = (0 if perm & PERM_W else 2) | (1 if user else 0)
    x = bool(perm & PERM_X)
    return S1_LEAF.pack(valid=1, type=1 if level == 3 else 0, attrindx=attrindx, ap=ap, sh=sh, af=int(af),
                        ng=0 if global_ else 1, oa=pa,
                        pxn=int(not x if pxn is None else pxn), uxn=int(not x if uxn is None else uxn))


def pte_s2(pa: int, level: int, perm: int = PERM_R | PERM_W, *, af: bool = True,
           memattr: int = S2_MEMATTR_NORMAL_WB, xn: int | None = None, sh: int = 3) -> int:
    """A stage-2 block or page descriptor. S2AP from PERM_R/PERM_W; XN = 0b10 (no execution) unless PERM_X."""
    s2ap = (1 if perm & PERM_R else 0) | (2 if perm & PERM_W else 0)
    return S2_LEAF.pack(valid=1, type=1 if level == 3 else 0, memattr=memattr, s2ap=s2ap, sh=sh, af=int(af),
                        oa=pa, xn=(0 if perm & PERM_X else 2) if xn is None else xn)


class Memory(Protocol):
    def read(self, addr: int, size: int) -> int: ...

    def write(self, addr: int, value: int, size: int) -> None: ...


class PageAllocator:
    """Bump allocator of zeroed, aligned blocks inside [base, base + size)."""

    def __init__(self, mem: Memory, base: int, size: int):
        self.mem, self.base, self.end, self.next = mem, base, base + size, base

    def __call__(self, size: int, align: int | None = None) -> int:
        align = align or size
        pa = (self.next + align - 1) & ~(align - 1)
        if pa + size > self.end:
            raise MemoryError(f"page allocator [{self.base:#x}, {self.end:#x}) cannot fit {size:#x} bytes")
        self.next = pa + size
        wb = getattr(self.mem, "write_bytes", None)
        if wb is not None:
            wb(pa, bytes(size))
        else:
            for off in range(0, size, 8):
                self.mem.write(pa + off, 0, 8)
        return pa


class PteRef:
    """Where a descriptor lives: its address, level, value."""
    __slots__ = ("addr", "level", "value")

    def __init__(self, addr: int, level: int, value: int):
        self.addr, self.level, self.value = addr, level, value

    def __repr__(self) -> str:
        return f"PteRef(addr={self.addr:#x}, level={self.level}, value={self.value:#x})"


class PageTableBuilder:
    """Builds VMSAv8-64 stage-1 or stage-2 tables in memory.

    `ias` is the input address size in bits (64 - TxSZ). Stage 1 starts at the natural level; stage 2 at
    `start` (default: natural level, or one level lower with concatenated tables when `concat` > 1 is
    asked for). `ttb` is the root table address; `sl0` the matching STE.S2SL0 value.
    """

    def __init__(self, mem: Memory, alloc: Callable[..., int], *, granule: int = 4096, stage: int = 1,
                 ias: int = 48, start: int | None = None, oas: int = 48):
        self.mem, self.alloc, self.stage = mem, alloc, stage
        self.granule, self.gshift = granule, granule_shift(granule)
        self.stride = self.gshift - 3
        self.ias, self.oas = ias, oas
        natural = start_level(ias, self.gshift)
        self.start = natural if start is None else start
        if not natural <= self.start <= 3:
            raise ValueError(f"start level {self.start} impossible for a {ias}-bit input (natural {natural})")
        root_bits = ias - level_shift(self.start, self.gshift)
        if root_bits > self.stride + (4 if stage == 2 else 0):
            raise ValueError(f"start level {self.start} needs {1 << (root_bits - self.stride)} concatenated "
                             "tables" + (" (at most 16)" if stage == 2 else " (stage 1 cannot concatenate)"))
        root_size = max(8 << root_bits, 64) if root_bits <= self.stride else 8 << root_bits
        self.root_size = root_size
        self.ttb = alloc(root_size, max(root_size, 64))
        self.tables = {self.ttb}

    @property
    def sl0(self) -> int:
        return s2_sl0(self.start, self.gshift)

    @property
    def tsz(self) -> int:
        return 64 - self.ias

    # -- helpers -----------------------------------------------------------------------------------------
    def _bits(self, level: int) -> int:
        return (self.ias - level_shift(level, self.gshift)) if level == self.start else self.stride

    def _index(self, va: int, level: int) -> int:
        return (va >> level_shift(level, self.gshift)) & ((1 << self._bits(level)) - 1)

    def _new_table(self) -> int:
        pa = self.alloc(self.granule, self.granule)
        self.tables.add(pa)
        return pa

    def _leaf(self, pa: int, level: int, perm: int, kw: dict) -> int:
        if self.stage == 1:
            return pte_s1(pa, level, perm, **kw)
        return pte_s2(pa, level, perm, **kw)

    def _check(self, va: int) -> None:
        vmask = (1 << self.ias) - 1
        if self.stage == 1 and va >> 55 & 1:     # TTBR1 half: upper bits all ones
            if (va | vmask) & ((1 << 64) - 1) != (1 << 64) - 1:
                raise ValueError(f"va {va:#x} outside the {self.ias}-bit TTB1 range")
        elif va & ~vmask:
            raise ValueError(f"address {va:#x} outside the {self.ias}-bit input range")

    def _walk(self, va: int):
        # no access-flag or permission checks: the builder's tables as the walker reads them
        return walk_tables(self._read8, va, self.ttb, self.start, self._bits(self.start), self.gshift, self.oas,
                           af_ok=True, s1=self.stage == 1)

    def _read8(self, addr: int) -> int:
        return self.mem.read(addr, 8)

    def walk(self, va: int) -> PteRef:
        """The descriptor that translates `va`: the leaf, or the one the walk stopped at (invalid, reserved,
        output or next-table address above `oas`). BusError if a table is not in memory."""
        r = self._walk(va)
        if type(r) is not Leaf and r.desc is None:
            raise BusError(r.addr, 8, r.reason)
        return PteRef(r.addr, r.level, r.desc)

    # -- public ------------------------------------------------------------------------------------------
    def map(self, va: int, pa: int, size: int, perm: int = PERM_R | PERM_W, *, level: int | None = None,
            **kw) -> None:
        """Map [va, va + size) to pa. With `level`=None use the largest blocks alignment allows; with a
        level, use descriptors of exactly that level. Extra keywords go to `pte_s1`/`pte_s2`. Existing
        blocks in the way are split (their other parts keep their mapping)."""
        g = self.granule
        if va % g or pa % g or size % g or size <= 0:
            raise ValueError(f"map({va:#x}, {pa:#x}, {size:#x}) not aligned to the {g:#x} granule")
        self._check(va)
        self._check(va + size - 1)
        blocks = block_levels(self.gshift)
        end = va + size
        while va < end:
            if level is not None:
                lv = level
            else:
                lv = 3
                for cand in sorted(blocks):
                    if cand < self.start:
                        continue
                    bs = 1 << level_shift(cand, self.gshift)
                    if va % bs == 0 and pa % bs == 0 and end - va >= bs:
                        lv = cand
                        break
            bs = 1 << level_shift(lv, self.gshift)
            if va % bs or pa % bs:
                raise ValueError(f"va {va:#x}/pa {pa:#x} not aligned to a level-{lv} block ({bs:#x})")
            self.set_pte(va, lv, self._leaf(pa, lv, perm, kw))
            va += bs
            pa += bs

    def set_pte(self, va: int, level: int, value: int) -> PteRef:
        """Write `value` as the level-`level` descriptor for `va`, creating (or splitting into) tables."""
        if not self.start <= level <= 3:
            raise ValueError(f"level {level} outside {self.start}..3")
        table = self.ttb
        for lv in range(self.start, level):
            addr = table + 8 * self._index(va, lv)
            d = self.mem.read(addr, 8)
            if d & 1 and d & 2:
                table = d & OA_MASK48 & ~(self.granule - 1)
                continue
            new = self._new_table()
            if d & 1:                       # a block in the way: split it into the next level
                self._split(new, d, lv + 1)
            self.mem.write(addr, pte_table(new), 8)
            table = new
        addr = table + 8 * self._index(va, level)
        self.mem.write(addr, value, 8)
        return PteRef(addr, level, value)

    def _split(self, table: int, block: int, level: int) -> None:
        bs = 1 << level_shift(level, self.gshift)
        base = block & OA_MASK48 & ~((bs << self.stride) - 1)
        attrs = block & ~OA_MASK48 | block & 0xFFF
        page_type = 2 if level == 3 else 0
        for i in range(1 << self.stride):
            self.mem.write(table + 8 * i, (attrs & ~2) | page_type | (base + i * bs), 8)

    def unmap(self, va: int, size: int) -> None:
        """Invalidate the leaf descriptors covering [va, va + size) (blocks are split as needed)."""
        end = va + size
        while va < end:
            ref = self.walk(va)
            bs = 1 << level_shift(ref.level, self.gshift)
            if not ref.value & 1:
                va = (va | (bs - 1)) + 1
                continue
            base = va & ~(bs - 1)
            if base < va or base + bs > end:    # partial block: split and retry at a finer level
                self.set_pte(va, ref.level + 1, 0)
                nbs = 1 << level_shift(ref.level + 1, self.gshift)
                va = (va | (nbs - 1)) + 1
                continue
            self.mem.write(ref.addr, 0, 8)
            va = base + bs

    def update(self, va: int, *, set_bits: int = 0, clear_bits: int = 0) -> PteRef:
        """Change the leaf descriptor of `va` in place (e.g. clear AF, make read-only)."""
        ref = self.walk(va)
        ref.value = (ref.value & ~clear_bits) | set_bits
        self.mem.write(ref.addr, ref.value, 8)
        return ref

    def translate(self, va: int) -> int | None:
        """The output address of `va` through this builder's tables, or None where a walk faults (translation
        or address size; access flags and permissions are not checked)."""
        r = self._walk(va)
        return r.oa if type(r) is Leaf else None
