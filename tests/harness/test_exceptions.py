"""Exceptions taken at the guest's own vectors (harness/exceptions.py): runtime guests take undefined
instructions (undefined TLBIs from the trap too), SVC, BRK and aborts at VBAR_ELx + offset with the Arm ARM
D1.10 entry state; exc_entry.c checks every class against the Arm ARM; an exception the runtime does not handle,
a guest without vectors and a handler that faults itself end with 132/139 and the one-line death message; old
guests with the `exception_handled_ecs` opt-in bitmap get only the classes they opted in for."""
from __future__ import annotations

import json

import capstone
import pytest
from unicorn import UC_HOOK_CODE
from unicorn.arm64_const import (UC_ARM64_REG_ELR_EL1, UC_ARM64_REG_ESR_EL1, UC_ARM64_REG_FAR_EL1,
                                 UC_ARM64_REG_PSTATE, UC_ARM64_REG_SP, UC_ARM64_REG_SP_EL0, UC_ARM64_REG_SP_EL1,
                                 UC_ARM64_REG_VBAR_EL1, UC_ARM64_REG_VBAR_EL2, UC_ARM64_REG_X2)

from devmodel.tlbi import encoding, sys_word
from devmodel.trace import ListSink, Tracer
from guestbin import guest_elf, run_cli
from harness.build import build_guest
from harness.exits import EXIT_ABORT, EXIT_UNDEF, Kind
from harness.machine import EXCEPTION_OPT_IN, Machine
from harness.trap import TlbiTrap

SPSR_EL1 = (3, 0, 4, 0, 0)
_MD = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)


def _text(word, addr=0):
    i = next(_MD.disasm(word.to_bytes(4, "little"), addr))
    return f"{i.mnemonic} {i.op_str}".strip()


def _machine(events="guest_exception,tlbi_undef", ncpus=1, start_el=1):
    sink = ListSink()
    m = Machine(tracer=Tracer(events=events, sinks=[sink]), console=lambda vm, d, s: None)
    trap = TlbiTrap(m.interconnect, m.tracer)
    m.add_plugin(trap)
    vm = m.add_vm(ncpus=ncpus, start_el=start_el)
    return m, vm, trap, sink


def _record_vector_entries(vcpu, vector):
    """Registers as the first instruction of `vector` sees them (what the guest's handler reads)."""
    seen = []

    def hook(uc, addr, size, _ud):
        seen.append(dict(esr=uc.reg_read(UC_ARM64_REG_ESR_EL1), elr=uc.reg_read(UC_ARM64_REG_ELR_EL1),
                         far=uc.reg_read(UC_ARM64_REG_FAR_EL1), spsr=uc.cpr_read(*SPSR_EL1),
                         pstate=uc.reg_read(UC_ARM64_REG_PSTATE), sp=uc.reg_read(UC_ARM64_REG_SP)))

    vcpu.uc.hook_add(UC_HOOK_CODE, hook, None, vector, vector)
    return seen


def test_opted_in_guest_enters_its_vector_with_the_entry_state():
    m, vm, trap, sink = _machine()
    image = vm.load(str(guest_elf("undef_catch"))).elf
    assert vm.exception_ecs_ipa == image.object_ipa(EXCEPTION_OPT_IN)
    vbar = image.symbol("vectors")
    v = vm.vcpus[0]
    seen = _record_vector_entries(v, vbar + 0x200)          # current EL with SPx, synchronous
    out = m.run(timeout=30)
    assert out.kind is Kind.EXIT and out.exit_code == 0, out.message
    assert b"SUMMARY: 44 tests, 0 unexpected failures" in vm.output
    assert [hex(s["esr"]) for s in seen] == ["0x2000000", "0x56000042", "0xf2000007", "0x96000010",
                                             "0x96000005", "0x96000045", "0x2000000"]
    for s in seen:
        assert s["pstate"] & 0x3CF == 0x3C5                   # EL1h, DAIF masked
        assert s["spsr"] & 0x3CF == 0x3C5                     # interrupted at EL1h with DAIF masked
    tlbi, svc, brk, pa, ld, st, tlbi2 = seen
    for s in (tlbi, tlbi2):
        assert _text(v.insn_at(s["elr"])) == "tlbi alle1is"   # ELR = the undefined instruction
    assert _text(v.insn_at(svc["elr"] - 4)) == "svc #0x42"    # ELR = the instruction after the SVC
    assert _text(v.insn_at(brk["elr"])) == "brk #7"
    assert (pa["far"], ld["far"], st["far"]) == (0x30_0000_0000, 0x3_0000_0008, 0x3_0000_0008)
    assert _text(v.insn_at(pa["elr"])).startswith("ldr") and _text(v.insn_at(st["elr"])).startswith("str")
    # the trace: one guest_exception per entry, and the undefined TLBIs came through the trap's SYS hook
    ev = sink.of("guest_exception")
    assert [(e["esr"], e["elr"], e["vector"], e["el"]) for e in ev] == [(s["esr"], s["elr"], vbar + 0x200, 1)
                                                                       for s in seen]
    assert [e["far"] for e in ev] == [None, None, None, pa["far"], ld["far"], st["far"], None]
    assert [e["ec"] for e in ev] == [0, 0x15, 0x3C, 0x25, 0x25, 0x25, 0]
    assert len(sink.of("tlbi_undef")) == 2 and len(trap.undefined) == 2 and trap.exit_status is None


