"""Why an instruction or data access aborted: the fault status code and the faulting address of an abort that
Unicorn reports without them.

Unicorn gives the harness an exception number (QEMU's EXCP_PREFETCH_ABORT / EXCP_DATA_ABORT) or an emulation
error (an unmapped or unaligned access), never the syndrome QEMU computed nor FAR. The harness works them out
again, as the Arm ARM defines them (DDI 0487 D8 "The AArch64 Virtual Memory System Architecture", D17.2.37
DFSC/IFSC, D17.2.40 FAR_ELx):

* `decode_access(md, word, pc, reg)`: the accesses a load/store/atomic/cache-maintenance instruction makes
  (virtual address, size, read or write) from its operands (capstone), in program order, and the properties that
  matter for faults: exclusive, atomic, acquire/release, unprivileged (LDTR/STTR), cache maintenance (ISS.CM).
* `data_abort_cause(vcpu, pc, ...)`, `instruction_abort_cause(vcpu, pc)`: the first access that fails, in the
  order the Arm ARM's pseudocode checks them (AArch64.Mem[]: the alignment check comes before the translation):
  an alignment fault (SCTLR_ELx.A, exclusives, atomics, load-acquire/store-release; Unicorn's CPUs have no
  FEAT_LSE2), then the fault of the stage-1 walk (harness/vmem.py over devmodel/vmsa.py: translation, address
  size, access flag, external abort on the walk), then a permission fault (the leaf's permissions for the
  access's privilege; PSTATE.PAN for privileged data accesses to EL0-readable memory), then a synchronous
  external abort where the IPA has no memory. FAR is the first byte of the failing access (for an access that
  crosses into a failing page, that page's first byte, as QEMU 7.2 reports it).

Not modelled: stage 2 of the vCPUs (there is none), hardware update of the dirty state (HD), MTE tag checks
(harness/mte.py's, with `-machine mte=on`), FEAT_PAN3 (EPAN), the exact element of SIMD structure loads (LD1..LD4
report their first address).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from devmodel.vmsa import PERM_R, PERM_W, PERM_X

from .syndrome import FSC_ALIGNMENT, FSC_PERMISSION, FSC_SYNC_EXTERNAL

if TYPE_CHECKING:
    from .vcpu import Vcpu

__all__ = ["Access", "Decoded", "Cause", "decode_access", "data_abort_cause", "instruction_abort_cause",
           "access_cause", "reader"]

_MASK64 = (1 << 64) - 1
_PAGE = 0x1000
_REG_BYTES = {"x": 8, "w": 4, "d": 8, "s": 4, "h": 2, "b": 1, "q": 16, "v": 16, "z": 16}
_ATOMICS = ("ldadd", "ldclr", "ldeor", "ldset", "ldsmax", "ldsmin", "ldumax", "ldumin", "swp", "cas")
_EXCLUSIVE = ("ldxr", "ldaxr", "stxr", "stlxr", "ldxp", "ldaxp", "stxp", "stlxp")
_ORDERED = ("ldar", "stlr", "ldapr", "ldlar", "stllr", "ldapur", "stlur")
_EXT_SHIFTS: dict[int, tuple[int, bool]] = {}   # capstone's extend codes -> (bits, signed), filled at first decode
PSTATE_PAN = 1 << 22


@dataclass(frozen=True)
class Access:
    va: int
    size: int
    write: bool


@dataclass(frozen=True)
class Decoded:
    accesses: tuple[Access, ...]
    mnemonic: str
    exclusive: bool = False
    atomic: bool = False
    ordered: bool = False
    unprivileged: bool = False
    cm: bool = False                  # cache maintenance (ISS.CM)

    @property
    def needs_alignment(self) -> bool:
        return self.exclusive or self.atomic or self.ordered


@dataclass(frozen=True)
class Cause:
    """An abort's DFSC/IFSC, FAR (None: unknown), WnR, CM, and a phrase for death lines."""
    fsc: int
    far: int | None
    write: bool = False
    cm: bool = False
    detail: str = ""


def _elem_size(mn: str, reg: str, atomic: bool) -> int:
    """Bytes per register transferred: the B/H/SW forms, else the register's width."""
    if mn.endswith("b"):
        return 1
    if mn.endswith("h"):
        return 2
    if not atomic and mn.endswith("sw"):                  # LDRSW, LDURSW, LDTRSW, LDPSW
        return 4
    return _REG_BYTES.get(reg[:1], 8)


