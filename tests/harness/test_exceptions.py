"""Exception delivery to the guest's own vectors (opt-in, harness.machine `deliver_exception`): guests that
install handlers (guest_fw/lib/exceptions.c, `exception_handled_ecs`) take undefined instructions (undefined
TLBIs from the trap too), SVC, BRK and aborts at VBAR_ELx + offset with the Arm ARM D1.10 entry state; guests
that did not opt in for an exception's class still die with 132/139 and the one-line death message."""
from __future__ import annotations

import json

import capstone
import pytest
from unicorn import UC_HOOK_CODE
from unicorn.arm64_const import (UC_ARM64_REG_ELR_EL1, UC_ARM64_REG_ESR_EL1, UC_ARM64_REG_FAR_EL1,
                                 UC_ARM64_REG_PSTATE, UC_ARM64_REG_SP, UC_ARM64_REG_SP_EL0, UC_ARM64_REG_SP_EL1,
                                 UC_ARM64_REG_VBAR_EL1, UC_ARM64_REG_X2)

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


@pytest.mark.parametrize("guest,status,needle", [
    ("undef", EXIT_UNDEF, "undefined instruction at pc"), ("tlbi_el2_at_el1", EXIT_UNDEF, "ALLE1IS"),
    ("mmio_hole", EXIT_ABORT, "data abort at pc"), ("mmu_fault", EXIT_ABORT, "translation fault level 1"),
])
def test_without_opting_in_the_same_faults_still_die(guest, status, needle):
    m, vm, trap, sink = _machine()
    vm.load(str(guest_elf(guest)))
    assert vm.exception_ecs_ipa is not None              # the runtime has the bitmap, with no bit set
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