def test_opted_in_guest_at_el2_uses_the_el2_registers():
    m, vm, trap, sink = _machine(start_el=2)
    vm.load(str(guest_elf("undef_catch")))
    out = m.run(timeout=30)
    assert out.exit_code == 0, vm.output.decode()
    ev = sink.of("guest_exception")
    assert len(ev) == 7 and {e["el"] for e in ev} == {2}
    assert "ALLE3IS" in sink.of("tlbi_undef")[0]["reason"]


def test_cli_logs_and_traces_delivery(tmp_path):
    log, trace = tmp_path / "int.log", tmp_path / "t.jsonl"
    p = run_cli("run", guest_elf("undef_catch"), "-d", "int", "-D", log, "--trace", trace,
                "--trace-events", "guest_exception")
    assert p.returncode == 0, p.stdout + p.stderr
    text = log.read_text()
    assert text.count("taken to EL1 vector") == 7
    assert "exception EC 0x00 (unknown reason (undefined instruction)) at pc 0x" in text
    assert "<test_undefined_tlbi+" in text and "<vectors+0x200>: ESR 0x02000000" in text
    recs = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [r["event"] for r in recs] == ["guest_exception"] * 7
    assert recs[0]["insn"] == "tlbi alle1is" and recs[0]["sym"].startswith("test_undefined_tlbi+")


GUEST_EC0_ONLY = r'''
#include "guest.h"
static void skip(struct pt_regs *regs, unsigned int esr) { regs->elr += 4; }
int main(void)
{
	install_exception_handler(ESR_EC_UNKNOWN, skip);
	asm volatile("udf #0" : : : "memory");
	printf("survived UDF\n");
	return (int)readq(0x3000000000ULL);     /* data abort: no handler for EC 0x25 */
}
'''


def test_only_the_classes_opted_in_for_are_delivered(tmp_path):
    src = tmp_path / "ec0_only.c"
    src.write_text(GUEST_EC0_ONLY)
    elf = build_guest([src], output=tmp_path / "ec0_only.elf")
    p = run_cli("run", elf)
    assert p.returncode == EXIT_ABORT and p.stdout == "survived UDF\n"
    (line,) = p.stderr.strip().splitlines()                       # the harness's one-line death message
    assert "data abort at pc 0x" in line and "EC 0x25" in line and "FAR 0x3000000000" in line


DEATHS = [("undef", EXIT_UNDEF, "undefined instruction at pc"), ("tlbi_el2_at_el1", EXIT_UNDEF, "ALLE1IS"),
          ("mmio_hole", EXIT_ABORT, "data abort at pc"), ("mmu_fault", EXIT_ABORT, "translation fault level 1")]


@pytest.mark.parametrize("guest,status,needle", DEATHS)
def test_unhandled_in_the_runtime_still_dies_with_the_death_line(guest, status, needle):
    """The runtime's vectors take the fault (one guest_exception), find no handler and call
    __harness_unhandled_exception: the run ends there with the harness's one-line message and status."""
    m, vm, trap, sink = _machine()
    vm.load(str(guest_elf(guest)))
    assert vm.exception_ecs_ipa is None                  # the runtime has no opt-in bitmap any more
    out = m.run(timeout=30)
    assert out.exit_code == status and out.is_death and "\n" not in out.message and needle in out.message
    (e,) = sink.of("guest_exception")
    assert e["pc"] == out.pc and e["esr"] == out.esr
    assert not vm.output.count(b"unhandled exception")   # the guest's own report never ran


