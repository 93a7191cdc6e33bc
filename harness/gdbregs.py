"""AArch64 registers as GDB numbers them, the target description that names them, and their values on a vCPU.

GDB's AArch64 support needs the features `org.gnu.gdb.aarch64.core` (x0-x30, sp, pc, cpsr) and, for the
SIMD&FP registers, `org.gnu.gdb.aarch64.fpu` (v0-v31, fpsr, fpcr) (GDB manual, "Standard Target Features",
"AArch64 Features"). The layout is QEMU's (gdbstub/gdb-xml/aarch64-core.xml, aarch64-fpu.xml, generated here
from the table below, not copied): numbers x0-x30 0-30, sp 31, pc 32, cpsr 33 (32 bits: PSTATE as
`pstate_read` gives it, QEMU target/arm/gdbstub64.c), v0-v31 34-65 (128 bits, little-endian), fpsr 66, fpcr 67.
The `g` packet carries the core registers 0-33 only, as QEMU's does; gdb reads the others with `p`.
Not provided: SVE (z/p/ffr, vg), pointer-authentication masks, system registers.

Values come from the vCPU's Unicorn (`reg_read_batch`: one call for the `g` registers). `sp` is the current
stack pointer (SP_EL0 or SP_ELx, as PSTATE.SP selects), as in QEMU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unicorn.arm64_const import (UC_ARM64_REG_FPCR, UC_ARM64_REG_FPSR, UC_ARM64_REG_PC, UC_ARM64_REG_PSTATE,
                                 UC_ARM64_REG_SP, UC_ARM64_REG_V0, UC_ARM64_REG_X0, UC_ARM64_REG_X29,
                                 UC_ARM64_REG_X30)

__all__ = ["GdbReg", "REGS", "CORE_REGS", "CORE_FEATURE", "FPU_FEATURE", "feature_xml", "read_core",
           "write_core", "read_register", "write_register"]

CORE_FEATURE, FPU_FEATURE = "org.gnu.gdb.aarch64.core", "org.gnu.gdb.aarch64.fpu"


@dataclass(frozen=True)
class GdbReg:
    name: str
    bits: int
    uc: int                    # Unicorn register id
    feature: str
    type: str = ""             # target description type ("" = an integer of `bits`)


def _x_regs() -> list[GdbReg]:
    ids = [UC_ARM64_REG_X0 + i for i in range(29)] + [UC_ARM64_REG_X29, UC_ARM64_REG_X30]
    return [GdbReg(f"x{i}", 64, uc, CORE_FEATURE) for i, uc in enumerate(ids)]


REGS: tuple[GdbReg, ...] = (
    *_x_regs(),
    GdbReg("sp", 64, UC_ARM64_REG_SP, CORE_FEATURE, "data_ptr"),
    GdbReg("pc", 64, UC_ARM64_REG_PC, CORE_FEATURE, "code_ptr"),
    GdbReg("cpsr", 32, UC_ARM64_REG_PSTATE, CORE_FEATURE, "cpsr_flags"),
    *(GdbReg(f"v{i}", 128, UC_ARM64_REG_V0 + i, FPU_FEATURE, "aarch64v") for i in range(32)),
    GdbReg("fpsr", 32, UC_ARM64_REG_FPSR, FPU_FEATURE),
    GdbReg("fpcr", 32, UC_ARM64_REG_FPCR, FPU_FEATURE),
)
CORE_REGS = sum(1 for r in REGS if r.feature == CORE_FEATURE)      # 34: what `g` carries
_CORE_IDS = [r.uc for r in REGS[:CORE_REGS]]

# PSTATE fields as the cpsr_flags type names them (bit, last bit): DDI 0487 D1.4 / C5.2.18 SPSR_EL1 layout
_CPSR_FIELDS = (("SP", 0, 0), ("EL", 2, 3), ("nRW", 4, 4), ("F", 6, 6), ("I", 7, 7), ("A", 8, 8), ("D", 9, 9),
                ("BTYPE", 10, 11), ("SSBS", 12, 12), ("IL", 20, 20), ("SS", 21, 21), ("PAN", 22, 22),
                ("UAO", 23, 23), ("DIT", 24, 24), ("TCO", 25, 25), ("V", 28, 28), ("C", 29, 29), ("Z", 30, 30),
                ("N", 31, 31))
# the views of a 128-bit V register: (union, [(field, element type, count)])
_V_VIEWS = (("vnd", "d", (("f", "ieee_double", 2), ("u", "uint64", 2), ("s", "int64", 2))),
            ("vns", "s", (("f", "ieee_single", 4), ("u", "uint32", 4), ("s", "int32", 4))),
            ("vnh", "h", (("u", "uint16", 8), ("s", "int16", 8))),
            ("vnb", "b", (("u", "uint8", 16), ("s", "int8", 16))),
            ("vnq", "q", (("u", "uint128", 1), ("s", "int128", 1))))
_HEAD = '<?xml version="1.0"?>\n<!DOCTYPE {kind} SYSTEM "gdb-target.dtd">\n'


def _reg_xml(n: int, r: GdbReg, first: bool) -> str:
    typ = f' type="{r.type}"' if r.type else ""
    num = f' regnum="{n}"' if first else ""
    return f'  <reg name="{r.name}" bitsize="{r.bits}"{typ}{num}/>\n'


def _core_xml() -> str:
    out = [_HEAD.format(kind="feature"), f'<feature name="{CORE_FEATURE}">\n']
    for n, r in enumerate(REGS[:CORE_REGS - 1]):
        out.append(_reg_xml(n, r, False))
    out.append('  <flags id="cpsr_flags" size="4">\n')
    out += [f'    <field name="{name}" start="{lo}" end="{hi}"/>\n' for name, lo, hi in _CPSR_FIELDS]
    out.append("  </flags>\n")
    out.append(_reg_xml(CORE_REGS - 1, REGS[CORE_REGS - 1], False))
    out.append("</feature>\n")
    return "".join(out)


def _fpu_xml() -> str:
    out = [_HEAD.format(kind="feature"), f'<feature name="{FPU_FEATURE}">\n']
    vectors, unions = [], []
    for union, _short, fields in _V_VIEWS:
        for field, elem, count in fields:
            vid = f"v{count}{field}"
            vectors.append(f'  <vector id="{vid}" type="{elem}" count="{count}"/>\n')
        unions.append(f'  <union id="{union}">\n'
                      + "".join(f'    <field name="{f}" type="v{c}{f}"/>\n' for f, _e, c in fields)
                      + "  </union>\n")
    out += vectors + unions
    out.append('  <union id="aarch64v">\n'
               + "".join(f'    <field name="{short}" type="{union}"/>\n' for union, short, _f in _V_VIEWS)
               + "  </union>\n")
    for n, r in enumerate(REGS):
        if r.feature == FPU_FEATURE:
            out.append(_reg_xml(n, r, n == CORE_REGS))
    out.append("</feature>\n")
    return "".join(out)


_XI = "http://www.w3.org/2001/XInclude"       # gdb-target.dtd's fixed namespace of xi:include
_TARGET = (_HEAD.format(kind="target") + "<target>\n  <architecture>aarch64</architecture>\n"
           + "".join(f'  <xi:include xmlns:xi="{_XI}" href="{f}"/>\n' for f in ("aarch64-core.xml", "aarch64-fpu.xml"))
           + "</target>\n")
_ANNEXES = {"target.xml": _TARGET, "aarch64-core.xml": _core_xml(), "aarch64-fpu.xml": _fpu_xml()}


def feature_xml(annex: str) -> str | None:
    """The target description document `annex` names (`qXfer:features:read:ANNEX:...`), None if none."""
    return _ANNEXES.get(annex)


# -- values ---------------------------------------------------------------------------------------------------

def _mask(bits: int) -> int:
    return (1 << bits) - 1


def read_core(uc: Any) -> bytes:
    """The `g` packet's registers 0-33, little-endian, in one Unicorn call."""
    vals = uc.reg_read_batch(_CORE_IDS)
    return b"".join((v & _mask(r.bits)).to_bytes(r.bits // 8, "little") for r, v in zip(REGS, vals))


def write_core(uc: Any, data: bytes) -> None:
    """`G`: as many registers from 0 on as `data` holds whole (QEMU writes registers while data is left)."""
    off = 0
    for n in range(CORE_REGS):
        size = REGS[n].bits // 8
        if off + size > len(data):
            break
        write_register(uc, n, data[off:off + size])
        off += size


def read_register(uc: Any, n: int) -> bytes | None:
    """Register `n` little-endian, None when there is no register `n`."""
    if not 0 <= n < len(REGS):
        return None
    r = REGS[n]
    return (uc.reg_read(r.uc) & _mask(r.bits)).to_bytes(r.bits // 8, "little")


def write_register(uc: Any, n: int, data: bytes) -> bool:
    """Write register `n` from its little-endian bytes (fewer bytes: the low ones); False when there is no
    register `n` or `data` is longer than it. cpsr writes PSTATE whole (as QEMU's `pstate_write`)."""
    if not 0 <= n < len(REGS):
        return False
    r = REGS[n]
    if len(data) > r.bits // 8:
        return False
    value = int.from_bytes(data, "little")
    if r.uc == UC_ARM64_REG_PSTATE:
        uc.reg_write(r.uc, value)
        # a PSTATE write takes effect at Unicorn's next system-register write (unicorn issue #2333; as
        # harness/vcpu.py power_on does): rewrite TPIDR_EL0 with its own value
        uc.cpr_write(3, 3, 13, 0, 2, uc.cpr_read(3, 3, 13, 0, 2))
        return True
    uc.reg_write(r.uc, value)
    return True
