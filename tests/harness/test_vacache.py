"""harness/vacache.py: the semihosting translation cache answers what a fresh walk answers, always: after
the guest rewrites a descriptor (with or without a TLBI), after a register change, with the MMU off; it caches
only successful walks and never raises anything but BusError."""
import pytest

from devmodel.bus import Bus, BusError
from devmodel.pagetable import PageAllocator, PageTableBuilder
from harness.vacache import MAX_ENTRIES, VaCache
from harness.vmem import TranslationRegs, translate

RAM, SIZE = 0x4000_0000, 16 << 20
TCR_4K_39 = 25 | (2 << 32)           # T0SZ = 25 (39-bit VA), TG0 = 4K, IPS = 40 bits
SCTLR_M = 1
MMFR = (5, 0, 0)


@pytest.fixture
def world():
    bus = Bus()
    bus.add_ram(RAM, SIZE, "ram")
    alloc = PageAllocator(bus, RAM + (8 << 20), 4 << 20)
    pt = PageTableBuilder(bus, alloc, granule=4096, ias=39)
    return bus, pt


def fresh(bus, pt, va):
    w = translate(TranslationRegs(1, SCTLR_M, TCR_4K_39, pt.ttb, 0, *MMFR), va, lambda a: bus.read(a, 8))
    return w.ipa if w.ok else None


def test_hits_follow_every_descriptor_change(world):
    bus, pt = world
    va = 0x20_0000_0123
    pt.map(va & ~0xFFF, RAM + 0x1000, 0x1000)
    c = VaCache(bus.read64, MMFR)
    c.use(1, SCTLR_M, TCR_4K_39, pt.ttb, 0)
    assert c.ipa(va) == RAM + 0x1123 == fresh(bus, pt, va)
    assert c.ipa(va + 8) == RAM + 0x112B and c.hits == 1 and c.walks == 1
    pt.map(va & ~0xFFF, RAM + 0x5000, 0x1000)            # remapped behind the cache's back, no TLBI
    assert c.ipa(va) == RAM + 0x5123 == fresh(bus, pt, va)
    ref = pt.walk(va)
    bus.write(ref.addr, 0, 8)                            # unmapped: the next access faults, nothing cached
    with pytest.raises(BusError, match="translation fault level 3"):
        c.ipa(va)
    with pytest.raises(BusError):
        c.ipa(va)
    pt.map(va & ~0xFFF, RAM + 0x7000, 0x1000)
    assert c.ipa(va) == RAM + 0x7123


def test_a_table_descriptor_change_is_seen_too(world):
    bus, pt = world
    pt.map(0x4000_0000, RAM, 0x20_0000)                   # one 2 MiB block
    c = VaCache(bus.read64, MMFR)
    c.use(1, SCTLR_M, TCR_4K_39, pt.ttb, 0)
    assert c.ipa(0x4000_1234) == RAM + 0x1234
    pt.map(0x4000_0000, RAM + 0x40_0000, 0x20_0000)
    assert c.ipa(0x4000_1234) == RAM + 0x40_1234 == fresh(bus, pt, 0x4000_1234)


def test_register_changes_empty_it_and_mmu_off_is_identity(world):
    bus, pt = world
    pt.map(0x1000, RAM + 0x3000, 0x1000)
    c = VaCache(bus.read64, MMFR)
    c.use(1, SCTLR_M, TCR_4K_39, pt.ttb, 0)
    assert c.ipa(0x1010) == RAM + 0x3010
    c.use(1, 0, TCR_4K_39, pt.ttb, 0)                    # MMU off: VA = IPA, nothing walked
    assert c.ipa(0x1010) == 0x1010 and not c.pages
    with pytest.raises(BusError, match="address size"):
        c.ipa(1 << 48)
    other = PageTableBuilder(bus, PageAllocator(bus, RAM + (12 << 20), 1 << 20), ias=39)
    other.map(0x1000, RAM + 0x9000, 0x1000)
    c.use(1, SCTLR_M, TCR_4K_39, other.ttb, 0)            # another TTBR0: the old entries must not answer
    assert c.ipa(0x1010) == RAM + 0x9010


def test_bounded_size(world):
    bus, pt = world
    pt.map(0, RAM, 0x20_0000, level=3)
    c = VaCache(bus.read64, MMFR)
    c.use(1, SCTLR_M, TCR_4K_39, pt.ttb, 0)
    for page in range(MAX_ENTRIES + 10):
        assert c.ipa(page << 12) == RAM + (page << 12)
    assert len(c.pages) <= MAX_ENTRIES


def test_mmu_off_walks_permit_everything_and_faults_name_their_kind():
    """harness/vmem.py reads devmodel.vmsa only where it walks: its MMU-off permissions are vmsa's R|W|X and its
    fault names follow vmsa's FaultKind (address size with the MMU off, translation on a missing table)."""
    from devmodel.vmsa import PERM_R, PERM_W, PERM_X, FaultKind
    w = translate(TranslationRegs(1, 0, 0, 0), 0x1234, lambda a: 0)
    assert w.ok and w.ipa == 0x1234 and w.perm_priv == w.perm_user == PERM_R | PERM_W | PERM_X
    far = translate(TranslationRegs(1, 0, 0, 0), 1 << 50, lambda a: 0)
    assert (far.kind, far.fault, far.fsc) == (FaultKind.ADDRESS_SIZE, "address size", 0)
    miss = translate(TranslationRegs(1, SCTLR_M, TCR_4K_39, RAM), 0x1000, lambda a: 0)
    assert (miss.kind, miss.fault, miss.detail) == (FaultKind.TRANSLATION, "translation", "translation fault level 1")
