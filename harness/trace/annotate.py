"""PC annotation for traces: `symbol+0xoff` and the capstone disassembly of the instruction at a PC.

`Annotator(read, symbolize)` is the `annotate(cpu, pc)` callable the sinks take: `read(cpu, pc, 4)` returns
the instruction bytes (or None) and `symbolize(cpu, pc)` a `name+0xoff` string (or None). Results are cached
per (cpu, pc): reading an instruction by VA walks the guest's page tables, and a traced loop hits the same
PCs again and again (code rewritten at run time keeps its first annotation).
"""
from __future__ import annotations

from typing import Callable, Optional

from functools import lru_cache

__all__ = ["Annotator", "disasm_word"]

@lru_cache(maxsize=1)
def _disassembler():
    import capstone                          # at first use: a trace without `insn` fields never loads it
    return capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)


def disasm_word(word: bytes, pc: int = 0) -> str | None:
    """capstone text of one A64 instruction (`"tlbi vae1is, x0"`), None if it does not decode."""
    for insn in _disassembler().disasm(bytes(word), pc):
        return f"{insn.mnemonic} {insn.op_str}".strip()
    return None


class Annotator:
    def __init__(self, read: Callable[[Optional[int], int, int], Optional[bytes]],
                 symbolize: Callable[[Optional[int], int], Optional[str]] | None = None):
        self.read = read
        self.symbolize = symbolize
        self._cache: dict[tuple[Optional[int], int], tuple[Optional[str], Optional[str]]] = {}

    def __call__(self, cpu: int | None, pc: int) -> tuple[str | None, str | None]:
        key = (cpu, pc)
        hit = self._cache.get(key)
        if hit is None:
            word = self.read(cpu, pc, 4)                    # None when the PC is not mapped
            sym = self.symbolize(cpu, pc) if self.symbolize is not None else None
            insn = disasm_word(word, pc) if word else None
            hit = self._cache[key] = (sym, insn)
        return hit
