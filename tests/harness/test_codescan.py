"""The code pre-scans (harness/codescan.py: only the words of the wanted top byte are tested) against a test of
every word: the same sites, in order, on real images and on random code with the instructions planted at
aligned and unaligned offsets, next to each other, first and last, and before a partial word."""
from __future__ import annotations

import random

import pytest

from harness import codescan
from harness.debug import uses_debug_registers
from harness.elfload import load_elf
from harness.interrupts import scan_unmask_sites
from harness.trap import scan_barriers, scan_erets

from guestbin import ROOT, guest_elf

KUT = ROOT / "tests" / "fixtures" / "kvm-unit-tests-1da1819e" / "arm"
DSB_ISH, DSB_OSHNXS, SSBB = 0xD5033B9F, 0xD503323F, 0xD503309F
DAIFCLR_I, DAIFCLR_A, MSR_DAIF_X3 = 0xD50342FF, 0xD50344FF, 0xD51B4223
ERET, ERETAA, MRS_MDSCR = 0xD69F03E0, 0xD69F0BFF, 0xD5300240          # mrs x0, mdscr_el1 (op0 = 0b10)
PLANTED = (DSB_ISH, DSB_OSHNXS, SSBB, DAIFCLR_I, DAIFCLR_A, MSR_DAIF_X3, ERET, ERETAA, MRS_MDSCR)


def _words(data: bytes) -> list[int]:
    return list(memoryview(data[: len(data) // 4 * 4]).cast("I"))


def _every_word(regions, test) -> list[int]:
    return [base + 4 * i for base, data in regions for i, w in enumerate(_words(data)) if test(w)]


def _is_dsb(w: int) -> bool:
    return ((w & 0xFFFFF0FF) == 0xD503309F and (w >> 8) & 3 != 0) or (w & 0xFFFFF3FF) == 0xD503323F


def _unmasks(w: int) -> bool:
    return ((w & 0xFFFFF0FF) == 0xD50340FF and w & 0x300) or (w & 0xFFFFFFE0) == 0xD51B4220


def _random_code(seed: int) -> bytes:
    rng = random.Random(seed)
    words = [rng.getrandbits(32) for _ in range(4096)]
    for w in PLANTED:
        for at in (0, len(words) - 1, rng.randrange(len(words))):
            words[at] = w
    words[100:100 + len(PLANTED)] = PLANTED
    code = bytearray(b"".join(w.to_bytes(4, "little") for w in words))
    code[4 * 200 + 1:4 * 200 + 5] = DSB_ISH.to_bytes(4, "little")      # unaligned copies: no instruction
    code[4 * 300 + 3:4 * 300 + 7] = ERET.to_bytes(4, "little")
    return bytes(code) + DSB_ISH.to_bytes(4, "little")[:3]           # and a partial word at the end


def _regions(name: str) -> list[tuple[int, bytes]]:
    if name == "hello":
        return [(s.vaddr, bytes(s.data)) for s in load_elf(guest_elf("hello")).segments if s.data]
    if name == "random":
        return [(0x4008_0000, _random_code(1)), (0x4010_0000, _random_code(2))]
    return [(0x4008_0000, (KUT / name).read_bytes())]


@pytest.mark.parametrize("name", ["hello", "random", "selftest.flat", "debug.flat", "gic.flat"])
def test_scans_find_what_a_test_of_every_word_finds(name):
    regions = _regions(name)
    assert [b.addr for b in scan_barriers(regions)] == _every_word(regions, _is_dsb)
    assert scan_erets(regions) == _every_word(regions, lambda w: w in (ERET, ERETAA, 0xD69F0FFF))
    assert scan_unmask_sites(regions) == [a + 4 for a in _every_word(regions, _unmasks)]
    for _, data in regions:
        assert uses_debug_registers(data) == any((w & 0xFFD80000) == 0xD5100000 for w in _words(data))
    if name == "random":                  # the planted instructions are there to be found
        assert len(scan_barriers(regions)) >= 4 and len(scan_erets(regions)) >= 4
        assert len(scan_unmask_sites(regions)) >= 6 and uses_debug_registers(regions[0][1])


def test_words_with_top_byte_in_order_whole_words_only():
    data = bytes.fromhex("000000d5 d5d5d5d4 112233d5 00000000 d50000d5 d5")
    assert list(codescan.words_with_top_byte(data, 0xD5)) == [(0, 0xD5000000), (2, 0xD5332211), (4, 0xD50000D5)]
    assert list(codescan.words_with_top_byte(b"\xd5\xd5\xd5", 0xD5)) == []


def test_words_at_is_words_with_top_byte_kept_per_image():
    rng = random.Random(7)
    images = [bytes(rng.choice((0x00, 0xD5, 0xD6, 0x1F)) for _ in range(4 * 64 + 3)) for _ in range(3)]
    for data in images + images:                             # the second pass answers from the cache
        for top in (codescan.SYSTEM, codescan.BRANCH_REGISTER):
            assert codescan.words_at(data, top) == tuple(codescan.words_with_top_byte(data, top))
    a = images[0]
    assert codescan.words_at(a, codescan.SYSTEM) is codescan.words_at(a, codescan.SYSTEM)
    other = bytes(a[:4]) + b"\x00\x00\x00\xd5" + bytes(a[8:])                   # same length, other contents
    assert codescan.words_at(other, codescan.SYSTEM) == tuple(codescan.words_with_top_byte(other, codescan.SYSTEM))
