"""FEAT_MTE3 for VMs built with `-machine mte=on` (QEMU's spelling), on Unicorn 2.1.4, which has no MTE (its
QEMU 5.0 TCG makes every tag instruction UNDEFINED). The rules are devmodel/mte.py's; this module applies them
to a VM's vCPUs (`enable(vm)`; without it nothing here runs and nothing changes).

* ID_AA64PFR1_EL1.MTE reads 3 (FEAT_MTE3, as QEMU 7.2's `-cpu max` with mte=on; 0 without), the other fields
  Unicorn's. GCR_EL1, RGSR_EL1, TFSR_EL1, TFSRE0_EL1, TFSR_EL2 (guests started at EL2), GMID_EL1 (BS = 6, read
  only) and TCO are served through `vcpu.sysregs` (EL0 accesses to the EL1 registers stay UNDEFINED). PSTATE.TCO
  is bit 25 of Unicorn's PSTATE (Unicorn keeps it): set on exception entry (harness/exceptions.py, the vCPU's
  `features.mte`), saved in SPSR_ELx, written by MSR TCO; Unicorn's ERET drops it, so an ERET with SPSR.TCO = 1
  runs alone and TCO is set after it.
* Tag instructions, emulated from the undefined-instruction path (`Exceptions.undef_emulators`): IRG, GMI, ADDG,
  SUBG, SUBP, SUBPS, STG, STZG, ST2G, STZ2G (post-index, signed offset, pre-index), STGP (the three forms),
  LDG, DC GVA and DC GZVA (trapped as EC 0x18 by SCTLR_ELx.DZE = 0 at EL0 and HCR_EL2.TDZ, as DC ZVA), at
  EL1/EL2 LDGM, STGM, STZGM (UNDEFINED at EL0, as the architecture says), and MSR TCO, #imm. An
  instruction that accesses memory translates its address (harness/aborts.py `access_cause`: translation,
  permission, external abort) and takes that data abort, or an alignment fault for an unaligned STG/STZG/ST2G/
  STZ2G/STGP, before it changes anything; tags are written only through a Tagged mapping (MAIR attribute 0xF0)
  of RAM with allocation tag access enabled, and read as 0 otherwise (MMIO has no tag storage, as in QEMU).
  As QEMU 7.2 does, the address is probed even with tag access disabled.
* Tag checks of ordinary loads and stores run while they can fault: on the vCPUs of the VM whose SCTLR_ELx.TCF
  (TCF0) is not 0 at some EL, over the IPA pages where a tag was ever stored (`TagStore.pages`). Those pages are
  made non-readable and non-writable in the vCPU's Unicorn (`mem_protect`, with a `UC_HOOK_MEM_*_PROT` and a
  read hook per page, the watchpoints' mechanism of harness/debug.py): every access there stops before it is
  performed with the PC on the instruction, which is decoded (harness/aborts.py `decode_access`, so the VA
  with its tag bits, which the hook's IPA lacks) and checked whole (every access, every granule). A
  synchronous fault ends `emu_start` before the access (the store is not performed) and is taken as a data
  abort: EC 0x24/0x25, ISV = 0, WnR, DFSC 0b010001, FAR = the VA with its tag (of the first failing granule),
  ELR = the instruction. Otherwise the access is let through (a write is performed here: Unicorn drops writes to
  a protected page), an asynchronous fault first setting TFSR_EL1/TFSR_EL2/TFSRE0_EL1.TF0/TF1 by the EL and
  VA[55] (at once: reading it after DSB; ISB sees it, as the architecture requires). The set of pages is
  redone at slice starts after a write to SCTLR_EL1/SCTLR_EL2 that changes whether checks can fault (the write
  ends the slice) or after a tag store to a new page (which ends the slice when checks are on).

Not modelled: tag checks on a Tagged page no tag instruction ever wrote (all its tags are 0: an
access with a non-zero logical tag there is not checked), on accesses the harness cannot decode, and on device
(MMIO) accesses; the traps of the MTE registers to EL2 (HCR_EL2.ATA = 0); a page both watched by a
debug watchpoint and tag-checked (the two share Unicorn's page protection); the VHE EL2&0 regime (HCR_EL2.E2H =
1): `Vcpu.translation_regs` walks EL2 without VHE, so there a tag instruction's address does not translate as
Unicorn's does (kvm-unit-tests' mte with virtualization=on takes a data abort at its first STG).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_READ_PROT, UC_HOOK_MEM_WRITE_PROT, UC_MEM_WRITE_PROT, UC_PROT_ALL, \
    UC_PROT_EXEC
from unicorn import arm64_const as c

from devmodel import mte as rules
from devmodel.bus import BusError
from devmodel.mte import GRANULE, TagInsn, TagStore, allocation_tag, with_tag

from . import syndrome as syn
from .aborts import access_cause, decode_access, reader
from .exceptions import Taken, route
from .exits import Kind

if TYPE_CHECKING:
    from .machine import VM, Machine
    from .vcpu import Vcpu

__all__ = ["enable", "Mte", "VcpuMte", "ID_AA64PFR1_EL1", "TFSR_EL1", "TFSRE0_EL1", "TFSR_EL2", "GCR_EL1",
           "RGSR_EL1", "GMID_EL1", "TCO", "FSC_TAG_CHECK", "MTE_FIELD"]

ID_AA64PFR1_EL1 = (3, 0, 0, 4, 1)
TFSR_EL1, TFSRE0_EL1, TFSR_EL2 = (3, 0, 5, 6, 0), (3, 0, 5, 6, 1), (3, 4, 5, 6, 0)
RGSR_EL1, GCR_EL1, GMID_EL1, TCO = (3, 0, 1, 0, 5), (3, 0, 1, 0, 6), (3, 1, 0, 0, 4), (3, 3, 4, 2, 7)
SCTLR_EL1, SCTLR_EL2, HCR_EL2 = (3, 0, 1, 0, 0), (3, 4, 1, 0, 0), (3, 4, 1, 1, 0)
TCR_EL1, TCR_EL2, MAIR_EL1, MAIR_EL2 = (3, 0, 2, 0, 2), (3, 4, 2, 0, 2), (3, 0, 10, 2, 0), (3, 4, 10, 2, 0)
DCZID_EL0 = (3, 3, 0, 0, 7)
MTE_FIELD = 3                       # ID_AA64PFR1_EL1.MTE [11:8] = 0b0011: FEAT_MTE3 (QEMU 7.2 -cpu max, mte=on)
FSC_TAG_CHECK = 0b010001            # DFSC: synchronous Tag Check Fault
_MSR_TCO_IMM, _MSR_TCO_MASK = 0xD503409F, 0xFFFFF0FF     # MSR TCO, #imm (op1 = 011, CRn = 0100, op2 = 100)
_X = [getattr(c, f"UC_ARM64_REG_X{i}") for i in range(31)]
_MASK64 = (1 << 64) - 1
_PAGE = 0x1000
_BLOCK_OPS = ("ldgm", "stgm", "stzgm")


def ram_chunk(ram_size: int) -> int:
    """The size of the pieces an MTE VM's vCPUs map its RAM in (`VM.ram_chunk`): Unicorn 2.1's `mem_protect`
    of one page splits the region holding it (uc.c split_region: unmap, map the pieces again), a cost that
    grows with the region (~7 ms for 128 MiB, ~0.2 ms for 2 MiB); mapping 64 pieces costs what one region
    does. At most 64 pieces, at least 2 MiB each."""
    return max(2 << 20, -(-ram_size // 64 // _PAGE) * _PAGE)


def enable(vm: "VM") -> None:
    """Give `vm` MTE (`-machine mte=on`): tag storage for its RAM and the per-vCPU state."""
    m = vm.machine
    vm.tags = TagStore()
    plugin = next((p for p in m.plugins if isinstance(p, Mte)), None)
    if plugin is None:
        m.add_plugin(Mte(m))              # attaches every vCPU
    else:
        for v in vm.vcpus:
            plugin.attach_vcpu(v)


class Mte:
    """Machine plugin: a `VcpuMte` on each vCPU of an MTE VM (`vcpu.mte`), its checks re-armed at slice starts."""

    def __init__(self, machine: "Machine"):
        self.machine = machine
        ex = machine.exceptions
        ex.undef_emulators.append(_emulate)
        ex.prot_stops.append(_take_fault)
        ex.eret_observers.append(_on_eret)

    def attach_vcpu(self, vcpu: "Vcpu") -> None:
        if getattr(vcpu.vm, "tags", None) is not None and getattr(vcpu, "mte", None) is None:
            vcpu.mte = VcpuMte(vcpu)

    def slice_start(self, vcpu: "Vcpu") -> None:
        m = getattr(vcpu, "mte", None)
        if m is not None and (m.dirty or m.generation != m.tags.generation):
            m.apply()

    def slice_end(self, vcpu: "Vcpu") -> None:
        m = getattr(vcpu, "mte", None)
        if m is not None and m.tco_after_eret:
            m.tco_after_eret = False
            _write_tco(vcpu, rules.PSTATE_TCO)


def _emulate(vcpu: "Vcpu", pc: int) -> bool:
    m = getattr(vcpu, "mte", None)
    return m is not None and m.emulate(pc)


def _take_fault(vcpu: "Vcpu") -> bool:
    m = getattr(vcpu, "mte", None)
    return m is not None and m.take_fault()


def _on_eret(vcpu: "Vcpu", el: int, spsr: int) -> None:
    """An ERET with SPSR.TCO = 1: Unicorn's ERET (QEMU 5.0, no MTE) drops PSTATE.TCO, so stop before it, run it
    alone (`Scheduler.request_step`) and set TCO after it, at the slice's end (`Mte.slice_end`)."""
    m = getattr(vcpu, "mte", None)
    if m is None or not spsr & rules.PSTATE_TCO:
        return
    s = vcpu.machine.scheduler
    if s.stepping is vcpu:
        m.tco_after_eret = True
    elif s.running is vcpu:
        s.request_step(vcpu)
        vcpu.uc.emu_stop()