OLD_GUEST = r'''
#include "guest.h"
volatile u64 exception_handled_ecs;      /* the old runtime's opt-in bitmap, no class opted in */
int main(void)
{
	FAULT;
	return (int)readq(0x3000000000ULL);
}
'''


@pytest.mark.parametrize("fault,status,needle", [("asm volatile(\"udf #0\")", EXIT_UNDEF, "undefined instruction"),
                                                 ("(void)0", EXIT_ABORT, "data abort at pc")])
def test_old_guests_with_the_opt_in_bitmap_still_die_without_entering_their_vectors(tmp_path, fault, status,
                                                                                      needle):
    src = tmp_path / "old.c"
    src.write_text(OLD_GUEST.replace("FAULT", fault))
    elf = build_guest([src], output=tmp_path / "old.elf")
    m, vm, trap, sink = _machine()
    vm.load(str(elf))
    assert vm.exception_ecs_ipa is not None              # the bitmap, with no bit set
    out = m.run(timeout=30)
    assert out.exit_code == status and out.is_death and "\n" not in out.message and needle in out.message
    assert not sink.of("guest_exception")


# Raw code (vm.load_code has no symbols: opt in by pointing vm.exception_ecs_ipa at a bitmap in RAM)
CODE, VBAR, ECS = 0x4008_0000, 0x4010_0000, 0x4020_0000
SP_EL1, SP_EL0 = 0x4030_0000, 0x4031_0000
MSR_SPSEL_0, UDF, NOP, B_SELF, LDR_X0_X2, SVC_1 = (0xD50040BF, 0x0000_0000, 0xD503201F, 0x1400_0000, 0xF940_0040,
                                                   0xD400_0021)


def _raw(words, ecs_bits, *, el0=False, ncpus=1):
    m, vm, trap, sink = _machine(ncpus=ncpus)
    vm.load_code(CODE, b"".join(w.to_bytes(4, "little") for w in words))
    entry = (NOP.to_bytes(4, "little") + B_SELF.to_bytes(4, "little")).ljust(0x80, b"\0")
    vm.load_code(VBAR, entry * 16, entry=CODE)                  # every vector: nop; b .
    vm.ram.buf[ECS - vm.ram_ipa:ECS - vm.ram_ipa + 8] = ecs_bits.to_bytes(8, "little")
    vm.exception_ecs_ipa = ECS
    v = vm.vcpus[0]
    v.power_on(CODE)
    uc = v.uc
    uc.reg_write(UC_ARM64_REG_VBAR_EL1, VBAR)
    uc.reg_write(UC_ARM64_REG_SP, SP_EL1)
    uc.reg_write(UC_ARM64_REG_SP_EL0, SP_EL0)
    uc.reg_write(UC_ARM64_REG_X2, 0x30_0000_0000)
    if el0:
        uc.reg_write(UC_ARM64_REG_SP, SP_EL0)
        uc.reg_write(UC_ARM64_REG_SP_EL1, SP_EL1)
        uc.reg_write(UC_ARM64_REG_PSTATE, 0x3C0)                   # EL0t
        uc.cpr_write(*SPSR_EL1, 0)                                # PSTATE write takes effect (unicorn issue #2333)
    return m, vm, v, sink


@pytest.mark.parametrize("offset", [0x000, 0x200, 0x400])
def test_raw_vector_offsets_and_stack_pointers(offset):
    words = {0x000: [MSR_SPSEL_0, UDF], 0x200: [UDF], 0x400: [UDF]}[offset]
    m, vm, v, sink = _raw(words, 1 << 0, el0=offset == 0x400)
    seen = _record_vector_entries(v, VBAR + offset)
    out = m.run(max_insns=30_000)
    assert out.kind is Kind.BUDGET and len(seen) == 1          # parked in the vector's `b .`
    s = seen[0]
    assert s["esr"] == 0x0200_0000 and s["elr"] == CODE + 4 * (len(words) - 1) and s["pstate"] & 0x3CF == 0x3C5
    assert s["spsr"] & 0xF == {0x000: 0b0100, 0x200: 0b0101, 0x400: 0b0000}[offset]
    assert s["sp"] == SP_EL1                                  # the handler runs on SP_EL1
    if offset != 0x200:
        assert v.uc.reg_read(UC_ARM64_REG_SP_EL0) == SP_EL0   # the interrupted SP_EL0 is banked
    (e,) = sink.of("guest_exception")
    assert e["vector"] == VBAR + offset