def _index_value(reg: Callable[[str], int], name: str, ext: int, shift: int) -> int:
    v = reg(name)
    bits, signed = _EXT_SHIFTS.get(ext, (64, False))
    v &= (1 << bits) - 1
    if signed and v >> (bits - 1):
        v -= 1 << bits
    return v << shift


# long function: one pass over capstone's operand list covers every load/store addressing form
def decode_access(md, word: int, pc: int, reg: Callable[[str], int]) -> Decoded | None:
    """The accesses of the instruction `word` at `pc` (registers read with `reg(name)`), None if it makes none."""
    from capstone import arm64 as a64       # imported here: a run that never faults pays nothing for capstone
    if not _EXT_SHIFTS:
        _EXT_SHIFTS.update({a64.ARM64_EXT_UXTW: (32, False), a64.ARM64_EXT_SXTW: (32, True),
                            a64.ARM64_EXT_SXTX: (64, True), a64.ARM64_EXT_UXTX: (64, False)})
    insn = next(md.disasm(word.to_bytes(4, "little"), pc), None)
    if insn is None:
        return None
    mn = insn.mnemonic
    if mn in ("dc", "ic"):
        op = insn.op_str.split(",")[0].strip()
        regs = [insn.reg_name(o.reg) for o in insn.operands if o.type == a64.ARM64_OP_REG]
        if not regs:
            return None
        zva = op == "zva"
        return Decoded((Access(reg(regs[-1]) & _MASK64, 64 if zva else 1, True),), mn, cm=not zva)
    regs: list[str] = []
    addr = None
    for o in insn.operands:
        if o.type == a64.ARM64_OP_REG and addr is None:
            regs.append(insn.reg_name(o.reg))
        elif o.type == a64.ARM64_OP_MEM:
            addr = reg(insn.reg_name(o.mem.base))
            if not getattr(insn, "post_index", False):
                addr += o.mem.disp
                if o.mem.index:
                    addr += _index_value(reg, insn.reg_name(o.mem.index), o.ext,
                                         o.shift.value if o.shift.type else 0)
        elif o.type == a64.ARM64_OP_IMM and addr is None and mn.startswith(("ldr", "prfm")) and regs:
            addr = o.imm                                  # LDR (literal)
    if addr is None or mn.startswith("prf"):
        return None
    atomic = mn.startswith(_ATOMICS)
    exclusive = mn.startswith(_EXCLUSIVE)
    if mn.startswith(("stxr", "stlxr", "stxp", "stlxp")) or (atomic and not mn.startswith("cas")):
        regs = regs[1:] if mn.startswith("st") else regs[:1]      # status register / Rs is the data size
    if not regs:
        return None
    size = _elem_size(mn, regs[0], atomic)
    count = 2 if (mn.endswith("p") or mn == "ldpsw") and not atomic else max(1, len(regs))
    if atomic and mn.startswith("casp"):
        count = 2
    write = mn.startswith("st") or atomic
    acc = tuple(Access((addr + i * size) & _MASK64, size, write) for i in range(count))
    return Decoded(acc, mn, exclusive=exclusive, atomic=atomic, ordered=mn.startswith(_ORDERED),
                   unprivileged=mn.startswith(("ldtr", "sttr")))


def _reader(vcpu: "Vcpu") -> Callable[[str], int]:
    from unicorn import arm64_const as c
    uc = vcpu.uc

    def reg(name: str) -> int:
        if name in ("sp", "wsp"):
            return uc.reg_read(c.UC_ARM64_REG_SP)
        if name in ("xzr", "wzr"):
            return 0
        return uc.reg_read(getattr(c, f"UC_ARM64_REG_{name.upper()}"))
    return reg


def _pieces(va: int, size: int):
    """[va, va + size) split at page boundaries: (first byte, bytes) per page."""
    while size > 0:
        n = min(size, _PAGE - (va & (_PAGE - 1)))
        yield va, n
        va, size = (va + n) & _MASK64, size - n