class VcpuMte:
    """One vCPU's MTE registers, tag instructions and tag checks (module docstring)."""

    def __init__(self, vcpu: "Vcpu"):
        self.vcpu = vcpu
        self.tags: TagStore = vcpu.vm.tags
        self.regs = {TFSR_EL1: 0, TFSRE0_EL1: 0, TFSR_EL2: 0, GCR_EL1: 0, RGSR_EL1: 0}
        self.dirty = True
        self.generation = -1
        self.armed = False
        self.faults = 0                                   # synchronous tag check faults taken
        self._pages: dict[int, tuple[int, ...]] = {}      # protected IPA page -> its hooks
        self._pass = False                                # the stepped instruction's accesses go through
        self.tco_after_eret = False                       # the stepped ERET restores SPSR.TCO = 1
        vcpu.features = vcpu.features._replace(mte=True)  # PSTATE.TCO = 1 on exception entry
        self._register()

    # -- system registers -----------------------------------------------------------------------------------
    def _register(self) -> None:
        v, sr = self.vcpu, self.vcpu.sysregs
        sr.register(ID_AA64PFR1_EL1, read=_read_pfr1)
        for enc in self.regs:              # all 64 bits kept, RES0 ones too, as QEMU 7.2 keeps them
            if enc != TFSR_EL2 or v.start_el == 2:
                sr.register(enc, read=self._reader(enc), write=self._writer(enc))
        sr.register(GMID_EL1, read=lambda vc: rules.GMID_BS if vc.el >= 1 else None)
        sr.register(TCO, read=lambda vc: vc.pstate & rules.PSTATE_TCO, write=_write_tco)
        sr.register(SCTLR_EL1, write=self._sctlr_writer(1))
        if v.start_el == 2:
            sr.register(SCTLR_EL2, write=self._sctlr_writer(2))

    def _reader(self, enc) -> Callable[["Vcpu"], int | None]:
        least = 2 if enc == TFSR_EL2 else 1
        return lambda vc: self.regs[enc] if vc.el >= least else None

    def _writer(self, enc) -> Callable[["Vcpu", int], bool]:
        least = 2 if enc == TFSR_EL2 else 1

        def write(vc: "Vcpu", value: int) -> bool:
            if vc.el < least:
                return False
            self.regs[enc] = value & _MASK64
            return True
        return write

    def _sctlr_writer(self, el: int) -> Callable[["Vcpu", int], bool]:
        """MSR SCTLR_EL1/EL2 (Unicorn executes it: the handler declines): when the write changes whether checks
        can fault, end the slice so that the next one starts with the pages (un)protected."""
        def write(vc: "Vcpu", value: int) -> bool:
            uc = vc.uc
            s1 = value if el == 1 else uc.cpr_read(*SCTLR_EL1)
            s2 = value if el == 2 else uc.cpr_read(*SCTLR_EL2) if vc.start_el == 2 else 0
            if self._checks_wanted(s1, s2) != self.armed:
                self.dirty = True
                uc.emu_stop()
            return False
        return write

    # -- arming the checks ----------------------------------------------------------------------------------
    def _checks_wanted(self, sctlr1: int, sctlr2: int) -> bool:
        """Can a tag check fault happen: a page holds tags and TCF/TCF0 is not 0 at some EL of the guest."""
        if not self.tags.pages:
            return False
        v = self.vcpu
        el2 = v.start_el == 2
        hcr = v.uc.cpr_read(*HCR_EL2) if el2 else 0
        return any(rules.tcf_of(el, sctlr1, sctlr2, hcr, el2) for el in ((0, 1, 2) if el2 else (0, 1)))

    def apply(self) -> None:
        """Protect the tagged pages while checks are wanted, unprotect them otherwise (between slices)."""
        v, uc = self.vcpu, self.vcpu.uc
        self.dirty, self.generation = False, self.tags.generation
        want = {p << 12 for p in self.tags.pages if v.vm.in_ram(p << 12, _PAGE)} \
            if self._checks_wanted(*_sctlrs(v)) else set()
        changed = False
        for page in [p for p in self._pages if p not in want]:
            for hook in self._pages.pop(page):
                uc.hook_del(hook)
            uc.mem_protect(page, _PAGE, UC_PROT_ALL)
            changed = True
        for page in want - set(self._pages):
            uc.mem_protect(page, _PAGE, UC_PROT_EXEC)
            end = page + _PAGE - 1
            self._pages[page] = (uc.hook_add(UC_HOOK_MEM_READ_PROT | UC_HOOK_MEM_WRITE_PROT, self._on_protected,
                                             None, page, end),
                                 uc.hook_add(UC_HOOK_MEM_READ, _no_op, None, page, end))   # keeps reads slow
            changed = True
        self.armed = bool(want)
        if changed:
            v.flush_tlb()
            uc.ctl_flush_tb()     # code translated before the hooks existed does not keep the PC exact for them

    # -- checking ---------------------------------------------------------------------------------------------
    def _on_protected(self, uc, access: int, ipa: int, size: int, value: int, _ud) -> bool:
        """An access to a tagged page. The PC is not exact in a memory hook (Unicorn 2.1.4 syncs it per block),
        so the first access stops emu_start (False): Unicorn then leaves the PC on the instruction, which
        `take_fault` checks; an instruction that may go on is stepped alone (`Scheduler.request_step`) with its
        accesses let through here (a write performed: Unicorn drops writes to a protected page)."""
        v = self.vcpu
        if not (self._pass and v.machine.scheduler.stepping is v):
            self._pass = False
            return False
        if access == UC_MEM_WRITE_PROT:
            off = ipa - v.vm.ram_ipa
            v.vm.ram.buf[off:off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        return True

    def _check_instruction(self) -> tuple[str, int, bool, str] | None:
        """The first access of the instruction at the PC that fails its tag check, with what the fault does:
        (action, FAR, write, detail), None if none fails or the failure has no effect (TCF = 0)."""
        v = self.vcpu
        pc = v.pc
        word = v.insn_at(pc)
        if word is None or rules.sp_unchecked(word):
            return None
        d = decode_access(v.machine.disasm, word, pc, reader(v))
        if d is None:
            return None
        ctx = _Context(v)
        for a in d.accesses:
            hit = self._mismatch(ctx, a.va, a.size)
            if hit is not None:
                # an atomic read-modify-write fails on its read first: WnR = 0, synchronous in asymmetric mode
                write = a.write and not d.atomic
                action = rules.fault_action(ctx.tcf, write)
                if action is not None:
                    return action, hit[0], write, hit[1]
        return None

    def _mismatch(self, ctx: "_Context", va: int, size: int) -> tuple[int, str] | None:
        if not ctx.checked(va):
            return None
        ltag = allocation_tag(va)
        while size > 0:
            n = min(size, _PAGE - (va & (_PAGE - 1)))
            w = self.vcpu.translate_at(ctx.regs, va)
            if w.ok and ctx.tagged(w.desc):
                i = self.tags.first_mismatch(w.ipa, n, ltag)
                if i is not None:
                    far = va if i == 0 else (va & ~(GRANULE - 1)) + i * GRANULE
                    ptag = self.tags.get(w.ipa + (far - va))
                    return far, f"logical tag {ltag:#x}, allocation tag {ptag:#x} at IPA {w.ipa + (far - va):#x}"
            va, size = (va + n) & _MASK64, size - n
        return None

    def _async(self, va: int) -> None:
        el = self.vcpu.el
        enc = TFSRE0_EL1 if el == 0 else TFSR_EL2 if el == 2 else TFSR_EL1
        self.regs[enc] |= rules.tfsr_bit(va)

    def take_fault(self) -> bool:
        """After emu_start stopped on a tagged page (the PC on the instruction): take its synchronous tag check
        fault, or record its asynchronous one and step it with its accesses let through. False if the stop was
        not this module's."""
        v = self.vcpu
        if not self._pages or self._pass:
            return False
        fault = self._check_instruction()
        if fault is not None and fault[0] == "sync":
            far, write, why = fault[1:]
            el, pc = v.el, v.pc
            target = route(v, el)
            self.faults += 1
            v.machine.exceptions.take_synchronous(v, Taken(
                syn.lower(syn.EC_DABT_CUR, el < target), syn.iss_data_abort(FSC_TAG_CHECK, write), target, pc,
                pc, far, "tag check fault", why))
            return True
        if fault is not None:
            self._async(fault[1])
        self._pass = True
        v.machine.scheduler.request_step(v)
        return True

    # -- tag instructions -------------------------------------------------------------------------------------
    def emulate(self, pc: int) -> bool:
        """An undefined-instruction exception at `pc`: execute it when it is a tag instruction (True)."""
        v = self.vcpu
        word = v.insn_at(pc)
        if word is None:
            return False
        if word & _MSR_TCO_MASK == _MSR_TCO_IMM:
            _write_tco(v, ((word >> 8) & 1) << 25)
            v.uc.reg_write(c.UC_ARM64_REG_PC, pc + 4)
            return True
        d = rules.decode(word)
        if d is None or (d.op in _BLOCK_OPS and v.el == 0):
            return False
        if d.op.startswith("dc") and self._dc_trapped(word, pc):
            return True
        if _OPS[d.op](self, d, pc):
            v.uc.reg_write(c.UC_ARM64_REG_PC, pc + 4)
        return True

    def _dc_trapped(self, word: int, pc: int) -> bool:
        """DC GVA/GZVA trapped by DZE/TDZ (`rules.dc_tag_trap`): the EC 0x18 exception taken (True)."""
        v = self.vcpu
        hcr = v.uc.cpr_read(*HCR_EL2) if v.start_el == 2 else 0
        target = rules.dc_tag_trap(v.el, *_sctlrs(v), hcr, v.start_el == 2)
        if target is None:
            return False
        v.machine.exceptions.take(v, Kind.UNDEF, "DC GVA/GZVA trapped (SCTLR_ELx.DZE=0 or HCR_EL2.TDZ=1)", pc,
                                  syn.esr(syn.EC_SYSREG, syn.iss_sysreg(word)), elr=pc, target_el=target)
        return True

    def _x(self, n: int, sp: bool = False) -> int:
        if n == 31:
            return self.vcpu.uc.reg_read(c.UC_ARM64_REG_SP) if sp else 0
        return self.vcpu.uc.reg_read(_X[n])

    def _set_x(self, n: int, value: int, sp: bool = False) -> None:
        if n == 31:
            if sp:
                self.vcpu.uc.reg_write(c.UC_ARM64_REG_SP, value & _MASK64)
            return
        self.vcpu.uc.reg_write(_X[n], value & _MASK64)

    def _ata(self) -> bool:
        return _Context(self.vcpu).ata

    def _op_irg(self, d: TagInsn, pc: int) -> bool:
        xd, rgsr = rules.irg(self._x(d.rn, True), self._x(d.rm), self.regs[GCR_EL1], self.regs[RGSR_EL1],
                             self._ata())
        self.regs[RGSR_EL1] = rgsr
        self._set_x(d.rd, xd, True)
        return True

    def _op_gmi(self, d: TagInsn, pc: int) -> bool:
        self._set_x(d.rd, rules.gmi(self._x(d.rn, True), self._x(d.rm)))
        return True

    def _op_addg(self, d: TagInsn, pc: int) -> bool:
        self._set_x(d.rd, rules.addg(self._x(d.rn, True), d.imm >> 4, d.tag_offset, d.op == "subg",
                                     self.regs[GCR_EL1], self._ata()), True)
        return True

    def _op_subp(self, d: TagInsn, pc: int) -> bool:
        xn, xm = self._x(d.rn, True), self._x(d.rm, True)
        result = rules.subp(xn, xm)
        self._set_x(d.rd, result)
        if d.op == "subps":
            self.vcpu.uc.reg_write(c.UC_ARM64_REG_NZCV, _sub_flags(rules.subp(xn, 0), rules.subp(xm, 0), result))
        return True

    # memory forms
    def _address(self, d: TagInsn) -> tuple[int, int]:
        base = self._x(d.rn, True)
        return base, base if d.index == "post" else (base + d.imm) & _MASK64

    def _writeback(self, d: TagInsn, base: int) -> None:
        if d.index is not None:
            self._set_x(d.rn, base + d.imm, True)

    def _access(self, d: TagInsn, pc: int, va: int, size: int, write: bool) -> list[tuple[int, int, bool]] | None:
        """(IPA, bytes, Tagged) per page of the access, or None after taking its data abort. Only RAM has tag
        storage: a Tagged mapping of anything else (MMIO) is untagged, its tag stores ignored and its tags read
        0 (QEMU 7.2 target/arm/mte_helper.c allocation_tag_mem: no tag storage, "not backed by host ram")."""
        v = self.vcpu
        out = []
        regs = None
        while size > 0:
            n = min(size, _PAGE - (va & (_PAGE - 1)))
            cause = access_cause(v, va, n, write, d.op)
            if cause is not None:
                self._abort(pc, cause.fsc, cause.far, write, cause.detail)
                return None
            regs = regs or v.translation_regs()
            w = v.translate_at(regs, va)
            out.append((w.ipa, n, _Context(v, regs).tagged(w.desc) and v.vm.in_ram(w.ipa, n)))
            va, size = (va + n) & _MASK64, size - n
        return out

    def _abort(self, pc: int, fsc: int, far: int, write: bool, detail: str) -> None:
        v = self.vcpu
        el = v.el
        target = route(v, el)
        what = "alignment fault" if fsc == syn.FSC_ALIGNMENT else "data abort"
        v.machine.exceptions.take_synchronous(v, Taken(
            syn.lower(syn.EC_DABT_CUR, el < target), syn.iss_data_abort(fsc, write), target, pc, pc, far, what,
            detail))

    def _store_tags(self, pieces, tag_of: Callable[[int], int]) -> None:
        if not self._ata():
            return
        before = self.tags.generation
        for ipa, n, tagged in pieces:
            if tagged:
                for a in range(ipa, ipa + n, GRANULE):
                    self.tags.set(a, tag_of(a))
        if self.tags.generation != before and (self.armed or self._checks_wanted(*_sctlrs(self.vcpu))):
            self.vcpu.uc.emu_stop()                 # a new tagged page: protect it from the next slice on

    def _store_data(self, pc: int, va: int, pieces, data: bytes) -> bool:
        """The data of STZG/STZ2G/STZGM (zeros) and STGP, in doublewords (a device takes those); a write the
        bus refuses (a device region's end) is a synchronous external abort, taken here (False)."""
        off = 0
        for ipa, n, _tagged in pieces:
            for i in range(0, n, 8):
                try:
                    self.vcpu.vm.ipa.write_bytes(ipa + i, data[off + i:off + i + 8])
                except BusError as e:
                    self._abort(pc, syn.FSC_SYNC_EXTERNAL, va + off + i, True, f"{e}")
                    return False
            off += n
        return True

    def _op_stg(self, d: TagInsn, pc: int) -> bool:
        base, addr = self._address(d)
        size = 32 if d.op in ("st2g", "stz2g") else GRANULE
        if addr % GRANULE:
            self._abort(pc, syn.FSC_ALIGNMENT, addr, True, f"{d.op} to an address not 16-byte aligned")
            return False
        pieces = self._access(d, pc, addr, size, True)
        if pieces is None:
            return False
        tag = allocation_tag(addr if d.op == "stgp" else self._x(d.rd, True))    # STG <Xt|SP>; STGP: Xn's
        data = bytes(size) if d.op in ("stzg", "stz2g") else \
            self._x(d.rd).to_bytes(8, "little") + self._x(d.rm).to_bytes(8, "little") if d.op == "stgp" else None
        if data is not None and not self._store_data(pc, addr, pieces, data):
            return False
        self._store_tags(pieces, lambda a: tag)
        self._writeback(d, base)
        return True

    def _op_ldg(self, d: TagInsn, pc: int) -> bool:
        _base, addr = self._address(d)
        addr &= ~(GRANULE - 1)
        pieces = self._access(d, pc, addr, GRANULE, False)
        if pieces is None:
            return False
        ipa, _n, tagged = pieces[0]
        tag = self.tags.get(ipa) if tagged and self._ata() else 0
        self._set_x(d.rd, with_tag(self._x(d.rd), tag))
        return True

    def _op_block(self, d: TagInsn, pc: int) -> bool:
        """LDGM/STGM: 4 << GMID_EL1.BS bytes of tags to/from Xt, one nibble per granule at its position in the
        block; STZGM: the DC ZVA block (DCZID_EL0.BS) zeroed, tagged with Xt[3:0]; DC GVA/GZVA: that block
        tagged with Xt's address tag (GZVA: zeroed too)."""
        zva = d.op in ("stzgm", "dcgva", "dcgzva")
        size = (4 << (self.vcpu.uc.cpr_read(*DCZID_EL0) & 0xF)) if zva else 4 << rules.GMID_BS
        addr = self._x(d.rn, not d.op.startswith("dc")) & ~(size - 1)      # DC <op>, Xt: 31 is XZR
        pieces = self._access(d, pc, addr, size, d.op != "ldgm")
        if pieces is None:
            return False
        xt = self._x(d.rd)
        if d.op.startswith("dc"):
            xt = allocation_tag(xt)
        if d.op == "ldgm":
            ata, value = self._ata(), 0
            for ipa, n, tagged in pieces:
                for a in range(ipa, ipa + n, GRANULE):
                    value |= (self.tags.get(a) if tagged and ata else 0) << (((a >> 4) & 15) * 4)
            self._set_x(d.rd, value)
            return True
        if d.op in ("stzgm", "dcgzva") and not self._store_data(pc, addr, pieces, bytes(size)):
            return False
        # STZGM's tag is Xt[3:0] (not an address tag: QEMU 7.2 mte_helper.c stzgm_tags reads the same bits)
        self._store_tags(pieces, (lambda a: xt & 0xF) if zva else (lambda a: (xt >> ((a >> 4) & 15) * 4)))
        return True


_OPS = {"irg": VcpuMte._op_irg, "gmi": VcpuMte._op_gmi, "addg": VcpuMte._op_addg, "subg": VcpuMte._op_addg,
        "subp": VcpuMte._op_subp, "subps": VcpuMte._op_subp, "ldg": VcpuMte._op_ldg,
        **{op: VcpuMte._op_stg for op in ("stg", "stzg", "st2g", "stz2g", "stgp")},
        **{op: VcpuMte._op_block for op in (*_BLOCK_OPS, "dcgva", "dcgzva")}}


class _Context:
    """What the checks of one instruction depend on: the EL, the regime's registers, PSTATE.TCO."""

    def __init__(self, v: "Vcpu", regs=None):
        uc = v.uc
        self.el = v.el
        self.el2 = v.start_el == 2
        self.hcr = uc.cpr_read(*HCR_EL2) if self.el2 else 0
        s1, s2 = uc.cpr_read(*SCTLR_EL1), uc.cpr_read(*SCTLR_EL2) if self.el2 else 0
        self.tcr1, self.tcr2 = uc.cpr_read(*TCR_EL1), uc.cpr_read(*TCR_EL2) if self.el2 else 0
        self.ata = rules.tag_access_enabled(self.el, s1, s2, self.hcr, self.el2)
        self.tcf = rules.tcf_of(self.el, s1, s2, self.hcr, self.el2)
        self.tco = bool(v.pstate & rules.PSTATE_TCO)
        self.regs = regs or v.translation_regs()
        self.mair = uc.cpr_read(*(MAIR_EL2 if self.regs.el == 2 else MAIR_EL1))

    def checked(self, va: int) -> bool:
        return rules.tag_checked(va, tbi=rules.effective_tbi(va, self.el, self.tcr1, self.tcr2, self.hcr),
                                 tcma=rules.effective_tcma(va, self.el, self.tcr1, self.tcr2, self.hcr),
                                 ata=self.ata, tco=self.tco, tagged=True)

    def tagged(self, desc: int | None) -> bool:
        """The leaf's MAIR attribute is Tagged Normal (the MMU off: Device, untagged)."""
        return desc is not None and (self.mair >> (8 * ((desc >> 2) & 7))) & 0xFF == rules.TAGGED_ATTR


def _sctlrs(v: "Vcpu") -> tuple[int, int]:
    """SCTLR_EL1, and SCTLR_EL2 for a guest started at EL2 (else 0)."""
    uc = v.uc
    return uc.cpr_read(*SCTLR_EL1), uc.cpr_read(*SCTLR_EL2) if v.start_el == 2 else 0


def _read_pfr1(v: "Vcpu") -> int | None:
    if v.el == 0:
        return None
    return (v.uc.cpr_read(*ID_AA64PFR1_EL1) & ~(0xF << 8)) | MTE_FIELD << 8


def _write_tco(v: "Vcpu", value: int) -> bool:
    pstate = v.uc.reg_read(c.UC_ARM64_REG_PSTATE)
    v.uc.reg_write(c.UC_ARM64_REG_PSTATE, (pstate & ~rules.PSTATE_TCO) | (value & rules.PSTATE_TCO))
    return True


def _sub_flags(x: int, y: int, result: int) -> int:
    """NZCV of the 64-bit SUBS x - y (AddWithCarry(x, NOT(y), 1)), in NZCV's bit positions."""
    n = result >> 63
    z = int(result == 0)
    carry = int(x >= y)
    sx, sy, sr = x >> 63, y >> 63, n
    v = int(sx != sy and sr != sx)
    return n << 31 | z << 30 | carry << 29 | v << 28


def _no_op(*_args) -> None:
    return None
