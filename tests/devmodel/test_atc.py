"""The device ATC (devmodel/atc.py): lookups by SubstreamID, privilege and range, replacement, and the PCIe
invalidation rules (no PASID: every PASID; PASID: its own, plus global entries with Global Invalidate)."""
from __future__ import annotations

import pytest

from devmodel.atc import Atc
from devmodel.smmuv3.ats import AtsCompletion, AtsStatus


def comp(out: int, size: int = 4096, *, w: bool = False, priv: bool = False, global_: bool = False):
    return AtsCompletion(AtsStatus.SUCCESS, out, size, True, w, False, priv, global_)


def test_lookup_matches_ssid_privilege_and_range_and_translates() -> None:
    atc = Atc(4)
    e = atc.insert(3, 0x20_1234, comp(0x8000_0000, 0x20_0000))
    assert (e.base, e.size) == (0x20_0000, 0x20_0000)
    assert atc.lookup(3, 0x3F_FFFF, False) is e and e.translate(0x20_0010) == 0x8000_0010
    assert atc.lookup(None, 0x20_0000, False) is None and atc.lookup(3, 0x20_0000, True) is None
    assert atc.lookup(3, 0x40_0000, False) is None and (atc.hits, atc.misses) == (1, 3)
    assert e.allows(False, False) and not e.allows(True, False)


def test_insert_replaces_overlaps_and_evicts_oldest() -> None:
    atc = Atc(2)
    atc.insert(1, 0x1000, comp(0xA000))
    atc.insert(1, 0x1000, comp(0xB000, w=True))
    assert len(atc) == 1 and atc.lookup(1, 0x1000, False).out == 0xB000
    atc.insert(1, 0x2000, comp(0xC000))
    atc.insert(1, 0x3000, comp(0xD000))
    assert len(atc) == 2 and atc.evictions == 1 and atc.lookup(1, 0x1000, False) is None
    with pytest.raises(ValueError):
        Atc(0)


def test_invalidation_rules() -> None:
    atc = Atc(8)
    atc.insert(None, 0x1000, comp(0xA000))
    atc.insert(1, 0x1000, comp(0xB000))
    atc.insert(2, 0x1000, comp(0xC000, global_=True))
    atc.insert(2, 0x5000, comp(0xD000))
    assert atc.invalidate(1, 0x1000, 0x2000) == 1                     # PASID 1 only
    assert atc.invalidate(7, 0x0, 0x2000, global_=True) == 1          # the global entry of PASID 2
    assert atc.invalidate(None, 0x0, 1 << 64) == 2 and len(atc) == 0  # no PASID: everything in range