def test_raw_abort_from_el0_is_a_lower_el_class():
    m, vm, v, sink = _raw([LDR_X0_X2], 1 << 0x24, el0=True)
    seen = _record_vector_entries(v, VBAR + 0x400)
    m.run(max_insns=30_000)
    (s,) = seen
    assert s["esr"] == 0x9200_0010 and s["far"] == 0x30_0000_0000 and s["elr"] == CODE


def test_raw_undefined_tlbi_from_the_trap_in_counted_slices():
    words = [sys_word(*encoding("ALLE1IS")), SVC_1]
    m, vm, v, sink = _raw(words, (1 << 0) | (1 << 0x15), ncpus=2)
    seen = _record_vector_entries(v, VBAR + 0x200)
    out = m.run(max_insns=5000)                                # two vCPUs: counted round-robin slices
    assert out.kind is Kind.BUDGET
    assert [(s["esr"], s["elr"]) for s in seen] == [(0x0200_0000, CODE)]    # parked: the SVC never runs
    (u,) = sink.of("tlbi_undef")
    assert u["pc"] == CODE and sink.of("guest_exception")[0]["vector"] == VBAR + 0x200


def test_not_opted_in_raw_code_dies_as_before():
    m, vm, v, sink = _raw([UDF], 0)
    out = m.run(max_insns=30_000)
    assert out.kind is Kind.UNDEF and out.exit_code == EXIT_UNDEF and out.pc == CODE
    assert "undefined instruction at pc 0x40080000" in out.message and not sink.of("guest_exception")


# -- guest_fw/tests/exc_entry.c: every class of exception, as the Arm ARM says its handler sees it -----------------