def _check_access(vcpu: "Vcpu", regs, a: Access, d: Decoded, el: int, pan: bool) -> Cause | None:
    misaligned = a.va % a.size != 0 if a.size in (2, 4, 8, 16) else False
    strict = bool(regs.sctlr & 2)                               # SCTLR_ELx.A
    for va, _n in _pieces(a.va, a.size):
        w = vcpu.translate_at(regs, va)
        if not w.ok:
            return Cause(w.fsc, va, a.write, d.cm, w.detail)
        if misaligned and (strict or d.needs_alignment):
            return Cause(FSC_ALIGNMENT, a.va, a.write, d.cm,
                         f"alignment fault ({a.size}-byte {d.mnemonic} at {a.va:#x})")
        user = el == 0 or d.unprivileged
        perms = w.perm_user if user else w.perm_priv
        need = PERM_R if d.cm or not a.write else PERM_W      # cache maintenance needs read permission
        pan_hit = pan and not user and not d.cm and bool(w.perm_user & PERM_R)
        if not perms & need or pan_hit:
            why = "PAN" if perms & need else ("write" if a.write else "read")
            return Cause(FSC_PERMISSION | (w.level & 3), va, a.write, d.cm,
                         f"permission fault level {w.level} ({why})")
        if vcpu.vm.ipa.find(w.ipa) is None:
            return Cause(FSC_SYNC_EXTERNAL, va, a.write, d.cm,
                         f"{'write' if a.write else 'read'} of {a.size} bytes to an unmapped address "
                         f"(no RAM or device at IPA {w.ipa:#x})")
    return None


def data_abort_cause(vcpu: "Vcpu", pc: int, *, unaligned: bool = False, ipa: int | None = None,
                     write: bool | None = None) -> Cause:
    """The cause of the data abort the instruction at `pc` took (see the module docstring). `ipa`/`write`: what
    Unicorn said of an access to unmapped memory; `unaligned`: Unicorn reported an alignment error."""
    word = vcpu.insn_at(pc)
    d = decode_access(vcpu.machine.disasm, word, pc, _reader(vcpu)) if word is not None else None
    if d is None:
        return Cause(FSC_ALIGNMENT if unaligned else FSC_SYNC_EXTERNAL, ipa, bool(write), False,
                     "alignment fault" if unaligned else "data abort (the instruction makes no access the harness "
                     "can decode)")
    regs = vcpu.translation_regs()
    pstate = vcpu.pstate
    el, pan = (pstate >> 2) & 3, bool(pstate & PSTATE_PAN)
    for a in d.accesses:
        c = _check_access(vcpu, regs, a, d, el, pan)
        if c is not None:
            return c
    a = d.accesses[0]
    if unaligned:
        return Cause(FSC_ALIGNMENT, a.va, a.write, d.cm, f"alignment fault ({a.size}-byte {d.mnemonic})")
    return Cause(FSC_SYNC_EXTERNAL, a.va, a.write if write is None else write, d.cm,
                 "synchronous external abort" + ("" if ipa is None else f" (IPA {ipa:#x} has no memory)"))


def access_cause(vcpu: "Vcpu", va: int, size: int, write: bool, mnemonic: str) -> Cause | None:
    """The abort (translation, permission, external; not alignment) an access the harness performs for an
    instruction it emulates would take (harness/mte.py's tag stores), None if it takes none."""
    pstate = vcpu.pstate
    return _check_access(vcpu, vcpu.translation_regs(), Access(va, size, write), Decoded((), mnemonic),
                         (pstate >> 2) & 3, bool(pstate & PSTATE_PAN))


def reader(vcpu: "Vcpu") -> Callable[[str], int]:
    """`reg(name)` for `decode_access`: the vCPU's registers by capstone name."""
    return _reader(vcpu)


def instruction_abort_cause(vcpu: "Vcpu", pc: int) -> Cause:
    """The cause of a fetch abort at `pc`: the walk's fault, else an execute permission fault, else an external
    abort (no memory at the IPA)."""
    regs = vcpu.translation_regs()
    w = vcpu.translate_at(regs, pc)
    if not w.ok:
        return Cause(w.fsc, pc, False, False, w.detail)
    perms = w.perm_user if vcpu.el == 0 else w.perm_priv
    if not perms & PERM_X:
        return Cause(FSC_PERMISSION | (w.level & 3), pc, False, False,
                     f"permission fault level {w.level} (execute never)")
    return Cause(FSC_SYNC_EXTERNAL, pc, False, False, "instruction fetch from an address with no memory")
