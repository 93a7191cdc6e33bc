"""Pre-scans of a guest's executable code for the instructions the harness hooks before they run (the TLBI
trap's DSBs and ERETs, the MSRs that unmask interrupts, debug-register accesses): Unicorn has no hook for
them, so every scan used to test each word of the image in a Python loop (the four scans of a 90 KB
kvm-unit-tests image took ~15 ms of every run on a loaded 2-core machine; ~1 ms this way).

Each of those instructions is known by its top byte, bits [31:24] of the little-endian word: 0xD5 for the
system instructions (DDI 0487 C4.1, "Branches, Exception Generating and System instructions": MSR/MRS, SYS,
barriers, hints, bits [31:22] = 0b1101010100) and 0xD6 for ERET and its pointer-authenticated forms
("Unconditional branch (register)"). `words_with_top_byte` finds those words with `bytes.find` (in C) and
hands only them to the scan's own test, which is unchanged; tests/harness/test_codescan.py compares every scan
with the word-by-word loop. `words_at` keeps the answer for the last few images, so the three scans of the
system instructions (DSBs, unmasking MSRs, debug registers) find them once per image."""
from __future__ import annotations

import functools
from typing import Iterator

__all__ = ["SYSTEM", "BRANCH_REGISTER", "words_with_top_byte", "words_at"]

SYSTEM = 0xD5                # MSR, MRS, SYS, DSB/DMB/ISB, hints (bits [31:24] of the encoding)
BRANCH_REGISTER = 0xD6       # BR, BLR, RET, ERET, ERETAA/ERETAB (and their pointer-authenticated forms)


def words_with_top_byte(data: bytes, top: int) -> Iterator[tuple[int, int]]:
    """(index, value) of each whole 32-bit word of `data` (a trailing partial word is ignored) whose bits
    [31:24] are `top`, in order. Words are read as `memoryview.cast("I")` reads them, as the scans always did:
    little-endian on the hosts this runs on (x86-64, AArch64), as A64 code is."""
    end = len(data) // 4 * 4
    words = memoryview(data[:end]).cast("I")
    needle = bytes((top,))
    find = data.find
    i = find(needle, 3, end)
    while i >= 0:
        if i & 3 == 3:                   # the word's most significant byte
            yield i >> 2, words[i >> 2]
            i = find(needle, i + 4, end)
        else:
            i = find(needle, i | 3, end)


@functools.lru_cache(maxsize=16)
def words_at(data: bytes, top: int) -> tuple[tuple[int, int], ...]:
    """`words_with_top_byte(data, top)` as a tuple, kept for the last 16 (image, top byte) pairs (bytes hash
    their contents once; a hit on the same image object compares by identity)."""
    return tuple(words_with_top_byte(data, top))