def _records(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if ": vec=" in line:
            fields = dict(f.split("=") for f in line.split(": ", 1)[1].split())
            out.append({k: int(v, 16) if k != "el" else int(v) for k, v in fields.items()})
    return out


# (case symbol, offset of ELR from it, vector, ESR, FAR (None: not written by this exception), SPSR, handler PSTATE)
# ESR values: D17.2.37 (EC, IL = 1, ISS); SPSR: BTYPE | IL | DAIF | M (and NZCV for the first case only: the
# compiled code between the cases leaves the flags as they are); PSTATE: DAIF | PAN | SPSel
EL1_CASES = [
    ("case_udf", 0, 0x200, 0x0200_0000, None, 0x8000_03C5, 0x3C1),      # N set by the cmp before it
    ("case_brk", 0, 0x200, 0xF200_1234, None, 0x3C5, 0x3C1),
    ("case_svc", 4, 0x200, 0x5600_0042, None, 0x3C5, 0x3C1),            # ELR: the next instruction
    ("case_dabt", 0, 0x200, 0x9600_0010, 0x30_0000_0008, 0x3C5, 0x3C1),  # synchronous external abort
    ("case_stp", 0, 0x200, 0x9600_0050, 0x30_0000_0010, 0x3C5, 0x3C1),   # WnR, no writeback
    ("case_ldxr", 0, 0x200, 0x9600_0021, "scratch+1", 0x3C5, 0x3C1),     # alignment fault
    (None, 0x30_0000_0000, 0x200, 0x8600_0010, 0x30_0000_0000, 0xBC5, 0x3C1),   # BLR: BTYPE 0b10
    ("case_pcalign", 6, 0x200, 0x8A00_0000, "elr", 0x7C5, 0x3C1),        # BR: BTYPE 0b01; FAR = ELR
    ("case_sp0", 0, 0x000, 0x0200_0000, None, 0x3C4, 0x3C1),             # from EL1t: the SP0 vector
    ("case_illegal", 4, 0x200, 0x3A00_0000, None, 0x10_03C5, 0x3C1),     # IL set, EL kept
    ("case_sve", 0, 0x200, 0x6600_0000, None, 0x3C5, 0x3C1),
    ("case_pan", 0, 0x200, 0x0200_0000, None, 0x3C5, 0x40_03C1),         # SPAN = 0: PAN set on entry
    ("case_smc", 0, 0x200, 0x0200_0000, None, 0x3C5, 0x3C1),             # no EL3: SMC is UNDEFINED
    ("el0_body", 0, 0x400, 0x0200_0000, None, 0x0, 0x3C1),               # from EL0: the lower-EL vector
    ("el0_body", 8, 0x400, 0x5600_0005, None, 0x0, 0x3C1),
    ("el0_body", 8, 0x400, 0xF200_0006, None, 0x0, 0x3C1),
    ("el0_body", 0x10, 0x400, 0x9200_0010, 0x30_0000_0010, 0x0, 0x3C1),  # EC 0x24: lower EL
    ("el0_body", 0x14, 0x400, 0x6232_C001, None, 0x0, 0x3C1),            # MRS CTR_EL0, SCTLR_EL1.UCT = 0
    ("el0_body", 0x18, 0x400, 0x6212_DC48, None, 0x0, 0x3C1),            # DC ZVA, DZE = 0
    ("el0_body", 0x1C, 0x400, 0x620C_D3E4, None, 0x0, 0x3C1),            # MSR DAIFSet, UMA = 0
    ("el0_body", 0x20, 0x400, 0x6212_DC56, None, 0x0, 0x3C1),            # DC CVAU, UCI = 0
    ("el0_body", 0x24, 0x400, 0x07E0_0000, None, 0x0, 0x3C1),            # WFI, nTWI = 0
]
EL2_CASES = [(s, o, v, 0x97C1_8010 if s == "case_dabt" else e, f, spsr + 4 if (spsr >> 2) & 3 == 1 else spsr, p)
             for s, o, v, e, f, spsr, p in EL1_CASES[:9]] + [          # at EL2: ISV/SAS/SRT/SF for an LDR
    ("case_pan", 0, 0x200, 0x0200_0000, None, 0x3C9, 0x3C1),             # SCTLR_EL1.SPAN does not apply
    ("case_hvc2", 4, 0x200, 0x5A00_0012, None, 0x3C9, 0x3C1),
    ("el1_body", 4, 0x400, 0x5A00_0034, None, 0x3C5, 0x3C1),             # HVC from EL1 to the EL2 vector
    ("el1_body", 4, 0x400, 0x5E00_0056, None, 0x3C5, 0x3C1),             # SMC with HCR_EL2.TSC: ELR = the SMC
    ("el1_body", 0x10, 0x400, 0x2600_0000, None, 0x3C5, 0x3C1),          # PACGA with HCR_EL2.API = 0
    ("el1_body", 0x14, 0x400, 0x6230_0866, None, 0x3C5, 0x3C1),          # MSR APGAKEYLO_EL1 with APK = 0
    ("el1_body", 0x18, 0x400, 0x6600_0000, None, 0x3C5, 0x3C1),          # CNTW with CPTR_EL2.TZ
    ("el1_body", 0x1C, 0x400, 0x07E0_0000, None, 0x3C5, 0x3C1),          # WFI with HCR_EL2.TWI
    ("el1_body", 0x20, 0x200, 0x0200_0000, None, 0x3C5, 0x3C1),          # UDF at EL1: EL1's own vector
    ("el0_tge_body", 4, 0x400, 0x5600_0007, None, 0x0, 0x3C1),           # SVC from EL0 with TGE: EL2
]


@pytest.mark.parametrize("el", [1, 2])
def test_exc_entry_guest_sees_what_the_arm_arm_says(el):
    from harness.elfload import load_elf
    img = load_elf(str(guest_elf("exc_entry")))
    m, vm, trap, sink = _machine(start_el=el)
    vm.load(img)
    out = m.run(timeout=60)
    text = vm.output.decode()
    assert out.exit_code == 0, text
    recs = _records(text)
    cases = EL1_CASES if el == 1 else EL2_CASES
    assert len(recs) == len(cases), text
    scratch = img.objects["scratch"][0]
    assert recs[0]["spsr"] >> 28 == 0b1000                      # NZCV saved: the cmp set N
    for r, (sym, off, vec, esr, far, spsr, pstate) in zip(recs, cases):
        elr = off if sym is None else img.symbol(sym) + off
        where = f"{sym}+{off:#x}: {r}"
        assert (r["vec"], r["esr"], r["elr"], r["spsr"] & 0x0FFF_FFFF, r["pstate"]) == \
            (vec, esr, elr, spsr & 0x0FFF_FFFF, pstate), where
        if far == "elr":
            assert r["far"] == elr, where
        elif far == "scratch+1":
            assert r["far"] == scratch + 1, where
        elif far is not None:
            assert r["far"] == far, where
    handler_els = [r["el"] for r in recs]
    assert handler_els == ([1] * len(cases) if el == 1 else [2] * 17 + [1, 2])
    exits = 1 if el == 1 else 2               # svc #0xfff / hvc #0xfff back from EL0 / EL1: not recorded
    assert len(sink.of("guest_exception")) == len(cases) + exits


LOOP_GUEST = r'''
#include "guest.h"
/* A handler that faults itself: its vector loads from an unmapped address (a stack that is not there). */
asm(".balign 0x800\n .global bad_vectors\n bad_vectors:\n"
    ".rept 16\n .balign 0x80\n movz x9, #0x30, lsl #32\n ldr x9, [x9]\n eret\n .endr\n");
extern char bad_vectors[];
int main(void)
{
	printf("installing\n");
	write_sysreg(bad_vectors, vbar_el1);
	isb();
	asm volatile("udf #3");
	return 0;
}
'''


def test_loop_detector_ends_a_handler_that_faults_itself(tmp_path):
    src = tmp_path / "loop.c"
    src.write_text(LOOP_GUEST)
    elf = build_guest([src], output=tmp_path / "loop.elf")
    m, vm, trap, sink = _machine()
    vm.load(str(elf))
    out = m.run(timeout=30)
    assert out.exit_code == EXIT_ABORT and "\n" not in out.message
    assert "exception loop: 17 nested exceptions at EL1 without an ERET" in out.message, out.message
    ev = sink.of("guest_exception")
    assert len(ev) == 16 and ev[0]["ec"] == 0 and {e["ec"] for e in ev[1:]} == {0x25}


def test_no_vector_table_dies_with_the_one_line_message():
    """VBAR_EL1 never written: Unicorn resets it to 0, where the board has no memory."""
    m, vm, trap, sink = _machine()
    vm.load_code(CODE, UDF.to_bytes(4, "little"))
    out = m.run(max_insns=1000)
    assert out.exit_code == EXIT_UNDEF and out.pc == CODE and "undefined instruction at pc 0x40080000" in out.message
    assert not sink.of("guest_exception")


def test_take_goes_to_the_el_a_trap_names():
    """`take(..., target_el=2)`: a trap of an EL2 control taken from EL1 (here a WFI trapped by HCR_EL2.TWI, as
    the scheduler's WFI handling reports it) enters EL2's lower-EL vector, not EL1's."""
    m, vm, trap, sink = _machine(start_el=2)
    vm.load_code(CODE, (0xD503207F).to_bytes(4, "little"))
    vm.load_code(VBAR, (B_SELF.to_bytes(4, "little")).ljust(0x80, b"\0") * 16, entry=CODE)
    v = vm.vcpus[0]
    v.power_on(CODE)
    uc = v.uc
    uc.reg_write(UC_ARM64_REG_VBAR_EL2, VBAR)
    uc.reg_write(UC_ARM64_REG_PSTATE, 0x3C5)                          # EL1h
    uc.cpr_write(*SPSR_EL1, 0)                                         # the PSTATE write takes effect
    out = m.exceptions.take(v, Kind.UNDEF, "WFI trapped", CODE, 0x07E0_0000, target_el=2)
    assert out is None and v.pc == VBAR + 0x400 and v.el == 2
    (e,) = sink.of("guest_exception")
    assert (e["el"], e["ec"], e["esr"], e["elr"]) == (2, 0x01, 0x07E0_0000, CODE)


def test_eret_to_aarch64_el1_with_hcr_el2_rw_clear_is_illegal():
    """HCR_EL2.RW = 0 (its reset value, as QEMU's -kernel boot at EL2 leaves it) makes EL1 AArch32: an ERET to
    AArch64 EL1h is an illegal exception return (IllegalExceptionReturn; QEMU 7.2: EC 0x0E), not a trip to EL1."""
    from harness.exceptions import illegal_return
    m = Machine(console=lambda vm, d, s: None)
    v = m.add_vm(start_el=2).vcpus[0]
    hcr = (3, 4, 1, 1, 0)
    v.uc.cpr_write(*hcr, 0)
    assert illegal_return(v, 2, 0x3C5) and illegal_return(v, 2, 0x3C0)
    assert not illegal_return(v, 2, 0x3C9)                     # EL2h itself is fine
    v.uc.cpr_write(*hcr, 1 << 31)                              # RW: EL1 is AArch64
    assert not illegal_return(v, 2, 0x3C5) and not illegal_return(v, 2, 0x3C0)
    v.uc.cpr_write(*hcr, 1 << 34 | 1 << 27)                    # E2H + TGE: EL0 is AArch64 whatever RW says
    assert not illegal_return(v, 2, 0x3C0) and illegal_return(v, 2, 0x3C5)
